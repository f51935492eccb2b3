"""Every image vitrina embeds or shows goes through ``load_image``.

It refuses what it should (formats outside the allow-list, decompression bombs, absurd
dimensions) from the header, before any pixel is decoded; decodes big JPEG scans at reduced
size (``draft``) so a 120-megapixel map costs tens of megabytes, not a gigabyte; applies EXIF
orientation; and turns every mode (CMYK, 16-bit, palette, alpha, ...) into plain RGB.
Failures are ``ImageError`` with a stable ``reason`` code.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

REASONS = {
    "not_found": "the file or URL does not exist (404, 410)",
    "unsupported_format": "not an image format vitrina reads (JPEG, PNG, GIF, WebP, TIFF, BMP, JPEG 2000)",
    "unreadable_image": "the file is corrupt or not an image",
    "truncated": "the image data ends early",
    "too_large": "more pixels than the limit (a decompression bomb, or raise --max-pixels)",
    "bad_dimensions": "zero size or an extreme aspect ratio",
    "embed_error": "the model failed on this image",
    "fetch_failed": "the image could not be downloaded (server error, timeout): retry later",
    "url_rejected": "the URL is not an http(s) URL of a public host",
    "forbidden": "the server refuses access (401, 403, 451): often restricted material",
    "bad_json": "a JSON document (manifest, info.json, API page) is not valid JSON",
    "bad_manifest": "a IIIF document is not a manifest or collection",
    "bad_xml": "an ALTO file is not well-formed or uses entities (refused)",
}

ALLOWED_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "WEBP", "TIFF", "BMP", "JPEG2000"}
# Formats that can be decoded at reduced size, so their cap can be much higher.
REDUCIBLE_FORMATS = {"JPEG", "MPO", "JPEG2000"}
MAX_PIXELS = 200_000_000  # full decode: ~600 MB of RGB at most
MAX_PIXELS_REDUCIBLE = 1_000_000_000  # decoded at 1/2 .. 1/8 per side
MAX_ASPECT = 50.0
BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white, like img2dataset


def load_image(
    source: str | Path | bytes | IO[bytes],
    *,
    min_side: int | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Open, check and decode an image to RGB.

    ``min_side``: the smallest side the caller needs (e.g. 2x the model input); big JPEGs are
    decoded at the smallest DCT scale that still gives at least that. ``None`` decodes in full.
    ``max_pixels``: overrides the pixel caps above (header dimensions, before decoding).
    """
    name = _describe(source)
    try:
        fp: str | Path | IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source
        with warnings.catch_warnings():
            # We enforce our own caps from the header; Pillow's global one is not per-call.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old_cap = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                image = Image.open(fp)
            finally:
                Image.MAX_IMAGE_PIXELS = old_cap
    except FileNotFoundError as e:
        raise ImageError("not_found", f"{name}: no such file") from e
    except IsADirectoryError as e:
        raise ImageError("not_found", f"{name}: is a directory") from e
    except PermissionError as e:
        raise ImageError("not_found", f"{name}: permission denied") from e
    except UnidentifiedImageError as e:
        raise ImageError("unreadable_image", f"{name}: not a recognised image file") from e
    except (OSError, ValueError, SyntaxError) as e:
        if "truncated" in str(e).lower():
            raise ImageError("truncated", f"{name}: the image data ends early ({e}); re-download or re-scan it") from e
        raise ImageError("unreadable_image", f"{name}: cannot be opened ({e})") from e

    try:
        return _decode(image, name, min_side, max_pixels)
    finally:
        image.close()


def _decode(image: Image.Image, name: str, min_side: int | None, max_pixels: int | None) -> Image.Image:
    fmt = image.format or "?"
    if fmt not in ALLOWED_FORMATS:
        raise ImageError("unsupported_format", f"{name}: format {fmt} is not supported; convert it to JPEG, PNG or TIFF")
    width, height = image.size
    cap = max_pixels or (MAX_PIXELS_REDUCIBLE if fmt in REDUCIBLE_FORMATS else MAX_PIXELS)
    if width * height > cap:
        raise ImageError(
            "too_large",
            f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the limit of "
            f"{cap / 1e6:.0f}; if the image is genuine, raise the limit (--max-pixels)",
        )
    if width < 1 or height < 1 or max(width, height) / min(width, height) > MAX_ASPECT:
        raise ImageError("bad_dimensions", f"{name}: {width}x{height} has zero size or an aspect ratio over {MAX_ASPECT:g}")

    if min_side and fmt in ("JPEG", "MPO"):
        scale = min_side / min(width, height)
        if scale < 0.5:
            # draft() picks the largest DCT reduction that keeps both sides >= the request.
            image.draft("RGB", (int(width * scale) + 1, int(height * scale) + 1))
    elif min_side and fmt == "JPEG2000":
        reduce = 0
        while min(width, height) >> (reduce + 1) >= min_side and reduce < 5:
            reduce += 1
        image.reduce = reduce  # type: ignore[method-assign, assignment]  # JPEG 2000 reduced decoding

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt EXIF/ICC warnings: the pixels are still good
            image.load()
    except OSError as e:
        if "truncated" in str(e) or "broken data stream" in str(e):
            raise ImageError("truncated", f"{name}: the image data ends early ({e}); re-download or re-scan it") from e
        raise ImageError("unreadable_image", f"{name}: cannot be decoded ({e})") from e
    except (ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as e:
        raise ImageError("unreadable_image", f"{name}: cannot be decoded ({e})") from e

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oriented = ImageOps.exif_transpose(image)
    except Exception:  # corrupt EXIF must not cost us the pixels
        oriented = image
    return to_rgb(oriented if oriented is not None else image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit scaled (not clamped), alpha onto white."""
    mode = image.mode
    if mode == "RGB":
        return image.copy() if image.readonly else image
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(image).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(image).astype(np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else float(arr.max())
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _describe(source: object) -> str:
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    if isinstance(source, (str, Path)):
        return str(source).encode("utf-8", "backslashreplace").decode("utf-8")
    return getattr(source, "name", "<stream>")


def read_image(ref: str, *, fetcher: object | None = None, min_side: int | None = None, max_pixels: int | None = None) -> Image.Image:
    """The pixels behind an item's image reference:

    - a local path (``fsbytes:`` for non-UTF-8 names);
    - ``crop:PATH#xywh=x,y,w,h``, a region of a local image (ALTO illustrations);
    - an http(s) URL, through ``fetcher`` (a ``vitrina.http.Fetcher``); a IIIF Image API URL is
      asked for at the size the model needs, within the server's info.json limits.
    """
    if ref.startswith(("http://", "https://")):
        if fetcher is None:
            from .http import Fetcher

            fetcher = Fetcher()
        return _read_remote(ref, fetcher, min_side, max_pixels)
    if ref.startswith("crop:"):
        path, _, box = ref[5:].rpartition("#xywh=")
        try:
            x, y, w, h = (int(v) for v in box.split(","))
        except ValueError:
            raise ImageError("unreadable_image", f"{ref}: not a crop reference (crop:PATH#xywh=x,y,w,h)") from None
        image = load_image(_local_path(path), max_pixels=max_pixels)
        return image.crop((x, y, min(image.width, x + w), min(image.height, y + h)))
    return load_image(_local_path(ref), min_side=min_side, max_pixels=max_pixels)


def _local_path(ref: str) -> str:
    from .sources.folder import ref_path

    return ref_path(ref)


def _read_remote(url: str, fetcher: object, min_side: int | None, max_pixels: int | None) -> Image.Image:
    from .iiif import ImageService, split_image_url

    split = split_image_url(url)
    crop = None
    if split:
        base, region = split
        try:
            service = ImageService.from_info(fetcher.get_json(base + "/info.json"), base)  # type: ignore[attr-defined]
            url, crop = service.url_for(region, min_side or 1024)
        except ImageError as e:
            if e.reason not in ("not_found", "bad_json", "fetch_failed"):
                raise
            # No usable info.json (C10): ask for a bounded size without it.
            url = f"{base}/{region}/!{2 * (min_side or 1024)},{2 * (min_side or 1024)}/0/default.jpg"
        except (KeyError, TypeError, ValueError):
            url = f"{base}/{region}/!{2 * (min_side or 1024)},{2 * (min_side or 1024)}/0/default.jpg"
    data = fetcher.get_bytes(url)  # type: ignore[attr-defined]
    image = load_image(data, min_side=min_side, max_pixels=max_pixels)
    return image.crop(crop) if crop else image
