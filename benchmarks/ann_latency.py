#!/usr/bin/env python3
"""Approximate vs exact search on CLIP-like vectors with text-like queries, side by side in one run.

    python benchmarks/ann_latency.py [--rows 562842] [--dim 512] [--threads 1] [--hnsw-baseline]

Builds (once, cached in --dir) a collection of CLIP-like image vectors (benchmarks/synthetic.py)
through the real Store API and its approximate index (`build_ann`, all cores), then measures in a
fresh process limited to --threads: text-like queries (off the image cloud by a fixed offset plus
noise) through `Collection.search_vectors` with the index, the same queries with `index="exact"`
(the ground truth and the exact-scan latency), image-like queries, a filtered query, and a plain
faiss baseline with default settings on the same vectors (IVF,Flat with nprobe=1; with
--hnsw-baseline also HNSW32,Flat with efSearch=16). Writes JSON to benchmarks/results/.
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

from synthetic import CloudModel, recall  # noqa: E402


def build(path: Path, rows: int, dim: int) -> dict:
    from vitrina import Item, ModelFingerprint, open_collection

    out: dict = {}
    if not (path / "collection.sqlite").exists():
        t0 = time.perf_counter()
        fp = ModelFingerprint(spec="bench:clip-like", revision="0", dim=dim, preprocessing="none")
        vectors = CloudModel(dim).images(rows)
        coll = open_collection(path, create=True)
        ids = [f"loc-{i:07d}" for i in range(rows)]
        with coll.writer():
            coll.add_items(
                Item(
                    id=ids[i], image=f"{i}.jpg", fingerprint="1", source="bench", metadata={"date": str(1500 + i % 500)}
                )
                for i in range(rows)
            )
            coll.import_vectors(ids, vectors, fingerprint=fp, space="bench")
        out["store_build_s"] = time.perf_counter() - t0
    from vitrina import open_collection

    coll = open_collection(path)
    if not (path / "spaces" / "bench.ann").exists():
        report = coll.build_ann()
        out.update(
            {
                "ann_build_s": report.seconds,
                "ann_bytes": report.bytes,
                "ann_kind": report.kind,
                "recall_measured_at_build": report.recall,
            }
        )
    return out


def measure(path: Path, repeats: int, hnsw_baseline: bool) -> dict:
    import resource

    import faiss

    from vitrina import open_collection

    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ann = open_collection(path)
    exact = open_collection(path, index="exact")
    sp = ann.spaces()[0]
    model = CloudModel(sp.fingerprint.dim)
    texts = model.texts(repeats)

    def timed(coll, queries, **kw):  # type: ignore[no-untyped-def]
        ms, found = [], []
        for q in queries:
            t = time.perf_counter()
            hits = coll.search_vectors(q, limit=10, **kw)[0]
            ms.append((time.perf_counter() - t) * 1000)
            found.append([h.id for h in hits])
        return np.asarray(ms), found

    ann.search_vectors(texts[0], limit=10)  # load the index file
    t_ann, f_ann = timed(ann, texts)
    rss_anon = _rss_anon_mb()
    t_exact, f_exact = timed(exact, texts)
    truth = np.asarray([[int(i[4:]) for i in f] for f in f_exact])
    found = np.asarray([[int(i[4:]) for i in f] for f in f_ann])
    ids, matrix = exact.vectors()
    images = model.image_queries(matrix, repeats)
    t_img, f_img = timed(ann, images)
    _, f_img_exact = timed(exact, images)
    where = ["date>=1700", "date<1720"]  # 4% of the items pass
    t_filt, f_filt = timed(ann, texts[:50], where=where)
    _, f_filt_exact = timed(exact, texts[:50], where=where)

    def rec(a, b):  # type: ignore[no-untyped-def]
        return float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b)]))

    out = {
        "rows": sp.rows, "dim": sp.fingerprint.dim, "queries": repeats, "index": ann.index_for().kind,
        "ann_text_p50_ms": float(np.percentile(t_ann, 50)), "ann_text_p95_ms": float(np.percentile(t_ann, 95)), "ann_text_recall_at_10": recall(found, truth),
        "exact_text_p50_ms": float(np.percentile(t_exact, 50)), "exact_text_p95_ms": float(np.percentile(t_exact, 95)),
        "ann_image_p50_ms": float(np.percentile(t_img, 50)), "ann_image_recall_at_10": rec(f_img, f_img_exact),
        "ann_filtered_4pct_p50_ms": float(np.percentile(t_filt, 50)), "ann_filtered_4pct_recall_at_10": rec(f_filt, f_filt_exact),
        "rss_anon_mb_serving": rss_anon, "text_top1_cosine_mean": float(np.mean([matrix[ids.index(f[0])] @ q for f, q in zip(f_exact[:20], texts[:20])])),
    }  # fmt: skip
    # Plain faiss with default settings on the same vectors (in RAM), no re-ranking.
    nlist = int(4 * np.sqrt(len(matrix)))
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    ivf = faiss.index_factory(matrix.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(matrix[np.random.default_rng(0).choice(len(matrix), min(len(matrix), 40 * nlist), replace=False)])
    ivf.add(matrix)
    out["faiss_ivf_flat_default_build_s"] = time.perf_counter() - t0
    baselines = {"faiss_ivf_flat_nprobe1": ivf}
    if hnsw_baseline:
        t0 = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(matrix.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.add(matrix)
        out["faiss_hnsw32_flat_default_build_s"] = time.perf_counter() - t0
        baselines["faiss_hnsw32_flat_ef16"] = hnsw
    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    row_of = {i: n for n, i in enumerate(ids)}
    truth_rows = np.asarray([[row_of[i] for i in f] for f in f_exact])
    for name, index in baselines.items():
        ms, rows = [], []
        for q in texts:
            t = time.perf_counter()
            _, r = index.search(q[None], 10)
            ms.append((time.perf_counter() - t) * 1000)
            rows.append(r[0])
        out[f"{name}_text_p50_ms"] = float(np.percentile(ms, 50))
        out[f"{name}_text_recall_at_10"] = recall(np.asarray(rows), truth_rows)
    out["max_rss_mb_including_baselines"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _rss_anon_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=562_842)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="threads while measuring (BLAS and faiss)")
    ap.add_argument(
        "--hnsw-baseline", action="store_true", help="also build a default faiss HNSW32,Flat (slow to build)"
    )
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "vitrina-bench")
    ap.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = args.dir / f"cliplike-{args.rows}-{args.dim}"
    if args.measure_only:
        print(json.dumps(measure(path, args.repeats, args.hnsw_baseline)))
        return
    built = build(path, args.rows, args.dim)
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
    out = subprocess.run(
        cmd + (["--hnsw-baseline"] if args.hnsw_baseline else []), env=env, capture_output=True, text=True, check=True
    )
    result = {**built, **json.loads(out.stdout.strip().splitlines()[-1])}
    result.update(
        {
            "threads": args.threads,
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"),
        }
    )
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"ann-{args.rows}x{args.dim}-t{args.threads}.json").write_text(
        json.dumps(result, indent=2)
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
