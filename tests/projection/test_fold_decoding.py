"""The fold's own decoding of stored events equals the library mapper's."""

from __future__ import annotations

from sessions.projection.fold import SESSION_TOPICS, SessionFold
from tests.projection.projection_support import Workload, make_app


def test_fold_decodes_every_session_event_as_the_mapper_does(store_url) -> None:  # type: ignore[no-untyped-def]
    app = make_app(store_url)
    workload = Workload(app)
    workload.run(300, containers=5)
    fold = SessionFold(app.mapper)
    notifications = app.recorder.select_notifications(start=0, limit=10_000, topics=sorted(SESSION_TOPICS))
    assert len({n.topic for n in notifications}) >= 4  # opened, progress, heartbeat, a close at least
    for n in notifications:
        ours, theirs = fold.decode(n), app.mapper.to_domain_event(n)
        assert type(ours) is type(theirs)
        assert vars(ours) == vars(theirs)
    app.close()
