"""Exact search over the embedded store: one matrix product over the memory-mapped vectors.

Row bookkeeping lives here and nowhere else: which item (by its integer ``rid``) each vector row
belongs to, -1 for a dead row (the item was re-embedded or removed). That map is loaded once and
then extended as rows are appended, so a query costs the product and a top-k, plus an indexed
SQL lookup per filter (see Store.filter_mask).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from ..errors import StoreCorrupt
from ..filters import Filter
from ..store import Space, Store
from . import Matches, top_k

SCORE_BYTES = 256 * 1024 * 1024  # most memory one batch of query scores may take


class ExactIndex:
    kind = "exact"

    def __init__(self, store: Store, space: str):
        self.store = store
        self.space_name = space
        self._rid_of_row = np.zeros(0, np.int64)
        self._state: tuple[str, int, int] | None = None  # (generation, rows, live) it was built for

    def _current(self) -> tuple[Space, np.ndarray]:
        """The space as committed now, and its row -> rid map (rebuilt or extended as needed)."""
        sp = self.store.space(self.space_name)
        state = (sp.generation, sp.rows, sp.live)
        if state != self._state:
            loaded = len(self._rid_of_row)
            if self._state is None or sp.generation != self._state[0] or sp.rows < loaded:
                loaded = 0
            grown = np.full(sp.rows, -1, np.int64)
            grown[:loaded] = self._rid_of_row[:loaded]
            rows, rids = self.store.vector_rids(sp.name, loaded)
            keep = rows < sp.rows  # rows past the committed count belong to an unfinished write
            grown[rows[keep]] = rids[keep]
            if sp.live < sp.rows:
                grown[self.store.dead_rows(sp.name)] = -1
            self._rid_of_row, self._state = grown, state
        return sp, self._rid_of_row

    def _snapshot(self) -> tuple[Space, np.ndarray, np.ndarray]:
        """The space, its row -> rid map and its mapped vectors, all of one generation. A writer
        may compact (switch files) between reading the space and opening its file: read again."""
        for attempt in range(3):
            sp, rid_of_row = self._current()
            try:
                return sp, rid_of_row, self.store.vector_file(sp).matrix(sp.rows)
            except (StoreCorrupt, FileNotFoundError):
                if attempt == 2 or self.store.space(self.space_name).generation == sp.generation:
                    raise
        raise AssertionError("unreachable")

    def _rows_of(self, rid_of_row: np.ndarray, ids: Sequence[str]) -> tuple[np.ndarray, dict[int, str]]:
        """Rows (of this snapshot's map, so never of another generation) holding these ids."""
        names = {rid: i for i, rid in self.store.rids_of(list(ids)).items()}
        return np.flatnonzero(np.isin(rid_of_row, list(names))), names

    def count(self) -> int:
        return self._current()[0].live

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """(ids, vectors) of every live item, in row order; the vectors are a copy."""
        sp, rid_of_row, vectors = self._snapshot()
        rows = np.flatnonzero(rid_of_row >= 0)
        names = self.store.ids_of_rids(rid_of_row[rows].tolist())
        return [names[int(r)] for r in rid_of_row[rows]], np.asarray(vectors[rows], np.float32)

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        sp, rid_of_row, matrix = self._snapshot()
        rows, names = self._rows_of(rid_of_row, ids)
        return {names[int(rid_of_row[r])]: np.array(matrix[r]) for r in rows}

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
        sp, rid_of_row, vectors = self._snapshot()
        allowed: np.ndarray | None = None  # rows that may appear; None = every row
        if filters:
            allowed = self.store.filter_mask(filters)[rid_of_row]  # a dead row (-1) hits the spare False slot
        elif sp.live < sp.rows:
            allowed = rid_of_row >= 0
        considered = sp.live if allowed is None else int(allowed.sum())
        rows, scores = self._best(queries, vectors, rid_of_row, allowed, exclude, offset + limit)
        rows, scores = rows[:, offset:], scores[:, offset:]
        picked = {int(r) for r in rows.ravel()}
        names = self.store.ids_of_rids([int(rid_of_row[r]) for r in picked if rid_of_row[r] >= 0])
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
