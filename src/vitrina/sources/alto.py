"""Illustrations cut out of ALTO pages (v1-v4, namespaced or not; pixel, mm10, inch1200 units).

    alto:./pages                                   page images beside the ALTO files (same stem,
                                                   or sourceImageInformation/fileName)
    alto:./pages --images iiif:https://iiif.example.org/iiif/{stem}
                                                   the page image behind a IIIF Image API service

Every Illustration, ComposedBlock of an illustration-like TYPE and GraphicalElement that is not a
rule (thinner than a tenth of its length, or than 1% of the page) becomes an item; a box that
overlaps another by more than half of its own area (one wholly inside another, too) is merged into
the bigger one. A box running off the page is cut at the page edge. Coordinates
are scaled by the ratio of the real image size to the ALTO Page size, which works whatever the
unit and also when the OCR ran on a reduced image. The crop is cut locally, or requested from the
IIIF server as a region. The figure's own caption (text inside its ComposedBlock), then nearby
text blocks (a caption above or below) and the start of the page text become the item's context
text. XML is parsed with defusedxml: no entities, no network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ImageError, SourceError, VitrinaError
from ..http import Blocked, Fetcher
from ..iiif import ImageService
from ..records import Item

PICTURE_TYPES = re.compile(r"illustration|image|photo|map|figure|graphic|picture", re.I)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".jp2", ".webp")
DPI_FALLBACK = 300


@dataclass
class Box:
    id: str
    kind: str
    x: float
    y: float
    w: float
    h: float
    caption: str = ""  # text inside the figure's own ComposedBlock

    def covered_by(self, other: Box) -> float:
        """The share of this box's area that ``other`` covers (1.0: wholly inside it)."""
        ix = max(0.0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0.0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        area = self.w * self.h
        return ix * iy / area if area > 0 else 1.0


@dataclass
class Page:
    width: float | None
    height: float | None
    unit: str
    file_name: str
    pictures: list[Box]
    texts: list[tuple[Box, str]]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _box(el: Any, kind: str) -> Box | None:
    try:
        return Box(
            el.get("ID") or "",
            kind,
            float(el.get("HPOS")),
            float(el.get("VPOS")),
            float(el.get("WIDTH")),
            float(el.get("HEIGHT")),
        )
    except (TypeError, ValueError):
        return None


def _words(block: Any) -> str:
    words = []
    for s in block.iter():
        if _local(s.tag) == "String":
            if s.get("SUBS_TYPE") == "HypPart2":
                continue
            content = (
                s.get("SUBS_CONTENT")
                if s.get("SUBS_TYPE") == "HypPart1" and s.get("SUBS_CONTENT")
                else s.get("CONTENT")
            )
            try:
                confident = float(s.get("WC") or 1) >= 0.3
            except ValueError:
                confident = True
            if content and confident:
                words.append(content)
    return " ".join(words)


def parse_alto(path: Path | str, data: bytes | None = None) -> Page:
    """A page read from the file ``path``, or from ``data`` (fetched; ``path`` then names it)."""
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring, parse

    try:
        root = fromstring(data, forbid_dtd=True) if data is not None else parse(str(path), forbid_dtd=True).getroot()
    except (ParseError, DefusedXmlException, OSError) as e:
        raise SourceError("bad_xml", f"{path}: not a readable ALTO file ({type(e).__name__}: {e})") from e
    if _local(root.tag).lower() != "alto":
        raise SourceError("bad_xml", f"{path}: the root element is <{_local(root.tag)}>, not <alto>")
    unit, file_name, page_el = "pixel", "", None
    pictures: list[Box] = []
    texts: list[tuple[Box, str]] = []
    inside_picture: set[int] = set()
    for el in root.iter():
        tag = _local(el.tag)
        if tag == "MeasurementUnit" and el.text:
            unit = el.text.strip()
        elif tag == "fileName" and el.text:
            file_name = el.text.strip()
        elif tag == "Page" and page_el is None:
            page_el = el
        elif tag in ("Illustration", "ComposedBlock", "GraphicalElement"):
            if id(el) in inside_picture:
                continue
            if tag == "ComposedBlock" and not PICTURE_TYPES.search(el.get("TYPE") or ""):
                continue
            box = _box(el, tag)
            if box is None:
                continue
            if tag == "ComposedBlock":
                box.caption = " ".join(w for w in (_words(t) for t in el.iter() if _local(t.tag) == "TextBlock") if w)
            pictures.append(box)
            for child in el.iter():
                inside_picture.add(id(child))
        elif tag == "TextBlock" and id(el) not in inside_picture:
            box = _box(el, tag)
            words = _words(el)
            if box is not None and words:
                texts.append((box, words))
    if page_el is None:
        raise SourceError("bad_xml", f"{path}: no <Page> element")

    def number(name: str) -> float | None:
        try:
            return float(page_el.get(name))  # type: ignore[union-attr, arg-type]
        except (TypeError, ValueError):
            return None

    width, height = number("WIDTH"), number("HEIGHT")
    page_short = min(width or 0, height or 0)

    def rule(b: Box) -> bool:  # a line or rule, whatever --min-size says
        thin, long = min(b.w, b.h), max(b.w, b.h)
        return b.kind == "GraphicalElement" and (thin < 0.1 * long or (page_short > 0 and thin < 0.01 * page_short))

    merged: list[Box] = []
    for box in sorted((b for b in pictures if not rule(b)), key=lambda b: -b.w * b.h):
        host = next((m for m in merged if box.covered_by(m) > 0.5), None)
        if host is None:
            merged.append(box)
        elif box.caption and not host.caption:
            host.caption = box.caption
    return Page(width, height, unit, file_name, merged, texts)


def nearby_text(page: Page, box: Box, limit: int = 600) -> str:
    """Caption candidates (text blocks just above or below, overlapping horizontally), then the page text."""
    height = page.height or max((b.y + b.h for b, _ in page.texts), default=1.0)
    near = []
    for tb, words in page.texts:
        overlap = max(0.0, min(tb.x + tb.w, box.x + box.w) - max(tb.x, box.x))
        gap = tb.y - (box.y + box.h) if tb.y >= box.y + box.h else box.y - (tb.y + tb.h)
        if overlap >= 0.5 * min(tb.w, box.w) and gap <= 0.05 * height:
            near.append(words)
    rest = " ".join(words for _, words in page.texts if words not in near)
    return " ".join([box.caption, *near, rest]).strip()[:limit]


def picture_boxes(
    page: Page, sx: float, sy: float, width: int, height: int, min_size: int
) -> Iterator[tuple[Box, tuple[int, int, int, int]]]:
    """The page's pictures with their boxes in image pixels (ALTO units scaled by ``sx``, ``sy``),
    intersected with the image (not shifted onto it); boxes outside it or under ``min_size`` are left out."""
    for box in page.pictures:
        x0, y0 = max(0, round(box.x * sx)), max(0, round(box.y * sy))
        x1, y1 = min(width, round((box.x + box.w) * sx)), min(height, round((box.y + box.h) * sy))
        if min(x1 - x0, y1 - y0) >= max(min_size, 1):
            yield box, (x0, y0, x1 - x0, y1 - y0)


class AltoSource:
    complete = True

    def __init__(self, target: str, fetcher: Fetcher, *, images: str | None = None, min_size: int = 64):
        self.root = Path(target).expanduser().resolve()
        if not self.root.exists():
            raise ConfigError(f"{target} does not exist; alto: takes a folder of ALTO XML files or one file.")
        if images and not images.startswith("iiif:"):
            raise ConfigError(
                f"--images {images!r}: give iiif:SERVICE-URL-TEMPLATE with {{stem}}, or leave it out to use image files beside the ALTO."
            )
        self.template = images[5:] if images else None
        self.fetcher, self.min_size = fetcher, min_size
        self.spec = f"alto:{self.root}" + (f"|{images}" if images else "")
        self.problems: list[str] = []

    def files(self) -> list[Path]:
        if self.root.is_file():
            return [self.root]
        return sorted(p for p in self.root.rglob("*") if p.suffix.lower() in (".xml", ".alto") and p.is_file())

    def pages(self, cursor: str | None = None) -> Iterator[tuple[list[Item], str | None]]:
        for path in self.files():
            try:
                yield self.page_items(path), None
            except Blocked:
                raise
            except VitrinaError as e:
                self.problems.append(str(e))
                self.complete = False

    def _image(self, path: Path, page: Page) -> tuple[str, int, int, ImageService | None]:
        stem = path.stem
        if self.template:
            base = self.template.format(stem=stem).rstrip("/")
            service = ImageService.from_info(self.fetcher.get_json(base + "/info.json"), base)
            return base, service.width, service.height, service
        candidates = [path.parent / page.file_name] if page.file_name else []
        candidates += [path.with_suffix(s) for s in IMAGE_SUFFIXES] + [
            path.with_suffix(s.upper()) for s in IMAGE_SUFFIXES
        ]
        for candidate in candidates:
            if candidate.is_file():
                from PIL import Image

                try:
                    with Image.open(candidate) as im:
                        return str(candidate), im.size[0], im.size[1], None
                except OSError as e:
                    raise ImageError("unreadable_image", f"{candidate}: {e}") from e
        raise ImageError(
            "not_found",
            f"{path}: no page image beside it ({stem}.jpg, .png, .tif, ...); or give --images iiif:TEMPLATE",
        )

    def page_items(self, path: Path) -> list[Item]:
        page = parse_alto(path)
        if not page.pictures:
            return []
        image, img_w, img_h, service = self._image(path, page)
        if page.width and page.height:
            sx, sy = img_w / page.width, img_h / page.height
        else:  # no Page size: units -> pixels at an assumed resolution
            per_unit = {"mm10": DPI_FALLBACK / 254, "inch1200": DPI_FALLBACK / 1200}.get(page.unit, 1.0)
            sx = sy = per_unit
        rel = os.path.relpath(path, self.root if self.root.is_dir() else self.root.parent)
        items = []
        for box, (x, y, w, h) in picture_boxes(page, sx, sy, img_w, img_h, self.min_size):
            if service is not None:
                ref = f"{image}/{x},{y},{w},{h}/{'max' if service.version == 3 else 'full'}/0/default.jpg"
            else:
                ref = f"crop:{image}#xywh={x},{y},{w},{h}"
            metadata = {"title": f"{Path(rel).stem} {box.id or box.kind}".strip(), "page": rel, "block": box.id, "block_type": box.kind,
                        "box_alto": [box.x, box.y, box.w, box.h], "unit": page.unit, "box_pixels": [x, y, w, h]}  # fmt: skip
            items.append(Item(id=f"{rel}#{box.id or f'{x},{y},{w},{h}'}", image=ref, metadata=metadata, context=nearby_text(page, box),
                              fingerprint=f"{path.stat().st_mtime_ns}:{ref}", source=self.spec))  # fmt: skip
        return items
