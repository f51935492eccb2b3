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


def bootstrap_ci(
    ranks: Sequence[int], ks: Sequence[int] = KS, *, samples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals (queries resampled with replacement) for recall@k and MRR."""
    r = np.asarray(ranks)
    if not len(r):
        return {}
    idx = np.random.default_rng(seed).integers(0, len(r), (samples, len(r)))
    drawn = r[idx]
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    stats = {f"recall@{k}": (drawn < k).mean(1) for k in ks}
    stats["mrr"] = (1.0 / (drawn + 1)).mean(1)
    return {
        key: [round(float(np.percentile(v, lo)), 4), round(float(np.percentile(v, hi)), 4)] for key, v in stats.items()
    }


def paired_test(
    ranks_a: Sequence[int], ranks_b: Sequence[int], *, samples: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """A paired comparison of two models on the same queries: the mean difference in reciprocal
    rank (b - a), its bootstrap 95 % interval and a two-sided sign-flip permutation p-value."""
    a, b = 1.0 / (np.asarray(ranks_a) + 1), 1.0 / (np.asarray(ranks_b) + 1)
    if len(a) != len(b) or not len(a):
        raise QueryError("A paired test needs the same queries for both models.")
    d = b - a
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), (samples, len(d)))].mean(1)
    flips = rng.choice([-1.0, 1.0], (samples, len(d)))
    null = np.abs((flips * d).mean(1))
    p = float((np.sum(null >= abs(d.mean()) - 1e-12) + 1) / (samples + 1))
    return {"mrr_difference": round(float(d.mean()), 4), "ci95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
            "p_value": round(p, 4), "queries": len(d), "better": int((d > 0).sum()), "worse": int((d < 0).sum()), "significant": p < 0.05}  # fmt: skip


def rank_of(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each query's target (scores: candidates x queries). Ties count against the
    target: a candidate that scores the same is ranked above it, so a constant model scores nothing."""
    target_scores = scores[target, np.arange(scores.shape[1])]
    return (scores >= target_scores[None, :]).sum(0) - 1
