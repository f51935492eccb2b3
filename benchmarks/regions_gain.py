"""What regions buy: text queries for a small drawing on a large map-like page (issue #24, part 6).

    python benchmarks/regions_gain.py --pages 100          # ~25 min on the 2-core VM (the model dominates)
    python benchmarks/regions_gain.py --detect-only        # seconds: how often a proposal frames the drawing

Composite pages: a held-out drawing of the offline ``mini`` model (never trained on: its split is
the md5 rule of scripts/build_mini.py, cross-checked against the training list
src/vitrina/embedding/mini/training.json.gz) pasted small (240-360 px) into a 2400x1800 page of
paper texture, a graticule, coastlines, lettering, towns and pale colour washes. The query is
the drawing's caption; the one relevant page is the one it was pasted into. Side by side, on
the same pages and vectors, in one run:

- ``whole``: the page embedded once (what vitrina does without regions);
- ``grid``: the coarse grid alone (2 tiles across the shorter side, 12 boxes on a 4:3 page), and
  ``grid2+3``: the two-scale grid (32 boxes);
- ``proposals8``, ``proposals16``: boxes found in the image (vitrina.proposals), 8 and 16;
- ``p8+grid``, ``p16+grid``: proposals, then the coarse grid (RegionPolicy "auto" with 8 or 16
  proposals; ``--regions auto`` is one of them, named in the output);
- ``oracle``: the exact crop around the drawing (padded, square) beside the whole page;
- a control set: pages the drawing fills (90% of the shorter side), whole vs the same policies.

An item's score is its best row (whole or region), as RegionIndex ranks. Recall@10 with a 95%
Wilson interval; chance = 10 / pages. Needs the Debian package openclipart-png
(``apt-get download openclipart-png``; --deb or --cache to point at it).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import pickle
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from vitrina.proposals import propose  # noqa: E402
from vitrina.regions import RegionPolicy, grid_boxes  # noqa: E402

PAGE = (2400, 1800)
Box = tuple[int, int, int, int]


def held_out(cache: Path, deb: Path | None, n: int, seed: int) -> list[dict]:
    """``n`` held-out drawings, one per title group (distinct captions)."""
    import build_mini  # scripts/build_mini.py: the split lives there

    png = build_mini.unpack(deb, cache)
    listed = cache / "regions_gain-records.json"  # collect() hashes 8,000 files: once
    if listed.exists():
        records = json.loads(listed.read_text())
    else:
        records = build_mini.collect(png)
        listed.write_text(json.dumps(records))
    manifest = ROOT / "src/vitrina/embedding/mini/training.json.gz"
    trained = set()
    if manifest.exists():
        data = json.loads(gzip.decompress(manifest.read_bytes()))
        rows = data.get("drawings", data) if isinstance(data, dict) else data
        trained = {r["id"] if isinstance(r, dict) else str(r) for r in rows}
    held = [r for r in records if r["held_out"]]
    leaked = [r["id"] for r in held if r["id"] in trained]
    if leaked:
        raise SystemExit(f"{len(leaked)} held-out drawings are in the training list, e.g. {leaked[:3]}")
    by_group: dict[str, dict] = {}
    for r in held:
        by_group.setdefault(r["group"], r)
    groups = sorted(by_group.values(), key=lambda r: hashlib.md5(f"{seed}:{r['id']}".encode()).hexdigest())
    out = []
    captions = set()
    for r in groups:
        if r["caption"] in captions:
            continue
        with Image.open(r["path"]) as im:
            if min(im.size) < 64:
                continue
        captions.add(r["caption"])
        out.append(r)
        if len(out) == n:
            break
    return out


def paper(rng: np.random.Generator) -> Image.Image:
    w, h = PAGE
    base = np.array([236, 226, 202], np.float32) + rng.normal(0, 6, 3)
    low = np.asarray(
        Image.fromarray(rng.normal(0, 1, (18, 24)).astype(np.float32)).resize((w, h), Image.Resampling.BICUBIC)
    )
    grain = rng.normal(0, 5, (h, w))
    arr = base[None, None, :] + (low * 9 + grain)[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def map_page(rng: np.random.Generator) -> Image.Image:
    """Paper with a graticule, coastlines, pale washes, lettering and town marks."""
    w, h = PAGE
    page = paper(rng)
    wash = Image.new("RGBA", PAGE, (0, 0, 0, 0))
    dw = ImageDraw.Draw(wash)
    for _ in range(int(rng.integers(2, 5))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(250, 700)
        pts = [(cx + r * rng.uniform(0.6, 1.2) * math.cos(a), cy + r * rng.uniform(0.6, 1.2) * math.sin(a))
               for a in np.linspace(0, 2 * math.pi, 14, endpoint=False)]  # fmt: skip
        colour = tuple(int(c) for c in rng.integers(120, 230, 3))
        dw.polygon(pts, fill=(*colour, 40))
    page = Image.alpha_composite(page.convert("RGBA"), wash).convert("RGB")
    d = ImageDraw.Draw(page)
    ink = tuple(int(c) for c in rng.integers(40, 90, 3))
    step = int(rng.integers(260, 380))
    for x in range(int(rng.integers(40, step)), w, step):
        d.line([(x, 0), (x + int(rng.integers(-40, 40)), h)], fill=(140, 120, 100), width=2)
    for y in range(int(rng.integers(40, step)), h, step):
        d.line([(0, y), (w, y + int(rng.integers(-30, 30)))], fill=(140, 120, 100), width=2)
    for _ in range(int(rng.integers(2, 5))):  # coastlines: random walks
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        heading = rng.uniform(0, 2 * math.pi)
        pts = [(x, y)]
        for _ in range(400):
            heading += rng.normal(0, 0.35)
            x, y = x + 9 * math.cos(heading), y + 9 * math.sin(heading)
            pts.append((x, y))
        d.line(pts, fill=ink, width=int(rng.integers(2, 5)))
    for _ in range(int(rng.integers(25, 60))):  # lettering: words of small dark glyph blocks
        x, y, size = rng.uniform(0, w - 300), rng.uniform(0, h - 40), int(rng.integers(12, 26))
        for _ in range(int(rng.integers(3, 12))):
            gw = int(size * rng.uniform(0.4, 0.8))
            d.rectangle([x, y + rng.uniform(0, size * 0.2), x + gw, y + size], outline=ink, width=max(1, size // 8))
            x += gw + size * 0.2
    for _ in range(int(rng.integers(15, 40))):  # towns
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, 10)
        d.ellipse([x - r, y - r, x + r, y + r], outline=ink, width=2)
    return page


def paste(page: Image.Image, drawing: Image.Image, side: int, rng: np.random.Generator, centre: bool = False) -> Box:
    im = drawing.convert("RGBA")
    s = side / max(im.size)
    im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.LANCZOS)
    if centre:
        x, y = (page.width - im.width) // 2, (page.height - im.height) // 2
    else:
        x = int(rng.integers(60, page.width - im.width - 60))
        y = int(rng.integers(60, page.height - im.height - 60))
    page.paste(im, (x, y), im)
    return x, y, im.width, im.height


def oracle_box(box: Box) -> Box:
    x, y, w, h = box
    side = min(round(max(w, h) * 1.24), min(PAGE))
    cx, cy = x + w / 2, y + h / 2
    ox = int(min(max(0, cx - side / 2), PAGE[0] - side))
    oy = int(min(max(0, cy - side / 2), PAGE[1] - side))
    return ox, oy, side, side


def covers(box: Box, target: Box) -> bool:
    """A box frames the target: holds >= 70% of it and is at most 4x its area."""
    x, y, w, h = box
    tx, ty, tw, th = target
    iw = max(0, min(x + w, tx + tw) - max(x, tx))
    ih = max(0, min(y + h, ty + th) - max(y, ty))
    return iw * ih >= 0.7 * tw * th and w * h <= 4 * max(tw, th) ** 2


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    z, p = 1.96, k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    r = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - r, c + r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vitrina-build")
    ap.add_argument("--deb", type=Path)
    ap.add_argument("--detect-only", action="store_true", help="only: how often a proposal frames the drawing")
    ap.add_argument("--save", type=Path, help="write a few pages (PNG) with their proposals here")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--fine-grid", action="store_true", help="also the two-scale grid (32 boxes: 20 more vectors a page)"
    )
    args = ap.parse_args()

    drawings = held_out(args.cache, args.deb, args.pages, args.seed)
    n = len(drawings)
    rng = np.random.default_rng(args.seed)
    pages: list[Image.Image] = []
    truth: list[Box] = []
    controls: list[Image.Image] = []
    for r in drawings:
        with Image.open(r["path"]) as im:
            im.load()
            page = map_page(rng)
            truth.append(paste(page, im, int(rng.integers(240, 361)), rng))
            pages.append(page)
            control = paper(rng)
            paste(control, im, int(0.9 * min(PAGE)), rng, centre=True)
            controls.append(control)
    auto = RegionPolicy.parse("auto")
    p8 = RegionPolicy("auto", scales=(2,), proposals=8)
    p16 = RegionPolicy("auto", scales=(2,), proposals=16)
    policies: dict[str, list[list[Box]]] = {
        "grid": [grid_boxes(*PAGE, 2, 0.25)] * n,
        "grid2+3": [RegionPolicy("grid").boxes(*PAGE)] * n,
        "proposals8": [],
        "proposals16": [],
        "p8+grid": [],
        "p16+grid": [],
    }
    t0 = time.perf_counter()
    for page in pages:
        found = propose(page, 16)
        policies["proposals8"].append(found[:8])
        policies["proposals16"].append(found)
        policies["p8+grid"].append(p8.boxes(*PAGE, image=page))
        policies["p16+grid"].append(p16.boxes(*PAGE, image=page))
    detect_s = (time.perf_counter() - t0) / n
    framed = {
        name: sum(any(covers(b, t) for b in boxes[i]) for i, t in enumerate(truth)) / n
        for name, boxes in policies.items()
    }
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for i in range(min(6, n)):
            shown = pages[i].copy()
            d = ImageDraw.Draw(shown)
            for x, y, w, h in policies["p16+grid"][i]:
                d.rectangle([x, y, x + w, y + h], outline=(255, 0, 0), width=4)
            x, y, w, h = truth[i]
            d.rectangle([x, y, x + w, y + h], outline=(0, 160, 0), width=6)
            shown.resize((1200, 900)).save(args.save / f"page{i}.png")
    print(json.dumps({"pages": n, "detect_seconds_per_page": round(detect_s, 3), "framed": framed}), file=sys.stderr)
    if args.detect_only:
        return

    from vitrina.embedding import get_embedder

    embedder = get_embedder("mini")
    stored = args.cache / f"regions_gain-vectors-{n}-{args.seed}.pkl"  # resumable: a killed run keeps what it embedded
    cache: dict[tuple[str, int, Box], np.ndarray] = pickle.loads(stored.read_bytes()) if stored.exists() else {}

    def embed(kind: str, images: list[Image.Image], boxes_of: list[list[Box]]) -> None:
        """Embed every (image, box) not embedded yet; box (0, 0, 0, 0) is the whole image."""
        todo = [(i, b) for i, boxes in enumerate(boxes_of) for b in boxes if (kind, i, b) not in cache]
        for k in range(0, len(todo), 32):
            chunk = todo[k : k + 32]
            pixels = []
            for i, b in chunk:
                img = images[i] if b == (0, 0, 0, 0) else images[i].crop((b[0], b[1], b[0] + b[2], b[1] + b[3]))
                pixels.append(embedder.preprocess(img))
            for (i, b), v in zip(chunk, embedder.embed_pixels(np.stack(pixels))):
                cache[(kind, i, b)] = v
            print(f"  {kind}: {min(k + 32, len(todo))}/{len(todo)}", file=sys.stderr, flush=True)
            if k % 256 == 0 or k + 32 >= len(todo):
                stored.write_bytes(pickle.dumps(cache))

    whole = [[(0, 0, 0, 0)]] * n
    t0 = time.perf_counter()
    embed("page", pages, whole)
    embed("page", pages, [[oracle_box(t)] for t in truth])
    if not args.fine_grid:
        del policies["grid2+3"]
    for name in policies:
        embed("page", pages, policies[name])
    control_boxes: dict[str, list[list[Box]]] = {"proposals8": [], "p8+grid": [], "p16+grid": []}
    for c in controls:
        control_boxes["proposals8"].append(propose(c, 8))
        control_boxes["p8+grid"].append(p8.boxes(*PAGE, image=c))
        control_boxes["p16+grid"].append(p16.boxes(*PAGE, image=c))
    embed("control", controls, whole)
    embed("control", controls, control_boxes["p16+grid"])
    embed("control", controls, control_boxes["p8+grid"])
    embed("control", controls, control_boxes["proposals8"])
    embed_s = time.perf_counter() - t0
    texts = embedder.embed_texts([r["caption"] for r in drawings])

    def recall(kind: str, boxes_of: list[list[Box]]) -> dict[str, float]:
        scores = np.full((n, n), -2.0, np.float32)  # query x page
        for i in range(n):
            rows = np.stack([cache[(kind, i, b)] for b in [(0, 0, 0, 0), *boxes_of[i]]])
            scores[:, i] = (texts @ rows.T).max(1)
        ranks = (scores > scores[np.arange(n), np.arange(n)][:, None]).sum(1)
        hits = int((ranks < 10).sum())
        lo, hi = wilson(hits, n)
        return {"recall@10": round(hits / n, 4), "ci95": [round(lo, 3), round(hi, 3)],
                "vectors_per_page": round(1 + float(np.mean([len(b) for b in boxes_of])), 1)}  # fmt: skip

    results = {
        "whole": recall("page", [[] for _ in range(n)]),
        "oracle": recall("page", [[oracle_box(t)] for t in truth]),
        **{name: recall("page", boxes) for name, boxes in policies.items()},
        "control_whole": recall("control", [[] for _ in range(n)]),
        **{f"control_{name}": recall("control", boxes) for name, boxes in control_boxes.items()},
    }
    out = {"pages": n, "chance@10": round(min(1.0, 10 / n), 4), "framed_by_a_box": framed, "results": results,
           "embed_seconds": round(embed_s, 1), "vectors_embedded": len(cache), "detect_seconds_per_page": round(detect_s, 3),
           "auto_policy": auto.to_dict(), "auto_is": "p8+grid" if auto == p8 else "p16+grid" if auto == p16 else "other"}  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{n} pages ({PAGE[0]}x{PAGE[1]}), chance recall@10 = {out['chance@10']:.1%}")
    print(f"{'policy':<14}{'recall@10':>10}{'95% CI':>16}{'vectors/page':>14}{'framed':>8}")
    for name, r in results.items():
        ci = f"{r['ci95'][0]:.1%}-{r['ci95'][1]:.1%}"
        fr = f"{framed[name]:.0%}" if name in framed else ""
        print(f"{name:<14}{r['recall@10']:>10.1%}{ci:>16}{r['vectors_per_page']:>14}{fr:>8}")


if __name__ == "__main__":
    main()
