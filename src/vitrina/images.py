"""Every image vitrina embeds or shows goes through ``load_image``.

It refuses what it should (formats outside the allow-list, decompression bombs, absurd
dimensions, images whose decoding would need more memory than the budget) from the header,
before any pixel is decoded; decodes big JPEG scans at reduced size (``draft``) so a 120-megapixel
map costs tens of megabytes, not a gigabyte; bounds the memory of concurrent decodes in the
process and the time of each; applies EXIF orientation; turns every mode (CMYK, 16-bit, palette,
alpha, ...) into plain RGB; and refuses garbled files (data ending early, missing strips, NaN
pixels). Failures are ``ImageError`` with a stable ``reason`` code.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from PIL import Image, UnidentifiedImageError

from .errors import ImageError
from .image_formats import BACKGROUND as BACKGROUND  # re-exported: part of this module's names
from .image_formats import (
    MAX_JPEG_JUNK,
    TRANSPOSE,
    WEBP_EXTRA,
    Deadline,
    OutOfTime,
    check_strips,
    decode_cost,
    exif_orientation,
    jpeg_buffered,
    jpeg_segments,
    png_rows_missing,
    shrink_for,
    stream_size,
    to_rgb,
    webp_canvas,
)

REASONS = {
    "not_found": "the file or URL does not exist (404, 410)",
    "unsupported_format": "not an image format vitrina reads (JPEG, PNG, GIF, WebP, TIFF, BMP, JPEG 2000)",
    "unreadable_image": "the file is corrupt or not an image (also: NaN or infinite pixel values)",
    "truncated": "the image data ends early (also: missing TIFF strips)",
    "too_large": "more pixels than the limit (a decompression bomb, or raise --max-pixels)",
    "over_budget": "decoding would need more memory than the budget (a decompression bomb, or raise --max-decode-mb)",
    "decode_timeout": "decoding took longer than the time budget (junk data in the file)",
    "bad_dimensions": "zero size or an extreme aspect ratio",
    "embed_error": "the model failed on this image",
    "decoder_crashed": "a decoding process died while this image was in flight (out of memory?): retried by the next run",
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
# Memory one decode may need (decoded pixels, the RGB copy, the decoder's own buffers), and also
# the total that concurrent decodes in this process may hold at once.
MAX_DECODE_BYTES = int(os.environ.get("VITRINA_MAX_DECODE_MB", "512")) << 20
# Wall-clock budget of one file's open + decode (not counting the wait for memory).
DECODE_SECONDS = float(os.environ.get("VITRINA_DECODE_SECONDS", "60"))
MAX_ASPECT = 50.0


def load_image(
    source: str | Path | bytes | IO[bytes],
    *,
    min_side: int | None = None,
    max_pixels: int | None = None,
    max_decode_bytes: int | None = None,
    decode_seconds: float | None = None,
) -> Image.Image:
    """Open, check and decode an image to RGB.

    ``min_side``: the smallest side the caller needs (e.g. 2x the model input); big JPEGs are
    decoded at the smallest DCT scale that still gives at least that. ``None`` decodes in full.
    ``max_pixels``: overrides the pixel caps above (header dimensions, before decoding).
    ``max_decode_bytes``, ``decode_seconds``: override ``MAX_DECODE_BYTES`` and ``DECODE_SECONDS``.

    Decoding waits while other threads' decodes hold ``MAX_DECODE_BYTES``; see ``hold_decoded``.
    """
    if not _freed_memory_returned:
        return_freed_memory()  # once, when the process first decodes (not at import)
    name = _describe(source)
    budget = max_decode_bytes or MAX_DECODE_BYTES
    try:
        if isinstance(source, (str, Path)):
            fp: IO[bytes] = open(source, "rb")  # noqa: SIM115 (closed below)
        elif isinstance(source, bytes):
            fp = io.BytesIO(source)
        else:
            fp = source if source.seekable() else io.BytesIO(source.read())
    except FileNotFoundError as e:
        raise ImageError("not_found", f"{name}: no such file") from e
    except IsADirectoryError as e:
        raise ImageError("not_found", f"{name}: is a directory") from e
    except PermissionError as e:
        raise ImageError("not_found", f"{name}: permission denied") from e
    except OSError as e:
        raise ImageError("unreadable_image", f"{name}: cannot be opened ({e})") from e
    reader = Deadline(fp, DECODE_SECONDS if decode_seconds is None else decode_seconds)
    try:
        with ExitStack() as reservations:
            head = fp.read(30)
            fp.seek(0)
            webp_size = webp_canvas(head)
            if webp_size:  # libwebp allocates its canvas when the file is opened: check and reserve before
                _check_header(name, "WEBP", webp_size, max_pixels)
                w, h = webp_size
                reservations.enter_context(
                    _reserve(_check_budget(name, "WEBP", webp_size, w * h * (4 + WEBP_EXTRA + 6), budget))
                )
                reader.restart()
            if head[:3] == b"\xff\xd8\xff":
                reader.first_scan, junk = jpeg_segments(fp)
                if junk > MAX_JPEG_JUNK:
                    raise ImageError(
                        "unreadable_image", f"{name}: over {MAX_JPEG_JUNK >> 20} MB of junk in the JPEG header"
                    )
            image = _open(reader, name)
            try:
                return _decode(image, reader, name, min_side, max_pixels, budget, None if webp_size else reservations)
            except BaseException:
                image.close()
                raise
    except OutOfTime as e:
        raise _timeout(name, reader) from e
    finally:
        if fp is not source:
            fp.close()


def _open(reader: Deadline, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings(), _pillow_cap_off():
            # We enforce our own caps from the header; Pillow's global one is not per-call.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(reader)  # type: ignore[arg-type]
    except UnidentifiedImageError as e:
        raise ImageError("unreadable_image", f"{name}: not a recognised image file") from e
    except (OSError, ValueError, SyntaxError) as e:
        if reader.expired:
            raise _timeout(name, reader) from e
        if "truncated" in str(e).lower():
            raise ImageError("truncated", f"{name}: the image data ends early ({e}); re-download or re-scan it") from e
        raise ImageError("unreadable_image", f"{name}: cannot be opened ({e})") from e


def _decode(image: Image.Image, reader: Deadline, name: str, min_side: int | None, max_pixels: int | None, budget: int,
            reserve: ExitStack | None) -> Image.Image:  # fmt: skip
    """``reserve``: where to hold this decode's memory reservation (None: already reserved)."""
    fmt = image.format or "?"
    if fmt not in ALLOWED_FORMATS:
        raise ImageError(
            "unsupported_format", f"{name}: format {fmt} is not supported; convert it to JPEG, PNG or TIFF"
        )
    full = width, height = image.size
    _check_header(name, fmt, full, max_pixels)

    out = full
    if min_side and fmt in ("JPEG", "MPO"):
        scale = min_side / min(width, height)
        if scale < 0.5:
            # draft() picks the largest DCT reduction that keeps both sides >= the request.
            image.draft("RGB", (int(width * scale) + 1, int(height * scale) + 1))
            out = image.size
    elif min_side and fmt == "JPEG2000":
        reduce = 0
        while min(width, height) >> (reduce + 1) >= min_side and reduce < 5:
            reduce += 1
        image.reduce = reduce  # type: ignore[method-assign, assignment]  # JPEG 2000 reduced decoding
        out = (-(-width >> reduce), -(-height >> reduce))
    if fmt == "TIFF":
        check_strips(image, reader, name)

    # PNG's getexif() decodes the whole image when the EXIF is not in the header.
    exif_known = fmt != "PNG" or "exif" in image.info
    orientation = exif_orientation(image) if exif_known else 1
    shrink = shrink_for(image.mode, out, min_side)  # 16/32-bit: reduced before the 8-bit and RGB copies
    if reserve is not None:
        cost = decode_cost(image, fmt, out, orientation, stream_size(reader.raw), shrink)
        reserve.enter_context(
            _reserve(_check_budget(name, fmt, full, cost, budget, jpeg_buffered(image, reader, full)))
        )
        reader.restart()  # the time budget is for decoding, not for waiting on memory

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt EXIF/ICC warnings: the pixels are still good
            image.load()
    except OSError as e:
        if reader.expired:
            raise _timeout(name, reader) from e
        if "truncated" in str(e) or "broken data stream" in str(e):
            raise ImageError("truncated", f"{name}: the image data ends early ({e}); re-download or re-scan it") from e
        raise ImageError("unreadable_image", f"{name}: cannot be decoded ({e})") from e
    except (ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as e:
        raise ImageError("unreadable_image", f"{name}: cannot be decoded ({e})") from e
    if fmt == "PNG" and png_rows_missing(image, reader):
        raise ImageError("truncated", f"{name}: the image data ends before its last row; re-download or re-scan it")

    if not exif_known:
        orientation = exif_orientation(image)
    rgb = to_rgb(image, name=name, shrink=shrink)
    if rgb is not image:
        image.close()  # free the decoded pixels before transposing
    if orientation in TRANSPOSE:  # only then: a transpose copies the whole image
        rgb = rgb.transpose(TRANSPOSE[orientation])
    return rgb


def _check_header(name: str, fmt: str, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    cap = max_pixels or (MAX_PIXELS_REDUCIBLE if fmt in REDUCIBLE_FORMATS else MAX_PIXELS)
    if width * height > cap:
        raise ImageError(
            "too_large",
            f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the limit of "
            f"{cap / 1e6:.0f}; if the image is genuine, raise the limit (--max-pixels)",
        )
    if width < 1 or height < 1 or max(width, height) / min(width, height) > MAX_ASPECT:
        raise ImageError(
            "bad_dimensions", f"{name}: {width}x{height} has zero size or an aspect ratio over {MAX_ASPECT:g}"
        )


def _check_budget(name: str, fmt: str, size: tuple[int, int], cost: int, budget: int, buffered: int = 0) -> int:
    cost += buffered
    if cost > budget:
        why = " (a progressive JPEG is decoded at full size)" if buffered else ""
        raise ImageError(
            "over_budget",
            f"{name}: decoding this {size[0]}x{size[1]} {fmt} needs about {cost >> 20} MiB{why}, over the budget of "
            f"{budget >> 20} MiB; if the image is genuine, raise the budget (--max-decode-mb or VITRINA_MAX_DECODE_MB)",
        )
    return cost


def _timeout(name: str, reader: Deadline) -> ImageError:
    return ImageError("decode_timeout", f"{name}: decoding took over {reader.seconds:g} s (junk data in the file?); "
                                        "if the image is genuine, raise VITRINA_DECODE_SECONDS")  # fmt: skip


class _Gate:
    """The bytes reserved by decodes in flight, all threads together: in this process, or in every
    decoding process when the counter and condition are shared (``use_shared_decode_budget``). A
    decode waits while the others hold ``MAX_DECODE_BYTES``, but never when nothing else is
    reserved (one image within its own budget always gets through) nor when its thread already
    holds a reservation (two nested waits could deadlock)."""

    def __init__(self, counter: Any = None, cond: Any = None) -> None:
        self._counter = counter if counter is not None else _Counter()  # anything with an int .value
        self._cond = cond if cond is not None else threading.Condition()
        self.high_water = 0

    @property
    def in_use(self) -> int:
        return int(self._counter.value)

    def acquire(self, nbytes: int, mine: int) -> None:
        with self._cond:
            while self.in_use and not mine and self.in_use + nbytes > MAX_DECODE_BYTES:
                self._cond.wait()
            self._counter.value += nbytes
            self.high_water = max(self.high_water, self.in_use)

    def release(self, nbytes: int) -> None:
        with self._cond:
            self._counter.value -= nbytes
            self._cond.notify_all()


class _Counter:
    value = 0


def shared_decode_budget(context: Any) -> tuple[Any, Any]:
    """The shared state for ``use_shared_decode_budget``, made in the parent from ``context``
    (a multiprocessing context) and handed to each decoding process when it starts."""
    return context.Value("q", 0, lock=False), context.Condition()


def use_shared_decode_budget(in_use: Any, cond: Any) -> None:
    """In a decoding process: count decoded bytes against the budget shared by all of them."""
    global _GATE
    _GATE = _Gate(in_use, cond)


_GATE = _Gate()
_held = threading.local()


def return_freed_memory(threshold: int = 1 << 20) -> bool:
    """Make glibc hand big blocks (Pillow allocates pixels in 16 MB blocks) to the OS when they are
    freed. By default glibc raises its mmap threshold after the first big free and then keeps freed
    pixels in per-thread arenas that other threads cannot reuse: four concurrent 7000x7000 16-bit
    uploads, decoded one at a time by the gate, still left the server ~470 MiB bigger for good. A
    fixed threshold turns that off. No-op (False) where the C library is not glibc. Called by the
    first ``load_image`` of a process, so merely importing vitrina changes nothing."""
    global _freed_memory_returned
    _freed_memory_returned = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


_freed_memory_returned = False


@contextmanager
def hold_decoded() -> Iterator[None]:
    """Keep the memory that ``load_image`` reserves inside this block reserved until the block
    ends. Wrap the decode *and* the use of the image (preprocessing, embedding), so the bound on
    concurrent decodes covers each image for as long as it is alive, not just while it decodes."""
    if getattr(_held, "nbytes", None) is not None:
        yield  # nested: the outer block releases
        return
    _held.nbytes = 0
    try:
        yield
    finally:
        nbytes, _held.nbytes = _held.nbytes, None
        _GATE.release(nbytes)


@contextmanager
def _reserve(nbytes: int) -> Iterator[None]:
    held = getattr(_held, "nbytes", None)
    _GATE.acquire(nbytes, held or 0)
    if held is not None:
        _held.nbytes += nbytes  # released by hold_decoded
        yield
        return
    try:
        yield
    finally:
        _GATE.release(nbytes)


_cap_lock = threading.Lock()
_cap_users = 0
_cap_saved: int | None = None


@contextmanager
def _pillow_cap_off() -> Iterator[None]:
    """Pillow's decompression-bomb cap is a module global: switch it off while any thread opens
    an image, and restore it when the last one is done (saving and restoring it per call, threads
    can leave it off for good)."""
    global _cap_users, _cap_saved
    with _cap_lock:
        if not _cap_users:
            _cap_saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        _cap_users += 1
    try:
        yield
    finally:
        with _cap_lock:
            _cap_users -= 1
            if not _cap_users:
                Image.MAX_IMAGE_PIXELS = _cap_saved


def _describe(source: object) -> str:
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    if isinstance(source, (str, Path)):
        return str(source).encode("utf-8", "backslashreplace").decode("utf-8")
    return getattr(source, "name", "<stream>")


def read_image(ref: str, *, fetcher: object | None = None, min_side: int | None = None, max_pixels: int | None = None,
               max_decode_bytes: int | None = None) -> Image.Image:  # fmt: skip
    """The pixels behind an item's image reference:

    - a local path (``fsbytes:`` for non-UTF-8 names);
    - ``crop:PATH#xywh=x,y,w,h``, a region of a local image (ALTO illustrations);
    - an http(s) URL, through ``fetcher`` (a ``vitrina.http.Fetcher``); a IIIF Image API URL is
      asked for at the size the model needs, within the server's info.json limits.
    """
    limits = {"max_pixels": max_pixels, "max_decode_bytes": max_decode_bytes}
    if ref.startswith(("http://", "https://")):
        if fetcher is None:
            from .http import Fetcher

            fetcher = Fetcher()
        return _read_remote(ref, fetcher, min_side, limits)
    if ref.startswith("crop:"):
        path, _, box = ref[5:].rpartition("#xywh=")
        try:
            x, y, w, h = (int(v) for v in box.split(","))
        except ValueError:
            raise ImageError("unreadable_image", f"{ref}: not a crop reference (crop:PATH#xywh=x,y,w,h)") from None
        image = load_image(_local_path(path), **limits)
        return image.crop((x, y, min(image.width, x + w), min(image.height, y + h)))
    return load_image(_local_path(ref), min_side=min_side, **limits)


def _local_path(ref: str) -> str:
    from .sources.folder import ref_path

    return ref_path(ref)


def _read_remote(url: str, fetcher: object, min_side: int | None, limits: dict[str, Any]) -> Image.Image:
    return decode_fetched(*fetch_image(url, fetcher, min_side), min_side=min_side, **limits)


def fetch_image(url: str, fetcher: object, min_side: int | None) -> tuple[bytes, str, tuple[int, int, int, int] | None]:
    """The network half of reading a remote image: (bytes, the URL they came from, a crop box to
    apply after decoding or None). A IIIF Image API URL is asked for at the size the model needs,
    within the server's info.json limits. ``decode_fetched`` is the other half (any process)."""
    from .iiif import ImageService, not_image_kind, split_image_url

    other = not_image_kind(url)
    if other is not None:  # stored by an older ingest: never download a whole video to fail on it
        raise ImageError("unsupported_format", f"{url} is not an image ({other}).")
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
    return fetcher.get_bytes(url), url, crop  # type: ignore[attr-defined]


def decode_fetched(data: bytes, url: str, crop: tuple[int, int, int, int] | None, *, min_side: int | None = None,
                   max_pixels: int | None = None, max_decode_bytes: int | None = None) -> Image.Image:  # fmt: skip
    try:
        image = load_image(data, min_side=min_side, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)
    except ImageError as e:  # the details name the URL, not "<18 bytes>"
        raise ImageError(e.reason, f"{url}: {str(e).removeprefix(f'<{len(data)} bytes>: ')}") from None
    return image.crop(crop) if crop else image
