"""The part of Elasticsearch's query-string syntax that the emulator's ticket search understands.

Zammad hands ``GET /tickets/search?query=...`` to Elasticsearch as a
``query_string`` query with ``default_operator: AND``. This module parses the
subset the Zammad adapter sends, and evaluates it the way Lucene's classic
query parser does, clause flags included:

- ``field:value``, ``field:"quoted value"``, ``field:(a OR b)`` (a group whose
  bare terms belong to ``field``), ``field:*`` (the field has any value), and
  ``*`` / ``?`` wildcards inside a value;
- ranges: ``field:[low TO high]`` (inclusive), ``field:{low TO high}``
  (exclusive), ``*`` for an open end, and ``field:>=value`` / ``>`` / ``<=`` / ``<``;
- ``*:*`` (every document), parentheses, ``AND`` / ``OR`` / ``NOT`` (also
  ``&&`` / ``||`` / ``!``) and the ``+`` / ``-`` prefixes, backslash escapes.

Lucene turns a sequence into MUST / SHOULD / MUST_NOT clauses and does *not*
apply boolean precedence: ``NOT a OR b`` means "b and not a", exactly as in
Elasticsearch. The emulator keeps that behaviour on purpose, so a query that
would be wrong against a real Zammad is also wrong here. Elasticsearch adds a
match-all to a group that has only MUST_NOT clauses; so does this module.

Values compare case-insensitively (Zammad's tags and names are analysed as
keywords in lower case). Date fields compare as instants; id fields as
integers. A field outside ``TICKET_FIELDS`` is an error, so a query drifting
beyond the documented subset fails loudly instead of matching nothing.

A search evaluates the tree once per ticket, and a poll reads several pages of
a store with thousands of tickets, so each node converts its operands once,
when it is built, and a group sorts its clauses by occurrence up front.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

# Fields of a ticket document, and how their values compare.
DATE_FIELDS = frozenset({"created_at", "updated_at"})
INTEGER_FIELDS = frozenset(
    {
        "id",
        "group_id",
        "state_id",
        "priority_id",
        "owner_id",
        "customer_id",
        "created_by_id",
        "updated_by_id",
    }
)
TEXT_FIELDS = frozenset(
    {
        "number",
        "title",
        "tags",
        "state",
        "state.name",
        "group",
        "group.name",
        "priority",
        "priority.name",
        "owner.login",
        "customer.login",
    }
)
TICKET_FIELDS = DATE_FIELDS | INTEGER_FIELDS | TEXT_FIELDS

Document = Mapping[str, Sequence[object]]


class QueryError(ValueError):
    """The query is malformed or leaves the supported subset."""


class Occur(Enum):
    MUST = "must"
    SHOULD = "should"
    MUST_NOT = "must_not"


class Node:
    def matches(self, doc: Document) -> bool:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class MatchAll(Node):
    def matches(self, doc: Document) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Term(Node):
    field: str
    value: str
    # How to compare, and the value converted for it: set once in __post_init__.
    _how: str = dataclasses.field(init=False, repr=False, compare=False)
    _wanted: object = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        how: str
        wanted: object
        if self.value == "*":
            how, wanted = "any", None
        elif self.field in INTEGER_FIELDS:
            how, wanted = "equal", _as_int(self.value)
        elif self.field in DATE_FIELDS:
            how, wanted = "equal", _as_datetime(self.value)
        elif "*" in self.value or "?" in self.value:
            how, wanted = "pattern", self.value.lower()
        else:
            how, wanted = "text", self.value.lower()
        object.__setattr__(self, "_how", how)
        object.__setattr__(self, "_wanted", wanted)

    def matches(self, doc: Document) -> bool:
        values = doc.get(self.field, ())
        how, wanted = self._how, self._wanted
        if how == "text":
            # Plain loops, not any() over a generator: this runs per ticket per search.
            for v in values:  # noqa: SIM110
                if str(v).lower() == wanted:
                    return True
            return False
        if how == "equal":
            return wanted in values
        if how == "pattern":
            return any(fnmatch.fnmatchcase(str(v).lower(), str(wanted)) for v in values)
        return bool(values)


@dataclass(frozen=True, slots=True)
class Range(Node):
    field: str
    low: str | None
    high: str | None
    include_low: bool = True
    include_high: bool = True
    _low: object = dataclasses.field(init=False, repr=False, compare=False)
    _high: object = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        convert = _converter(self.field)
        object.__setattr__(self, "_low", convert(self.low) if self.low is not None else None)
        object.__setattr__(self, "_high", convert(self.high) if self.high is not None else None)

    def matches(self, doc: Document) -> bool:
        low: Any = self._low
        high: Any = self._high
        for value in doc.get(self.field, ()):
            v: Any = value
            if low is not None and (v < low or (v == low and not self.include_low)):
                continue
            if high is not None and (v > high or (v == high and not self.include_high)):
                continue
            return True
        return False


@dataclass(frozen=True, slots=True)
class Bool(Node):
    clauses: tuple[tuple[Occur, Node], ...]
    _must: tuple[Node, ...] = dataclasses.field(init=False, repr=False, compare=False)
    _should: tuple[Node, ...] = dataclasses.field(init=False, repr=False, compare=False)
    _must_not: tuple[Node, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, occur in (("_must", Occur.MUST), ("_should", Occur.SHOULD)):
            object.__setattr__(self, name, tuple(n for o, n in self.clauses if o is occur))
        must_not = tuple(n for o, n in self.clauses if o is Occur.MUST_NOT)
        object.__setattr__(self, "_must_not", must_not)

    def matches(self, doc: Document) -> bool:
        for node in self._must_not:
            if node.matches(doc):
                return False
        for node in self._must:
            if not node.matches(doc):
                return False
        if self._must or not self._should:
            # SHOULD clauses are optional beside a MUST; a purely negative group
            # matches everything else (Elasticsearch adds the match-all).
            return True
        for node in self._should:  # noqa: SIM110 (see Term.matches)
            if node.matches(doc):
                return True
        return False


def parse(text: str) -> Node:
    """Parse a query string into a tree whose ``matches(doc)`` says whether a ticket matches."""
    if not text or not text.strip():
        raise QueryError("empty query")
    parser = _Parser(_tokenize(text))
    node = parser.query(default_field=None, nested=False)
    if parser.peek() is not None:
        raise QueryError("unbalanced parentheses")
    return node


# -- tokens ----------------------------------------------------------------------------


class _Kind(Enum):
    LPAREN = "("
    RPAREN = ")"
    AND = "AND"
    OR = "OR"
    NOT = "NOT"
    PLUS = "+"
    WORD = "word"
    QUOTED = "quoted"
    RANGE = "range"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    text: str = ""
    field: str | None = None  # for a WORD written as ``field:rest``


_OPERATORS = {"AND": _Kind.AND, "&&": _Kind.AND, "OR": _Kind.OR, "||": _Kind.OR, "NOT": _Kind.NOT}
_WORD_END = set(' \t\r\n()"[{')


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            tokens.append(_Token(_Kind.LPAREN if ch == "(" else _Kind.RPAREN))
            i += 1
        elif ch == '"':
            value, i = _read_quoted(text, i)
            tokens.append(_Token(_Kind.QUOTED, value))
        elif ch in "[{":
            end = _find_range_end(text, i)
            tokens.append(_Token(_Kind.RANGE, text[i : end + 1]))
            i = end + 1
        elif ch in "+-!" and i + 1 < n and not text[i + 1].isspace():
            tokens.append(_Token(_Kind.PLUS if ch == "+" else _Kind.NOT))
            i += 1
        else:
            chars: list[tuple[str, bool]] = []
            while i < n and text[i] not in _WORD_END:
                if text[i] == "\\" and i + 1 < n:
                    chars.append((text[i + 1], True))
                    i += 2
                else:
                    chars.append((text[i], False))
                    i += 1
            raw = "".join(c for c, _ in chars)
            if raw in _OPERATORS and not any(escaped for _, escaped in chars):
                tokens.append(_Token(_OPERATORS[raw]))
                continue
            colon = next((k for k, (c, esc) in enumerate(chars) if c == ":" and not esc), None)
            if colon is None:
                tokens.append(_Token(_Kind.WORD, raw))
            else:
                field = "".join(c for c, _ in chars[:colon])
                rest = "".join(c for c, _ in chars[colon + 1 :])
                tokens.append(_Token(_Kind.WORD, rest, field=field))
    return tokens


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise QueryError("unterminated quote")


def _find_range_end(text: str, start: int) -> int:
    for i in range(start + 1, len(text)):
        if text[i] in "]}":
            return i
    raise QueryError("unterminated range")


# -- parser ----------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._pos = 0

    def peek(self) -> _Token | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _next(self) -> _Token:
        token = self.peek()
        if token is None:
            raise QueryError("unexpected end of query")
        self._pos += 1
        return token

    def query(self, *, default_field: str | None, nested: bool) -> Node:
        clauses: list[tuple[Occur, Node]] = []
        conj: _Kind | None = None
        while (token := self.peek()) is not None:
            if token.kind is _Kind.RPAREN:
                if not nested:
                    raise QueryError("unbalanced parentheses")
                break
            if token.kind in (_Kind.AND, _Kind.OR):
                if conj is not None or not clauses:
                    raise QueryError(f"misplaced {token.kind.value}")
                conj = token.kind
                self._pos += 1
                continue
            modifier: _Kind | None = None
            if token.kind in (_Kind.NOT, _Kind.PLUS):
                modifier = token.kind
                self._pos += 1
            node = self._clause(default_field)
            _add_clause(clauses, conj, modifier, node)
            conj = None
        if conj is not None:
            raise QueryError("query ends with an operator")
        if not clauses:
            raise QueryError("empty group")
        return Bool(tuple(clauses))

    def _clause(self, default_field: str | None) -> Node:
        token = self._next()
        if token.kind is _Kind.LPAREN:
            node = self.query(default_field=default_field, nested=True)
            self._expect_rparen()
            return node
        if token.kind is _Kind.QUOTED:
            return Term(_field(default_field), token.text)
        if token.kind is _Kind.RANGE:
            return _range(_field(default_field), token.text)
        if token.kind is not _Kind.WORD:
            raise QueryError(f"unexpected {token.kind.value}")
        if token.field is None:
            return _value(_field(default_field), token.text)
        if token.field == "*" and token.text == "*":
            return MatchAll()
        field = _field(token.field)
        if token.text:
            return _value(field, token.text)
        following = self._next()
        if following.kind is _Kind.LPAREN:
            node = self.query(default_field=field, nested=True)
            self._expect_rparen()
            return node
        if following.kind is _Kind.QUOTED:
            return Term(field, following.text)
        if following.kind is _Kind.RANGE:
            return _range(field, following.text)
        raise QueryError(f"field {field} has no value")

    def _expect_rparen(self) -> None:
        token = self._next()
        if token.kind is not _Kind.RPAREN:
            raise QueryError("expected )")


def _add_clause(
    clauses: list[tuple[Occur, Node]], conj: _Kind | None, modifier: _Kind | None, node: Node
) -> None:
    """Lucene's classic clause rules for ``default_operator: AND``."""
    if clauses and conj is not None:
        occur, previous = clauses[-1]
        if occur is not Occur.MUST_NOT:
            clauses[-1] = (Occur.MUST if conj is _Kind.AND else Occur.SHOULD, previous)
    prohibited = modifier is _Kind.NOT
    required = not prohibited and conj is not _Kind.OR
    if prohibited:
        clauses.append((Occur.MUST_NOT, node))
    elif required:
        clauses.append((Occur.MUST, node))
    else:
        clauses.append((Occur.SHOULD, node))


def _field(name: str | None) -> str:
    if name is None:
        raise QueryError("a term without a field is outside the supported subset")
    if name not in TICKET_FIELDS:
        raise QueryError(f"field {name!r} is outside the supported subset")
    return name


def _value(field: str, text: str) -> Node:
    for prefix, low_side, inclusive in ((">=", True, True), ("<=", False, True)):
        if text.startswith(prefix):
            return _comparison(field, text[2:], low_side, inclusive)
    for prefix, low_side in ((">", True), ("<", False)):
        if text.startswith(prefix):
            return _comparison(field, text[1:], low_side, False)
    return Term(field, text)


def _comparison(field: str, value: str, low_side: bool, inclusive: bool) -> Node:
    value = value.strip('"')
    _converter(field)(value)  # validate now, not at match time
    if low_side:
        return Range(field, value, None, include_low=inclusive)
    return Range(field, None, value, include_high=inclusive)


def _range(field: str, raw: str) -> Node:
    inner = raw[1:-1].split()
    if len(inner) != 3 or inner[1] != "TO":
        raise QueryError("a range is [low TO high]")
    low = None if inner[0] == "*" else inner[0].strip('"')
    high = None if inner[2] == "*" else inner[2].strip('"')
    convert = _converter(field)
    for bound in (low, high):
        if bound is not None:
            convert(bound)
    return Range(field, low, high, include_low=raw[0] == "[", include_high=raw[-1] == "]")


def _converter(field: str) -> Callable[[str], object]:
    if field in DATE_FIELDS:
        return _as_datetime
    if field in INTEGER_FIELDS:
        return _as_int
    return str.lower


def _as_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise QueryError(f"not a number: {value!r}") from None


def _as_datetime(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"not a date: {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
