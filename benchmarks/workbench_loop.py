"""Does uncertainty-ordered review reach a given F1 with fewer labels than random order?

The shipped demo drawings (215, in 21 folders) indexed with the offline ``mini`` model; the
question is "is this drawing from folder X?" for each folder of 14 drawings (6.5% of the
collection). A simulated curator starts from 2 yes and 2 no labels picked at random, then loops:
train the probe (``Workbench.train``), take the next ``--step`` items of the review queue
(``uncertain``: the probe's least sure first, or ``random``), answer them truthfully, retrain.
After each training the F1 of the yes class is measured over the whole collection on the tag a
curator ends with (the probe's output, the labelled items' answers winning), against the folders.

With ``--collection pages`` the collection is instead ``--pages`` book pages generated here
(``make_pages``: paper, text blocks, show-through, blank pages and chapter ends, and a share
``--positive`` with an illustration, faint to strong, tiny to a full-page plate), and the question
"is there an illustration on this page?". The number of labels each run needed to reach F1 0.5 to
0.9 is printed per run, with how many runs reached it and the median.

    PYTHONPATH=src python benchmarks/workbench_loop.py [--seeds 3] [--budget 60] [--svg docs/workbench_loop.svg]
    PYTHONPATH=src python benchmarks/workbench_loop.py --collection pages --pages 300 --positive 0.13 --seeds 20 --svg docs/workbench_pages.svg
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DEMO = Path(__file__).resolve().parent.parent / "src" / "vitrina" / "demo" / "openclipart"


PAGE_W, PAGE_H = 224, 320


def _paper(rng: np.random.Generator) -> np.ndarray:
    tint = np.array([rng.uniform(228, 250), rng.uniform(218, 240), rng.uniform(190, 225)])
    page = np.ones((PAGE_H, PAGE_W, 3)) * tint
    page += rng.normal(0, rng.uniform(2, 7), (PAGE_H, PAGE_W, 1))  # grain
    shade = np.linspace(0, rng.uniform(0, 18), PAGE_W)[None, :, None]  # a gutter darkening one side
    return page - (shade if rng.random() < 0.5 else shade[:, ::-1])


def _text_mask(rng: np.random.Generator, box: tuple[int, int, int, int], skip=None) -> Image.Image:  # type: ignore[no-untyped-def]
    """Lines of word blocks inside box (x0, y0, x1, y1), leaving out the box ``skip``."""
    from PIL import ImageDraw

    mask = Image.new("L", (PAGE_W, PAGE_H), 0)
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    pitch = int(rng.integers(7, 12))
    height = max(2, pitch // 2 - int(rng.integers(0, 2)))
    y = y0
    while y + height < y1:
        x = x0 + (int(rng.integers(6, 14)) if rng.random() < 0.15 else 0)  # indented first line
        end = x1 - (int(rng.integers(0, (x1 - x0) // 2)) if rng.random() < 0.12 else 0)  # paragraph end
        while x < end:
            w = int(rng.integers(4, 26))
            if skip is None or not (
                skip[0] - 3 < min(x + w, end) and x < skip[2] + 3 and skip[1] - 3 < y + height and y < skip[3] + 3
            ):
                draw.rectangle((x, y, min(x + w, end), y + height), fill=255)
            x += w + int(rng.integers(2, 5))
        y += pitch
    return mask


def _picture(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """An engraving-like picture: a tone, shapes, hatching, a frame (a mask of ink strength)."""
    from PIL import ImageDraw

    pic = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(pic)
    if rng.random() < 0.6:
        draw.rectangle((0, 0, w - 1, h - 1), fill=int(rng.integers(20, 90)))
    for _ in range(int(rng.integers(3, 12))):
        a, b = sorted(rng.integers(0, w, 2)), sorted(rng.integers(0, h, 2))
        shape = (int(a[0]), int(b[0]), int(a[1]) + 2, int(b[1]) + 2)
        kind = rng.integers(0, 3)
        ink = int(rng.integers(80, 256))
        if kind == 0:
            draw.ellipse(shape, fill=ink)
        elif kind == 1:
            draw.polygon([tuple(int(v) for v in (rng.integers(0, w), rng.integers(0, h))) for _ in range(3)], fill=ink)
        else:
            draw.line(shape, fill=ink, width=int(rng.integers(1, 4)))
    for x in range(0, w + h, int(rng.integers(3, 7))):  # hatching
        draw.line((x, 0, x - h, h), fill=int(rng.integers(60, 200)), width=1)
    if rng.random() < 0.7:
        draw.rectangle((0, 0, w - 1, h - 1), outline=255, width=int(rng.integers(1, 3)))
    return pic


def make_page(rng: np.random.Generator, kind: str) -> Image.Image:
    """kind: ``text``, ``short`` (a chapter's end), ``blank`` (show-through only), ``illustrated``
    (a picture among the text) or ``plate`` (a picture alone on the page)."""
    from PIL import ImageFilter

    page = _paper(rng)
    margin = int(rng.integers(14, 30))
    box = (margin, margin + 4, PAGE_W - margin, PAGE_H - margin)
    ink = rng.uniform(0.55, 0.9)
    masks: list[tuple[Image.Image, float]] = []
    if kind in ("blank", "text", "short") or rng.random() < 0.3:  # show-through of the other side, mirrored and blurred
        back = _text_mask(rng, box).transpose(Image.Transpose.FLIP_LEFT_RIGHT).filter(ImageFilter.GaussianBlur(1.2))
        masks.append((back, rng.uniform(0.04, 0.12)))
    picture = None
    if kind in ("illustrated", "plate"):
        scale = rng.uniform(0.12, 0.7) if kind == "illustrated" else rng.uniform(0.4, 0.85)
        w = max(12, int((box[2] - box[0]) * scale))
        h = max(12, int(w * rng.uniform(0.6, 1.3)))
        x = int(rng.integers(box[0], max(box[0] + 1, box[2] - w)))
        y = int(rng.integers(box[1], max(box[1] + 1, box[3] - h)))
        picture = (x, y, x + w, y + h)
        canvas = Image.new("L", (PAGE_W, PAGE_H), 0)
        canvas.paste(_picture(rng, w, h), (x, y))
        masks.append((canvas, rng.uniform(0.12, 0.9)))  # faint to strong
    if kind in ("text", "illustrated"):
        masks.append((_text_mask(rng, box, skip=picture), ink))
    elif kind == "short":
        masks.append((_text_mask(rng, (box[0], box[1], box[2], box[1] + int(rng.integers(20, 120)))), ink))
    for mask, strength in masks:
        m = np.asarray(mask, float)[..., None] / 255 * strength
        page = page * (1 - m) + 25 * m
    return Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))


def make_pages(folder: Path, n: int, positive: float, seed: int) -> set[str]:
    """n pages in folder, a share ``positive`` with an illustration; returns their names."""
    rng = np.random.default_rng(seed)
    n_pos = round(n * positive)
    kinds = ["illustrated"] * (n_pos - n_pos // 4) + ["plate"] * (n_pos // 4)
    n_neg = n - n_pos
    kinds += ["blank"] * (n_neg // 8) + ["short"] * (n_neg // 8)
    kinds += ["text"] * (n - len(kinds))
    rng.shuffle(kinds)
    folder.mkdir(parents=True, exist_ok=True)
    truth = set()
    for k, kind in enumerate(kinds):
        name = f"p{k:04d}.png"
        make_page(rng, kind).save(folder / name)
        if kind in ("illustrated", "plate"):
            truth.add(name)
    return truth


def f1(predicted: set[str], truth: set[str]) -> float:
    tp = len(predicted & truth)
    return 2 * tp / (len(predicted) + len(truth)) if predicted or truth else 1.0


# The review orders compared: the old ones (plain uncertainty, random) and the candidates for the
# new default (loop.review_queue's ``mixed``: a quarter drawn at random; with or without the
# cold-start rule that looks for the rarer answer until each has COLD_START labels). "mixed+cold"
# won (docs/benchmarks.md) and is the product's default.
ORDERS: dict[str, dict[str, object]] = {
    "uncertain": {"order": "uncertain"},
    "random": {"order": "random"},
    "mixed": {"order": "mixed", "cold_start": 0},
    "mixed+cold": {"order": "mixed", "cold_start": 5},
}
# Chosen BEFORE the run (stated here, committed before any figure): the best candidate has
#   1. the fewest runs stuck below F1 0.6 at the end of the budget, then
#   2. the lowest median labels to reach F1 0.9 (runs that never reach it counted as budget + 1), then
#   3. the highest mean F1 at the end of the budget.
STUCK = 0.6


Point = tuple[int, float, float, float, float]  # labels, F1 of yes, CV F1, true macro F1, CV F1 on the random picks


def run_loop(coll, question: str, truth: set[str], ids: list[str], name: str, seed: int, budget: int, step: int) -> list[Point]:  # type: ignore[no-untyped-def]  # fmt: skip
    """(labels, F1 over the collection, cross-validated F1, macro F1 over the collection, CV F1 on
    the random picks) after each training."""
    from vitrina.workbench import loop

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
    tag = f"q_{name.replace('+', '_')}_{seed}"
    everything = set(ids)
    while True:
        report = wb.train(question, tag=tag, seed=seed)
        tagged = set(coll.ids_where([f"{tag}=yes"]))
        macro = (f1(tagged, truth) + f1(everything - tagged, everything - truth)) / 2
        on_random = report["curve"][-1].get("f1_random")
        points.append(
            (
                labelled,
                f1(tagged, truth),
                float(report["f1_macro_cv"]),
                macro,
                np.nan if on_random is None else on_random,
            )
        )
        if labelled >= budget:
            break
        done = {lab["id"] for lab in wb.labels(question)}
        for q in loop.review_queue(coll, tag, done, limit=step, seed=seed * 1000 + labelled, **ORDERS[name]):  # type: ignore[arg-type]
            wb.label(question, q["id"], "yes" if q["id"] in truth else "no", who="sim")
            labelled += 1
    return points


def _worker(args: tuple[str, list[tuple[str, set[str]]], list[str], list[tuple[int, str, int]], int, int, str]) -> None:  # fmt: skip
    """Run some (question, order, seed) loops on a copy of the collection of its own; each run's
    points are appended to the log as one JSON line as soon as it ends (a long run can be read
    part way: ``--from-log``)."""
    from vitrina import open_collection

    home, questions, ids, jobs, budget, step, log = args
    coll = open_collection(Path(home))
    for q, name, seed in jobs:
        target, members = questions[q]
        points = run_loop(coll, f"{target} ({name} {seed})", members, ids, name, seed, budget, step)
        line = json.dumps(
            {"order": name, "question": q, "seed": seed, "points": [[float(v) for v in pt] for pt in points]}
        )
        with open(log, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _read_log(log: Path, orders: list[str]) -> dict[str, list[list[Point]]]:
    """The runs in the log, keeping only (question, seed) pairs every order has finished."""
    found: dict[tuple[str, int, int], list[Point]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        found[(r["order"], r["question"], r["seed"])] = [(int(p[0]), *p[1:]) for p in r["points"]]  # type: ignore[misc]
    pairs = sorted({(q, s) for _, q, s in found if all((o, q, s) in found for o in orders)})
    return {o: [found[(o, q, s)] for q, s in pairs] for o in orders}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--collection", choices=("drawings", "pages"), default="drawings")
    parser.add_argument("--pages", type=int, default=300, help="generated pages (--collection pages)")
    parser.add_argument("--positive", type=float, default=0.13, help="share of illustrated pages")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--step", type=int, default=4)
    parser.add_argument("--orders", default=",".join(ORDERS), help=f"review orders to compare, of {', '.join(ORDERS)}")
    parser.add_argument("--workers", type=int, default=1, help="processes, each on its own copy of the collection")
    parser.add_argument("--svg", type=Path)
    parser.add_argument(
        "--log", type=Path, help="append each run's points here as JSON lines (default: in the temporary folder)"
    )
    parser.add_argument("--from-log", type=Path, help="only report the finished runs of an earlier (or running) --log")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vitrina import open_collection

    orders = [o.strip() for o in args.orders.split(",") if o.strip()]
    unknown = [o for o in orders if o not in ORDERS]
    if unknown:
        parser.error(f"unknown orders {unknown}; choose from {', '.join(ORDERS)}")
    if args.from_log:
        curves = _read_log(args.from_log, orders)
        print(f"{len(curves[orders[0]])} finished runs of each order in {args.from_log}")
        finish(curves, args)
        return
    home = Path(tempfile.mkdtemp(prefix="wb-loop-"))
    coll = open_collection(home / args.collection, create=True)
    started = time.perf_counter()
    questions: list[tuple[str, set[str]]] = []
    if args.collection == "pages":
        truth = make_pages(home / "pages", args.pages, args.positive, seed=0)
        print(f"generated {args.pages} pages ({len(truth)} illustrated) in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        coll.index(str(home / "pages"), model="mini")
        ids = sorted(coll.ids_where([]))
        by_name = {Path(i).name: i for i in ids}
        questions.append(("is there an illustration on this page?", {by_name[n] for n in truth}))
    else:
        coll.index(str(DEMO), model="mini")
        rows = [json.loads(line) for line in (DEMO / "captions.jsonl").read_text().splitlines()]
        folders: dict[str, set[str]] = {}
        for r in rows:
            folders.setdefault(r["category"], set()).add(r["id"])
        ids = [r["id"] for r in rows]
        questions += [(f"from {c}?", m) for c, m in sorted(folders.items()) if len(m) == 14]
    print(f"indexed {len(coll)} items with mini in {time.perf_counter() - started:.1f} s")
    del coll
    gc.collect()
    jobs = [(q, name, seed) for q in range(len(questions)) for seed in range(args.seeds) for name in orders]
    workers = max(1, min(args.workers, len(jobs)))
    copies = []
    for w in range(workers):
        copies.append(str(home / f"copy{w}"))
        shutil.copytree(home / args.collection, copies[-1])
    started = time.perf_counter()
    log = args.log or home / "runs.jsonl"
    log.write_text("")
    tasks = [(copies[w], questions, ids, jobs[w::workers], args.budget, args.step, str(log)) for w in range(workers)]
    if workers == 1:
        _worker(tasks[0])
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_worker, tasks)
    curves = _read_log(log, orders)
    seconds = time.perf_counter() - started
    print(f"{len(questions)} questions x {args.seeds} seeds x {len(orders)} orders in {seconds:.0f} s ({workers} workers); "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")  # fmt: skip
    finish(curves, args)


def finish(curves: dict[str, list[list[Point]]], args: argparse.Namespace) -> None:
    report(curves, args.budget)
    if args.svg:
        summary = {n: [(labels, float(np.mean([c[k][1] for c in curves[n]]))) for k, (labels, *_) in enumerate(curves[n][0])] for n in curves}  # fmt: skip
        args.svg.write_text(svg(summary, args.budget))
        print(f"wrote {args.svg}")


def report(curves: dict[str, list[list[Point]]], budget: int) -> None:
    orders = list(curves)
    print("\nMean F1 of yes over the collection (± sd over runs):\n")
    print("| labels | " + " | ".join(orders) + " |\n|---|" + "---|" * len(orders))
    for k, (labels, *_) in enumerate(curves[orders[0]][0]):
        cells = [np.asarray([c[k][1] for c in curves[o]]) for o in orders]
        print(f"| {labels} | " + " | ".join(f"{v.mean():.3f} ± {v.std():.3f}" for v in cells) + " |")
    print("\nAt the end of the budget (means): F1 of yes; macro F1 over the collection (the truth); the page's "
          "cross-validated macro F1 on all labels; the same on the labels drawn at random only (mixed orders)\n")  # fmt: skip
    print("| order | F1 yes | macro F1 (truth) | CV F1, all labels | CV F1, random picks | runs stuck < 0.6 | F1 0.9 reached | median labels to 0.9 |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    scores = {}
    for o in orders:
        last = np.asarray([c[-1] for c in curves[o]], float)
        reach = [next((n for n, v, *_ in c if v >= 0.9), None) for c in curves[o]]
        median = float(np.median([n if n else budget + 1 for n in reach]))
        stuck = int(np.sum(last[:, 1] < STUCK))
        on_random = last[:, 4][~np.isnan(last[:, 4])]
        random_cell = f"{on_random.mean():.3f} ({len(on_random)} runs)" if len(on_random) else "–"
        print(f"| {o} | {last[:, 1].mean():.3f} | {last[:, 3].mean():.3f} | {last[:, 2].mean():.3f} | {random_cell} | "
              f"{stuck}/{len(last)} | {sum(n is not None for n in reach)}/{len(reach)} | {median:g} |")  # fmt: skip
        scores[o] = (stuck, median, -last[:, 1].mean())
    for goal in (0.5, 0.6, 0.7, 0.8, 0.9):
        parts = []
        for o in orders:
            runs = [next((n for n, v, *_ in c if v >= goal), None) for c in curves[o]]
            median = np.median([n if n else budget + 1 for n in runs])
            each = ", ".join(str(n) if n else ">" + str(budget) for n in runs)
            parts.append(f"{o} {sum(n is not None for n in runs)}/{len(runs)} runs, median {median:g} ({each})")
        print(f"F1 {goal}: " + "; ".join(parts))
    candidates = [o for o in orders if ORDERS[o]["order"] == "mixed"]
    if candidates:
        best = min(candidates, key=lambda o: scores[o])
        print(
            f"\nbest candidate by the stated criterion (fewest stuck, then median labels to 0.9, then mean F1): {best}"
        )


COLOURS = {"uncertain": "#c0392b", "random": "#2c6fbb", "mixed": "#1e8449", "mixed+cold": "#8e44ad"}


def svg(summary: dict[str, list[tuple[int, float]]], budget: int) -> str:
    width, height, pad = 520, 320, 48

    def xy(n: int, v: float) -> str:
        return f"{pad + (width - 2 * pad) * n / budget:.1f},{height - pad - (height - 2 * pad) * v:.1f}"

    lines = []
    for i, (name, points) in enumerate(summary.items()):
        colour = COLOURS.get(name, "#555")
        label = {
            "uncertain": "uncertainty order",
            "random": "random order",
            "mixed": "¼ random, no cold start",
            "mixed+cold": "mixed (default)",
        }.get(name, name)
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2.5" points="{" ".join(xy(n, v) for n, v in points)}"/>'
        )
        lines.append(f'<text x="{width - pad - 170}" y="{height - pad - 12 - 18 * (len(summary) - 1 - i)}" fill="{colour}" font-size="13">{label}</text>')  # fmt: skip
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
