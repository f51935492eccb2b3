"""Keyword ranking: BM25 over the item text (SQLite FTS5, see store/schema.py), and the fusion
of a keyword ranking with a CLIP ranking.

Words are matched after case and diacritic folding ("alesund" finds "Ålesund"); a word ending in
``*`` matches as a prefix ("berg*"). Words are ORed, so an item with more (and rarer) matched
words ranks higher. Field weights in BM25: title 4, caption 2, subjects 2, notes 1, context 1.

Fusion (``fuse``) takes the top ``DEPTH`` of each ranking over the same allowed items:

- ``rrf`` (reciprocal rank fusion): ``((1 - w) / (K + r_clip) + w / (K + r_kw)) * (K + 1)``,
  K = 60, a missing rank adds 0; scaled so that first in both is 1.0.
- ``weighted``: ``(1 - w) * clip + w * kw``, the cosines min-max scaled over the CLIP list, BM25
  divided by its best.

``w`` is the keyword weight (``keyword_weight`` / ``--text-weight``), not α (α mixes text and
image terms inside the CLIP query). A fused score is in [0, 1]; ``min_score`` applies to it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import QueryError
from ..filters import Filter
from ..store import Store
from . import Matches

BM25_WEIGHTS = (4.0, 2.0, 2.0, 1.0, 1.0)  # title, caption, subjects, notes, context
MAX_WORDS = 32
DEPTH = 1000  # items taken from each ranking into a fusion
RRF_K = 60
FUSIONS = ("rrf", "weighted")
_WORD = re.compile(r"\w+\*?")
_MARK_OPEN, _MARK_CLOSE = "\x02", "\x03"  # never in the indexed text (removed by the triggers)


def match_expression(keywords: str) -> str:
    """An FTS5 query that ORs the words of ``keywords``, each quoted (no FTS syntax gets through)."""
    words = _WORD.findall(keywords)[:MAX_WORDS]
    if not words:
        raise QueryError(f"No words to search for in {keywords!r}: give letters or digits.")
    check_prefixes(words)
    return " OR ".join(f'"{w.rstrip("*")[:64]}"' + ("*" if w.endswith("*") else "") for w in words)


# -- bounded keyword work (issue 28, item 3) -----------------------------------------------------
# A prefix of one or two letters ("a*") expands to a large share of the vocabulary: 32 of them
# cost ~9 s per request at 100k items, most of it in the snippet query. Refused up front.
MIN_PREFIX = 3  # characters before a trailing "*"


def check_prefixes(words: Sequence[str]) -> None:
    """Refuse prefix words shorter than ``MIN_PREFIX`` characters, naming them and the fix."""
    short = [w for w in words if w.endswith("*") and len(w) - 1 < MIN_PREFIX]
    if short:
        raise QueryError(
            f"A prefix needs at least {MIN_PREFIX} characters before the * ({', '.join(repr(w) for w in short[:5])} "
            f"would match too many words): lengthen it, or search for the whole word without the *."
        )


# -- end of bounded keyword work ---------------------------------------------------------------


@dataclass
class KeywordIndex:
    store: Store
    kind: str = "keyword"

    def _allowed(self, filters: Sequence[Filter], only_rids: np.ndarray | None) -> tuple[np.ndarray | None, int]:
        """Which rids may appear (a mask with a spare False slot; None: every item, as every FTS row
        is an item's), and how many items that is."""
        if not filters and only_rids is None:
            return None, self.store.item_count()
        rids = only_rids if only_rids is not None else self.store.item_rids()
        size = int(rids.max(initial=0)) + 2
        exists = np.zeros(size, bool)
        exists[rids] = True
        if filters:
            mask = self.store.filter_mask(filters)
            n = min(len(mask), size) - 1
            exists[:n] &= mask[:n]
            exists[n:] = False
        return exists, int(exists.sum())

    def ranking(self, keywords: str, *, filters: Sequence[Filter] = (), exclude: Collection[str] = (), depth: int | None = None,
                only_rids: np.ndarray | None = None) -> Matches:  # fmt: skip
        """Every allowed item matching ``keywords`` (at most ``depth``), best first, scored by
        BM25 (higher is better); ``considered`` counts the allowed items."""
        allowed, considered = self._allowed(filters, only_rids)
        gone = set(self.store.rids_of(list(exclude)).values()) if exclude else set()
        rids: list[int] = []
        scores: list[float] = []
        for chunk in self.store.keyword_ranking(match_expression(keywords), BM25_WEIGHTS):
            for rid, score in chunk:
                if (allowed is None or (rid < len(allowed) and allowed[rid])) and rid not in gone:
                    rids.append(rid)
                    scores.append(float(score))
            if depth is not None and len(rids) >= depth:
                break
        if depth is not None:
            rids, scores = rids[:depth], scores[:depth]
        names = self.store.ids_of_rids(rids)
        out = Matches(considered=considered)
        for rid, score in zip(rids, scores):
            if rid in names:
                out.ids.append(names[rid])
                out.scores.append(score)
        return out

    def search(self, keywords: str, *, filters: Sequence[Filter] = (), exclude: Collection[str] = (), limit: int = 10, offset: int = 0,
               min_score: float | None = None) -> Matches:  # fmt: skip
        """Keyword ranking alone, paged like every index's answer."""
        full = self.ranking(keywords, filters=filters, exclude=exclude, depth=offset + limit)
        return _page(full.ids, full.scores, full.considered, limit, offset, min_score)

    def snippets(self, keywords: str, ids: Sequence[str], words: int = 16) -> dict[str, list[tuple[str, bool]]]:
        """The best-matching passage of each item's text, as (text, matched) segments."""
        rids = self.store.rids_of(list(ids))
        if not rids:
            return {}
        by_rid = {r: i for i, r in rids.items()}
        found = self.store.keyword_snippets(match_expression(keywords), list(by_rid), words)
        return {by_rid[rid]: _segments(text) for rid, text in found.items()}


def _segments(marked: str) -> list[tuple[str, bool]]:
    out = []
    for n, part in enumerate(re.split(f"[{_MARK_OPEN}{_MARK_CLOSE}]", marked)):
        if part:
            out.append((part, n % 2 == 1))
    return out


def _page(
    ids: list[str], scores: list[float], considered: int, limit: int, offset: int, min_score: float | None
) -> Matches:
    out = Matches(considered=considered)
    for i, s in zip(ids[offset : offset + limit], scores[offset : offset + limit]):
        if min_score is None or s >= min_score:
            out.ids.append(i)
            out.scores.append(s)
    return out


def fuse(clip: Matches, keyword: Matches, weight: float, method: str = "weighted") -> tuple[list[str], list[float]]:
    """One ranking from a CLIP ranking and a keyword ranking of the same allowed items (both best
    first); ties go to the smaller id, so the order is a function of the two inputs."""
    if method not in FUSIONS:
        raise QueryError(f"Unknown fusion {method!r}; known: {', '.join(FUSIONS)}.")
    fused: dict[str, float] = {}
    if method == "rrf":
        for ranked, w in ((clip.ids, 1.0 - weight), (keyword.ids, weight)):
            for r, i in enumerate(ranked, start=1):
                fused[i] = fused.get(i, 0.0) + w * (RRF_K + 1) / (RRF_K + r)
    else:
        if clip.scores:
            hi, lo = max(clip.scores), min(clip.scores)
            for i, s in zip(clip.ids, clip.scores):
                fused[i] = (1.0 - weight) * ((s - lo) / (hi - lo) if hi > lo else 1.0)
        if keyword.scores:
            best = max(keyword.scores)
            for i, s in zip(keyword.ids, keyword.scores):
                fused[i] = fused.get(i, 0.0) + weight * (s / best if best > 0 else 1.0)
    order = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
    return [i for i, _ in order], [s for _, s in order]


def fused_page(
    clip: Matches, keyword: Matches, weight: float, method: str, *, limit: int, offset: int, min_score: float | None
) -> Matches:
    """The fused ranking, paged; ``considered`` is the CLIP side's (the items passing the filters
    that have a vector in the space)."""
    ids, scores = fuse(clip, keyword, weight, method)
    return _page(ids, scores, clip.considered, limit, offset, min_score)
