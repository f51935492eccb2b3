"""Retrieval metrics, chance levels, bootstrap intervals and the paired test: plain numpy, tested
on hand-computed cases (tests/test_evaluate.py); and the image signature that recognises a picture
after resizing and recompression."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..errors import QueryError

KS = (1, 5, 10)


def recall_at_k(ranks: Sequence[int], k: int) -> float:
    """Share of queries whose target is among the first k (ranks are 0-based)."""
    return float(np.mean(np.asarray(ranks) < k)) if len(ranks) else 0.0


def mrr(ranks: Sequence[int]) -> float:
    return float(np.mean(1.0 / (np.asarray(ranks) + 1))) if len(ranks) else 0.0


def precision_at_k(ranked: Sequence[str], relevant: dict[str, float], k: int) -> float:
    return sum(1 for r in ranked[:k] if relevant.get(r, 0) > 0) / k


def ndcg_at_k(ranked: Sequence[str], relevant: dict[str, float], k: int) -> float:
    """Normalised discounted cumulative gain with graded relevance (gain 2^rel - 1)."""
    dcg = sum((2 ** relevant.get(r, 0) - 1) / math.log2(i + 2) for i, r in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def image_signature(image: Image.Image) -> bytes:
    """64 bytes that recognise a picture after resizing and recompression: on a 16x16 grayscale
    grid, where each cell is clearly brighter (first 32 bytes) or clearly darker (last 32) than its
    left neighbour. ``signature_distance`` counts the cells that disagree."""
    small = np.asarray(ImageOps.grayscale(image.convert("RGB")).resize((17, 16), Image.Resampling.BOX), np.int16)
    diff = (small[:, 1:] - small[:, :-1]).flatten()
    return bytes(np.packbits(diff > 4)) + bytes(np.packbits(diff < -4))


def signature_distance(known: np.ndarray, signature: bytes) -> np.ndarray:
    """Distance of one signature to each row of ``known`` (n x 64 uint8)."""
    return np.unpackbits(known ^ np.frombuffer(signature, np.uint8)[None, :], axis=1).sum(1)


def chance(candidates: int, ks: Sequence[int] = KS) -> dict[str, float]:
    """What ranking the candidates at random scores: recall@k = k/N, MRR = H_N / N."""
    n = max(1, candidates)
    out = {f"recall@{k}": round(min(1.0, k / n), 4) for k in ks}
    out["mrr"] = round(float(np.sum(1.0 / np.arange(1, n + 1)) / n), 4)
    return out


Z95 = 1.959964  # the normal quantile of a two-sided 95 % interval
ALPHA = 0.05
WIDE = 0.2  # an interval wider than this (±10 points) says too little: the report warns


def wilson(hits: float, n: int, *, z: float = Z95) -> list[float]:
    """The Wilson score interval of a proportion (``hits`` of ``n``). Unlike a percentile bootstrap
    it does not collapse to a point at 0 % or 100 %: 0 of 3 gives [0, 56.2 %]. For the mean of a
    score bounded in [0, 1] (MRR, nDCG) give ``hits = mean * n``: such a score varies at most as much
    as a proportion of the same mean, so the interval is, if anything, too wide."""
    if n <= 0:
        return [0.0, 1.0]
    p = min(1.0, max(0.0, hits / n))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def queries_needed(p: float, *, width: float = WIDE, z: float = Z95) -> int:
    """How many queries would narrow the Wilson interval of a proportion ``p`` to ``width``."""
    lo, hi = 1, 1
    while wilson(p * hi, hi, z=z)[1] - wilson(p * hi, hi, z=z)[0] > width:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        ci = wilson(p * mid, mid, z=z)
        lo, hi = (mid + 1, hi) if ci[1] - ci[0] > width else (lo, mid)
    return hi


def rank_intervals(ranks: Sequence[int], ks: Sequence[int] = KS) -> dict[str, list[float]]:
    """95 % intervals for recall@k (Wilson) and MRR (Wilson on the bounded mean) of ``ranks``."""
    r = np.asarray(ranks)
    if not len(r):
        return {}
    out = {f"recall@{k}": wilson(float((r < k).sum()), len(r)) for k in ks}
    out["mrr"] = wilson(float((1.0 / (r + 1)).sum()), len(r))
    return out


def bootstrap_ci(ranks: Sequence[int], ks: Sequence[int] = KS, **_: Any) -> dict[str, list[float]]:
    """Kept for callers of the old name: the intervals are now ``rank_intervals`` (Wilson), which
    behave at 0 % and 100 % where a percentile bootstrap collapses to a point."""
    return rank_intervals(ranks, ks)


def small_sample_warning(what: str, ranks: Sequence[int], k: int = 10) -> str | None:
    """A warning when ``ranks`` are too few for recall@k to say much (Wilson interval wider than
    ±10 points), naming how many queries would be needed."""
    n = len(ranks)
    if not n:
        return None
    p = recall_at_k(ranks, k)
    ci = wilson(p * n, n)
    if ci[1] - ci[0] <= WIDE:
        return None
    return (f"{what}: only {n} queries; recall@{k} {p:.0%} could be anywhere in [{ci[0]:.0%}, {ci[1]:.0%}]. "
            f"About {queries_needed(p)} queries would narrow it to ±10 points.")  # fmt: skip


EXACT_FLIPS = 14  # up to 2^14 queries' sign flips are enumerated exactly; above, sampled


def _flips(n: int, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    if n <= EXACT_FLIPS:
        codes = np.arange(2**n)[:, None] >> np.arange(n)[None, :] & 1
        return (codes * 2 - 1).astype(np.float64), True
    return rng.choice([-1.0, 1.0], (samples, n)), False


def _sign_flip_p(flips: np.ndarray, exact: bool, d: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """The two-sided sign-flip p-value of ``mean(d - shift) == 0`` for each shift, with the same flips."""
    n = len(d)
    fd, f1 = flips @ d, flips.sum(1)
    out = np.empty(len(shifts))
    for start in range(0, len(shifts), 256):
        s = shifts[start : start + 256]
        null = np.abs(fd[:, None] - f1[:, None] * s[None, :]) / n
        observed = np.abs(d.mean() - s)
        count = (null >= observed[None, :] - 1e-12).sum(0)
        out[start : start + 256] = count / len(flips) if exact else (count + 1) / (len(flips) + 1)
    return out


def paired_test(
    ranks_a: Sequence[int], ranks_b: Sequence[int], *, samples: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """A paired comparison of two models on the same queries: the mean difference in reciprocal
    rank (b - a), a two-sided sign-flip permutation p-value (every sign pattern up to 14 queries,
    ``samples`` of them above), and the 95 % interval that inverts the same test: every shift the
    test does not reject. So the interval excludes 0 exactly when p < 0.05, and on too few
    queries to reject anything it spans [-1, 1]."""
    a, b = 1.0 / (np.asarray(ranks_a) + 1), 1.0 / (np.asarray(ranks_b) + 1)
    if len(a) != len(b) or not len(a):
        raise QueryError("A paired test needs the same queries for both models.")
    d = (b - a).astype(np.float64)
    n = len(d)
    flips, exact = _flips(n, samples, np.random.default_rng(seed))
    p = float(_sign_flip_p(flips, exact, d, np.asarray([0.0]))[0])
    grid = np.union1d(np.linspace(-1.0, 1.0, 2001), [0.0, float(d.mean())])
    accepted = _sign_flip_p(flips, exact, d, grid) >= ALPHA
    # The accepted run around the observed mean (always accepted), and 0 when the test accepts it.
    centre = int(np.searchsorted(grid, d.mean()))
    lo = hi = centre
    while lo > 0 and accepted[lo - 1]:
        lo -= 1
    while hi < len(grid) - 1 and accepted[hi + 1]:
        hi += 1
    low, high = float(grid[lo]), float(grid[hi])
    if p >= ALPHA:
        low, high = min(low, 0.0), max(high, 0.0)
    min_p = 2 / 2**n if n < 60 else 0.0
    out: dict[str, Any] = {"mrr_difference": round(float(d.mean()), 4), "ci95": [round(low, 4), round(high, 4)], "p_value": round(p, 4),
                           "queries": n, "better": int((d > 0).sum()), "worse": int((d < 0).sum()), "significant": bool(p < ALPHA),
                           "test": "paired sign-flip permutation" + (" (exact)" if exact else f" ({len(flips)} samples)")}  # fmt: skip
    if min_p >= ALPHA:
        out["warning"] = (f"{n} paired queries cannot show any difference: the smallest possible p is {min_p:.2g}; "
                          f"at least {_min_queries()} are needed, and more to see a small difference.")  # fmt: skip
    elif not out["significant"] and d.std(ddof=1) > 0 and d.mean() != 0:
        needed = math.ceil(((Z95 + 0.8416) * float(d.std(ddof=1)) / abs(float(d.mean()))) ** 2)
        if needed > n:
            out["queries_needed"] = needed
            out["warning"] = (f"not significant on {n} queries; a difference of this size (MRR {d.mean():+.3f}) would need about "
                              f"{needed} paired queries to show at 80 % power.")  # fmt: skip
    return out


def _min_queries() -> int:
    """The fewest paired queries on which a sign-flip test can reach p < 0.05 (2 / 2^n)."""
    n = 1
    while 2 / 2**n >= ALPHA:
        n += 1
    return n


def chance_shared(candidates: int, targets: Sequence[int], ks: Sequence[int] = KS) -> dict[str, float]:
    """Chance levels when a query scores a hit on any of its ``targets[q]`` items (captions shared by
    several items): recall@k = 1 - C(N-m, k) / C(N, k) and MRR = sum_j P(first hit at j) / j with
    P(first at j) = C(N-j, m-1) / C(N, m), averaged over the queries."""
    n = max(1, candidates)
    per_m: dict[int, dict[str, float]] = {}
    for m in sorted(set(targets)):
        m = max(1, min(m, n))
        j = np.arange(1, n - m + 2, dtype=np.float64)
        log_p = (_lgamma(n - j + 1) - _lgamma(m) - _lgamma(n - j - m + 2)) - (
            _lgamma(n + 1) - _lgamma(m + 1) - _lgamma(n - m + 1)
        )
        row = {f"recall@{k}": 1.0 - (math.exp(float(_lgamma(n - m + 1) + _lgamma(n - k + 1) - _lgamma(n - m - k + 1) - _lgamma(n + 1))) if k <= n - m else 0.0)
               for k in ks}  # fmt: skip
        row["mrr"] = float(np.sum(np.exp(log_p) / j))
        per_m[m] = row
    rows = [per_m[max(1, min(m, n))] for m in targets] or [chance(n, ks)]
    return {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0]}


def _lgamma(x: Any) -> Any:
    return np.vectorize(math.lgamma)(x) if isinstance(x, np.ndarray) else math.lgamma(x)


def rank_of(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each query's target (scores: candidates x queries). Ties count against the
    target: a candidate that scores the same is ranked above it, so a constant model scores nothing."""
    target_scores = scores[target, np.arange(scores.shape[1])]
    return (scores >= target_scores[None, :]).sum(0) - 1
