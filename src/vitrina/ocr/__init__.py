"""Reading the words printed on an image (OCR): engines behind one small protocol.

- ``Word``: one word read, its box in source pixels (``x, y, w, h``; for text at an angle also
  the rotated ``quad``, four corners clockwise from the top-left of the text), its confidence
  (0..1) and the engine that read it.
- ``Engine``: ``read(image) -> list[Word]`` on a decoded RGB image (boxes in that image's pixels);
  ``name`` (stored with each word), ``key`` (name, version and languages: words read by another
  key are read again), ``tile`` (the side of the tiles big scans are read in, ``tiles.py``) and
  ``rotations`` (the quarter turns of the image it needs to see vertical labels).
- ``get_engine(spec, lang)``: ``rapidocr`` (the default, see docs/ocr.md) or ``tesseract``;
  ``tesseract:nor+deu`` names the languages too. A missing engine or language raises
  ``ConfigError`` naming the package to install.

The engines are imported when first used, never by ``import vitrina``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DEFAULT_ENGINE", "ENGINES", "Engine", "Word", "get_engine"]

ENGINES = ("rapidocr", "tesseract")
DEFAULT_ENGINE = "rapidocr"


@dataclass(frozen=True)
class Word:
    text: str
    x: float
    y: float
    w: float
    h: float
    confidence: float
    engine: str
    quad: tuple[float, ...] | None = None  # x0,y0, x1,y1, x2,y2, x3,y3 where the text is at an angle

    def moved(self, dx: float, dy: float, scale: float = 1.0) -> Word:
        """The same word with its box scaled by ``scale``, then shifted by (dx, dy)."""
        quad = None
        if self.quad is not None:
            quad = tuple(v * scale + (dx if n % 2 == 0 else dy) for n, v in enumerate(self.quad))
        return Word(self.text, self.x * scale + dx, self.y * scale + dy, self.w * scale, self.h * scale,
                    self.confidence, self.engine, quad)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "box": [round(v, 1) for v in (self.x, self.y, self.w, self.h)],
                               "confidence": round(self.confidence, 4), "engine": self.engine}  # fmt: skip
        if self.quad is not None:
            out["quad"] = [round(v, 1) for v in self.quad]
        return out


def word_from_quad(text: str, quad: tuple[float, ...], confidence: float, engine: str) -> Word:
    """A word from its four corners: the bounding box, and the quad kept when it is not upright."""
    xs, ys = quad[0::2], quad[1::2]
    x, y = min(xs), min(ys)
    # Upright: the top edge within ~3° of level (x1 - x0 is its length, y1 - y0 its rise).
    upright = quad[2] > quad[0] and abs(quad[3] - quad[1]) <= 0.05 * (quad[2] - quad[0])
    return Word(text, x, y, max(xs) - x, max(ys) - y, confidence, engine, None if upright else tuple(quad))


class Engine(Protocol):
    name: str
    key: str
    tile: int
    rotations: tuple[int, ...]  # the quarter turns read (0, 90, 270): see tiles.read_tiled

    def read(self, image: Image.Image) -> list[Word]: ...


def get_engine(spec: str | None = None, lang: str | None = None) -> Engine:
    """The engine named by ``spec`` (``rapidocr``, ``tesseract`` or ``tesseract:LANGS``)."""
    name, _, langs = (spec or DEFAULT_ENGINE).partition(":")
    lang = lang or langs or None
    if name == "rapidocr":
        from .rapid import RapidEngine

        return RapidEngine(lang)
    if name == "tesseract":
        from .tess import TesseractEngine

        return TesseractEngine(lang)
    raise ConfigError(f"Unknown OCR engine {name!r}; known: {', '.join(ENGINES)}.")
