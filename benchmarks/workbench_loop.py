"""Does uncertainty-ordered review reach a given F1 with fewer labels than random order?

The shipped demo drawings (215, in 21 folders) indexed with the offline ``mini`` model; the
question is "is this drawing from folder X?" for each folder of 14 drawings (6.5% of the
collection). A simulated curator starts from 2 yes and 2 no labels picked at random, then loops:
train the probe (``Workbench.train``), take the next ``--step`` items of the review queue
(``uncertain``: the probe's least sure first, or ``random``), answer them truthfully, retrain.
After each training the F1 of the yes class is measured over the whole collection on the tag a
curator ends with (the probe's output, the labelled items' answers winning), against the folders.

    PYTHONPATH=src python benchmarks/workbench_loop.py [--seeds 3] [--budget 60] [--svg docs/workbench_loop.svg]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

DEMO = Path(__file__).resolve().parent.parent / "src" / "vitrina" / "demo" / "openclipart"


def f1(predicted: set[str], truth: set[str]) -> float:
    tp = len(predicted & truth)
    return 2 * tp / (len(predicted) + len(truth)) if predicted or truth else 1.0


def run_loop(coll, question: str, truth: set[str], ids: list[str], order: str, seed: int, budget: int, step: int) -> list[tuple[int, float, float]]:  # type: ignore[no-untyped-def]  # fmt: skip
    """(labels, F1 over the collection, cross-validated F1) after each training."""
    wb = coll.workbench
    rng = np.random.default_rng(seed)
    yes = rng.choice(sorted(truth), 2, replace=False).tolist()
    no = rng.choice(sorted(set(ids) - truth), 2, replace=False).tolist()
    for i in yes:
        wb.label(question, i, "yes", who="sim")
    for i in no:
        wb.label(question, i, "no", who="sim")
    points = []
    labelled = 4
    tag = f"q_{order}_{seed}"
    while True:
        report = wb.train(question, tag=tag, seed=seed)
        tagged = set(coll.ids_where([f"{tag}=yes"]))
        points.append((labelled, f1(tagged, truth), float(report["f1_macro_cv"])))
        if labelled >= budget:
            break
        for q in wb.review(question, tag=tag, limit=step, order=order, seed=seed * 1000 + labelled):
            wb.label(question, q["id"], "yes" if q["id"] in truth else "no", who="sim")
            labelled += 1
    return points


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--step", type=int, default=4)
    parser.add_argument("--svg", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vitrina import open_collection

    home = Path(tempfile.mkdtemp(prefix="wb-loop-"))
    coll = open_collection(home / "demo", create=True)
    started = time.perf_counter()
    coll.index(str(DEMO), model="mini")
    print(f"indexed {len(coll)} drawings with mini in {time.perf_counter() - started:.1f} s")
    rows = [json.loads(line) for line in (DEMO / "captions.jsonl").read_text().splitlines()]
    folders: dict[str, set[str]] = {}
    for r in rows:
        folders.setdefault(r["category"], set()).add(r["id"])
    ids = [r["id"] for r in rows]
    targets = sorted(c for c, members in folders.items() if len(members) == 14)
    curves: dict[str, list[list[tuple[int, float, float]]]] = {"uncertain": [], "random": []}
    started = time.perf_counter()
    for target in targets:
        for seed in range(args.seeds):
            for order in curves:
                question = f"from {target}? ({order} {seed})"
                curves[order].append(
                    run_loop(coll, question, folders[target], ids, order, seed, args.budget, args.step)
                )
    seconds = time.perf_counter() - started
    print(
        f"{len(targets)} questions x {args.seeds} seeds x 2 orders in {seconds:.0f} s; {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    print(
        "\n| labels | F1 uncertain (mean ± sd) | F1 random | ratio | CV F1 uncertain | CV F1 random |\n|---|---|---|---|---|---|"
    )
    summary = {}
    for k, (labels, _, _) in enumerate(curves["uncertain"][0]):
        u = np.asarray([c[k][1] for c in curves["uncertain"]])
        r = np.asarray([c[k][1] for c in curves["random"]])
        cu = np.mean([c[k][2] for c in curves["uncertain"]])
        cr = np.mean([c[k][2] for c in curves["random"]])
        summary[labels] = (u.mean(), r.mean())
        print(
            f"| {labels} | {u.mean():.3f} ± {u.std():.3f} | {r.mean():.3f} ± {r.std():.3f} | {u.mean() / max(r.mean(), 1e-9):.2f} | {cu:.3f} | {cr:.3f} |"
        )
    for goal in (0.5, 0.6, 0.7, 0.8):
        need = {
            o: next((n for n, v in summary.items() if v[i] >= goal), None)
            for i, o in enumerate(("uncertain", "random"))
        }
        print(
            f"labels to reach mean F1 {goal}: uncertain {need['uncertain'] or '>' + str(args.budget)}, random {need['random'] or '>' + str(args.budget)}"
        )
    if args.svg:
        args.svg.write_text(svg(summary, args.budget))
        print(f"wrote {args.svg}")


def svg(summary: dict[int, tuple[float, float]], budget: int) -> str:
    width, height, pad = 520, 320, 48

    def xy(n: int, v: float) -> str:
        return f"{pad + (width - 2 * pad) * n / budget:.1f},{height - pad - (height - 2 * pad) * v:.1f}"

    lines = []
    for i, (name, colour) in enumerate((("uncertainty order", "#c0392b"), ("random order", "#2c6fbb"))):
        points = " ".join(xy(n, v[i]) for n, v in summary.items())
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2.5" points="{points}"/>')
        lines.append(f'<text x="{width - pad - 150}" y="{pad + 18 * i}" fill="{colour}" font-size="13">{name}</text>')
    grid = "".join(f'<line x1="{pad}" x2="{width - pad}" y1="{height - pad - (height - 2 * pad) * g:.1f}" y2="{height - pad - (height - 2 * pad) * g:.1f}" '
                   f'stroke="#ddd"/><text x="{pad - 8}" y="{height - pad - (height - 2 * pad) * g + 4:.1f}" font-size="11" text-anchor="end">{g:.1f}</text>'
                   for g in (0, 0.2, 0.4, 0.6, 0.8, 1.0))  # fmt: skip
    ticks = "".join(f'<text x="{xy(n, 0).split(",")[0]}" y="{height - pad + 16}" font-size="11" text-anchor="middle">{n}</text>'
                    for n in range(0, budget + 1, 10))  # fmt: skip
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">'
            f'<rect width="100%" height="100%" fill="white"/>{grid}{ticks}{"".join(lines)}'
            f'<text x="{width / 2}" y="{height - 8}" font-size="12" text-anchor="middle">labels given</text>'
            f'<text x="14" y="{height / 2}" font-size="12" transform="rotate(-90 14 {height / 2})" text-anchor="middle">F1 of "yes" over the collection</text></svg>\n')  # fmt: skip


if __name__ == "__main__":
    main()
