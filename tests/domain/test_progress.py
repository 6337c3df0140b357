"""Progress reports: the shape rules (check_report) and the fold (add_report)."""

from __future__ import annotations

import pytest
from domain_support import AGENT, POLICY, TTL, at, open_session, state

from sessions.domain.enums import ChangeType, RelatedObjectType
from sessions.domain.errors import InvalidArgument
from sessions.domain.progress import (
    INT64_MAX,
    ChangeCount,
    ProgressEntry,
    add_report,
    check_report,
)

USER, GROUP, MEMBERSHIP = list(RelatedObjectType)
CREATE, UPDATE, DELETE = ChangeType.CREATE, ChangeType.UPDATE, ChangeType.DELETE


def entry(object_type, *changes: tuple) -> ProgressEntry:
    return ProgressEntry(object_type, tuple(ChangeCount(*c) for c in changes))


def flat(totals) -> list[tuple]:
    """Totals as (object_type, change_type, successful, failed) rows, in order."""
    return [
        (e.object_type, c.change_type, c.successful, c.failed) for e in totals for c in e.changes
    ]


# --- the fold ------------------------------------------------------------------


def test_first_report_becomes_the_totals():
    totals = add_report((), [entry(USER, (CREATE, 5, 1))])
    assert totals == (entry(USER, (CREATE, 5, 1)),)
    assert isinstance(totals, tuple)
    assert isinstance(totals[0].changes, tuple)


def test_reports_are_increments_summed_per_object_and_change_type():
    totals = add_report((), [entry(USER, (CREATE, 5, 1), (UPDATE, 2, 0))])
    totals = add_report(totals, [entry(USER, (CREATE, 10, 3))])
    totals = add_report(totals, [entry(GROUP, (CREATE, 4, 4)), entry(USER, (UPDATE, 0, 9))])
    assert flat(totals) == [
        (USER, CREATE, 15, 4),
        (USER, UPDATE, 2, 9),
        (GROUP, CREATE, 4, 4),
    ]


def test_successful_and_failed_are_summed_independently():
    totals = add_report((), [entry(MEMBERSHIP, (DELETE, 1, 0))])
    totals = add_report(totals, [entry(MEMBERSHIP, (DELETE, 0, 1))])
    assert flat(totals) == [(MEMBERSHIP, DELETE, 1, 1)]


def test_entries_are_ordered_user_group_membership_whatever_the_report_order():
    totals = add_report(
        (),
        [
            entry(MEMBERSHIP, (CREATE, 1, 0)),
            entry(USER, (CREATE, 2, 0)),
            entry(GROUP, (CREATE, 3, 0)),
        ],
    )
    assert [e.object_type for e in totals] == [USER, GROUP, MEMBERSHIP]
    # A type first seen in a later report still takes its place in the order.
    totals = add_report((), [entry(MEMBERSHIP, (CREATE, 1, 0))])
    totals = add_report(totals, [entry(USER, (CREATE, 1, 0))])
    assert [e.object_type for e in totals] == [USER, MEMBERSHIP]


def test_changes_are_in_enum_order_whatever_the_report_order():
    reported = [
        ChangeType.PASSWORD_HASH_UPDATE,
        ChangeType.DEACTIVATE,
        ChangeType.CREATE,
        ChangeType.DELETE,
        ChangeType.ACTIVATE,
        ChangeType.UPDATE,
    ]
    totals = add_report((), [entry(USER, *[(t, i, 0) for i, t in enumerate(reported)])])
    assert [c.change_type for c in totals[0].changes] == list(ChangeType)
    # the counts stayed with their change type
    assert {c.change_type: c.successful for c in totals[0].changes} == {
        t: i for i, t in enumerate(reported)
    }
    # and across reports
    totals = add_report((), [entry(GROUP, (DELETE, 1, 0))])
    totals = add_report(totals, [entry(GROUP, (CREATE, 1, 0))])
    assert [c.change_type for c in totals[0].changes] == [CREATE, DELETE]


def test_duplicates_inside_one_report_are_summed():
    totals = add_report(
        (),
        [
            entry(USER, (CREATE, 1, 2), (CREATE, 10, 20)),
            entry(GROUP, (UPDATE, 3, 0)),
            entry(USER, (CREATE, 100, 200), (DELETE, 1, 1)),
        ],
    )
    assert flat(totals) == [
        (USER, CREATE, 111, 222),
        (USER, DELETE, 1, 1),
        (GROUP, UPDATE, 3, 0),
    ]


def test_a_change_type_reported_with_zero_counts_is_still_shown():
    totals = add_report((), [entry(GROUP, (ChangeType.ACTIVATE, 0, 0))])
    assert flat(totals) == [(GROUP, ChangeType.ACTIVATE, 0, 0)]


def test_the_fold_does_not_change_its_inputs():
    before = add_report((), [entry(USER, (CREATE, 1, 0))])
    report = [entry(USER, (CREATE, 2, 0))]
    after = add_report(before, report)
    assert flat(before) == [(USER, CREATE, 1, 0)]
    assert flat(report) == [(USER, CREATE, 2, 0)]
    assert flat(after) == [(USER, CREATE, 3, 0)]


@pytest.mark.parametrize("column", ["successful", "failed"])
def test_sums_up_to_int64_max_are_accepted(column):
    first = (INT64_MAX - 1, 0) if column == "successful" else (0, INT64_MAX - 1)
    one = (1, 0) if column == "successful" else (0, 1)
    totals = add_report((), [entry(USER, (CREATE, *first))])
    totals = add_report(totals, [entry(USER, (CREATE, *one))])
    [(_, _, successful, failed)] = flat(totals)
    assert (successful if column == "successful" else failed) == INT64_MAX


@pytest.mark.parametrize("column", ["successful", "failed"])
def test_a_sum_past_int64_max_is_refused(column):
    full = (INT64_MAX, 0) if column == "successful" else (0, INT64_MAX)
    one = (1, 0) if column == "successful" else (0, 1)
    totals = add_report((), [entry(GROUP, (UPDATE, *full))])
    with pytest.raises(InvalidArgument) as err:
        add_report(totals, [entry(GROUP, (UPDATE, *one))])
    assert err.value.field == "progress_entries"
    assert "int64" in err.value.description


def test_duplicates_inside_one_report_may_not_overflow_either():
    report = [entry(USER, (CREATE, INT64_MAX, 0), (CREATE, 1, 0))]
    check_report(report)  # each counter is in range on its own
    with pytest.raises(InvalidArgument) as err:
        add_report((), report)
    assert err.value.field == "progress_entries"


def test_overflow_of_another_type_is_refused_too():
    totals = add_report((), [entry(MEMBERSHIP, (DELETE, 0, INT64_MAX))])
    with pytest.raises(InvalidArgument):
        add_report(totals, [entry(USER, (CREATE, 5, 0)), entry(MEMBERSHIP, (DELETE, 0, 1))])


# --- check_report ------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3])
def test_one_to_three_entries_are_accepted(count):
    check_report([entry(t, (CREATE, 1, 0)) for t in list(RelatedObjectType)[:count]])


@pytest.mark.parametrize("count", [0, 4])
def test_zero_or_four_entries_are_refused(count):
    entries = [entry(USER, (CREATE, 1, 0)) for _ in range(count)]
    with pytest.raises(InvalidArgument) as err:
        check_report(entries)
    assert err.value.field == "progress_entries"


@pytest.mark.parametrize("count", [1, 6])
def test_one_to_six_change_infos_are_accepted(count):
    check_report([entry(USER, *[(t, 0, 0) for t in list(ChangeType)[:count]])])


@pytest.mark.parametrize("count", [0, 7])
def test_zero_or_seven_change_infos_are_refused(count):
    changes = [(list(ChangeType)[i % 6], 1, 0) for i in range(count)]
    entries = [entry(USER, (CREATE, 1, 0)), entry(GROUP, *changes)]
    with pytest.raises(InvalidArgument) as err:
        check_report(entries)
    assert err.value.field == "progress_entries[1].change_info"


@pytest.mark.parametrize("column", ["successful", "failed"])
@pytest.mark.parametrize("value", [-1, -(2**63), INT64_MAX + 1, 2**64])
def test_counts_out_of_int64_range_are_refused(column, value):
    bad = (value, 0) if column == "successful" else (0, value)
    entries = [
        entry(USER, (CREATE, 1, 0)),
        entry(GROUP, (CREATE, 1, 0), (UPDATE, 1, 0), (DELETE, *bad)),
    ]
    with pytest.raises(InvalidArgument) as err:
        check_report(entries)
    assert err.value.field == f"progress_entries[1].change_info[2].{column}"


@pytest.mark.parametrize("value", [0, INT64_MAX])
def test_counts_at_the_edges_of_the_range_are_accepted(value):
    check_report([entry(USER, (CREATE, value, value))])


@pytest.mark.parametrize("bad", [None, 0, 1, "USER", ChangeType.CREATE])
def test_an_object_type_outside_the_enum_is_refused(bad):
    entries = [entry(t, (CREATE, 1, 0)) for t in (USER, GROUP, bad)]
    with pytest.raises(InvalidArgument) as err:
        check_report(entries)
    assert err.value.field == "progress_entries[2].object_type"


@pytest.mark.parametrize("bad", [None, 0, 1, "CREATE", RelatedObjectType.USER])
def test_a_change_type_outside_the_enum_is_refused(bad):
    entries = [entry(USER, (CREATE, 1, 0), (bad, 1, 0))]
    with pytest.raises(InvalidArgument) as err:
        check_report(entries)
    assert err.value.field == "progress_entries[0].change_info[1].change_type"


def test_the_error_message_names_the_field():
    with pytest.raises(InvalidArgument) as err:
        check_report([entry(USER, (CREATE, -5, 0))])
    assert str(err.value).startswith("progress_entries[0].change_info[0].successful:")
    assert "-5" in err.value.description


# --- through the session ---------------------------------------------------------------


def test_session_keeps_the_folded_totals():
    s = open_session()
    s.report_progress([entry(GROUP, (UPDATE, 1, 0))], now=at(1), policy=POLICY, principal=AGENT)
    s.report_progress(
        [entry(USER, (DELETE, 2, 0), (CREATE, 3, 1)), entry(GROUP, (UPDATE, 4, 4))],
        now=at(2),
        policy=POLICY,
        principal=AGENT,
    )
    assert flat(s.progress) == [
        (USER, CREATE, 3, 1),
        (USER, DELETE, 2, 0),
        (GROUP, UPDATE, 5, 4),
    ]
    # Each event carries the increment as reported, not the totals.
    events = s.collect_events()
    assert flat(events[1].entries) == [(GROUP, UPDATE, 1, 0)]
    assert flat(events[2].entries) == [
        (USER, DELETE, 2, 0),
        (USER, CREATE, 3, 1),
        (GROUP, UPDATE, 4, 4),
    ]


def test_an_overflowing_report_records_nothing_on_the_session():
    s = open_session()
    s.report_progress(
        [entry(USER, (CREATE, INT64_MAX - 1, 0))], now=at(1), policy=POLICY, principal=AGENT
    )
    s.collect_events()
    before = state(s)
    with pytest.raises(InvalidArgument):
        s.report_progress(
            [entry(GROUP, (CREATE, 1, 0)), entry(USER, (CREATE, 2, 0))],
            now=at(5),
            policy=POLICY,
            principal=AGENT,
        )
    assert s.collect_events() == []
    assert state(s) == before
    assert s.expires_at == at(1) + TTL  # not extended by the refused report
    assert flat(s.progress) == [(USER, CREATE, INT64_MAX - 1, 0)]


@pytest.mark.parametrize(
    "entries",
    [
        [],
        [entry(USER)],
        [entry(USER, (CREATE, -1, 0))],
        [entry(None, (CREATE, 1, 0))],
        [entry(USER, (None, 1, 0))],
    ],
    ids=["no-entries", "no-changes", "negative", "no-object-type", "no-change-type"],
)
def test_a_malformed_report_records_nothing_on_the_session(entries):
    s = open_session()
    s.collect_events()
    before = state(s)
    with pytest.raises(InvalidArgument):
        s.report_progress(entries, now=at(5), policy=POLICY, principal=AGENT)
    assert s.collect_events() == []
    assert state(s) == before


# --- the fold against its plainest statement -------------------------------------


def reference_add_report(totals, report):
    """add_report as plainly as it can be said (the fold used to be this):
    sums per object type and change type, both in enum order."""
    sums: dict = {}
    for entry_ in totals:
        sums[entry_.object_type] = {c.change_type: [c.successful, c.failed] for c in entry_.changes}
    for entry_ in report:
        per_type = sums.setdefault(entry_.object_type, {})
        for change_type, successful, failed in entry_.changes:
            counts = per_type.setdefault(change_type, [0, 0])
            counts[0] += successful
            counts[1] += failed
    result = []
    for object_type in sorted(sums, key=lambda t: t.value):
        per_type = sums[object_type]
        for change_type, (successful, failed) in per_type.items():
            if successful > INT64_MAX or failed > INT64_MAX:
                raise InvalidArgument("progress_entries", f"{object_type.name}/{change_type.name}")
        changes = tuple(ChangeCount(t, *per_type[t]) for t in sorted(per_type, key=lambda t: t.value))
        result.append(ProgressEntry(object_type, changes))
    return tuple(result)


def random_entries(rng, big: bool = False) -> list[ProgressEntry]:
    """1 to 3 entries, object types possibly repeated, change types in any
    order and possibly repeated; counts small, or near the int64 limit."""
    def count() -> int:
        return rng.randint(INT64_MAX // 4, INT64_MAX // 2) if big else rng.randint(0, 50)

    return [
        ProgressEntry(
            rng.choice(list(RelatedObjectType)),
            tuple(ChangeCount(rng.choice(list(ChangeType)), count(), count()) for _ in range(rng.randint(1, 6))),
        )
        for _ in range(rng.randint(1, 3))
    ]


@pytest.mark.parametrize("seed", range(20))
def test_the_fold_equals_its_plainest_statement_over_random_reports(seed):
    import random

    rng = random.Random(seed)
    totals: tuple = ()
    for _ in range(40):
        report = random_entries(rng, big=rng.random() < 0.05)
        try:
            expected = reference_add_report(totals, report)
        except InvalidArgument:
            with pytest.raises(InvalidArgument):
                add_report(totals, report)
            continue
        got = add_report(totals, report)
        assert got == expected
        assert type(got) is tuple
        for e in got:
            assert type(e) is ProgressEntry and type(e.changes) is tuple
            assert all(type(c) is ChangeCount for c in e.changes)
        # Entries the report did not touch are the very same objects.
        reported = {e.object_type for e in report}
        before = {e.object_type: e for e in totals}
        assert all(e is before[e.object_type] for e in got if e.object_type not in reported)
        totals = got if rng.random() < 0.8 else list(got)  # (resumed totals are lists)


def test_counts_given_as_plain_tuples_become_change_counts():
    totals = add_report((), [ProgressEntry(USER, ((CREATE, 1, 2),))])  # type: ignore[arg-type]
    totals = add_report(totals, [ProgressEntry(GROUP, [(UPDATE, 3, 4)])])  # type: ignore[arg-type]
    assert flat(totals) == [(USER, CREATE, 1, 2), (GROUP, UPDATE, 3, 4)]
    assert all(type(c) is ChangeCount for e in totals for c in e.changes)
    assert all(type(e.changes) is tuple for e in totals)
