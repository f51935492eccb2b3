"""Judged queries run three ways, side by side: CLIP only, keywords only, and the two fused.

A curator's question is "do words help on my collection, and how much weight should they
get?": each judged query (``evaluate.read_queries``: CSV query,id[,relevance]) is searched by its
text through CLIP, through BM25 over the item text (the same words as keywords), and fused;
nDCG@k and P@k per mode, per query and averaged. ``weights`` adds one fused run per keyword
weight and fusion method, for choosing the defaults (docs/keyword-search.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .collection import Collection
from .errors import QueryError
from .evaluate.metrics import ndcg_at_k, precision_at_k
from .query import Query

MODES = ("clip", "keyword", "fused")


def _query(text: str, mode: str, k: int, weight: float | None, fusion: str) -> Query:
    if mode == "clip":
        return Query.build(text, limit=k)
    if mode == "keyword":
        return Query(keywords=text, limit=k)
    return Query.build(text, keywords=text, keyword_weight=weight, fusion=fusion, limit=k)


def eval_modes(coll: Collection, judged: Sequence[tuple[str, dict[str, float]]], *, k: int = 10, space: str | None = None,
               weights: Sequence[tuple[str, float]] = (), keyword_weight: float | None = None, fusion: str = "weighted") -> dict[str, Any]:  # fmt: skip
    """{mode: {"ndcg@k", "p@k", "per_query"}} for clip, keyword, fused (the defaults, or
    ``keyword_weight`` / ``fusion``) and each (fusion, weight) in ``weights`` ("rrf@0.3", ...).
    Judged ids not in the collection are left out; a query left with no relevant item is skipped."""
    present = set(coll.items(sorted({i for _, rel in judged for i in rel})))
    kept = [(q, {i: g for i, g in rel.items() if i in present}) for q, rel in judged]
    kept = [(q, rel) for q, rel in kept if any(g > 0 for g in rel.values())]
    if not kept:
        raise QueryError(
            "None of the judged queries has a relevant item in this collection; check the ids in the queries file."
        )
    runs: list[tuple[str, str, float | None, str]] = [(m, m, keyword_weight, fusion) for m in MODES]
    runs += [(f"{f}@{w:g}", "fused", w, f) for f, w in weights]
    out: dict[str, Any] = {}
    for name, mode, weight, method in runs:
        queries = [_query(q, mode, k, weight, method) for q, _ in kept]
        per_query = []
        for (text, relevant), hits in zip(kept, coll.run(queries, space=space)):
            ranked = [h.id for h in hits]
            per_query.append(
                {
                    "query": text,
                    f"ndcg@{k}": round(ndcg_at_k(ranked, relevant, k), 4),
                    f"p@{k}": round(precision_at_k(ranked, relevant, k), 4),
                }
            )
        out[name] = {
            f"ndcg@{k}": round(float(np.mean([p[f"ndcg@{k}"] for p in per_query])), 4),
            f"p@{k}": round(float(np.mean([p[f"p@{k}"] for p in per_query])), 4),
            "per_query": per_query,
        }
    out["queries"] = len(kept)
    out["skipped"] = len(judged) - len(kept)
    return out


def markdown(results: dict[str, Any], k: int = 10) -> str:
    """A table: one row per mode."""
    lines = [f"| mode | nDCG@{k} | P@{k} |", "|---|---|---|"]
    for name, r in results.items():
        if isinstance(r, dict) and f"ndcg@{k}" in r:
            lines.append(f"| {name} | {r[f'ndcg@{k}']:.3f} | {r[f'p@{k}']:.3f} |")
    return (
        "\n".join(lines)
        + f"\n\n{results.get('queries', 0)} judged queries"
        + (f", {results['skipped']} skipped" if results.get("skipped") else "")
    )
