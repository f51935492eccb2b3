"""OCR engines side by side on rendered map pages: word recall, keyword-search recall@1 (exact
and misread-tolerant), seconds per megapixel and peak RSS.

Pages: 1600 x 1200 map-like backgrounds (paper tint, rivers, a grid), 8 place names each, 6 set
level and 2 rotated 90°, in several fonts and sizes. A name is *found* when its folded form is
among the words the engine read on its page; *recall@1*: a keyword search for the name (as
written, with ø, æ, å) ranks its page first among all pages. Each engine runs in its own process
(for its RSS peak).

    python benchmarks/ocr_engines.py            # both engines, a table
    python benchmarks/ocr_engines.py --json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAMES = """Tromsø Kragerø Trondhjem Stavanger Kristiansand Hammerfest Lillehammer Ålesund Bodø Molde Narvik Drammen
Sarpsborg Tønsberg Arendal Grimstad Flekkefjord Egersund Haugesund Førde Florø Kristiansund Steinkjer Namsos
Mosjøen Harstad Vardø Vadsø Honningsvåg Kongsberg Hønefoss Gjøvik Hamar Elverum Kongsvinger Halden Moss Horten
Larvik Porsgrunn Skien Notodden Mandal Farsund Sogndal Voss Odda Stord Brønnøysund Sandnessjøen Svolvær Leknes
Lübeck München Düsseldorf Göttingen Würzburg Straßburg Nürnberg Braunschweig Mühlhausen Königsberg Lüneburg
Osnabrück Regensburg Saarbrücken Fürth Tübingen Rügen Bückeburg Åndalsnes Sæbø Kvæfjord Bærum""".split()
FONTS = ["dejavu/DejaVuSerif.ttf", "dejavu/DejaVuSans-Bold.ttf", "liberation/LiberationSerif-Italic.ttf"]
SIZES = [20, 28, 40]
PER_PAGE, ROTATED = 8, 2


def pages(folder: Path) -> list[tuple[Path, list[tuple[str, bool, int]]]]:
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(7)
    names = iter(NAMES)
    out = []
    for font_file in FONTS:
        for px in SIZES:
            font = ImageFont.truetype(f"/usr/share/fonts/truetype/{font_file}", px)
            image = Image.new("RGB", (1600, 1200), (236, 226, 196))
            draw = ImageDraw.Draw(image)
            for x in range(0, 1600, 200):
                draw.line((x, 0, x, 1200), fill=(200, 190, 170), width=1)
            for _ in range(3):
                pts = [(rng.randint(0, 1600), rng.randint(0, 1200)) for _ in range(4)]
                draw.line(pts, fill=(110, 140, 210), width=5)
            placed = []
            for n in range(PER_PAGE):
                name = next(names)
                rotated = n >= PER_PAGE - ROTATED
                x, y = 60 + (n % 2) * 760 + rng.randint(0, 200), 60 + (n // 2) * 270 + rng.randint(0, 60)
                label = Image.new("RGBA", (int(font.getlength(name)) + 16, px * 2), (0, 0, 0, 0))
                ImageDraw.Draw(label).text((8, px // 3), name, font=font, fill=(25, 25, 25, 255))
                if rotated:
                    label = label.rotate(90, expand=True)
                    x = 1450 if n % 2 else 40
                image.paste(label, (x, y), label)
                placed.append((name, rotated, px))
            path = folder / f"{Path(font_file).stem}-{px}.png"
            image.save(path)
            out.append((path, placed))
    return out


def run_engine(engine_name: str, folder: Path) -> dict:
    from PIL import Image

    from vitrina.index.keyword import KeywordIndex
    from vitrina.ocr import get_engine
    from vitrina.ocr.fold import fold
    from vitrina.ocr.tiles import read_tiled
    from vitrina.records import Item
    from vitrina.store import Store

    engine = get_engine(engine_name, "nor+deu" if engine_name == "tesseract" else None)
    store = Store(folder / f"c-{engine_name}", create=True, writer=True)
    layout = pages(folder)
    store.sync_items([Item(id=p.name, image=str(p), fingerprint="1") for p, _ in layout])
    rids = store.rids_of([p.name for p, _ in layout])
    seconds = megapixels = 0.0
    rows = []
    for path, placed in layout:
        image = Image.open(path).convert("RGB")
        started = time.perf_counter()
        words = read_tiled(engine, image)
        seconds += time.perf_counter() - started
        megapixels += image.width * image.height / 1e6
        store.save_words(rids[path.name], "1", engine.key, words, image.size)
        read = {t for w in words for t in fold(w.text).split()}
        for name, rotated, px in placed:
            rows.append({"name": name, "page": path.name, "rotated": rotated, "px": px, "found": fold(name) in read})
    timings = {}
    for tolerant in (False, True):
        kw = KeywordIndex(store, tolerant=tolerant)
        started = time.perf_counter()
        for row in rows:
            row["rank1_tolerant" if tolerant else "rank1_exact"] = kw.search(row["name"], limit=1).ids == [row["page"]]
        timings["tolerant" if tolerant else "exact"] = (time.perf_counter() - started) / len(rows) * 1000
    return {"engine": engine.key, "rows": rows, "seconds": seconds, "megapixels": megapixels, "query_ms": timings,
            # the engine's process or, for tesseract, its largest child process
            "rss_mb": max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024}  # fmt: skip


def summary(result: dict) -> dict:
    rows = result["rows"]

    def share(selected: list[dict], key: str) -> str:
        return f"{sum(r[key] for r in selected)}/{len(selected)}" if selected else "-"

    level20 = [r for r in rows if not r["rotated"] and r["px"] >= 20]
    rotated = [r for r in rows if r["rotated"]]
    return {
        "engine": result["engine"],
        "word recall (level)": share(level20, "found"),
        "word recall (rotated)": share(rotated, "found"),
        "rank-1 exact (level)": share(level20, "rank1_exact"),
        "rank-1 tolerant (level)": share(level20, "rank1_tolerant"),
        "rank-1 exact (rotated)": share(rotated, "rank1_exact"),
        "rank-1 tolerant (rotated)": share(rotated, "rank1_tolerant"),
        "s / megapixel": round(result["seconds"] / result["megapixels"], 2),
        "query ms exact / tolerant": f"{result['query_ms']['exact']:.2f} / {result['query_ms']['tolerant']:.2f}",
        "RSS peak MB": round(result["rss_mb"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="rapidocr,tesseract")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one engine here (the child process)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_engine(args.one, Path(tmp))))
        return
    results = []
    for name in args.engines.split(","):
        child = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    table = [summary(r) for r in results]
    if args.json:
        print(json.dumps({"summary": table, "misses": {r["engine"]: [x["name"] for x in r["rows"] if not x["rank1_tolerant"]] for r in results}}, indent=2, ensure_ascii=False))  # fmt: skip
        return
    keys = list(table[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in table:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    for r in results:
        print(
            f"{r['engine']}: missed at rank 1 (tolerant):",
            ", ".join(x["name"] for x in r["rows"] if not x["rank1_tolerant"]),
        )


if __name__ == "__main__":
    main()
