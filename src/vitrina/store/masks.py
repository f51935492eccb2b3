"""Filters as masks over item rids, each filter one indexed lookup in ``item_values``, and the
facets (common values, numeric ranges) the same table answers."""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..filters import COLUMNS, Filter, matches, normal_values
from .sql import ints, placeholders

__all__ = ["MASKS_KEPT", "Masks", "match_column"]

MASKS_KEPT = 4  # filter masks cached per connection (a bool per item each: 10 MB at 10M items)


class Masks:
    """Filter masks of one store connection, the last few kept while nothing changed."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self._kept: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()

    def data_version(self) -> int:
        """Changes whenever another connection commits (for caches of what this one reads)."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def filter_mask(self, filters: Sequence[Filter]) -> np.ndarray:
        """A boolean array indexed by item ``rid``: which items pass every filter. It has one spare
        slot at the end, always False, so that ``mask[-1]`` (a dead vector row) never passes.

        Each filter is one indexed SQL lookup; filters on a key that no item has several values
        of are ANDed into one lookup ("date>=1700 AND date<1800" is one range scan).

        The last few masks are kept (read-only) while nothing changed: paging, or new queries under
        the same filters, cost no lookups (~100 ms for 10M items). "Nothing changed" is this
        connection's own writes (``total_changes``) and other connections' commits (``data_version``)."""
        key = (tuple((f.key, f.op, f.value) for f in filters), self.db.total_changes, self.data_version())
        cached = self._kept.get(key)
        if cached is not None:
            self._kept.move_to_end(key)
            return cached
        mask = self._compute(filters)
        mask.flags.writeable = False
        self._kept[key] = mask
        while len(self._kept) > MASKS_KEPT:
            self._kept.popitem(last=False)
        return mask

    def mask_size(self) -> int:
        """Length of a mask as of now: one slot per rid up to the largest, plus the spare slot."""
        return int(self.db.execute("SELECT coalesce(max(rid), 0) FROM items").fetchone()[0]) + 2

    def _compute(self, filters: Sequence[Filter]) -> np.ndarray:
        size = self.mask_size()
        mask = np.ones(size, bool)
        single = {r[0] for r in self.db.execute("SELECT key FROM value_keys WHERE multi = 0")}
        groups: dict[str, list[Filter]] = {}
        for f in filters:
            if f.op != "!=" and f.key in single and f.key not in COLUMNS:
                groups.setdefault(f.key, []).append(f)
            else:
                groups.setdefault(f"\0{len(groups)}", []).append(f)
        for group in groups.values():
            passing = np.zeros(size, bool)
            passing[self.matching_rids(group, size)] = True
            mask &= ~passing if group[0].op == "!=" else passing
        mask[-1] = False
        return mask

    def matching_rids(self, group: Sequence[Filter], size: int | None = None) -> np.ndarray:
        """Items with a value satisfying every filter of ``group`` (one filter, or several on one
        single-valued key); for != : items with a value equal to the operand (the caller negates).
        ``size``: a mask size read earlier (items added since are left out)."""
        size = self.mask_size() if size is None else size
        f = group[0]
        if f.key in COLUMNS:  # rare: a Python test per item (these columns are not in item_values)
            sql = f"SELECT group_concat(rid) FROM items WHERE vitrina_match({f.key}, ?, ?)"
            rids = ints(self.db.execute(sql, ("=" if f.op == "!=" else f.op, f.value)).fetchone()[0])
        else:
            conditions, params = [], []
            for g in group:
                sql, p = _condition(g)
                conditions.append(sql)
                params += p
            query = f"SELECT group_concat(rid) FROM item_values WHERE key = ? AND {' AND '.join(conditions)}"
            rids = ints(self.db.execute(query, (f.key, *params)).fetchone()[0])
        return rids[rids < size - 1]  # an item added since ``size`` was read waits for the next query

    def facets(self, keys: Sequence[str] | None = None, top: int = 50) -> dict[str, Any]:
        """Metadata keys with their most common values and numeric ranges (e.g. date), from the
        normalised values: {key: {"distinct", "values": [{"value", "count"}], "min", "max"}}."""
        where, params = "", []
        if keys:
            where, params = f"WHERE key IN ({placeholders(len(keys))})", list(keys)
        stats = self.db.execute(
            f"SELECT key, count(DISTINCT text), count(num), count(*), min(num), max(num) FROM item_values {where} GROUP BY key ORDER BY key",
            params,
        ).fetchall()
        out: dict[str, Any] = {}
        for key, distinct, numbers, total, low, high in stats:
            entry: dict[str, Any] = {"distinct": distinct}
            if numbers >= 0.8 * total:
                entry["min"], entry["max"] = low, high
            if distinct <= top:
                rows = self.db.execute(
                    "SELECT coalesce(max(shown), text), count(DISTINCT rid) AS n FROM item_values WHERE key = ? GROUP BY text ORDER BY n DESC, text",
                    (key,),
                )
                entry["values"] = [{"value": text, "count": n} for text, n in rows]
            out[key] = entry
        return out


def _condition(f: Filter) -> tuple[str, list[Any]]:
    """SQL over ``item_values`` for one value satisfying ``f`` (for != : equal to its operand)."""
    operand = f.value.casefold()
    if f.op in ("=", "!="):
        if f.operand_val is not None:
            return "(text = ? OR val = ?)", [operand, f.operand_val]
        return "text = ?", [operand]
    if f.op == "~":
        return "instr(text, ?) > 0", [operand]
    if f.operand_number is not None:
        return f"num {f.op} ?", [f.operand_number]
    return f"text {f.op} ?", [operand]


def match_column(value: Any, op: str, operand: str) -> int:
    """SQL function ``vitrina_match`` for filters on item columns (id, source, image, context):
    filters.py semantics."""
    return int(matches(normal_values(value), Filter("column", op, operand)))
