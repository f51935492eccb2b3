"""A read-only, typed view of one space for search backends (exact, ANN, Qdrant, the map).

Backends see rows and items through it and never the SQL underneath: which item (by its integer
``rid``) each vector row belongs to (-1 for a dead row: the item was re-embedded or removed), the
mapped vectors of the committed rows, and the rows the filters allow. The row -> rid map is loaded
once and then extended as rows are appended, so a query costs the product and a top-k, plus an
indexed SQL lookup per filter (see ``Masks.filter_mask``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import StoreCorrupt
from ..filters import Filter
from ..vectors import VectorFile
from .items import Items
from .masks import Masks
from .spaces import Space, Spaces

__all__ = ["SpaceSnapshot", "SpaceView", "VectorPoint"]


@dataclass(frozen=True)
class SpaceSnapshot:
    """One state of a space: its record, row -> rid map and mapped vectors, all of one generation."""

    space: Space
    rid_of_row: np.ndarray  # (rows,) int64, read-only: the item rid of each row, -1 for a dead row
    vectors: np.ndarray  # (rows, dim) float32, memory-mapped: do not keep past the next compaction
    file: VectorFile = field(repr=False)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """A copy of these rows (scattered reads: concurrent preads, not page faults through the map)."""
        return self.file.gather(rows)


@dataclass(frozen=True)
class VectorPoint:
    """A live vector with what a derived copy (Qdrant) stores beside it."""

    rid: int
    row: int
    id: str
    columns: dict[str, str]  # id, source, image, context: filterable item columns
    values: list[tuple[str, str, float | None, float | None]]  # (key, text, num, val): normal values
    box: tuple[int, int, int, int] | None = None  # a region's box (x, y, w, h); None for the whole image


# The latest row -> rid map of each space, shared by every store of the process: a server's
# worker threads each open the collection, and each would otherwise hold its own copy (8 bytes a
# row: 4.5 MB at 562,842 rows, 80 MB at 10M, per thread; issue 26). Read-only arrays; one entry
# per space, replaced when the space moves on.
_shared_rows: dict[tuple[str, str], tuple[tuple[str, int, int], np.ndarray, np.ndarray]] = {}
_shared_rows_lock = threading.Lock()


class SpaceView:
    """The public, read-only view of space ``name`` (``Store.space_view``)."""

    def __init__(self, spaces: Spaces, items: Items, masks: Masks, name: str):
        self._spaces, self._items, self._masks = spaces, items, masks
        self.name = name
        self._rid_of_row = np.zeros(0, np.int64)
        self._state: tuple[str, int, int] | None = None  # (generation, rows, live) it was built for
        self._region_rows = np.zeros(0, np.int64)  # rows that hold a region's vector, ascending

    def space(self) -> Space:
        """The space as committed now."""
        return self._spaces.space(self.name)

    def current(self) -> tuple[Space, np.ndarray]:
        """The space as committed now, and its row -> rid map (rebuilt or extended as needed)."""
        sp = self.space()
        state = (sp.generation, sp.rows, sp.live)
        if state != self._state:
            # Only committed states are shared: inside a write transaction the rows may yet roll back.
            committed = not self._spaces.db.in_transaction
            shared = _shared_rows.get(self._shared_key()) if committed else None
            if shared is not None and shared[0] == state:  # another store of this process built it
                self._state, self._rid_of_row, self._region_rows = shared
                return sp, self._rid_of_row
            loaded = len(self._rid_of_row)
            if self._state is None or sp.generation != self._state[0] or sp.rows < loaded:
                loaded = 0
            grown = np.full(sp.rows, -1, np.int64)
            grown[:loaded] = self._rid_of_row[:loaded]
            rows, rids = self._spaces.vector_rids(sp.name, loaded)
            keep = rows < sp.rows  # rows past the committed count belong to an unfinished write
            grown[rows[keep]] = rids[keep]
            # Region rows belong to their item too (its filters apply to them); kept apart in ``region_rows``.
            region_rows, region_rids = self._spaces.regions.rows(sp.name, loaded)
            keep = region_rows < sp.rows
            grown[region_rows[keep]] = region_rids[keep]
            old_regions = self._region_rows[self._region_rows < loaded] if loaded else np.zeros(0, np.int64)
            self._region_rows = np.union1d(old_regions, region_rows[keep])
            if sp.live < sp.rows:
                grown[self._spaces.dead_rows(sp.name)] = -1
            grown.flags.writeable = False
            self._rid_of_row, self._state = grown, state
            self._region_rows.flags.writeable = False
            if committed:
                with _shared_rows_lock:
                    _shared_rows[self._shared_key()] = (state, grown, self._region_rows)
        return sp, self._rid_of_row

    def _shared_key(self) -> tuple[str, str]:
        return (str(self._spaces.paths.db), self.name)

    def region_rows(self) -> np.ndarray:
        """The rows of the current state (``current``) that hold a region of an item, not its
        whole image (see vitrina.regions); live ones, ascending."""
        sp, rid_of_row = self.current()
        rows = self._region_rows
        return rows[rid_of_row[rows] >= 0] if len(rows) else rows

    def snapshot(self) -> SpaceSnapshot:
        """The space, its row -> rid map and its mapped vectors, all of one generation. A writer
        may compact (switch files) between reading the space and opening its file: read again."""
        for attempt in range(3):
            sp, rid_of_row = self.current()
            try:
                vf = self._spaces.vector_file(sp)
                return SpaceSnapshot(sp, rid_of_row, vf.matrix(sp.rows), vf)
            except (StoreCorrupt, FileNotFoundError):
                if attempt == 2 or self.space().generation == sp.generation:
                    raise
        raise AssertionError("unreachable")

    def file(self, sp: Space) -> VectorFile:
        """The vector file of this state of the space (mapped once per store connection)."""
        return self._spaces.vector_file(sp)

    def vectors(self, sp: Space) -> np.ndarray:
        """The mapped vectors of the committed rows of this state of the space."""
        return self._spaces.vector_file(sp).matrix(sp.rows)

    # -- rows, items and filters --------------------------------------------------------------

    def allowed(self, filters: Sequence[Filter], sp: Space, rid_of_row: np.ndarray) -> np.ndarray | None:
        """Which rows may appear: a bool per row (dead rows never), None when every row may."""
        if filters:
            return self._masks.filter_mask(filters)[rid_of_row]  # a dead row (-1) hits the spare False slot
        if sp.live < sp.rows:
            return rid_of_row >= 0
        return None

    def live_rows(self, sp: Space) -> np.ndarray:
        """A bool per committed row: True where it belongs to an item."""
        live = np.ones(sp.rows, bool)
        if sp.live < sp.rows:
            live[self._spaces.dead_rows(sp.name)] = False
        return live

    def dead_rows(self) -> np.ndarray:
        return self._spaces.dead_rows(self.name)

    def ids_of_rids(self, rids: Sequence[int]) -> dict[int, str]:
        return self._items.ids_of_rids(rids)

    def rids_of(self, ids: Sequence[str]) -> dict[str, int]:
        return self._items.rids_of(ids)

    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        """The current row of each of these items that has a vector in the space."""
        return self._spaces.rows_of(self.name, ids)

    def matching_rids(self, f: Filter) -> np.ndarray:
        """Rids of the items passing ``f`` alone (for != : those with a value equal to its operand)."""
        return self._masks.matching_rids([f])

    def points(self, sp: Space, batch: int = 256) -> Iterator[list[VectorPoint]]:
        """Every live vector of this state of the space with its item's columns and normal values,
        ``batch`` at a time: the whole images by rid, then the regions (``box`` set) by rid and row."""
        db = self._items.db
        wholes = db.execute(
            "SELECT v.rid, v.row, i.id, i.source, i.image, i.context, NULL, NULL, NULL, NULL FROM vectors v JOIN items i ON i.rid = v.rid WHERE v.space = ? AND v.row < ? ORDER BY v.rid",
            (sp.name, sp.rows),
        )
        yield from self._points(wholes, batch)
        regions = db.execute(
            "SELECT r.rid, r.row, i.id, i.source, i.image, i.context, r.x, r.y, r.w, r.h FROM regions r JOIN items i ON i.rid = r.rid WHERE r.space = ? AND r.row < ? ORDER BY r.rid, r.row",
            (sp.name, sp.rows),
        )
        yield from self._points(regions, batch)

    def _points(self, cursor: Any, batch: int) -> Iterator[list[VectorPoint]]:
        db = self._items.db
        while chunk := cursor.fetchmany(batch):
            values: dict[int, list[Any]] = {}
            rids = sorted({r[0] for r in chunk})
            for rid, key, text, num, val in db.execute(
                f"SELECT rid, key, text, num, val FROM item_values WHERE rid IN ({','.join('?' * len(rids))})", rids
            ):
                values.setdefault(rid, []).append((key, text, num, val))
            yield [
                VectorPoint(
                    rid,
                    row,
                    item_id,
                    {"id": item_id, "source": source, "image": image, "context": context},
                    values.get(rid, []),
                    None if x is None else (x, y, w, h),
                )  # fmt: skip
                for rid, row, item_id, source, image, context, x, y, w, h in chunk
            ]

    # -- what a derived copy (Qdrant sync) checks its points against, a page at a time -------------

    def value_keys(self) -> list[str]:
        """Every metadata key with a normal value (index seeks per key, not a scan of the values)."""
        rows = self._items.db.execute(
            "WITH RECURSIVE k(key) AS (SELECT min(key) FROM item_values UNION ALL "
            "SELECT (SELECT min(key) FROM item_values WHERE key > k.key) FROM k WHERE k.key IS NOT NULL) "
            "SELECT key FROM k WHERE key IS NOT NULL"
        )
        return [r[0] for r in rows]

    def live_rids(self, sp: Space, rids: Sequence[int]) -> set[int]:
        """Those of ``rids`` whose whole image has a live vector in this state of the space."""
        if not rids:
            return set()
        rows = self._items.db.execute(
            f"SELECT rid FROM items WHERE rid IN ({','.join('?' * len(rids))}) AND EXISTS "
            "(SELECT 1 FROM vectors v WHERE v.space = ? AND v.item_id = items.id AND v.row < ?)",
            (*rids, sp.name, sp.rows),
        )
        return {r[0] for r in rows}

    def region_boxes(self, sp: Space, rids: Sequence[int]) -> dict[int, list[tuple[int, int, int, int]]]:
        """The live regions' boxes of each of ``rids``, in row order (as ``points`` yields them)."""
        out: dict[int, list[tuple[int, int, int, int]]] = {}
        if not rids:
            return out
        rows = self._items.db.execute(
            f"SELECT rid, x, y, w, h FROM regions WHERE space = ? AND row < ? AND rid IN ({','.join('?' * len(rids))}) ORDER BY rid, row",
            (sp.name, sp.rows, *rids),
        )
        for rid, x, y, w, h in rows:
            out.setdefault(rid, []).append((x, y, w, h))
        return out
