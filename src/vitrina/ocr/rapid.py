"""RapidOCR (``rapidocr-onnxruntime``): PP-OCRv4 detection, angle classification and recognition as
ONNX models inside the wheel. Its detector finds text lines at any angle; a line is split into
words along its quad, each word's share in proportion to its characters."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import ConfigError
from . import Word, word_from_quad

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["RapidEngine", "split_line"]

INSTALL = "pip install 'vitrina[ocr]' (the rapidocr-onnxruntime package)"


class RapidEngine:
    name = "rapidocr"
    tile = 1600  # the detector works on <= 2000 px a side; bigger scans are read in tiles
    rotations: tuple[int, ...] = (0,)  # its detector finds vertical lines itself

    def __init__(self, lang: str | None = None):
        try:
            import rapidocr_onnxruntime  # type: ignore[import-untyped]
            from rapidocr_onnxruntime import RapidOCR  # type: ignore[import-untyped]
        except ImportError as e:
            raise ConfigError(f"The rapidocr engine is not installed: {INSTALL} ({e}).") from e
        del lang  # PP-OCR's recogniser reads Latin script whatever the language
        version = getattr(rapidocr_onnxruntime, "__version__", "") or _dist_version("rapidocr-onnxruntime")
        self.key = f"rapidocr@{version}"
        self._ocr = RapidOCR(print_verbose=False)
        self._lock = threading.Lock()  # one ONNX session, used one call at a time

    def read(self, image: Image.Image) -> list[Word]:
        import numpy as np

        array = np.asarray(image.convert("RGB"))[:, :, ::-1]  # RapidOCR expects OpenCV's BGR
        with self._lock:
            result, _ = self._ocr(array)
        words: list[Word] = []
        for box, text, score in result or ():
            quad = tuple(float(v) for point in box for v in point)
            words.extend(split_line(str(text), quad, float(score), self.name))
        return words


def split_line(text: str, quad: tuple[float, ...], confidence: float, engine: str) -> list[Word]:
    """The words of a line read in ``quad`` (corners clockwise from the top-left of the text), each
    given the part of the quad its characters take (spaces count as characters)."""
    n = len(text)
    out: list[Word] = []
    if not text.strip():
        return out
    x0, y0, x1, y1, x2, y2, x3, y3 = quad
    if _length(x0, y0, x1, y1) < _length(x1, y1, x2, y2):
        # A vertical line: which end it starts at is not known, so it stays one box.
        return [word_from_quad(text.strip(), quad, confidence, engine)]

    def along(t: float) -> tuple[float, float, float, float]:  # top point, bottom point at fraction t
        return x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, x3 + (x2 - x3) * t, y3 + (y2 - y3) * t

    start = None
    for i, ch in enumerate(text + " "):
        if ch.isspace():
            if start is not None:
                ta, tb = start / n, i / n
                tax, tay, bax, bay = along(ta)
                tbx, tby, bbx, bby = along(tb)
                out.append(word_from_quad(text[start:i], (tax, tay, tbx, tby, bbx, bby, bax, bay), confidence, engine))
                start = None
        elif start is None:
            start = i
    return out


def _length(ax: float, ay: float, bx: float, by: float) -> float:
    return float(((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5)


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"
