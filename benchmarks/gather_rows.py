#!/usr/bin/env python3
"""Reading a few scattered rows of a vector file: concurrent preads (``VectorFile.gather``, what
the ANN re-rank uses) against the memory map (page faults one after another), side by side.

    python benchmarks/gather_rows.py PATH/TO/COLLECTION [--rows 100] [--trials 5]

Meaningful on a vector file larger than the page cache (benchmarks/ann_10m.py builds one): each
trial reads different random rows, alternating the two ways, so neither finds the other's pages.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("collection", type=Path)
    ap.add_argument("--space")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    from vitrina.store import Store

    store = Store(args.collection)
    sp = store.space(args.space) if args.space else store.spaces()[0]
    vf = store.vector_file(sp)
    matrix = vf.matrix(sp.rows)
    rng = np.random.default_rng(int(time.time()))
    mapped, gathered = [], []
    for _ in range(args.trials):
        a, b = (np.sort(rng.choice(sp.rows, args.rows, replace=False)) for _ in range(2))
        t0 = time.perf_counter()
        via_map = np.asarray(matrix[a])
        mapped.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        via_reads = vf.gather(b)
        gathered.append((time.perf_counter() - t0) * 1000)
        assert np.array_equal(via_map[0], vf.gather(a[:8])[0]) and len(via_reads) == args.rows
    print(json.dumps({"rows": sp.rows, "dim": sp.fingerprint.dim, "file_gb": round(vf.path.stat().st_size / 1e9, 1), "rows_read": args.rows,
                      "map_ms": [round(x, 1) for x in mapped], "gather_ms": [round(x, 1) for x in gathered],
                      "ratio_median": round(float(np.median(mapped) / np.median(gathered)), 1)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
