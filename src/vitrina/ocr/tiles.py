"""Big scans read at full resolution: overlapping tiles, each read by the engine, its boxes moved
back to the scan's pixels, and the words found twice in an overlap merged.

A tile is ``engine.tile`` pixels a side and overlaps its neighbours by ``OVERLAP`` (a fifth of a
tile by default), so a word up to that wide lies whole in at least one tile. Of two words from
different tiles (or passes) whose boxes mostly cover each other, the one not touching an inner
tile edge wins, then the more confident. ``rotations`` (default: the engine's) are the quarter
turns read, for labels set vertically (tesseract reads only level lines). Reading stops with ``ImageError('ocr_timeout')`` once the
deadline passes; the number of tiles is bounded by the decoded image's size, which the decoder
bounds (images.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ImageError
from . import Engine, Word, word_from_quad

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["OVERLAP", "merge", "read_tiled", "tile_grid"]

OVERLAP = 0.2  # of a tile side
EDGE = 3  # pixels: a box this close to an inner tile edge may be cut


@dataclass
class _Found:
    word: Word
    source: int  # which tile/pass read it
    cut: bool  # touches an inner tile edge


def tile_grid(width: int, height: int, tile: int, overlap: float = OVERLAP) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of overlapping tiles covering the image; one tile when it fits."""

    def spans(size: int) -> list[tuple[int, int]]:
        if size <= tile * 1.25:
            return [(0, size)]
        step = max(1, int(tile * (1 - overlap)))
        starts = [*range(0, size - tile, step), size - tile]
        return [(s, s + tile) for s in starts]

    return [(x0, y0, x1, y1) for y0, y1 in spans(height) for x0, x1 in spans(width)]


def read_tiled(engine: Engine, image: Image.Image, *, rotations: Sequence[int] = (), deadline: float | None = None,
               name: str = "image") -> list[Word]:  # fmt: skip
    """Every word on ``image``, boxes in its pixels (see the module's doc)."""
    from PIL import Image as PILImage

    found: list[_Found] = []
    source = 0
    turns = {0: None, 90: PILImage.Transpose.ROTATE_90, 270: PILImage.Transpose.ROTATE_270}
    for angle in rotations or engine.rotations:
        turn = turns[angle]
        turned = image if turn is None else image.transpose(turn)
        tw, th = turned.size
        for left, top, right, bottom in tile_grid(tw, th, engine.tile):
            if deadline is not None and time.monotonic() > deadline:
                raise ImageError("ocr_timeout", f"{name}: reading its text took longer than the time budget")
            crop = turned if (left, top, right, bottom) == (0, 0, tw, th) else turned.crop((left, top, right, bottom))
            inner = (left > 0, top > 0, right < tw, bottom < th)
            for word in engine.read(crop):
                cut = (
                    (inner[0] and word.x <= EDGE)
                    or (inner[1] and word.y <= EDGE)
                    or (inner[2] and word.x + word.w >= crop.width - EDGE)
                    or (inner[3] and word.y + word.h >= crop.height - EDGE)
                )
                moved = word.moved(left, top)
                found.append(_Found(moved if angle == 0 else _unturn(moved, angle, image.size), source, cut))
            source += 1
    return merge(found)


def _unturn(word: Word, angle: int, size: tuple[int, int]) -> Word:
    """A word read on the image turned ``angle``° counter-clockwise, in the unturned image's pixels."""
    if word.quad is not None:
        quad = word.quad
    else:
        x, y, w, h = word.x, word.y, word.w, word.h
        quad = (x, y, x + w, y, x + w, y + h, x, y + h)
    back: list[float] = []
    width, height = size
    for u, v in zip(quad[0::2], quad[1::2]):
        back += [width - v, u] if angle == 90 else [v, height - u]
    return word_from_quad(word.text, tuple(back), word.confidence, word.engine)


def merge(found: list[_Found]) -> list[Word]:
    """Drop the words read twice (in an overlap, or by two passes): see the module's doc."""
    order = sorted(found, key=lambda f: (f.cut, -f.word.confidence))
    kept: list[_Found] = []
    cells: dict[tuple[int, int], list[_Found]] = {}  # kept words by the grid cells their boxes touch
    for f in order:
        mine = _cells(f.word)
        if any(k.source != f.source and _covers(k.word, f.word) for c in mine for k in cells.get(c, ())):
            continue
        kept.append(f)
        for c in mine:
            cells.setdefault(c, []).append(f)
    return sorted((k.word for k in kept), key=lambda w: (round(w.y), w.x))


def _cells(w: Word, size: int = 256) -> list[tuple[int, int]]:
    x0, y0, x1, y1 = int(w.x) // size, int(w.y) // size, int(w.x + w.w) // size, int(w.y + w.h) // size
    return [(cx, cy) for cx in range(x0, min(x1, x0 + 64) + 1) for cy in range(y0, min(y1, y0 + 64) + 1)]


def _covers(a: Word, b: Word) -> bool:
    ix = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    iy = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    if ix <= 0 or iy <= 0:
        return False
    smaller = min(a.w * a.h, b.w * b.h)
    return smaller > 0 and ix * iy / smaller > 0.5
