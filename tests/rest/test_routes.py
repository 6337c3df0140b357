"""Routes come from the descriptors' google.api.http options: the public
API's paths, and google.api.http's rules for matching them."""

from __future__ import annotations

import pytest

from sessions.api.protos import service_pb2
from sessions.rest.routes import SERVICES, TemplateError, _compile, routes
from tests.rest.conftest import SESSIONS


def _table() -> dict[str, tuple[str, str, str]]:
    return {r.grpc_method.rsplit("/", 1)[1]: (r.http_method, r.template, r.body) for r in routes()}


def test_every_method_of_both_services_has_its_public_route() -> None:
    assert _table() == {
        "OpenSession": ("POST", f"{SESSIONS}:open", "*"),
        "CloseSession": ("POST", f"{SESSIONS}/{{session_id}}:close", "*"),
        "ReportSessionProgress": ("POST", f"{SESSIONS}/{{session_id}}:reportProgress", "*"),
        "Heartbeat": ("POST", f"{SESSIONS}/{{session_id}}:heartbeat", "*"),
        "GetSession": ("GET", f"{SESSIONS}/{{session_id}}", ""),
        "ListSessions": ("GET", SESSIONS, ""),
        "Get": ("GET", "/operations/{operation_id}", ""),
        "Cancel": ("POST", "/operations/{operation_id}:cancel", ""),
    }
    assert sum(len(s.methods) for s in SERVICES) == len(routes())


def test_operation_option_names_the_packed_types() -> None:
    by_name = {r.method.name: r for r in routes()}
    open_option = by_name["OpenSession"].operation
    assert open_option is not None
    assert (open_option.metadata, open_option.response) == ("OpenSessionMetadata", "OpenSessionResponse")
    assert by_name["GetSession"].operation is None
    assert by_name["GetSession"].request is service_pb2.GetSessionRequest.DESCRIPTOR


def test_a_variable_is_one_segment_percent_decoded_and_the_verb_stays_the_verb() -> None:
    by_name = {r.method.name: r for r in routes()}
    close = by_name["CloseSession"]
    assert close.match(f"{SESSIONS}/ses1:close") == {"session_id": "ses1"}
    assert close.match(f"{SESSIONS}/a:b:close") == {"session_id": "a:b"}
    assert close.match(f"{SESSIONS}/a%2Fb%20c:close") == {"session_id": "a/b c"}
    assert close.match(f"{SESSIONS}/a/b:close") is None
    assert close.match(f"{SESSIONS}/ses1:heartbeat") is None
    get = by_name["GetSession"]
    assert get.match(f"{SESSIONS}/ses1") == {"session_id": "ses1"}
    assert get.match(f"{SESSIONS}/") is None
    assert get.match(f"{SESSIONS}:open") is None
    with pytest.raises(UnicodeDecodeError):
        get.match(f"{SESSIONS}/%ff")


@pytest.mark.parametrize("template", ["no-slash", "/a/{x=**}", "/a/{x.y}"])
def test_templates_not_served_are_refused_when_routes_are_built(template: str) -> None:
    with pytest.raises(TemplateError):
        _compile(template)
