"""Keyword ranking: BM25 over the item text (SQLite FTS5, see store/schema.py), and the fusion
of a keyword ranking with a CLIP ranking.

Words are matched after case and diacritic folding ("alesund" finds "Ålesund"); a word ending in
``*`` matches as a prefix ("berg*"). Words are ORed, so an item with more (and rarer) matched
words ranks higher. Field weights in BM25: title 4, caption 2, subjects 2, notes 1, context 1,
words read from the image (OCR) 1.

Words read by a machine are matched forgivingly (``folded_expression``, ``tolerant_variants``):
each query word also matches its folded form ("Tromsø" finds the "tromso" PP-OCR reads, see
ocr/fold.py), and a word of 4 letters or more also matches the OCR vocabulary's words within
edit distance 1 (2 from 8 letters), found through a trigram index; items found only that way
rank after every exact match.

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import QueryError
from ..filters import Filter
from ..ocr.fold import fold_words
from ..store import Store
from . import Matches

BM25_WEIGHTS = (4.0, 2.0, 2.0, 1.0, 1.0, 1.0)  # title, caption, subjects, notes, context, words (OCR)
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


# A prefix longer than the indexed ones (schema: prefix='2 3') is expanded by FTS5 into every
# matching word's full doclist each time a row is looked up: 200 snippets of 32 such prefixes
# took ~10 s at 100k items. For snippets the prefixes are replaced by the words they expand to
# (from the FTS vocabulary, at most MAX_EXPANDED for the whole query): exact words are seeks.
# Words past the cap are not highlighted; the ranking itself still uses the prefixes.
INDEXED_PREFIX = 3  # the longest prefix with an index of its own
MAX_EXPANDED = 500  # indexed words a query's longer prefixes expand to, all of them together


def as_indexed(word: str) -> str:
    """``word`` as the FTS tokenizer stores it (unicode61 remove_diacritics 2): lower case,
    combining marks removed."""
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFD", word.lower()) if not unicodedata.combining(c))


def snippet_expression(store: Store, keywords: str, variants: dict[str, list[str]] | None = None) -> str:
    """``folded_expression`` with each prefix longer than ``INDEXED_PREFIX`` replaced by the
    indexed words it expands to (at most ``MAX_EXPANDED`` over the query)."""
    room = MAX_EXPANDED
    out = []
    for w in _WORD.findall(keywords)[:MAX_WORDS]:
        word = w.rstrip("*")[:64]
        folded = "".join(fold_words(word))[:64]
        forms = dict.fromkeys([word, *([folded] if folded else []), *(variants or {}).get(folded, [])])
        parts: list[str] = []
        for f in forms:
            if not w.endswith("*"):
                parts.append(f'"{f}"')
            elif len(f) <= INDEXED_PREFIX:
                parts.append(f'"{f}"*')
            elif room > 0:
                terms = store.keyword_prefix_terms(as_indexed(f), room)
                room -= len(terms)
                parts += [f'"{t}"' for t in terms if '"' not in t]
        if parts:
            out.append("(" + " OR ".join(dict.fromkeys(parts)) + ")")
    return " OR ".join(out)  # empty: nothing to highlight (every prefix past the cap, or matching no word)


# BM25 reads the positions of every posting of every phrase (FTS5 computes each phrase's IDF and
# each row's score from them): the 32 commonest 4-letter prefixes (1.2M postings at 100k items)
# took 0.5-1.2 s whatever the page size. Counting postings (rowids only) is ~10x cheaper, so a
# query whose phrases hold more than MAX_POSTINGS postings is ranked by its rarest phrases only,
# as many as fit in MAX_POSTINGS (at least one): their BM25 contributions are unchanged, the
# commonest phrases (low IDF, little weight in BM25) are left out, and so are items matching only
# them. Such a ranking says so (Matches / Hits .keyword_capped, "keyword_capped" in the API). A
# query of one phrase (one word) is never capped.
MAX_POSTINGS = 250_000
_PHRASE = re.compile(r'"[^"]*"\*?')


def bounded_expression(store: Store, expression: str) -> tuple[str, bool]:
    """``expression`` (phrases ORed, as ``folded_expression`` writes them), or the OR of its rarest
    phrases when all of them hold more than ``MAX_POSTINGS`` postings; and whether it was capped.
    Each phrase is counted up to MAX_POSTINGS // 2 + 1 rows, so the check is bounded too."""
    phrases = list(dict.fromkeys(_PHRASE.findall(expression)))
    if len(phrases) < 2:
        return expression, False
    counts = [store.keyword_matching(p, MAX_POSTINGS // 2 + 1) for p in phrases]
    if sum(counts) <= MAX_POSTINGS:
        return expression, False
    kept: list[str] = []
    total = 0
    for n, p in sorted(zip(counts, phrases), key=lambda cp: cp[0]):
        if kept and total + n > MAX_POSTINGS:
            break
        kept.append(p)
        total += n
    return " OR ".join(kept), True


def ranked_words(store: Store, keywords: str, bounded: tuple[str, bool] | None = None) -> str:
    """``keywords`` less the words a capped ranking (``bounded``, else ``bounded_expression``'s
    answer) left out: the words snippets highlight. Highlighting the commonest prefixes cost as
    much as ranking by them."""
    expression, capped = bounded or bounded_expression(store, folded_expression(keywords))
    if not capped:
        return keywords
    kept = set(_PHRASE.findall(expression))
    words = [w for w in _WORD.findall(keywords)[:MAX_WORDS] if kept & set(_PHRASE.findall(folded_expression(w)))]
    return " ".join(words) or keywords


# -- end of bounded keyword work ---------------------------------------------------------------


@dataclass
class KeywordIndex:
    store: Store
    kind: str = "keyword"
    tolerant: bool = True  # also match misread OCR words (``tolerant_variants``)
    # keywords -> bounded_expression's answer, kept for this index's life (one search: ranking, snippets)
    bounded: dict[str, tuple[str, bool]] = field(default_factory=dict, repr=False, compare=False)
    # keywords -> their misread variants (a trigram query per word), worked out once per search
    variants: dict[str, dict[str, list[str]]] = field(default_factory=dict, repr=False, compare=False)

    def _variants(self, keywords: str) -> dict[str, list[str]]:
        if not self.tolerant:
            return {}
        if keywords not in self.variants:
            self.variants[keywords] = tolerant_variants(self.store, keywords)
        return self.variants[keywords]

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
        if keywords not in self.bounded:
            self.bounded[keywords] = bounded_expression(self.store, folded_expression(keywords))
        expression, capped = self.bounded[keywords]
        rids, scores = self._ranked(expression, allowed, gone, depth)
        variants = self._variants(keywords)
        if variants and (depth is None or len(rids) < depth):
            rids, scores = self._tolerant(variants, rids, scores, allowed, gone, depth)
        names = self.store.ids_of_rids(rids)
        out = Matches(considered=considered, keyword_capped=capped)
        for rid, score in zip(rids, scores):
            if rid in names:
                out.ids.append(names[rid])
                out.scores.append(score)
        return out

    def search(self, keywords: str, *, filters: Sequence[Filter] = (), exclude: Collection[str] = (), limit: int = 10, offset: int = 0,
               min_score: float | None = None) -> Matches:  # fmt: skip
        """Keyword ranking alone, paged like every index's answer."""
        full = self.ranking(keywords, filters=filters, exclude=exclude, depth=offset + limit)
        page = _page(full.ids, full.scores, full.considered, limit, offset, min_score)
        page.keyword_capped = full.keyword_capped
        return page

    def snippets(self, keywords: str, ids: Sequence[str], words: int = 16) -> dict[str, list[tuple[str, bool]]]:
        """The best-matching passage of each item's text, as (text, matched) segments."""
        rids = self.store.rids_of(list(ids))
        if not rids:
            return {}
        by_rid = {r: i for i, r in rids.items()}
        variants = self._variants(keywords)
        expression = snippet_expression(
            self.store, ranked_words(self.store, keywords, self.bounded.get(keywords)), variants
        )
        found = self.store.keyword_snippets(expression, list(by_rid), words) if expression else {}
        # OCR words are indexed folded; a snippet of them shows them as read ("Tromsø", not "tromso").
        return {by_rid[rid]: _segments(self.store.ocr_as_read(rid, text) or text) for rid, text in found.items()}

    # -- words read from the image (OCR) ------------------------------------------------------

    def _ranked(self, expression: str, allowed: np.ndarray | None, gone: set[int], depth: int | None) -> tuple[list[int], list[float]]:  # fmt: skip
        rids: list[int] = []
        scores: list[float] = []
        for chunk in self.store.keyword_ranking(expression, BM25_WEIGHTS):
            for rid, score in chunk:
                if (allowed is None or (rid < len(allowed) and allowed[rid])) and rid not in gone:
                    rids.append(rid)
                    scores.append(float(score))
            if depth is not None and len(rids) >= depth:
                break
        if depth is not None:
            rids, scores = rids[:depth], scores[:depth]
        return rids, scores

    def _tolerant(self, variants: dict[str, list[str]], rids: list[int], scores: list[float], allowed: np.ndarray | None,
                  gone: set[int], depth: int | None) -> tuple[list[int], list[float]]:  # fmt: skip
        """The exact ranking, then the items matching only a misread variant, scored below it."""
        expression = " OR ".join(f'"{v}"' for vs in variants.values() for v in vs)
        more, more_scores = self._ranked(
            expression, allowed, gone | set(rids), None if depth is None else depth - len(rids)
        )
        if not more:
            return rids, scores
        ceiling = TOLERANT_SHARE * (min(scores) if scores else 1.0)
        best = max(more_scores) or 1.0
        return rids + more, scores + [ceiling * s / best for s in more_scores]

    def word_boxes(self, keywords: str, ids: Sequence[str], limit: int = 50) -> dict[str, list[dict[str, Any]]]:
        """The OCR words of each item that the keywords matched (folded, or a misread variant),
        with their boxes in source pixels: {id: [{text, box: [x, y, w, h], confidence, engine,
        quad?}]}; items without such words are left out."""
        rids = self.store.rids_of(list(ids))
        if not rids:
            return {}
        terms, prefixes = matched_terms(keywords)
        terms += [v for vs in self._variants(keywords).values() for v in vs]
        out = {}
        for item_id, rid in rids.items():
            found = self.store.words_of(rid, terms, prefixes, limit)
            if found:
                out[item_id] = found
        return out


TOLERANT_SHARE = 0.5  # the best misread-only match scores this share of the worst exact match
TOLERANT_MIN_LETTERS = 4


def folded_expression(keywords: str, variants: dict[str, list[str]] | None = None) -> str:
    """``match_expression``, each word also matching its folded form ("tromsø" OR "tromso") and
    its misread ``variants`` (by the folded word)."""
    out = []
    words = _WORD.findall(keywords)[:MAX_WORDS]
    check_prefixes(words)
    for w in words:
        prefix = w.endswith("*")
        word = w.rstrip("*")[:64]
        folded = "".join(fold_words(word))[:64]
        forms = dict.fromkeys([word, *([folded] if folded else []), *(variants or {}).get(folded, [])])
        star = "*" if prefix else ""
        out.append("(" + " OR ".join(f'"{f}"{star}' for f in forms) + ")")
    if not out:
        match_expression(keywords)  # raises the error naming the problem
    return " OR ".join(out)


def matched_terms(keywords: str) -> tuple[list[str], list[str]]:
    """The folded words of ``keywords`` (as OCR words are stored), and the prefixes ("berg*")."""
    terms: list[str] = []
    prefixes: list[str] = []
    for w in _WORD.findall(keywords)[:MAX_WORDS]:
        folded = "".join(fold_words(w.rstrip("*")))
        if folded:
            (prefixes if w.endswith("*") else terms).append(folded)
    return terms, prefixes


def tolerant_variants(store: Store, keywords: str) -> dict[str, list[str]]:
    """For each folded query word of >= 4 letters, the OCR vocabulary words within edit distance
    1 (2 from 8 letters), nearest first, at most 8; words with none are left out."""
    out: dict[str, list[str]] = {}
    for word in matched_terms(keywords)[0]:
        if len(word) < TOLERANT_MIN_LETTERS or word in out:
            continue
        most = 1 if len(word) < 8 else 2
        near = []
        for term in store.similar_terms(word):
            d = edit_distance(word, term, most)
            if 0 < d <= most:
                near.append((d, term))
        if near:
            out[word] = [t for _, t in sorted(near)[:8]]
    return out


def edit_distance(a: str, b: str, most: int) -> int:
    """Levenshtein distance of ``a`` and ``b``, or ``most + 1`` once it is known to exceed ``most``."""
    if abs(len(a) - len(b)) > most:
        return most + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > most:
            return most + 1
        previous = current
    return previous[-1]


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
