"""Reading the words of a collection's images: every item not yet read by this engine in its
current version (by image fingerprint), one at a time, each committed with its words in one
transaction, so a run killed at any moment resumes with every item read exactly once.

An image is decoded within the same limits as indexing (``images.read_image``: formats, pixel
caps, the decode memory budget, the decode deadline), local scans at full resolution up to
``LOCAL_MIN_SIDE`` on the short side (bigger JPEGs decoded at a reduced scale), IIIF images
asked for at ``IIIF_SIDE`` (within the server's limits). Boxes are stored in the item's source
pixels: a local scan's, or for a IIIF image its region at the full resolution the server's
``info.json`` gives (the canvas's pixels for a whole-page item; a region of a page from its own
top-left), whatever size was fetched; the size the boxes are in is stored with them. Reading one
image is bounded by ``OCR_SECONDS``; a failure is recorded with its reason and the run goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Blocked, ImageError
from . import Engine, get_engine
from .tiles import read_tiled

if TYPE_CHECKING:
    from PIL import Image

    from ..store import Store

__all__ = ["IIIF_SIDE", "LOCAL_MIN_SIDE", "OCR_SECONDS", "OcrReport", "ocr_collection", "read_collection", "read_item"]

LOCAL_MIN_SIDE = 8000  # a JPEG whose short side is twice this is decoded at half size (or less)
IIIF_SIDE = 3000  # the short side asked of a IIIF image server (capped by its info.json)
OCR_SECONDS = float(os.environ.get("VITRINA_OCR_SECONDS", "600"))  # reading one image, after decoding


@dataclass
class OcrReport:
    engine: str
    read: int = 0
    failed: int = 0
    words: int = 0
    unchanged: int = 0
    seconds: float = 0.0
    megapixels: float = 0.0
    interrupted: bool = False
    message: str = ""
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (id, reason, detail), this run's

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "read": self.read, "failed": self.failed, "words": self.words,
                "unchanged": self.unchanged, "seconds": round(self.seconds, 2), "megapixels": round(self.megapixels, 2),
                "interrupted": self.interrupted, "message": self.message,
                "failures": [{"id": i, "reason": r, "detail": d} for i, r, d in self.failures]}  # fmt: skip


def read_collection(store: Store, *, engine: Engine | str | None = None, lang: str | None = None, retry_failed: bool = False,
                    reread: bool = False, max_pixels: int | None = None, max_decode_bytes: int | None = None,
                    fetcher: Any = None, progress: Callable[[int, int], None] | None = None) -> OcrReport:  # fmt: skip
    """Read the words of every pending item of ``store`` (a writer); see the module's doc."""
    eng = engine if engine is not None and not isinstance(engine, str) else get_engine(engine, lang)
    started = time.monotonic()
    pending = store.ocr_pending(eng.key, retry_failed=retry_failed, reread=reread)
    report = OcrReport(engine=eng.key, unchanged=store.item_count() - len(pending))
    limits = {"max_pixels": max_pixels, "max_decode_bytes": max_decode_bytes}
    if progress:
        progress(0, len(pending))
    try:
        for done, row in enumerate(pending, start=1):
            try:
                words, size, pixels = read_item(eng, row["image"], fetcher, limits, name=row["id"])
            except ImageError as e:
                store.save_ocr_failure(row["rid"], row["fingerprint"], eng.key, e.reason, str(e))
                report.failed += 1
                report.failures.append((row["id"], e.reason, str(e)))
            except Blocked:
                raise
            except Exception as e:  # an engine bug must cost one item, not the run
                detail = f"{row['id']}: {type(e).__name__}: {e}"
                store.save_ocr_failure(row["rid"], row["fingerprint"], eng.key, "ocr_error", detail)
                report.failed += 1
                report.failures.append((row["id"], "ocr_error", detail))
            else:
                store.save_words(row["rid"], row["fingerprint"], eng.key, words, size)
                report.read += 1
                report.words += len(words)
                report.megapixels += pixels / 1e6
            if progress:
                progress(done, len(pending))
    except KeyboardInterrupt:
        report.interrupted = True
    except Blocked as e:
        report.interrupted, report.message = True, str(e)
    report.seconds = time.monotonic() - started
    return report


def ocr_collection(path: Path, *, fetcher: Any = None, **options: Any) -> OcrReport:
    """``read_collection`` on the collection at ``path``, under its writer lock, with its HTTP
    cache for remote images (as indexing reads them)."""
    from ..ingest import collection_fetcher, writing_store

    with writing_store(path) as store, collection_fetcher(path, fetcher) as http:
        return read_collection(store, fetcher=http, **options)


def read_item(engine: Engine, ref: str, fetcher: Any, limits: dict[str, Any], *, name: str = "image",
              seconds: float | None = None) -> tuple[list[Any], tuple[int, int], int]:  # fmt: skip
    """The words on the image ``ref`` (boxes in source pixels), the source size, pixels read."""
    from ..images import hold_decoded

    with hold_decoded():
        image, scale = load_for_ocr(ref, fetcher, limits)
        try:
            deadline = time.monotonic() + (OCR_SECONDS if seconds is None else seconds)
            words = read_tiled(engine, image, deadline=deadline, name=name)
            size = (round(image.width * scale), round(image.height * scale))
            pixels = image.width * image.height
        finally:
            image.close()
    if scale != 1.0:
        words = [w.moved(0, 0, scale) for w in words]
    return words, size, pixels


def load_for_ocr(ref: str, fetcher: Any, limits: dict[str, Any]) -> tuple[Image.Image, float]:
    """The decoded image, and the factor from its pixels to the source's (a reduced JPEG decode)."""
    from ..images import decode_fetched, fetch_image, read_image

    if ref.startswith(("http://", "https://")):
        if fetcher is None:
            from ..http import Fetcher

            fetcher = Fetcher()
        remembering = _InfoSeen(fetcher)
        data, url, crop = fetch_image(ref, remembering, IIIF_SIDE)
        image = decode_fetched(data, url, crop, **limits)
        full = _iiif_region_size(ref, remembering.seen)
        return image, (full[0] / image.width if full and image.width else 1.0)
    image = read_image(ref, min_side=LOCAL_MIN_SIDE, **limits)
    if ref.startswith("crop:"):
        return image, 1.0
    return image, _source_scale(ref, image)


class _InfoSeen:
    """The fetcher, remembering the JSON documents it got (the IIIF ``info.json``)."""

    def __init__(self, fetcher: Any):
        self.fetcher = fetcher
        self.seen: dict[str, Any] = {}

    def get_json(self, url: str) -> Any:
        self.seen[url] = self.fetcher.get_json(url)
        return self.seen[url]

    def get_bytes(self, url: str, **kw: Any) -> bytes:
        return self.fetcher.get_bytes(url, **kw)  # type: ignore[no-any-return]


def _iiif_region_size(ref: str, seen: dict[str, Any]) -> tuple[int, int] | None:
    """The full-resolution size of the region a IIIF Image API URL asks for: from the server's
    ``info.json``, or from the region itself (``x,y,w,h``) when there was none; None when it is
    not a IIIF URL or cannot be known (the boxes stay in the fetched image's pixels)."""
    from ..iiif import ImageService, split_image_url

    split = split_image_url(ref.split("#")[0])
    if split is None:
        return None
    base, region = split
    info = seen.get(base + "/info.json")
    try:
        if isinstance(info, dict):
            _, _, w, h = ImageService.from_info(info, base).region_box(region)
            return w, h
        if region[0].isdigit():
            _, _, w, h = (int(v) for v in region.split(","))
            return w, h
    except (KeyError, TypeError, ValueError):
        pass
    return None


def _source_scale(ref: str, image: Image.Image) -> float:
    from PIL import Image as PILImage

    from ..image_formats import exif_orientation
    from ..sources.folder import ref_path

    try:
        with PILImage.open(ref_path(ref)) as header:
            width, height = header.size
            if exif_orientation(header) in (5, 6, 7, 8):
                width, height = height, width
    except Exception:  # the decode succeeded: a header that cannot be read again changes nothing
        return 1.0
    return width / image.width if image.width else 1.0
