#!/usr/bin/env python3
"""Search latency over a LoC-sized collection in the real store format.

    python benchmarks/search_latency.py [--rows 562842] [--dim 512] [--threads 1]

Builds (once, cached in --dir) a collection of random unit vectors with dated metadata through
the real Store API, then measures in a fresh process: cold open, first query, p50/p95 of one query
and of a batch of 32, a filtered query, and a bare numpy baseline (matrix-vector product +
argpartition top-k on the same vectors, loaded in RAM) in the same run. Writes JSON to
benchmarks/results/ and prints a Markdown row for docs/benchmarks.md.
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


def build(path: Path, rows: int, dim: int) -> None:
    from vitrina import Item, ModelFingerprint, open_collection

    if (path / "collection.sqlite").exists():
        return
    t0 = time.perf_counter()
    fp = ModelFingerprint(spec="bench:random", revision="0", dim=dim, preprocessing="none")
    rng = np.random.default_rng(0)
    coll = open_collection(path, create=True)
    ids = [f"loc-{i:07d}" for i in range(rows)]
    with coll.writer():
        coll.add_items(Item(id=ids[i], image=f"https://tile.loc.gov/image-services/iiif/{i}/full/!512,512/0/default.jpg", fingerprint="1", source="bench",
                            metadata={"title": f"Map {i}", "date": str(1500 + i % 500)}) for i in range(rows))  # fmt: skip
        for start in range(0, rows, 50_000):
            chunk = rng.standard_normal((min(50_000, rows - start), dim), dtype=np.float32)
            coll.import_vectors(ids[start : start + len(chunk)], chunk, fingerprint=fp, space="bench")
    print(f"built {rows} x {dim} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def _release_1_filter_ms(path: Path, where: list[str]) -> tuple[float, int]:
    """The first release's filter, as a baseline in the same run: a Python function called by
    SQLite on json_extract of every item (what schema 2's indexed item_values replaced)."""
    import re
    import sqlite3

    number = re.compile(r"-?\d+(?:\.\d+)?")

    def match(value, op, operand):  # type: ignore[no-untyped-def]  # ordering ops only, as used here
        got = number.search(str(value)) if value is not None else None
        return int(
            bool(got) and {"<": float(got.group()) < float(operand), ">=": float(got.group()) >= float(operand)}[op]
        )

    db = sqlite3.connect(path / "collection.sqlite")
    db.create_function("vitrina_match", 3, match, deterministic=True)
    clauses, params = [], []
    for w in where:
        key, op, operand = re.match(r"(\w+)(>=|<)(.*)", w).groups()  # type: ignore[union-attr]
        clauses.append("vitrina_match(json_extract(i.metadata, ?), ?, ?)")
        params += [f'$."{key}"', op, operand]
    t0 = time.perf_counter()
    rows = db.execute(
        f"SELECT v.row FROM vectors v JOIN items i ON i.id = v.item_id WHERE v.space = 'bench' AND {' AND '.join(clauses)}",
        params,
    ).fetchall()
    elapsed = (time.perf_counter() - t0) * 1000
    db.close()
    return elapsed, len(rows)


def measure(path: Path, repeats: int) -> dict:
    started = time.perf_counter()
    from vitrina import open_collection

    coll = open_collection(path)
    sp = coll.spaces()[0]
    opened = time.perf_counter() - started
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((repeats + 32, sp.fingerprint.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    t0 = time.perf_counter()
    coll.search_vectors(queries[0], limit=10)
    first = time.perf_counter() - t0

    def timed(fn, n):  # type: ignore[no-untyped-def]
        out = []
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            out.append(time.perf_counter() - t)
        return np.asarray(out) * 1000

    one = timed(lambda i: coll.search_vectors(queries[i], limit=10), repeats)
    batch = timed(lambda i: coll.search_vectors(queries[i : i + 32], limit=10), max(5, repeats // 4))
    where = ["date>=1700", "date<1800"]
    t0 = time.perf_counter()
    first_hits = coll.search_vectors(queries[0], where=where, limit=10)[0]
    filtered_first = time.perf_counter() - t0  # indexed SQL over item_values, then the product
    filtered = timed(lambda i: coll.search_vectors(queries[i], where=where, limit=10), max(5, repeats // 4))
    release_1_ms, release_1_rows = _release_1_filter_ms(path, where)
    assert first_hits.total_considered == release_1_rows, "schema 2 filters disagree with release 1"

    anon_mb = _rss_anon_mb()  # private memory: the mapped vectors are page cache, not a copy
    # Baseline: the same vectors as a plain in-RAM numpy array, matrix-vector product + top-k.
    ids, matrix = coll.vectors()

    def bare(i: int) -> None:
        scores = matrix @ queries[i]
        top = np.argpartition(-scores, 9)[:10]
        top[np.argsort(-scores[top])]

    base = timed(bare, repeats)
    hits = coll.search_vectors(queries[3], limit=10)[0]
    scores = matrix @ queries[3]
    assert [h.id for h in hits] == [ids[i] for i in np.argsort(-scores)[:10]], "exact search disagrees with numpy"
    import resource

    return {
        "rows": sp.rows, "dim": sp.fingerprint.dim, "open_ms": opened * 1000, "first_query_ms": first * 1000,
        "one_query_p50_ms": float(np.percentile(one, 50)), "one_query_p95_ms": float(np.percentile(one, 95)),
        "batch32_p50_ms": float(np.percentile(batch, 50)), "batch32_p95_ms": float(np.percentile(batch, 95)),
        "filtered_first_ms": filtered_first * 1000, "filtered_repeat_p50_ms": float(np.percentile(filtered, 50)),
        "release_1_filter_ms": release_1_ms, "filter_matches": release_1_rows,
        "numpy_baseline_p50_ms": float(np.percentile(base, 50)), "numpy_baseline_p95_ms": float(np.percentile(base, 95)),
        "ratio_p50": float(np.percentile(one, 50) / np.percentile(base, 50)),
        "rss_anon_mb_before_baseline": anon_mb, "vector_file_mb": sp.rows * sp.fingerprint.dim * 4 / 1e6,
        "max_rss_mb_including_baseline_copy": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


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
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (set before numpy loads)")
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "vitrina-bench")
    ap.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = args.dir / f"loc-{args.rows}-{args.dim}"
    if args.measure_only:
        print(json.dumps(measure(path, args.repeats)))
        return
    build(path, args.rows, args.dim)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "OPENBLAS_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
    }
    out = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--dim", str(args.dim), "--repeats", str(args.repeats), "--dir", str(args.dir), "--measure-only"],
                         env=env, capture_output=True, text=True, check=True)  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(
        {
            "threads": args.threads,
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"),
        }
    )
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"search-{args.rows}x{args.dim}-t{args.threads}.json").write_text(
        json.dumps(result, indent=2)
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
