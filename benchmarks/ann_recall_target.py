#!/usr/bin/env python3
"""The recall target on hard clouds: tuned approximate search vs the defaults vs the exact scan.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/ann_recall_target.py --rows 100000 [--rows 562842]

For each size: a collection of CLIP-like image vectors with heavy-tailed cluster sizes and diffuse
clusters (``ann_clouds.HardCloud``), built through the real store; its index built with
``build_ann(target_recall=0.98)`` twice: probes = 200 synthetic text queries standing in for the
items' captions, and probes = stored vectors shifted by the gap measured from 24 text vectors and
moved off their image until their best cosine is that of those texts (no captions). Then 200 *held-out* text-like queries (another seed) are searched one at a time, the
sides alternating query by query in one process: the tuned index, the index at the old fixed
defaults (nprobe 48, 8x oversampling), and the exact scan. Reports recall@10 against exact and
p50/p95, and the ratio of each p50 to the exact p50 of the same run. JSON to benchmarks/results/.
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

from ann_clouds import HardCloud  # noqa: E402


def collection(path: Path, rows: int, dim: int, cloud: HardCloud):  # type: ignore[no-untyped-def]
    from vitrina import Item, ModelFingerprint, open_collection

    if not (path / "collection.sqlite").exists():
        fp = ModelFingerprint(spec="bench:hard-cloud", revision="0", dim=dim, preprocessing="none")
        vectors = cloud.images(rows)
        coll = open_collection(path, create=True)
        ids = [f"loc-{i:07d}" for i in range(rows)]
        with coll.writer():
            coll.add_items(Item(id=ids[i], image=f"{i}.jpg", fingerprint="1", source="bench") for i in range(rows))
            coll.import_vectors(ids, vectors, fingerprint=fp, space="bench")
    return open_collection(path)


def run(rows: int, dim: int, base: Path, probes: str, baseline: Path | None, baseline_settings: dict[str, int] | None,
        reuse: bool = False) -> dict:  # fmt: skip
    import resource

    from vitrina import open_collection
    from vitrina.index.ann import AnnIndex, AnnParams
    from vitrina.index.ann_build import build_ann

    cloud = HardCloud(dim)
    path = base / f"hard-{rows}"
    coll = collection(path, rows, dim, cloud)
    store = coll._store  # noqa: SLF001 - a benchmark drives the library directly
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if reuse:  # the index as built by an earlier run: only the searches are measured again
        from types import SimpleNamespace

        from vitrina.index.ann import ann_path, read_ann

        stamp, _ = read_ann(ann_path(store, "bench"))
        report = SimpleNamespace(
            tuning=stamp.get("tuning"), recall=stamp["recall"], bytes=ann_path(store, "bench").stat().st_size
        )
    elif probes == "captions":
        report = build_ann(store, "bench", None, rebuild=True, threads=2, queries=cloud.texts(200, seed=5),
                           queries_label="captions (synthetic)", target_recall=0.98)  # fmt: skip
    else:
        prompts = cloud.texts(24, seed=6)  # stand-ins for the 24 generic prompts embedded by a model
        report = build_ann(store, "bench", None, rebuild=True, threads=2, prompts=prompts, target_recall=0.98)
    build_s = time.perf_counter() - t0
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tuned = open_collection(path)
    # The old default (IVF 4·√rows, SQ8): a copy of an index file built by it (--baseline), searched at
    # the old fixed settings (nprobe 48, 8x oversampling) and at its tuned ones (--baseline-settings,
    # else those in its stamp); without one, the new index at its fixed settings.
    old = AnnParams(structure="ivf", codes="sq8")
    fixed = AnnIndex(store, "bench", old if baseline else AnnParams(), path=baseline)
    old_tuned = None
    if baseline:
        old_tuned = AnnIndex(store, "bench", old.tuned(baseline_settings) if baseline_settings else None, path=baseline)
    exact = open_collection(path, index="exact")
    queries = cloud.texts(200, seed=7)  # held out: never seen by the tuning
    import faiss

    from vitrina.index.ann import ann_path, read_ann
    from vitrina.vectors import HEADER_SIZE

    _, raw = read_ann(ann_path(store, "bench"))  # the same faiss index, searched bare
    sp = store.space("bench")
    mapped = np.memmap(next((path / "spaces").glob("bench.*.f32")), np.float32, "r", HEADER_SIZE, (sp.rows, dim))
    settings = (report.tuning or {}).get("settings") or {"nprobe": 48, "candidates": 100}
    if "efSearch" in settings:
        plain = faiss.SearchParametersHNSW(efSearch=max(settings["efSearch"], settings["candidates"]))
    else:
        plain = faiss.SearchParametersIVF(nprobe=settings.get("nprobe", 48))

    class Hits:
        def __init__(self, rows: np.ndarray):
            self.ids = [f"loc-{int(r):07d}" for r in rows]

    def faiss_rerank(q: np.ndarray) -> Hits:  # plain faiss, same settings, + the exact re-rank in numpy
        _, found = raw.search(q[None], settings["candidates"], params=plain)
        rows = np.sort(found[0][found[0] >= 0])
        scores = np.asarray(mapped[rows]) @ q
        return Hits(rows[np.argsort(-scores)[:10]])

    sides = [("exact", lambda q: exact.search_vectors(q, limit=10)[0]),
             ("tuned", lambda q: tuned.search_vectors(q, limit=10)[0]),
             ("defaults" if baseline is None else "old_ivf_fixed", lambda q: fixed.search(q[None], limit=10)[0]),
             ("faiss_same_settings_rerank", faiss_rerank)]  # fmt: skip
    if old_tuned is not None:
        sides.append(("old_ivf_tuned", lambda q: old_tuned.search(q[None], limit=10)[0]))
    ms: dict[str, list[float]] = {name: [] for name, _ in sides}
    cpu: dict[str, list[float]] = {name: [] for name, _ in sides}  # CPU time: what a loaded machine does not inflate
    found: dict[str, list[list[str]]] = {k: [] for k in ms}
    tuned.search_vectors(queries[0], limit=10)
    for _, fn in sides[2:]:
        fn(queries[0])  # load each index file once before timing
    for q in queries:
        for name, fn in sides:
            t, c = time.perf_counter(), time.process_time()
            hits = fn(q)
            ms[name].append((time.perf_counter() - t) * 1000)
            cpu[name].append((time.process_time() - c) * 1000)
            found[name].append(list(hits.ids) if hasattr(hits, "ids") else [h.id for h in hits])
    truth = found["exact"]
    out: dict = {"rows": rows, "dim": dim, "probes": probes, "build_and_tune_s": round(build_s, 1), "index": tuned.index_for().kind,
                 "tuning": {k: v for k, v in (report.tuning or {}).items() if k != "curve"}, "curve": (report.tuning or {}).get("curve"),
                 "recall_at_build": report.recall, "index_mb": round(report.bytes / 2**20, 1),
                 "build_peak_rss_mb": round(peak_rss_mb, 1), "rss_before_build_mb": round(rss_before, 1)}  # fmt: skip
    if old_tuned is not None:
        out["old_ivf"] = {"kind": old_tuned.kind, "settings": baseline_settings or "as stamped"}
    p50_exact = float(np.percentile(ms["exact"], 50))
    for name in ms:
        out[name] = {
            "recall_at_10": round(float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found[name], truth)])), 4),
            "p50_ms": round(float(np.percentile(ms[name], 50)), 2),
            "p95_ms": round(float(np.percentile(ms[name], 95)), 2),
            "p50_vs_exact": round(float(np.percentile(ms[name], 50)) / p50_exact, 3),
            "cpu_p50_ms": round(float(np.percentile(cpu[name], 50)), 2),
            "cpu_p95_ms": round(float(np.percentile(cpu[name], 95)), 2),
            "cpu_p50_vs_exact": round(float(np.percentile(cpu[name], 50)) / float(np.percentile(cpu["exact"], 50)), 3),
        }
    per_query = np.asarray(ms["tuned"]) / np.asarray(ms["faiss_same_settings_rerank"])
    out["tuned_vs_faiss_median_per_query_ratio"] = round(float(np.median(per_query)), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, action="append")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--probes", choices=["captions", "gap", "both"], default="both")
    ap.add_argument(
        "--baseline", type=Path, help="a copy of an index file built by the old default (IVF) for this collection"
    )
    ap.add_argument(
        "--baseline-settings", help="its tuned settings, e.g. nprobe=768,candidates=40 (default: its stamp's)"
    )
    ap.add_argument("--reuse", action="store_true", help="search the index an earlier run built (no build)")
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "vitrina-bench-recall")
    args = ap.parse_args()
    results = []
    for rows in args.rows or [100_000]:
        for probes in ["captions", "gap"] if args.probes == "both" else [args.probes]:
            base_path = Path(str(args.baseline).replace("{rows}", str(rows))) if args.baseline else None
            chosen = (
                dict((k, int(v)) for k, v in (p.split("=") for p in args.baseline_settings.split(",")))
                if args.baseline_settings
                else None
            )
            r = run(rows, args.dim, args.dir, probes, base_path, chosen, args.reuse)
            print(json.dumps(r), flush=True)
            results.append(r)
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg(), "date": time.strftime("%Y-%m-%d"),
            "threads": os.environ.get("OMP_NUM_THREADS")}  # fmt: skip
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"ann_recall_target-{int(time.time())}.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1)
    )


if __name__ == "__main__":
    main()
