"""Tesseract (Debian ``tesseract-ocr`` and its language packs, through ``pytesseract``): word boxes
and confidences from ``image_to_data``, page segmentation 11 (sparse text: as much as it finds, in
no particular order, as on maps and plates)."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from ..errors import ConfigError
from . import Word

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DEFAULT_LANG", "TesseractEngine"]

DEFAULT_LANG = "eng"
PSM = 11
INSTALL = "pip install 'vitrina[tesseract]' (pytesseract) and apt-get install tesseract-ocr"


class TesseractEngine:
    name = "tesseract"
    tile = 3000  # tesseract reads big pages whole; tiles only bound its memory
    rotations: tuple[int, ...] = (0, 90, 270)  # it reads only level lines: vertical labels need the image turned
    min_confidence = 0.3  # below this, what a turned pass finds is mostly noise

    def __init__(self, lang: str | None = None):
        try:
            import pytesseract  # type: ignore[import-untyped]
        except ImportError as e:
            raise ConfigError(f"The tesseract engine is not installed: {INSTALL} ({e}).") from e
        if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
            raise ConfigError(f"The tesseract program is not installed: {INSTALL}.")
        self.lang = lang or DEFAULT_LANG
        installed = set(pytesseract.get_languages(config=""))
        missing = [code for code in self.lang.split("+") if code not in installed]
        if missing:
            packages = " ".join(f"tesseract-ocr-{code.lower().replace('_', '-')}" for code in missing)
            raise ConfigError(
                f"Tesseract has no language {', '.join(missing)} (installed: {', '.join(sorted(installed))}): "
                f"apt-get install {packages}."
            )
        self._tess = pytesseract
        self.key = f"tesseract@{pytesseract.get_tesseract_version()}:{self.lang}"

    def read(self, image: Image.Image) -> list[Word]:
        data = self._tess.image_to_data(
            image.convert("RGB"), lang=self.lang, config=f"--psm {PSM}", output_type=self._tess.Output.DICT
        )
        words = []
        for text, conf, x, y, w, h in zip(data["text"], data["conf"], data["left"], data["top"], data["width"], data["height"]):  # fmt: skip
            text = str(text).strip()
            if not text or float(conf) < 100 * self.min_confidence:
                continue
            words.append(Word(text, float(x), float(y), float(w), float(h), float(conf) / 100.0, self.name))
        return words
