#!/usr/bin/env python3
"""Two ANN index files of one hard-cloud collection side by side, query by query, in CPU time.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/ann_cpu_compare.py ROWS OLD_NPROBE OLD_CANDIDATES NEW_NPROBE NEW_CANDIDATES

The collection and its index are those ``ann_recall_target.py`` built (``$TMPDIR/vitrina-bench-recall/hard-ROWS``);
the old file is a copy of an index built by the old default (``/tmp/ann-h/hard-ROWS-ivf-old.ann``, or
``--old``). 100 held-out text queries (seed 7), the sides alternating per query: recall@10 against exact,
CPU-time p50/p95 (``time.process_time``: what a machine shared with other jobs does not inflate) and wall p50.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from ann_clouds import HardCloud  # noqa: E402


def main() -> None:
    from vitrina import open_collection
    from vitrina.index.ann import AnnIndex, AnnParams

    rows = int(sys.argv[1])
    old_settings = {"nprobe": int(sys.argv[2]), "candidates": int(sys.argv[3])}
    new_settings = {"nprobe": int(sys.argv[4]), "candidates": int(sys.argv[5])}
    old_file = Path(sys.argv[6]) if len(sys.argv) > 6 else Path(f"/tmp/ann-h/hard-{rows}-ivf-old.ann")
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "vitrina-bench-recall" / f"hard-{rows}"
    store = open_collection(path)._store  # noqa: SLF001 - a benchmark drives the library directly
    queries = HardCloud(512).texts(100, seed=7)
    base = AnnParams(structure="ivf", codes="sq8", exact_below=0, selective=0)
    sides = {
        "old_sq8": AnnIndex(store, "bench", base.tuned(old_settings), path=old_file),
        "new": AnnIndex(store, "bench", base.tuned(new_settings)),
        "exact": open_collection(path, index="exact").index_for(),
    }
    for s in sides.values():
        s.search(queries[0][None], limit=10)
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    wall: dict[str, list[float]] = {k: [] for k in sides}
    found: dict[str, list[set[str]]] = {k: [] for k in sides}
    for q in queries:
        for k, s in sides.items():
            c, t = time.process_time(), time.perf_counter()
            m = s.search(q[None], limit=10)[0]
            cpu[k].append(time.process_time() - c)
            wall[k].append(time.perf_counter() - t)
            found[k].append(set(m.ids))
    for k in sides:
        rec = np.mean([len(f & t) / 10 for f, t in zip(found[k], found["exact"])])
        print(k, "recall", round(float(rec), 4), "cpu p50", round(float(np.median(cpu[k])) * 1000, 2),
              "p95", round(float(np.percentile(cpu[k], 95)) * 1000, 2), "wall p50", round(float(np.median(wall[k])) * 1000, 2),
              "load", os.getloadavg()[0], flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
