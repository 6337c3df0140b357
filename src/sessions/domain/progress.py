"""Progress reports and the running totals they fold into.

A report is a batch of increments. Totals keep one entry per object type in
enum order (USER, GROUP, MEMBERSHIP), and inside it one count per change
type in enum order; counters never overflow silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

from sessions.domain.enums import ChangeType, RelatedObjectType
from sessions.domain.errors import InvalidArgument

INT64_MAX = 2**63 - 1
MAX_ENTRIES_PER_REPORT = 3
MAX_CHANGES_PER_ENTRY = 6


class ChangeCount(NamedTuple):
    # A NamedTuple (immutable, cheap to build: the fold makes many). It is
    # stored only inside a ProgressEntry, whose transcoding writes it out.
    change_type: ChangeType
    successful: int
    failed: int


@dataclass(frozen=True)
class ProgressEntry:
    object_type: RelatedObjectType
    changes: tuple[ChangeCount, ...]


def check_report(entries: Sequence[ProgressEntry]) -> None:
    """Refuse a report that breaks the shape rules (INVALID_ARGUMENT)."""
    if not 1 <= len(entries) <= MAX_ENTRIES_PER_REPORT:
        raise InvalidArgument(
            "progress_entries",
            f"must hold 1 to {MAX_ENTRIES_PER_REPORT} entries, got {len(entries)}",
        )
    for i, entry in enumerate(entries):
        where = f"progress_entries[{i}]"
        if not isinstance(entry.object_type, RelatedObjectType):
            raise InvalidArgument(f"{where}.object_type", "must name an object type")
        if not 1 <= len(entry.changes) <= MAX_CHANGES_PER_ENTRY:
            raise InvalidArgument(
                f"{where}.change_info",
                f"must hold 1 to {MAX_CHANGES_PER_ENTRY} items, got {len(entry.changes)}",
            )
        for j, change in enumerate(entry.changes):
            at = f"{where}.change_info[{j}]"
            if not isinstance(change.change_type, ChangeType):
                raise InvalidArgument(f"{at}.change_type", "must name a change type")
            for name in ("successful", "failed"):
                value = getattr(change, name)
                if not 0 <= value <= INT64_MAX:
                    raise InvalidArgument(
                        f"{at}.{name}", f"must be between 0 and {INT64_MAX}, got {value}"
                    )


def add_report(
    totals: Iterable[ProgressEntry], report: Iterable[ProgressEntry]
) -> tuple[ProgressEntry, ...]:
    """Return the totals after adding a report; refuse int64 overflow.

    Hot in every fold: entries the report does not touch are kept as they
    are, and counts are summed in plain dicts keyed by enum order numbers.
    """
    merged = {entry.object_type: entry for entry in totals}
    sums: dict[RelatedObjectType, dict[ChangeType, list[int]]] = {}
    for entry in report:
        per_type = sums.get(entry.object_type)
        if per_type is None:
            per_type = sums[entry.object_type] = {}
            previous = merged.get(entry.object_type)
            if previous is not None:
                for change_type, successful, failed in previous.changes:
                    per_type[change_type] = [successful, failed]
        for change_type, successful, failed in entry.changes:
            counts = per_type.get(change_type)
            if counts is None:
                per_type[change_type] = [successful, failed]
            else:
                counts[0] += successful
                counts[1] += failed
    for object_type, per_type in sums.items():
        changes = []
        for change_type in sorted(per_type, key=_value):
            successful, failed = per_type[change_type]
            if successful > INT64_MAX or failed > INT64_MAX:
                raise InvalidArgument(
                    "progress_entries",
                    f"{object_type.name}/{change_type.name} would exceed the int64 "
                    "counter limit",
                )
            changes.append(ChangeCount(change_type, successful, failed))
        merged[object_type] = ProgressEntry(object_type, tuple(changes))
    return tuple(merged[t] for t in sorted(merged, key=_value))


_value = attrgetter("_value_")  # Enum.value is a slow descriptor
