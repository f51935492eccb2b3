"""OCR engines against the ALTO fixture pages: word recall and character error rate, with the
pages' ALTO words as ground truth.

The fixtures have no page images, so each page is *re-rendered* from its ALTO: a white page of
the ALTO's size, each word (or, where the ALTO gives only line boxes, each line) drawn in DejaVu
Serif (DejaVu Sans for Hebrew, which the Serif lacks) at its coordinates, sized to fill its box (Pillow with libraqm, so Hebrew is set right to
left). That is clean type on a white page: the figures are upper bounds on what the engines do on
the real scans. Each page is read through vitrina's own path (``ocr.tiles.read_tiled``: tiles,
overlap merge), level text only (no quarter-turned passes).

- word recall: the share of ALTO words (edge punctuation stripped) found among the words read on
  the page, as a multiset; *exact* keeps case and letters, *folded* compares ``ocr.fold`` forms
  (case, accents, ſ → s, ø → o), which is what keyword search matches;
- CER: per ALTO line, the edit distance between its text and the words read whose centres lie in
  its box (in reading order: left to right, right to left for Hebrew), summed over lines and
  divided by the ALTO characters.

    python benchmarks/ocr_alto.py          # a table
    python benchmarks/ocr_alto.py --json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import unicodedata
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path("/work/shared/fixtures/alto")
PAGES = {  # fixture -> Tesseract language (RapidOCR reads with its own Latin/Chinese models)
    "sbb-alto-v3-illustration.xml": "deu",
    "bsb-alto-v4-text.xml": "heb",
}
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"
FONT_HEBREW = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # the Serif has no Hebrew letters
_EDGE = re.compile(r"^[\W_]+|[\W_]+$")
_RTL = re.compile(r"[\u0590-\u05ff\ufb1d-\ufb4f]")


@dataclass
class Line:
    box: tuple[float, float, float, float]
    words: list[tuple[str, tuple[float, float, float, float]]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(w for w, _ in self.words)


def parse(path: Path) -> tuple[tuple[int, int], list[Line]]:
    """The page size and its lines, each with its words and their boxes."""
    root = ET.parse(path).getroot()

    def local(el: ET.Element) -> str:
        return el.tag.rsplit("}", 1)[-1]

    def box(el: ET.Element) -> tuple[float, float, float, float]:
        return tuple(float(el.get(k, 0)) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT"))  # type: ignore[return-value]

    page = next(el for el in root.iter() if local(el) == "Page")
    lines = []
    for el in root.iter():
        if local(el) != "TextLine":
            continue
        line = Line(box(el))
        for s in el:
            if local(s) == "String":
                for word in unicodedata.normalize("NFC", s.get("CONTENT", "")).split():
                    line.words.append((word, box(s)))
        if line.words:
            lines.append(line)
    return (int(float(page.get("WIDTH", 0))), int(float(page.get("HEIGHT", 0)))), lines


def render(size: tuple[int, int], lines: list[Line]):  # type: ignore[no-untyped-def]
    """The page drawn from its ALTO: each String box with its word, or each line box with the line
    where the Strings share the line's box."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)

    def put(text: str, x: float, y: float, w: float, h: float) -> None:
        rtl = bool(_RTL.search(text))
        direction, face = ("rtl", FONT_HEBREW) if rtl else ("ltr", FONT)
        px = max(6, int(h * 0.8))
        font = ImageFont.truetype(face, px)
        length = draw.textlength(text, font=font, direction=direction)
        if length > w > 0:  # shrink to fit the box's width
            px = max(6, int(px * w / length))
            font = ImageFont.truetype(face, px)
        draw.text((x, y + (h - px) / 2), text, font=font, fill="black", direction=direction)

    for line in lines:
        boxes = {b for _, b in line.words}
        if len(boxes) == 1:  # words without boxes of their own: the line in the line's box
            put(line.text, *line.box)
        else:
            for word, b in line.words:
                put(word, *b)
    return image


def _strip(word: str) -> str:
    return _EDGE.sub("", word)


def edit(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def score(lines: list[Line], words: list) -> dict[str, float | int]:  # type: ignore[type-arg]
    from vitrina.ocr.fold import fold_words

    truth = [_strip(w) for line in lines for w, _ in line.words]
    truth = [w for w in truth if w]
    read = [_strip(t) for w in words for t in unicodedata.normalize("NFC", w.text).split()]
    exact_found = Counter(read)
    folded_found = Counter(f for r in read for f in fold_words(r))
    exact = folded = 0
    for w in truth:
        if exact_found[w] > 0:
            exact_found[w] -= 1
            exact += 1
        forms = fold_words(w)
        if forms and all(folded_found[f] > 0 for f in forms):
            for f in forms:
                folded_found[f] -= 1
            folded += 1
    errors = chars = 0
    for line in lines:
        x, y, w, h = line.box
        inside = [o for o in words if x <= o.x + o.w / 2 <= x + w and y <= o.y + o.h / 2 <= y + h]
        rtl = bool(_RTL.search(line.text))
        inside.sort(key=lambda o: -o.x if rtl else o.x)
        got = unicodedata.normalize("NFC", " ".join(o.text for o in inside))
        errors += edit(line.text, got)
        chars += len(line.text)
    return {"words": len(truth), "recall_exact": exact / len(truth), "recall_folded": folded / len(truth),
            "cer": errors / chars, "chars": chars}  # fmt: skip


def run() -> list[dict[str, object]]:
    from vitrina.errors import ConfigError
    from vitrina.ocr import get_engine
    from vitrina.ocr.tiles import read_tiled

    out: list[dict[str, object]] = []
    for name, tess_lang in PAGES.items():
        size, lines = parse(FIXTURES / name)
        image = render(size, lines)
        for spec, lang in (("rapidocr", None), ("tesseract", tess_lang)):
            try:
                engine = get_engine(spec, lang)
            except ConfigError as e:
                out.append({"page": name, "engine": spec, "skipped": str(e)})
                continue
            started = time.perf_counter()
            words = read_tiled(engine, image, rotations=(0,))
            seconds = time.perf_counter() - started
            row = {"page": name, "size": list(size), "engine": engine.key, "seconds": round(seconds, 2),
                   **{k: round(v, 3) if isinstance(v, float) else v for k, v in score(lines, words).items()}}  # fmt: skip
            out.append(row)
            print(json.dumps(row, ensure_ascii=False), file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    print("| page | engine | ALTO words | word recall exact | word recall folded | CER | s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['page']} | {r['engine']} | skipped: {r['skipped']} |  |  |  |  |")
            continue
        print(f"| {r['page']} ({r['size'][0]}×{r['size'][1]}) | {r['engine']} | {r['words']} | "  # type: ignore[index]
              f"{r['recall_exact']:.0%} | {r['recall_folded']:.0%} | {r['cer']:.1%} | {r['seconds']} |")  # fmt: skip


if __name__ == "__main__":
    main()
