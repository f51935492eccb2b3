"""Collapsing region rows to items, above the index protocol, for every kind of index.

A space with regions (``vitrina.regions``) holds several rows per item: the whole image and up to
``cap`` boxes. An index ranks rows and names each by its item, so an item can come back several
times. ``RegionIndex`` wraps any ``SearchIndex`` (exact, ANN, Qdrant) and answers in items:

- an item's score is the best score of its rows (the whole image or any of its regions): a detail
  that matches well ranks its item, and an item whose whole image matches best keeps that score;
- it asks the index for enough rows that ``offset + limit`` items come back: the distinct items
  of the best ``k`` rows are the best items, in order, for any ``k`` (an item not among them has
  every row below all of theirs), so it asks for a few rows per wanted item and asks again with
  four times as many for the queries that came back short, up to the bound where it cannot be
  short: with at most ``R`` rows per item, the best row of the ``n``-th best item is among the
  best ``n * R`` rows (every row above it belongs to one of the ``n - 1`` items above it), plus
  ``R`` rows per excluded item;
- filters are on item metadata and region rows belong to their item, so they apply to regions;
- ``considered`` and paging count items, not rows;
- each match carries the item's best region (box and score) when a region, not the whole
  image, gave the item its score: re-scored exactly from the stored vectors of the page's items.

Spaces without regions are passed through untouched.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from .filters import Filter
from .index import Matches, SearchIndex
from .records import Region
from .store import Store

__all__ = ["RegionIndex", "RegionMatches", "collapsing"]


@dataclass
class RegionMatches(Matches):
    """Matches of items, with the best region of those a region ranked (by item id)."""

    regions: dict[str, Region] = field(default_factory=dict)


_ROWS_PER_ITEM: dict[tuple[object, ...], int] = {}


def collapsing(index: SearchIndex, store: Store, space: str) -> SearchIndex:
    """``index`` itself for a space without regions, else a ``RegionIndex`` around it."""
    # the view's region rows are kept per state of the space (shared by a process's stores): no
    # count over the regions table on every search
    if isinstance(index, RegionIndex) or not store.space_view(space).region_rows().size:
        return index
    return RegionIndex(index, store, space)


class RegionIndex:
    """A ``SearchIndex`` over items whose rows include regions (see the module docstring)."""

    def __init__(self, index: SearchIndex, store: Store, space: str):
        self.index, self.store, self.space_name = index, store, space
        self.view = store.space_view(space)
        self.kind = index.kind

    def count(self) -> int:
        return self.index.count()

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self.index.vectors(ids)

    def matrix(self) -> tuple[list[str], np.ndarray]:
        return self.index.matrix()

    def rows_per_item(self) -> int:
        """The most rows of one item (whole image + regions): a GROUP BY over the regions, so kept
        per state of the space (a state is its generation, row and live counts: any change of its
        regions changes one of them)."""
        sp = self.view.space()
        key = (str(self.store.path), self.space_name, sp.generation, sp.rows, sp.live)
        if key not in _ROWS_PER_ITEM:
            if len(_ROWS_PER_ITEM) > 64:
                _ROWS_PER_ITEM.clear()
            _ROWS_PER_ITEM[key] = self.store.most_regions_per_item(self.space_name) + 1
        return _ROWS_PER_ITEM[key]

    def considered(self, filters: Sequence[Filter]) -> int:
        """Items passing the filters with a vector in the space."""
        sp, rid_of_row = self.view.current()
        whole = np.ones(sp.rows, bool)
        whole[self.view.region_rows()] = False
        allowed = self.view.allowed(filters, sp, rid_of_row)
        whole &= rid_of_row >= 0
        if allowed is not None:
            whole &= allowed
        return int(whole.sum())

    def search(
        self,
        queries: np.ndarray,
        *,
        filters: Sequence[Filter] = (),
        exclude: Sequence[Collection[str]] = (),
        limit: int = 10,
        offset: int = 0,
        min_score: float | None = None,
    ) -> list[Matches]:
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        per_item = self.rows_per_item()
        most_excluded = max((len(e) for e in exclude), default=0)
        wanted = offset + limit
        bound = (wanted + most_excluded) * per_item  # enough rows in the worst case (module docstring)
        # Most queries need far fewer: the distinct items of the best k rows are the best items, in
        # order, for any k. So ask for a few rows per wanted item and double only the short ones.
        rows = min(bound, max(2 * (wanted + most_excluded), 32))
        seen: list[dict[str, float]] = [{} for _ in queries]
        todo = list(range(len(queries)))
        while todo:
            sub = [exclude[c] if c < len(exclude) else () for c in todo]
            found = self.index.search(queries[todo], filters=filters, exclude=sub, limit=rows, min_score=min_score)
            short = []
            for col, m, banned in zip(todo, found, sub):
                items: dict[str, float] = {}
                for item_id, score in zip(m.ids, m.scores):
                    if item_id not in items and item_id not in banned:  # best first: an item's first row is its best
                        items[item_id] = score
                seen[col] = items
                if len(items) < wanted and len(m.ids) >= rows and rows < bound:  # more rows may hold more items
                    short.append(col)
            todo, rows = short, min(bound, 4 * rows)
        considered = self.considered(filters)
        out: list[Matches] = []
        for col in range(len(queries)):
            page = list(seen[col].items())[offset : offset + limit]
            out.append(
                RegionMatches(
                    ids=[i for i, _ in page],
                    scores=[s for _, s in page],
                    considered=considered,
                    regions=self.best_regions(queries[col], [i for i, _ in page]),
                )  # fmt: skip
            )
        return out

    def best_regions(self, query: np.ndarray, ids: Sequence[str]) -> dict[str, Region]:
        """The best region of each of these items, where it scores at least its whole image."""
        if not ids:
            return {}
        rids = self.store.rids_of(list(ids))
        regions = self.store.regions_of(self.space_name, list(rids.values()))
        if not regions:
            return {}
        snap = self.view.snapshot()
        regions = [r for r in regions if r.row < snap.space.rows and snap.rid_of_row[r.row] == r.rid]
        whole_rows = self.view.rows_of(list(ids))
        rows = np.asarray([r.row for r in regions] + [whole_rows[i] for i in ids if i in whole_rows], np.int64)
        # A page's few hundred rows: read through the map (a thread pool of preads costs more than it saves here).
        vecs = np.asarray(snap.vectors[rows], np.float32) if len(rows) <= 4096 else snap.gather(rows)
        scores = dict(zip(rows.tolist(), (vecs @ query).tolist())) if len(rows) else {}
        best: dict[int, tuple[float, tuple[int, int, int, int]]] = {}
        for r in regions:
            s = scores[r.row]
            if r.rid not in best or s > best[r.rid][0]:
                best[r.rid] = (s, r.box)
        out: dict[str, Region] = {}
        for item_id, rid in rids.items():
            if rid in best:
                s, (x, y, w, h) = best[rid]
                whole = scores.get(whole_rows.get(item_id, -1), -np.inf)
                if s >= whole:
                    out[item_id] = Region(x, y, w, h, float(s))
        return out
