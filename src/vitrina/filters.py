"""Metadata filters (``--where``): what ``KEY OP VALUE`` means, defined once.

Every search index (exact, approximate, Qdrant) must give the same answers; the reference
semantics are the pure functions here (``normal_values`` + ``matches``), which the congruence
tests run against each index. The embedded store keeps the output of ``normal_values`` in an
indexed table so that a filter is SQL over an index, not Python over every item.

A metadata value becomes zero or more *normal values*: a list contributes each element (nested
lists are flattened), ``None`` contributes nothing, anything else its text. Each normal value has
``text`` (casefolded), ``num`` (the first number in the text, for ordering: "ca. 1820" -> 1820,
"[1754?]" -> 1754, "1754-03-02" -> 1754; in a day-month-year date the year: "15. September 1859"
and "15.09.1859" -> 1859, so ``date>=1800`` means the year) and ``val`` (the whole text as a number, for equality: "12.0" = 12).

    =, !=   some value equals the operand (casefolded text, or the same number);
            != is the negation: no value equals (so an item without the key matches !=)
    ~       some value contains the operand (casefolded)
    < <= > >=   with a number operand: some value's ``num`` compares; with text: its text does
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from .errors import QueryError

OPS = ("=", "!=", "<", "<=", ">", ">=", "~")
MAX_FILTERS = 32  # per query: each filter is an index lookup; thousands are a denial of service
MAX_DEPTH = 32  # nested lists deeper than this are stored as text (a value like "[[[[..." cannot recurse forever)
MAX_VALUES = 1000  # normal values kept per key of one item
MAX_TEXT = 10_000  # characters of a value's text kept for matching (a whole OCR page fits)
MAX_OPERAND = 1000
# Columns of the item itself, not metadata keys; they win over metadata and tags of the same name.
COLUMNS = ("id", "source", "image", "context")

_FILTER = re.compile(r"^\s*([^<>=!~\s]+)\s*(>=|<=|!=|=|<|>|~)\s*(.*?)\s*$", re.S)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_OPERAND_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


_MONTH = (r"(?:jan|feb|f[eé]v|m[aä]r|apr|avr|ma[iy]|juni?|juil|jul|aug|ao[uû]|sep|o[ck]t|nov|de[csz]|d[eé]c|gen|giu|lug|ago|set|ott|dic|"
          r"ene|abr|mei|maj|okt|dez)[a-zäéû]*\.?")  # fmt: skip
# A day-month-year date, whose first number is the day, not the year.
_DAY_FIRST = re.compile(
    rf"^\D*\d{{1,2}}(?:\.|st|nd|rd|th|er)?\s*(?:[./-]\s*\d{{1,2}}\s*[./-]|[\s,.-]*{_MONTH}[\s,.-]*)\s*(\d{{3,4}})(?!\d)",
    re.I,
)
_MONTH_FIRST = re.compile(rf"^\W*{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(\d{{3,4}})(?!\d)", re.I)
_YEAR = re.compile(r"(?<![\d.])(1\d{3}|20\d{2}|[5-9]\d{2})(?![\d])")
_CENTURY = re.compile(r"(?<!\d)(1\d|20)(?:--|uu|xx|\?\?)")
_RANGE = re.compile(r"(?<!\d)(\d{3,4})\??\]?\s*(?:-|–|—|/|to|til|bis|à)\s*\[?(\d{2,4})(?!\d)")


def year_range(text: str) -> tuple[int, int] | None:
    """The year (first, last) a free-text date names: "ca. 1820" -> (1820, 1820), "[1754?]" ->
    (1754, 1754), "15. September 1859" -> (1859, 1859), "1750-1760" -> (1750, 1760),
    "1750-60" -> (1750, 1760), "[18--]" -> (1800, 1899); None when it names no year."""
    t = text.casefold()
    m = _RANGE.search(t)
    if m:
        first, last = m.group(1), m.group(2)
        if len(last) < len(first):  # "1750-60"
            last = first[: len(first) - len(last)] + last
        a, b = int(first), int(last)
        if 500 <= a <= b <= 2100:
            return a, b
    m = _DAY_FIRST.match(t) or _MONTH_FIRST.match(t)
    if m:
        return int(m.group(1)), int(m.group(1))
    m = _YEAR.search(t)
    if m:
        return int(m.group(1)), int(m.group(1))
    m = _CENTURY.search(t)
    if m:
        return int(m.group(1)) * 100, int(m.group(1)) * 100 + 99
    return None


class NormalValue(NamedTuple):
    text: str
    num: float | None
    val: float | None
    shown: str  # the value as written (for facet menus); matching never looks at it


@dataclass(frozen=True)
class Filter:
    """``key op value`` on item metadata (or a classifier tag, or one of ``COLUMNS``)."""

    key: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise QueryError(f"Unknown filter operator {self.op!r}; use one of {' '.join(OPS)}.")
        if not self.key or len(self.key) > 200 or len(self.value) > MAX_OPERAND:
            raise QueryError(
                f"Filter {self.key[:40]!r}{self.op}...: keys are 1-200 characters and values at most {MAX_OPERAND}."
            )

    @classmethod
    def parse(cls, text: str) -> Filter:
        match = _FILTER.match(text)
        if not match:
            raise QueryError(
                f"Cannot read filter {text[:100]!r}: write KEY OP VALUE, e.g. 'date>=1700', 'place=Boston', 'title~harbour'."
            )
        return cls(*match.groups())

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"

    @property
    def operand_number(self) -> float | None:
        """The operand as a number when ordering compares numbers ('1700' yes, 'abc' no)."""
        return float(self.value) if _OPERAND_NUMBER.fullmatch(self.value.strip()) else None

    @property
    def operand_val(self) -> float | None:
        return _as_number(self.value)


def parse_filters(where: Any) -> tuple[Filter, ...]:
    """Strings or ``Filter`` objects -> filters, refusing more than ``MAX_FILTERS``."""
    filters = tuple(
        f if isinstance(f, Filter) else Filter.parse(f) for f in where if isinstance(f, Filter) or str(f).strip()
    )
    if len(filters) > MAX_FILTERS:
        raise QueryError(f"{len(filters)} filters in one query; at most {MAX_FILTERS} are allowed.")
    return filters


def normal_value(value: Any) -> NormalValue:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    shown = text[:MAX_TEXT]
    text = shown.casefold()
    found = _NUMBER.search(text)
    num = float(found.group()) if found else None
    short = found is not None and len(found.group().split(".")[0].lstrip("-")) <= 2
    day_first = (_DAY_FIRST.match(text[:200]) or _MONTH_FIRST.match(text[:200])) if short else None
    if day_first:
        num = float(day_first.group(1))
    return NormalValue(text, num, float(value) if isinstance(value, bool) else _as_number(text), shown)


def normal_values(value: Any) -> list[NormalValue]:
    """The normal values of one metadata value (see the module docstring)."""
    return [normal_value(v) for v in _flatten(value, 0)][:MAX_VALUES]


def _flatten(value: Any, depth: int) -> Iterator[Any]:
    if value is None:
        return
    if isinstance(value, list) and depth < MAX_DEPTH:
        for v in value:
            yield from _flatten(v, depth + 1)
    else:
        yield value


def _as_number(text: str) -> float | None:
    try:
        number = float(text)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def value_matches(v: NormalValue, f: Filter) -> bool:
    """Whether one normal value satisfies ``f`` (for != use ``matches``, which negates =)."""
    operand = f.value.casefold()
    if f.op == "~":
        return operand in v.text
    if f.op in ("=", "!="):
        want = f.operand_val
        return v.text == operand or (want is not None and v.val is not None and v.val == want)
    number = f.operand_number
    a: Any
    b: Any
    if number is not None:
        if v.num is None:
            return False
        a, b = v.num, number
    else:
        a, b = v.text, operand
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[f.op]


def matches(values: list[NormalValue], f: Filter) -> bool:
    """The reference: does an item whose value of ``f.key`` normalises to ``values`` pass ``f``?"""
    hit = any(value_matches(v, f) for v in values)
    return not hit if f.op == "!=" else hit


def item_values(
    item_id: str, source: str, image: str, context: str, metadata: dict[str, Any], tags: dict[str, str], key: str
) -> list[NormalValue]:
    """The normal values an item has for ``key``: a column, else a tag, else metadata."""
    if key in COLUMNS:
        return normal_values({"id": item_id, "source": source, "image": image, "context": context}[key])
    if key in tags:
        return normal_values(tags[key])
    return normal_values(metadata.get(key))
