"""The ListSessions filter language: a tokenizer and a recursive-descent parser.

Grammar (keywords AND and IN in any case; field and enum names as written)::

    filter  = [ term { "AND" term } ]
    term    = field ( compare string | "IN" "(" string { "," string } ")" )
    compare = "=" | "!=" | "<" | "<=" | ">" | ">="
    string  = '"' { any character but '"' and '\\' | '\\"' | '\\\\' } '"'

Fields, the operators each allows, and what its values must be:

    status, session_type, sync_mode   = != IN             enum value names
    agent_id                          = != IN             any string
    created_at, closed_at, expires_at = != < <= > >=      RFC 3339 times

Every error is ``InvalidArgument("filter", ...)`` naming the 1-based
character position where the problem starts and what was expected there.
The parser produces ``Condition`` values; the read model turns them into SQL
with bound parameters only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from sessions.domain.enums import DomainEnum, SessionStatus, SessionType, SyncMode
from sessions.domain.errors import InvalidArgument
from sessions.projection import listing
from sessions.projection.listing import IN, Condition

# Token kinds
FIELD, STRING, OPERATOR, LPAREN, RPAREN, COMMA, END = (
    "name", "string", "operator", "(", ")", ",", "end of filter"
)

ENUMS: dict[str, type[DomainEnum]] = {
    listing.STATUS: SessionStatus,
    listing.SESSION_TYPE: SessionType,
    listing.SYNC_MODE: SyncMode,
}


def _operators_of(field: str) -> tuple[str, ...]:
    if field in listing.TIME_FIELDS:
        return (*listing.EQUALITY_OPERATORS, *listing.ORDER_OPERATORS)
    return (*listing.EQUALITY_OPERATORS, IN)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str  # the value for STRING (escapes resolved), else the source text
    position: int  # 1-based character offset of its first character
    source: str  # as written, for messages

    def describe(self) -> str:
        return "end of filter" if self.kind == END else repr(self.source)


@dataclass(frozen=True)
class ParsedFilter:
    conditions: tuple[Condition, ...]
    # The same filter in a canonical form (term order, spacing, keyword case,
    # duplicate IN values and time notation do not change it): what a page
    # token is bound to.
    canonical: str


def _error(position: int, message: str) -> InvalidArgument:
    return InvalidArgument("filter", f"at position {position}: {message}")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def tokenize(text: str) -> Iterator[Token]:
    """Tokens one at a time, so that the parser reports whichever problem
    comes first in the text, be it a bad character or a misplaced token."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        start = i
        if ch == '"':
            value, i = _string(text, i)
            yield Token(STRING, value, start + 1, text[start:i])
        elif match := _NAME.match(text, i):
            i = match.end()
            yield Token(FIELD, match.group(), start + 1, match.group())
        elif text.startswith(("!=", "<=", ">="), i):
            i += 2
            yield Token(OPERATOR, text[start:i], start + 1, text[start:i])
        elif ch in "=<>":
            i += 1
            yield Token(OPERATOR, ch, start + 1, ch)
        elif ch in "(),":
            i += 1
            yield Token(ch, ch, start + 1, ch)
        elif ch == "'":
            raise _error(start + 1, "values must be in double quotes (\"...\"), not single quotes")
        elif ch == "!":
            raise _error(start + 1, "expected '!=' (a lone '!' is not an operator)")
        else:
            raise _error(
                start + 1,
                f"unexpected character {ch!r}; expected a field name, an operator, "
                "a double-quoted value, '(', ')', ',' or AND",
            )
    yield Token(END, "", n + 1, "")


def _string(text: str, start: int) -> tuple[str, int]:
    """The value of the quoted string at ``start`` and the index after it."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= len(text):
                break
            escaped = text[i + 1]
            if escaped not in '"\\':
                raise _error(
                    i + 1, f"unknown escape '\\{escaped}'; expected '\\\"' or '\\\\' inside a value"
                )
            out.append(escaped)
            i += 2
            continue
        out.append(ch)
        i += 1
    raise _error(start + 1, "unterminated value: expected a closing '\"'")


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self._next: Token | None = None

    @property
    def token(self) -> Token:
        """The next token, read only when the parser looks at it."""
        if self._next is None:
            self._next = next(self.tokens)
        return self._next

    def take(self) -> Token:
        token = self.token
        if token.kind != END:
            self._next = None
        return token

    def keyword(self, word: str) -> bool:
        return self.token.kind == FIELD and self.token.text.upper() == word

    def parse(self) -> tuple[Condition, ...]:
        if self.token.kind == END:
            return ()
        terms = [self.term()]
        while self.token.kind != END:
            if not self.keyword("AND"):
                hint = (
                    " (only AND joins terms; OR and NOT are not supported)"
                    if self.keyword("OR") or self.keyword("NOT")
                    else ""
                )
                raise _error(
                    self.token.position,
                    f"expected AND or the end of the filter, found {self.token.describe()}{hint}",
                )
            self.take()
            terms.append(self.term())
        return tuple(terms)

    def term(self) -> Condition:
        token = self.take()
        if token.kind != FIELD or token.text.upper() in ("AND", "IN"):
            raise _error(
                token.position,
                f"expected a field name ({', '.join(listing.FIELDS)}), found {token.describe()}",
            )
        field = token.text
        if field not in listing.FIELDS:
            raise _error(
                token.position,
                f"unknown field {field!r}; expected one of {', '.join(listing.FIELDS)}",
            )
        allowed = _operators_of(field)
        operator = self.token
        if operator.kind == OPERATOR:
            self.take()
            if operator.text not in allowed:
                raise _error(
                    operator.position,
                    f"operator {operator.text!r} does not apply to {field}; "
                    f"expected one of {', '.join(allowed)}",
                )
            value = self.value(field)
            return Condition(field, operator.text, (value,))
        if self.keyword("IN"):
            self.take()
            if IN not in allowed:
                raise _error(
                    operator.position,
                    f"operator IN does not apply to {field}; expected one of {', '.join(allowed)}",
                )
            return Condition(field, IN, self.value_list(field))
        raise _error(
            operator.position,
            f"expected an operator after {field} ({', '.join(allowed)}), "
            f"found {operator.describe()}",
        )

    def value_list(self, field: str) -> tuple[int | str, ...]:
        self.expect(LPAREN, "'(' to open the IN list")
        values = [self.value(field)]
        while self.token.kind == COMMA:
            self.take()
            values.append(self.value(field))
        self.expect(RPAREN, "',' or ')' to close the IN list")
        return tuple(values)

    def expect(self, kind: str, what: str) -> Token:
        if self.token.kind != kind:
            raise _error(self.token.position, f"expected {what}, found {self.token.describe()}")
        return self.take()

    def value(self, field: str) -> int | str:
        token = self.token
        if token.kind != STRING:
            hint = f" (write \"{token.text}\")" if token.kind == FIELD else ""
            raise _error(
                token.position,
                f"expected a double-quoted value for {field}, found {token.describe()}{hint}",
            )
        self.take()
        if field in ENUMS:
            return _enum_value(field, token)
        if field in listing.TIME_FIELDS:
            return _time_value(field, token)
        return token.text


def _enum_value(field: str, token: Token) -> int:
    enum = ENUMS[field]
    member = enum.__members__.get(token.text)
    if member is None:
        raise _error(
            token.position,
            f"unknown {field} {token.text!r}; expected one of {', '.join(enum.__members__)}",
        )
    return int(member.value)


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,  # digits are 0-9 only
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time_value(field: str, token: Token) -> int:
    """An RFC 3339 time as nanoseconds since the Unix epoch."""
    expected = (
        'expected an RFC 3339 time such as "2026-01-01T00:00:00Z" '
        'or "2026-01-01T03:00:00.5+03:00"'
    )
    match = _RFC3339.fullmatch(token.text)
    if match is None:
        raise _error(token.position, f"{field}: {token.text!r} is not a time; {expected}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if fraction is not None and len(fraction) > 9:
        raise _error(
            token.position, f"{field}: at most 9 fractional digits (nanoseconds), got {len(fraction)}"
        )
    try:
        if offset in ("Z", "z"):
            zone = UTC
        else:
            hours, minutes = int(offset[1:3]), int(offset[4:6])
            if hours > 23 or minutes > 59:
                raise ValueError(f"offset {offset} is out of range")
            sign = -1 if offset[0] == "-" else 1
            zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=zone
        )
        delta = moment - _EPOCH
    except (ValueError, OverflowError) as e:
        raise _error(token.position, f"{field}: {token.text!r} is not a valid time ({e}); {expected}") from None
    seconds = delta.days * 86_400 + delta.seconds
    nanos = int((fraction or "").ljust(9, "0")) if fraction else 0
    return seconds * 1_000_000_000 + nanos


def parse(text: str) -> ParsedFilter:
    conditions = _Parser(text).parse()
    return ParsedFilter(conditions, canonical(conditions))


def canonical(conditions: tuple[Condition, ...]) -> str:
    terms = set()
    for c in conditions:
        values = sorted(set(c.values), key=lambda v: (str(type(v)), v))
        op = "=" if c.op == IN and len(values) == 1 else c.op
        terms.add(json.dumps([c.field, op, values]))
    return "[" + ",".join(sorted(terms)) + "]"
