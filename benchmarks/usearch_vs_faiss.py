#!/usr/bin/env python3
"""USearch's int8 HNSW against faiss IVF-SQ8 (vitrina's default) on the same CLIP-like vectors,
text-like queries, one search thread, both with vitrina's candidate re-ranking.

    pip install usearch faiss-cpu
    python benchmarks/usearch_vs_faiss.py [--rows 100000] [--dim 512] [--queries 200]

Both libraries get the same job: return ``oversample * k`` candidates (80 for k=10), which are
then re-scored exactly against the float32 vectors, as ``vitrina.index.ann`` does. Recall@10 is
against an exact scan; build uses all cores, search one thread. Writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from synthetic import CloudModel, exact_top, recall  # noqa: E402


def rerank(vectors: np.ndarray, q: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
    cand = cand[cand >= 0]
    scores = vectors[cand] @ q
    return cand[np.argsort(-scores, kind="stable")[:k]]


def timed(search, texts: np.ndarray, vectors: np.ndarray, k: int, want: int) -> tuple[float, np.ndarray]:  # type: ignore[no-untyped-def]
    ms, found = [], []
    for q in texts:
        t = time.perf_counter()
        found.append(rerank(vectors, q, search(q, want), k))
        ms.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(ms, 50)), np.asarray(found)


def main() -> None:
    import faiss
    from usearch.index import Index

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    model = CloudModel(args.dim)
    vectors = model.images(args.rows)
    texts = model.texts(args.queries)
    truth = exact_top(vectors, texts, 10)
    k, want = 10, 80
    out: dict = {"rows": args.rows, "dim": args.dim, "queries": args.queries, "candidates": want}

    threads = os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    nlist = int(4 * np.sqrt(args.rows))
    t0 = time.perf_counter()
    ivf = faiss.index_factory(args.dim, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
    ivf.train(
        vectors[np.random.default_rng(0).choice(args.rows, min(args.rows, max(100_000, 40 * nlist)), replace=False)]
    )
    ivf.add(vectors)
    out["faiss_ivf_sq8_build_s"] = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    for nprobe in (32, 48, 64):
        ivf.nprobe = nprobe
        p50, found = timed(lambda q, n: ivf.search(q[None], n)[1][0], texts, vectors, k, want)
        out[f"faiss_ivf_sq8_nprobe{nprobe}"] = {"p50_ms": p50, "recall_at_10": recall(found, truth)}

    for conn in (16, 32):
        t0 = time.perf_counter()
        index = Index(ndim=args.dim, metric="ip", dtype="i8", connectivity=conn, expansion_add=128)
        index.add(np.arange(args.rows), vectors, threads=threads)
        out[f"usearch_i8_m{conn}_build_s"] = time.perf_counter() - t0
        for ef in (64, 128, 256):
            index.expansion_search = ef
            p50, found = timed(
                lambda q, n, index=index: np.asarray(index.search(q, n, threads=1).keys, np.int64),
                texts,
                vectors,
                k,
                want,
            )
            out[f"usearch_i8_m{conn}_ef{ef}"] = {"p50_ms": p50, "recall_at_10": recall(found, truth)}
        out[f"usearch_i8_m{conn}_bytes"] = index.memory_usage

    out.update({"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores", "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
                "faiss": faiss.__version__, "usearch": __import__("usearch").__version__})  # fmt: skip
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"usearch-vs-faiss-{args.rows}x{args.dim}.json").write_text(
        json.dumps(out, indent=2)
    )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
