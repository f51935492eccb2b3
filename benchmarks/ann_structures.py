#!/usr/bin/env python3
"""Which partition meets recall@10 0.98 fast on the hard clouds? Plain faiss, one run, same data.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/ann_structures.py --rows 100000 \
        [--spec IVF1264,SQ8 --spec HNSW32,SQ8 ...]

Vectors: ``ann_clouds.HardCloud`` images (the same seed as ``ann_recall_target.py``; its stored
collection is reused when present). Each index is built with 2 threads (build seconds and the
serialized size recorded), then 200 held-out text-like queries are searched one at a time with
one thread for every knob value (IVF ``nprobe``, HNSW ``efSearch``), candidates re-ranked
exactly from the float32 vectors (as vitrina does): recall@10 against the exact scan, p50/p95 of
search + re-rank, and the exact scan's p50 in the same run. JSON lines to stdout and
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from ann_clouds import HardCloud  # noqa: E402

KNOBS = {"IVF": (64, 128, 256, 384, 512, 768), "HNSW": (64, 128, 256, 512, 1024, 2048)}


def vectors_of(rows: int, dim: int, base: Path) -> np.ndarray:
    path = base / f"hard-{rows}"
    if (path / "collection.sqlite").exists():
        from vitrina import open_collection

        store = open_collection(path)._store  # noqa: SLF001 - a benchmark reads the stored vectors
        sp = store.space("bench")
        return np.ascontiguousarray(store.space_view("bench").vectors(sp)[: sp.rows], np.float32)
    return HardCloud(dim).images(rows)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def build(spec: str, data: np.ndarray, threads: int) -> tuple[Any, float, int]:
    import faiss

    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    index = faiss.index_factory(data.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
    if "HNSW" in spec and not spec.startswith("IVF"):
        index.hnsw.efConstruction = 80
    if not index.is_trained:
        nlist = 0
        if "IVF" in spec:
            ivf = faiss.extract_index_ivf(index)
            ivf.cp.min_points_per_centroid = 1
            nlist = ivf.nlist
        rng = np.random.default_rng(0)
        n = min(len(data), max(100_000, 30 * nlist))
        index.train(np.ascontiguousarray(data[np.sort(rng.choice(len(data), n, replace=False))]))
    for s in range(0, len(data), 50_000):
        index.add(data[s : s + 50_000])
    seconds = time.perf_counter() - t
    size = len(faiss.serialize_index(index))
    faiss.omp_set_num_threads(1)
    return index, seconds, size


def search_params(spec: str, value: int) -> Any:
    import faiss

    if "IVF" in spec:
        if "HNSW" in spec.split(",")[0]:
            quantizer = faiss.SearchParametersHNSW(efSearch=max(64, 2 * value))
            return faiss.SearchParametersIVF(nprobe=value, quantizer_params=quantizer)
        return faiss.SearchParametersIVF(nprobe=value)
    return faiss.SearchParametersHNSW(efSearch=value)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--spec", action="append")
    ap.add_argument("--candidates", type=int, action="append", help="candidates re-ranked (default 100; repeat)")
    ap.add_argument("--knob", type=int, action="append", help="nprobe / efSearch values (repeat)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="build threads (search is 1 thread)")
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "vitrina-bench-recall")
    args = ap.parse_args()
    data = vectors_of(args.rows, args.dim, args.dir)
    queries = HardCloud(args.dim).texts(args.queries, seed=7)  # held out, as in ann_recall_target.py
    truth = np.argpartition(-(queries @ data.T), 10, axis=1)[:, :10]  # the set is what recall counts
    exact_ms, exact_cpu = [], []
    for q in queries[:50]:
        t, c = time.perf_counter(), time.process_time()
        s = data @ q
        np.argpartition(-s, 10)[:10]
        exact_ms.append((time.perf_counter() - t) * 1000)
        exact_cpu.append((time.process_time() - c) * 1000)
    exact_p50 = float(np.percentile(exact_ms, 50))
    print(
        json.dumps(
            {
                "rows": len(data),
                "exact_p50_ms": round(exact_p50, 2),
                "exact_cpu_p50_ms": round(float(np.percentile(exact_cpu, 50)), 2),
                "load": os.getloadavg(),
            }
        ),
        flush=True,
    )
    specs = args.spec or [f"IVF{int(4 * np.sqrt(len(data)))},SQ8", "IVF4096_HNSW32,SQ8", "HNSW32,SQ8", "HNSW32,Flat"]
    results: list[dict[str, Any]] = [{"rows": len(data), "exact_p50_ms": exact_p50}]
    for spec in specs:
        before = rss_mb()
        index, seconds, size = build(spec, data, args.threads)
        grown = rss_mb() - before
        knobs = args.knob or KNOBS["HNSW" if spec.startswith("HNSW") else "IVF"]
        for value, cands in ((v, c) for v in knobs for c in args.candidates or [100]):
            params = search_params(spec, value)
            ms, cpu, recall = [], [], []
            for q, t_rows in zip(queries, truth):
                t, c = time.perf_counter(), time.process_time()
                _, found = index.search(q[None], cands, params=params)
                cand = np.sort(found[0][found[0] >= 0])
                top = cand[np.argsort(-(data[cand] @ q))[:10]]
                ms.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)
                recall.append(len(set(top.tolist()) & set(t_rows.tolist())) / 10)
            row = {"spec": spec, "knob": value, "candidates": cands, "recall_at_10": round(float(np.mean(recall)), 4),
                   "p50_ms": round(float(np.percentile(ms, 50)), 3), "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
                   "p50_vs_exact": round(float(np.percentile(ms, 50)) / exact_p50, 3), "build_s": round(seconds, 1),
                   "index_mb": round(size / 2**20, 1), "rss_growth_mb": round(grown, 1), "load": os.getloadavg()[0]}  # fmt: skip
            print(json.dumps(row), flush=True)
            results.append(row)
            if row["recall_at_10"] >= 0.995 and cands == (args.candidates or [100])[-1]:
                break
        del index
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            "threads": os.environ.get("OMP_NUM_THREADS")}  # fmt: skip
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"ann_structures-{len(data)}-{int(time.time())}.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1)
    )


if __name__ == "__main__":
    main()
