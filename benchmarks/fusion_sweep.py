"""Which fusion and keyword weight: nDCG@10 / P@10 of CLIP only, keywords only and fused runs on
the words-and-pictures test collection (tests/words_world.py), over seeds and collection sizes.

    PYTHONPATH=src:. python benchmarks/fusion_sweep.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from tests.words_world import build

from vitrina.evaluate_modes import eval_modes

WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--background", type=int, nargs="+", default=[200, 5000])
    args = parser.parse_args()
    for background in args.background:
        table: dict[str, list[tuple[float, float]]] = {}
        seconds = 0.0
        for seed in range(args.seeds):
            coll, judged = build(Path(tempfile.mkdtemp(prefix="fusion-")) / "w", seed, background=background)
            start = time.perf_counter()
            r = eval_modes(coll, judged, weights=[(f, w) for f in ("rrf", "weighted") for w in WEIGHTS])
            seconds += time.perf_counter() - start
            for name, v in r.items():
                if isinstance(v, dict):
                    table.setdefault(name, []).append((v["ndcg@10"], v["p@10"]))
        print(f"\nbackground {background} items, {args.seeds} seeds x 12 queries ({seconds:.1f} s of searching)")
        print("| run | nDCG@10 (mean ± sd over seeds) | P@10 |\n|---|---|---|")
        for name, rows in table.items():
            a = np.asarray(rows)
            print(f"| {name} | {a[:, 0].mean():.3f} ± {a[:, 0].std():.3f} | {a[:, 1].mean():.3f} |")


if __name__ == "__main__":
    main()
