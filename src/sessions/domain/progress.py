"""Progress reports and the running totals they fold into.

A report is a batch of increments. Totals keep one entry per object type in
enum order (USER, GROUP, MEMBERSHIP), and inside it one count per change
type in enum order; counters never overflow silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NamedTuple

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

    # The entry as plain data: how it is stored (inside the store's type tag)
    # and hashed into the audit chain; names, not numbers, for readability.
    def as_data(self) -> dict[str, Any]:
        # (_name_ is Enum.name without its descriptor: every stored state writes these)
        return {
            "object_type": self.object_type._name_,
            "changes": [[c.change_type._name_, c.successful, c.failed] for c in self.changes],
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> ProgressEntry:
        change_types = _CHANGE_TYPES
        return cls(
            _OBJECT_TYPES[data["object_type"]],
            tuple([ChangeCount(change_types[n], s, f) for n, s, f in data["changes"]]),
        )


# By name, as plain dicts: EnumType[...] is slow, and decoding is hot.
_OBJECT_TYPES = dict(RelatedObjectType.__members__)
_CHANGE_TYPES = dict(ChangeType.__members__)


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
    are (the same objects), and so are counts it does not change; counts
    are summed in a list indexed by the change type's number (which is also
    their order).
    """
    merged = {entry.object_type: entry for entry in totals}
    sums: dict[RelatedObjectType, list[Any]] = {}
    for entry in report:
        object_type = entry.object_type
        slots = sums.get(object_type)
        if slots is None:
            slots = sums[object_type] = [None] * _SLOTS
            previous = merged.get(object_type)
            if previous is not None:
                for change in previous.changes:
                    slots[change[0]._value_] = change
        for change in entry.changes:
            change_type, successful, failed = change
            at = change_type._value_
            counts = slots[at]
            slots[at] = (
                change
                if counts is None
                else (change_type, counts[1] + successful, counts[2] + failed)
            )
    for object_type, slots in sums.items():
        changes = []
        for change in slots:
            if change is None:
                continue
            change_type, successful, failed = change
            if successful > INT64_MAX or failed > INT64_MAX:
                raise InvalidArgument(
                    "progress_entries",
                    f"{object_type.name}/{change_type.name} would exceed the int64 "
                    "counter limit",
                )
            if type(change) is not ChangeCount:
                change = ChangeCount(change_type, successful, failed)
            changes.append(change)
        merged[object_type] = ProgressEntry(object_type, tuple(changes))
    return tuple([merged[t] for t in sorted(merged, key=_value)])


_value = attrgetter("_value_")  # Enum.value is a slow descriptor
# Change types by number: a list of this length holds one slot per type.
_SLOTS = max(_value(t) for t in ChangeType) + 1
