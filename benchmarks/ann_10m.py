#!/usr/bin/env python3
"""The approximate index at 10 million vectors on this machine: build, size, memory, latency, recall.

    python benchmarks/ann_10m.py [--rows 10000000] [--dim 512] [--nlist 4096] [--threads 2] [--dir /tmp/vitrina-bench]

ann_latency.py holds everything in RAM (its exact baseline, plain-faiss baselines); at 10M x 512
the float32 vectors alone are 20.5 GB, so this one streams: the collection is built through the
real Store API a chunk at a time (CLIP-like vectors from benchmarks/synthetic.py, the same stream as
``CloudModel.images(rows, chunk=250_000)``), the index is built by ``vitrina.index.ann_build.build_ann`` from the memory-mapped
file, and a fresh process limited to --threads measures text-like queries through
``Collection.search_vectors`` (the serving path, exact re-rank included) with its resident memory.
The ground truth is one batched exact pass over the mapped file (all queries at once), and the
exact scan's own latency is timed on a few queries in the same process, as the baseline.
Writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from synthetic import CloudModel, exact_top, recall  # noqa: E402

CHUNK = 250_000


def build(path: Path, rows: int, dim: int, nlist: int, threads: int) -> dict:
    from vitrina import Item, ModelFingerprint, open_collection
    from vitrina.index.ann import AnnParams, ann_path
    from vitrina.index.ann_build import build_ann

    out: dict = {}
    coll = open_collection(path, create=True)
    done = coll.space().rows if coll.spaces() else 0
    if done < rows:
        t0 = time.perf_counter()
        fp = ModelFingerprint(spec="bench:clip-like", revision="0", dim=dim, preprocessing="none")
        model = CloudModel(dim)
        rng = np.random.default_rng(1)
        for s in range(0, rows, CHUNK):  # the same random stream as CloudModel.images(rows, chunk=CHUNK)
            m = min(CHUNK, rows - s)
            lat = model._latent(rng, m) @ model.basis
            noise = rng.standard_normal((m, dim), dtype=np.float32) * (0.7 / np.sqrt(dim))
            if s < done:
                continue  # resumed: keep the stream, skip what is stored
            v = 0.9 * model.mean + lat + noise
            v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
            ids = [f"loc-{i:08d}" for i in range(s, s + m)]
            with coll.writer():
                coll.add_items(
                    Item(
                        id=ids[k],
                        image=f"{s + k}.jpg",
                        fingerprint="1",
                        source="bench",
                        metadata={"date": str(1500 + (s + k) % 500)},
                    )
                    for k in range(m)
                )
                coll.import_vectors(ids, v, fingerprint=fp, space="bench")
            print(f"stored {s + m:,} / {rows:,} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        out["store_build_s"] = time.perf_counter() - t0
    store = open_collection(path)._store
    if not ann_path(store, "bench").exists():
        report = build_ann(store, "bench", AnnParams(nlist=nlist), threads=threads, sample=100,
                           progress=lambda d, t: print(f"index {d:,} / {t:,}", file=sys.stderr, flush=True))  # fmt: skip
        out.update(
            {
                "ann_build_s": report.seconds,
                "ann_bytes": report.bytes,
                "ann_kind": report.kind,
                "recall_measured_at_build": report.recall,
            }
        )
    out["vector_file_bytes"] = sum(f.stat().st_size for f in (path / "spaces").glob("*.f32"))
    out["sqlite_bytes"] = (path / "collection.sqlite").stat().st_size
    return out


def measure(path: Path, repeats: int) -> dict:
    import resource

    import faiss

    from vitrina import open_collection

    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ann = open_collection(path)
    sp = ann.spaces()[0]
    model = CloudModel(sp.fingerprint.dim)
    texts = model.texts(repeats)
    t0 = time.perf_counter()
    ann.search_vectors(texts[0], limit=10)  # loads the index file
    load_s = time.perf_counter() - t0
    ms, found = [], []
    for q in texts:
        t = time.perf_counter()
        hits = ann.search_vectors(q, limit=10)[0]
        ms.append((time.perf_counter() - t) * 1000)
        found.append([int(h.id[4:]) for h in hits])
    status = _status()
    filt_ms = []
    for q in texts[:50]:
        t = time.perf_counter()
        ann.search_vectors(q, limit=10, where=["date>=1700", "date<1720"])
        filt_ms.append((time.perf_counter() - t) * 1000)
    exact = open_collection(path, index="exact")
    exact_ms = []
    for q in texts[:1]:  # reads all 20 GB, from disk when they do not fit in memory: one is the baseline
        t = time.perf_counter()
        exact.search_vectors(q, limit=10)
        exact_ms.append((time.perf_counter() - t) * 1000)
    matrix = exact._store.vector_file(sp).matrix(sp.rows)
    t0 = time.perf_counter()
    truth = exact_top(matrix, texts, 10, chunk=200_000)  # row i is item loc-i
    truth_s = time.perf_counter() - t0
    return {
        "rows": sp.rows, "dim": sp.fingerprint.dim, "queries": repeats, "index": ann.index_for().kind, "index_load_s": load_s,
        "ann_text_p50_ms": float(np.percentile(ms, 50)), "ann_text_p99_ms": float(np.percentile(ms, 99)),
        "ann_text_recall_at_10": recall(np.asarray(found), truth),
        "ann_filtered_4pct_p50_ms": float(np.percentile(filt_ms, 50)),
        "exact_text_ms_each": exact_ms, "exact_truth_batch_s": truth_s,
        "rss_mb_serving": status.get("VmRSS"), "rss_anon_mb_serving": status.get("RssAnon"), "rss_file_mb_serving": status.get("RssFile"),
        "max_rss_mb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def _status() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument(
        "--nlist", type=int, default=4096, help="IVF lists (the default 4*sqrt(rows) takes hours of k-means on 2 cores)"
    )
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="threads for the build and while measuring")
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "vitrina-bench")
    ap.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = args.dir / f"cliplike-{args.rows}-{args.dim}-stream"
    if args.measure_only:
        print(json.dumps(measure(path, args.repeats)))
        return
    built = build(path, args.rows, args.dim, args.nlist, args.threads)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "OPENBLAS_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
    }
    cmd = [
        sys.executable,
        __file__,
        "--rows",
        str(args.rows),
        "--dim",
        str(args.dim),
        "--repeats",
        str(args.repeats),
        "--dir",
        str(args.dir),
        "--measure-only",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result = {**built, **json.loads(out.stdout.strip().splitlines()[-1])}
    result.update({"threads": args.threads, "nlist": args.nlist, "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
                   "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")})  # fmt: skip
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"ann-{args.rows}x{args.dim}-stream-t{args.threads}.json").write_text(
        json.dumps(result, indent=2)
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
