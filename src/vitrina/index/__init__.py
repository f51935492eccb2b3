"""The search seam: an index answers "which stored vectors are nearest to these query vectors,
among the items passing these filters" in item ids, never in rows or SQL.

``Collection`` builds query vectors and turns matches into hits; an index only ranks. Today's
implementation is ``exact`` (a matrix product over the memory-mapped vectors of the embedded
store); approximate indexes and remote engines implement the same protocol, and the congruence
tests (tests/test_congruence.py) hold every implementation to the same answers: ``ann`` (a faiss
index file beside the vectors, candidates re-ranked exactly, see ann.py) and ``qdrant`` (a
derived Qdrant collection, see qdrant.py).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..filters import Filter


@dataclass
class Matches:
    """The ranked answer to one query vector: ``ids`` best first with their cosine ``scores``;
    ``considered`` counts the items that passed the filters (before limit, offset, min_score)."""

    ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    considered: int = 0
    keyword_capped: bool = False  # keyword ranking over a bounded set of matches (index/keyword.py)


@runtime_checkable
class SearchIndex(Protocol):
    kind: str  # "exact", ...

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
        """Rank for each row of ``queries`` (n, dim unit vectors); ``exclude[i]`` lists item ids
        left out of query i's answer (e.g. the item a "more like this" query started from)."""

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those ids that have one."""

    def count(self) -> int:
        """Items with a stored vector."""

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """(ids, vectors) of every item with a stored vector, as one float32 array."""


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest scores of each row of ``scores`` (n, m), best first:
    one argpartition over the whole batch, then a sort of only those k per row."""
    scores = np.atleast_2d(scores)
    n, m = scores.shape
    k = min(k, m)
    if k <= 0:
        return np.zeros((n, 0), np.int64)
    if k < m:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(m), (n, m))
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


KINDS = ("auto", "exact", "ann")


def open_index(store: object, space: str, kind: str = "exact") -> SearchIndex:
    """The index of one space of an embedded store: ``exact`` (always a full scan), a Qdrant target (``qdrant+http://HOST:PORT/NAME``,
    ``qdrant:PATH#NAME``: a collection synced by ``vitrina sync``), ``ann`` (the
    approximate index file beside the vectors, when there is one, fresh and readable; exact
    otherwise: the check costs a stat per search). ``auto`` is ``ann``."""
    if kind.startswith(("qdrant:", "qdrant+")):
        from .qdrant import QdrantIndex

        return QdrantIndex(store, space, kind)  # type: ignore[arg-type]
    if kind not in KINDS:
        from ..errors import ConfigError

        raise ConfigError(f"Unknown index kind {kind!r}; known: {', '.join(KINDS)}.")
    from .exact import ExactIndex

    if kind in ("auto", "ann"):
        from .ann import AnnIndex

        return AnnIndex(store, space)  # type: ignore[arg-type, return-value]
    return ExactIndex(store, space)  # type: ignore[arg-type]
