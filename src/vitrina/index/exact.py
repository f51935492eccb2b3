"""Exact search over the embedded store: one matrix product over the memory-mapped vectors.

Rows and items come from the space's ``SpaceView`` (store/views.py): which item each vector row
belongs to, the mapped vectors, the rows the filters allow.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from ..filters import Filter
from ..store import Store
from . import Matches, top_k

SCORE_BYTES = 256 * 1024 * 1024  # most memory one batch of query scores may take


class ExactIndex:
    kind = "exact"

    def __init__(self, store: Store, space: str):
        self.store = store
        self.space_name = space
        self.view = store.space_view(space)  # rows <-> items, vectors, filter masks

    def _rows_of(self, rid_of_row: np.ndarray, ids: Sequence[str]) -> tuple[np.ndarray, dict[int, str]]:
        """Rows (of this snapshot's map, so never of another generation) holding these ids."""
        names = {rid: i for i, rid in self.view.rids_of(list(ids)).items()}
        return np.flatnonzero(np.isin(rid_of_row, list(names))), names

    def count(self) -> int:
        return self.view.current()[0].live - len(self.view.region_rows())

    def _whole(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` less those holding regions (vitrina.regions): an item's vector is its whole image's."""
        regions = self.view.region_rows()
        return rows[~np.isin(rows, regions)] if len(regions) else rows

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """(ids, vectors) of every live item, in row order; the vectors are a copy."""
        snap = self.view.snapshot()
        rid_of_row, vectors = snap.rid_of_row, snap.vectors
        rows = self._whole(np.flatnonzero(rid_of_row >= 0))
        names = self.view.ids_of_rids(rid_of_row[rows].tolist())
        return [names[int(r)] for r in rid_of_row[rows]], np.asarray(vectors[rows], np.float32)

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        snap = self.view.snapshot()
        rows, names = self._rows_of(snap.rid_of_row, ids)
        rows = self._whole(rows)
        return {names[int(snap.rid_of_row[r])]: np.array(snap.vectors[r]) for r in rows}

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
        snap = self.view.snapshot()
        sp, rid_of_row, vectors = snap.space, snap.rid_of_row, snap.vectors
        allowed = self.view.allowed(filters, sp, rid_of_row)  # rows that may appear; None = every row
        considered = sp.live if allowed is None else int(allowed.sum())
        rows, scores = self._best(queries, vectors, rid_of_row, allowed, exclude, offset + limit)
        rows, scores = rows[:, offset:], scores[:, offset:]
        picked = {int(r) for r in rows.ravel()}
        names = self.view.ids_of_rids([int(rid_of_row[r]) for r in picked if rid_of_row[r] >= 0])
        out = []
        for col in range(len(queries)):
            m = Matches(considered=considered)
            for r, score in zip(rows[col].tolist(), scores[col].tolist(), strict=True):
                if score == -np.inf or (min_score is not None and score < min_score):
                    continue
                name = names.get(int(rid_of_row[r]))
                if name is not None:  # None: the item was removed between two reads
                    m.ids.append(name)
                    m.scores.append(score)
            out.append(m)
        return out

    def _best(self, queries: np.ndarray, vectors: np.ndarray, rid_of_row: np.ndarray, allowed: np.ndarray | None,
              exclude: Sequence[Collection[str]], k: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """(rows, scores) of the ``k`` best rows for each query, best first. The vectors are read
        in blocks of rows, each scored for every query at once (at most ``SCORE_BYTES`` of
        scores), keeping the best ``k`` so far: one pass over the vectors however many queries.
        That matters once the vector file outgrows memory: 200 queries over 10M x 512 would be
        8 GB of scores at once, or, sliced by query, 16 passes over 20 GB read from disk."""
        n, nq = len(vectors), len(queries)
        banned = [self._rows_of(rid_of_row, list(ids))[0] if ids else None for ids in exclude]
        step = max(1, SCORE_BYTES // (4 * max(nq, 1)))
        best_rows, best_scores = np.zeros((nq, 0), np.int64), np.zeros((nq, 0), np.float32)
        for start in range(0, max(n, 1), step):
            block = vectors[start : start + step]
            # One query: a matrix-vector product, the fastest path.
            scores = (block @ queries[0])[None, :] if nq == 1 else queries @ block.T
            if allowed is not None:
                scores[:, ~allowed[start : start + step]] = -np.inf
            for col, banned_rows in enumerate(banned):
                if banned_rows is not None:
                    scores[
                        col, banned_rows[(banned_rows >= start) & (banned_rows < start + len(block))] - start
                    ] = -np.inf
            top = top_k(scores, k)
            best_rows = np.concatenate([best_rows, top + start], axis=1)
            best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
            if best_rows.shape[1] > k:
                keep = top_k(best_scores, k)
                best_rows, best_scores = (
                    np.take_along_axis(best_rows, keep, 1),
                    np.take_along_axis(best_scores, keep, 1),
                )
        return best_rows, best_scores
