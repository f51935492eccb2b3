#!/usr/bin/env python3
"""Keyword and fused search latency beside CLIP-only search, in the same run.

    python benchmarks/fusion_latency.py [--rows 100000] [--dim 512] [--repeats 20]

Builds (once, in --dir) a collection of random unit vectors whose items carry OCR-like context
text (40 words drawn from a Zipf-distributed vocabulary of 5,000, plus a title), through the real
store API (so the FTS5 table is filled by its triggers), then times: CLIP only (the baseline),
keywords only with a rare and a common word, and fused (weighted and RRF). Prints a Markdown
table for docs/benchmarks.md and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 5000


def word(i: int) -> str:
    return f"w{i}"


def build(path: Path, rows: int, dim: int) -> float:
    from vitrina import Item, ModelFingerprint, open_collection

    if (path / "collection.sqlite").exists():
        return 0.0
    rng = np.random.default_rng(0)
    fp = ModelFingerprint(spec="bench:random", revision="0", dim=dim, preprocessing="none")
    coll = open_collection(path, create=True)
    ranks = np.minimum(rng.zipf(1.3, (rows, 40)), VOCAB) - 1
    t0 = time.perf_counter()
    with coll.writer():
        coll.add_items(Item(id=f"it-{i:07d}", image=f"/scans/{i}.jpg", fingerprint="1", source="bench", metadata={"title": f"Plate {i}", "date": str(1600 + i % 300)},
                            context=" ".join(word(int(r)) for r in ranks[i])) for i in range(rows))  # fmt: skip
        items_seconds = time.perf_counter() - t0
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            coll.import_vectors(
                [f"it-{i:07d}" for i in range(start, start + n)],
                rng.standard_normal((n, dim)).astype(np.float32),
                fingerprint=fp,
                space="bench",
            )
    return items_seconds


def timed(fn, repeats: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    fn()  # warm
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000), float(np.percentile(times, 95) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/vitrina-fusion-bench"))
    args = parser.parse_args()
    from vitrina import open_collection

    path = args.dir / f"c-{args.rows}-{args.dim}"
    items_seconds = build(path, args.rows, args.dim)
    coll = open_collection(path, index="exact")
    q = np.random.default_rng(1).standard_normal(args.dim).astype(np.float32)
    rare, common = word(3000), word(0)
    df = {w: len(coll.search(keywords=w, limit=10_000)) for w in (rare, common)}
    runs = {
        "CLIP only (baseline)": lambda: coll.search_vectors(q, limit=10),
        f"keywords only, rare word ({df[rare]} items)": lambda: coll.search(keywords=rare, limit=10),
        f"keywords only, common word (≥{df[common]} items)": lambda: coll.search(keywords=common, limit=10),
        "fused weighted, rare word": lambda: coll.search(image="it-0000001", keywords=rare, limit=10),
        "fused weighted, common word": lambda: coll.search(image="it-0000001", keywords=common, limit=10),
        "fused RRF, common word": lambda: coll.search(image="it-0000001", keywords=common, fusion="rrf", limit=10),
        "CLIP by item (fused baseline)": lambda: coll.search(image="it-0000001", limit=10),
    }
    out = {name: timed(fn, args.repeats) for name, fn in runs.items()}
    base = out["CLIP only (baseline)"][0]
    print(
        f"\n{args.rows} items × {args.dim} dims, {platform.processor() or platform.machine()}, Python {platform.python_version()}; items + FTS written in {items_seconds:.1f} s"
    )
    print("| query | p50 | p95 | ratio to CLIP only |\n|---|---|---|---|")
    for name, (p50, p95) in out.items():
        print(f"| {name} | {p50:.1f} ms | {p95:.1f} ms | {p50 / base:.2f}× |")
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "fusion_latency.json").write_text(
        json.dumps({"rows": args.rows, "dim": args.dim, "ms": out, "items_seconds": items_seconds}, indent=2)
    )


if __name__ == "__main__":
    main()
