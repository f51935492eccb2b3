"""What vitrina knows about image formats, read from their headers before decoding: the JPEG
segments and scans, WebP canvas, PNG rows actually present, TIFF strips; the memory a decode will
need; EXIF orientation; and any Pillow mode turned into plain RGB. ``images.load_image`` uses
these; nothing here holds state. ``Deadline`` is the file wrapper every decode reads through,
so each reader here may be abandoned when the time budget is spent."""

from __future__ import annotations

import time
import warnings
import zlib
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
from PIL import Image, ImageChops

from .errors import ImageError

BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white, like img2dataset

# Pillow stores one-band 8-bit images in 1 byte per pixel, I;16 in 2, everything else in 4.
STORED = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
GREY_BAND = 1 << 18  # pixels per band when to_rgb reduces a 16/32-bit image
MAX_JPEG_JUNK = 1 << 20  # bytes between JPEG segments (a few, in files seen in the wild)
WEBP_EXTRA = 12  # libwebp's canvas and previous frame, then a bytes copy of the frame: 4 bytes each
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}  # fmt: skip


class OutOfTime(Exception):
    """Raised from inside Pillow by ``Deadline.read``; not an OSError, so Pillow lets it through."""


class Deadline:
    """A file whose reads fail once the time budget is spent.

    A JPEG header followed by junk costs 0.1-0.35 s per MB, all of it in Pillow's Python loop that
    hunts for markers a byte at a time; PNG, GIF, BMP and JPEG scans are also fed to their decoders
    from Python, 64 KB per read. Checking the clock on each read abandons such a file within
    milliseconds of the budget, in the calling thread, at the cost of a clock read per read.
    (Threads cannot be killed, and a subprocess per file would cost more than most decodes.)
    libtiff (reading the file descriptor) and libwebp (given the bytes) decode in one C call that
    is not interrupted, but their work is bounded by the decoded size, hence by the memory budget.
    """

    first_scan = 0  # JPEG: components in the first scan, from jpeg_segments

    def __init__(self, raw: IO[bytes], seconds: float):
        self.raw, self.seconds, self._read = raw, seconds, raw.read
        self.restart()

    def restart(self) -> None:
        self.deadline, self.expired = time.monotonic() + self.seconds, False

    def read(self, size: int = -1) -> bytes:
        if time.monotonic() > self.deadline:
            self.expired = True
            raise OutOfTime
        return self._read(size)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.raw, attr)


def decode_cost(
    image: Image.Image, fmt: str, out: tuple[int, int], orientation: int, file_size: int, shrink: int = 1
) -> int:
    """Peak bytes to decode ``image`` at size ``out`` and make it RGB, counted from the header.
    ``shrink``: the factor per side ``to_rgb`` reduces a 16/32-bit image by before converting it."""
    if shrink > 1:
        band = 4 * 8 * GREY_BAND + 8 * out[0]  # float64 temporaries of one band of rows, the column sums
        rgb = -(-out[0] // shrink) * -(-out[1] // shrink) * (rgb_cost(image) + (4 if orientation in TRANSPOSE else 0))
        return out[0] * out[1] * STORED.get(image.mode, 4) + rgb + band
    per_pixel = STORED.get(image.mode, 4) + rgb_cost(image) + (4 if orientation in TRANSPOSE else 0)
    if fmt != "JPEG2000":
        return out[0] * out[1] * per_pixel
    # OpenJPEG holds each sample as a 32-bit integer, and a tile's compressed data (all of it in an
    # untiled file: measured at twice the file size) even when decoding at reduced size.
    return out[0] * out[1] * (per_pixel + 4 * len(image.getbands())) + 2 * file_size


def stream_size(fp: IO[bytes]) -> int:
    """The stream's length in bytes, its position unchanged."""
    pos = fp.tell()
    try:
        return fp.seek(0, 2)
    finally:
        fp.seek(pos)


def jpeg_buffered(image: Image.Image, reader: Deadline, full: tuple[int, int]) -> int:
    """Bytes of DCT coefficients libjpeg keeps for the whole image, at full size whatever the
    draft scale: it does so for progressive files and for sequential ones whose first scan lacks
    some components (2 bytes per coefficient, one coefficient per sample)."""
    if image.format not in ("JPEG", "MPO"):
        return 0
    layers = getattr(image, "layer", None) or [(None, 1, 1, 0)]
    if not image.info.get("progressive") and reader.first_scan >= len(layers):
        return 0
    width, height = full
    hmax, vmax = max(h for _, h, _, _ in layers), max(v for _, _, v, _ in layers)
    return 2 * sum(-(-width * h // hmax) * -(-height * v // vmax) for _, h, v, _ in layers)


def jpeg_segments(fp: IO[bytes]) -> tuple[int, int]:
    """Walk a JPEG's segments to its first scan: (components in that scan or 0 if not found,
    bytes of junk between segments, counted up to just over MAX_JPEG_JUNK). Pillow hunts for
    markers one read(1) at a time, 0.1-0.4 s per MB of junk; this skips junk with bytes.find."""
    fp.seek(2)
    junk = 0
    try:
        for _ in range(100_000):
            byte = fp.read(1)
            if byte and byte != b"\xff":  # junk: on to the next 0xFF
                while junk <= MAX_JPEG_JUNK and (chunk := byte + fp.read(1 << 16)) and (at := chunk.find(b"\xff")) < 0:
                    junk, byte = junk + len(chunk), b""
                if junk > MAX_JPEG_JUNK or not chunk:
                    return 0, junk
                junk += at
                fp.seek(at + 1 - len(chunk), 1)
            elif not byte:
                return 0, junk
            marker = fp.read(1)
            if marker == b"\xff":  # a fill byte
                fp.seek(-1, 1)
            elif marker == b"\xda":
                count = fp.read(3)[2:]
                return (count[0] if count else 0), junk
            elif marker not in (b"", b"\x00", b"\x01") and not b"\xd0" <= marker <= b"\xd7":  # those have no length
                fp.seek(int.from_bytes(fp.read(2), "big") - 2, 1)
        return 0, junk
    finally:
        fp.seek(0)


def rgb_cost(image: Image.Image) -> int:
    """Bytes per pixel that ``to_rgb`` allocates beside the decoded image."""
    mode = image.mode
    if mode == "RGB":
        return 0
    if mode in ("RGBA", "LA"):
        return 6  # the RGB copy, the alpha band and its inverse
    if has_alpha(image):
        return 10  # an RGBA copy first
    if mode.startswith("I") or mode == "F":
        return 5  # 8-bit grey, then RGB
    return 4


def exif_orientation(image: Image.Image) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(image.getexif().get(0x0112, 1))
    except Exception:  # corrupt EXIF must not cost us the pixels
        return 1


def check_strips(image: Image.Image, reader: Deadline, name: str) -> None:
    """A TIFF strip or tile with no data or beyond the end of the file: Pillow would decode the
    file's own header as pixels (offset 0) or libtiff would fail; say what is wrong instead."""
    size = stream_size(reader.raw)
    tags = getattr(image, "tag_v2", {})
    for offsets_tag, counts_tag in ((273, 279), (324, 325)):
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if offsets is None or counts is None:
            continue
        offsets, counts = (v if isinstance(v, tuple) else (v,) for v in (offsets, counts))
        for i, (offset, count) in enumerate(zip(offsets, counts)):
            if not offset or not count or offset + count > size:
                raise ImageError(
                    "truncated", f"{name}: strip {i + 1} of {len(offsets)} is missing; re-download or re-scan it"
                )


def png_rows_missing(image: Image.Image, reader: Deadline) -> bool:
    """Pillow stops without an error when a PNG's zlib stream ends cleanly before the last row,
    leaving the remaining rows zero. So when the bottom row is all zero (or the file interlaced),
    count the rows the stream actually holds: it costs a second inflate, but only then."""
    bottom = image.crop((0, image.height - 1, image.width, image.height))
    if bottom.getbbox(alpha_only=False) is not None and not image.info.get("interlace"):
        return False
    fp = reader.raw
    fp.seek(8)
    ihdr = fp.read(25)[8:]
    width, height, depth, colour, interlace = (
        int.from_bytes(ihdr[:4], "big"),
        int.from_bytes(ihdr[4:8], "big"),
        ihdr[8],
        ihdr[9],
        ihdr[12],
    )
    bits = depth * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 1)
    passes = (
        [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        if interlace
        else [(0, 0, 1, 1)]
    )
    expected = 0
    for x0, y0, dx, dy in passes:
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        expected += h * (1 + (w * bits + 7) // 8) if w > 0 and h > 0 else 0
    inflate, got = zlib.decompressobj(), 0
    while got < expected and not inflate.eof:
        head = fp.read(8)
        if len(head) < 8:
            break
        length, kind = int.from_bytes(head[:4], "big"), head[4:]
        if kind != b"IDAT":
            fp.seek(length + 4, 1)
            continue
        for _ in range(0, length, 1 << 20):
            data = reader.read(min(1 << 20, length))
            length -= len(data)
            while data and not inflate.eof:
                got += len(inflate.decompress(data, 1 << 20))
                data = inflate.unconsumed_tail
        fp.seek(length + 4, 1)
    return got < expected


def webp_canvas(head: bytes) -> tuple[int, int] | None:
    """The canvas size from a WebP header (what Pillow's WebP plugin reads), or None."""
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP" or len(head) < 30:
        return None
    kind = head[12:16]
    if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    if kind == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if kind == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def to_rgb(image: Image.Image, *, name: str = "image", shrink: int = 1) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit scaled (not clamped), alpha onto white.
    ``shrink``: reduce a 16/32-bit image by this factor per side (the mean of each block, as
    ``Image.reduce``) on the way, so its 8-bit and RGB copies are small (other modes ignore it)."""
    mode = image.mode
    if mode == "RGB":
        return image.copy() if image.readonly else image
    if mode.startswith("I") or mode == "F":
        return _to_grey8(image, name, max(1, shrink)).convert("RGB")
    if has_alpha(image):
        rgba = image if mode in ("RGBA", "LA") else image.convert("RGBA")
        rgb = rgba.convert("RGB")
        # The same pixels as alpha-compositing onto an opaque background, without three RGBA copies.
        rgb.paste(BACKGROUND, mask=ImageChops.invert(rgba.getchannel("A")))
        return rgb
    return image.convert("RGB")


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info)


def shrink_for(mode: str, size: tuple[int, int], min_side: int | None) -> int:
    """The factor per side ``to_rgb`` may reduce a 16/32-bit image by, keeping both sides at
    least ``min_side`` (1: not reduced)."""
    if not min_side or not (mode.startswith("I") or mode == "F"):
        return 1
    return max(1, min(size) // min_side)


def _to_grey8(image: Image.Image, name: str, shrink: int = 1) -> Image.Image:
    """16/32-bit integer or float grey to 8 bits, a band of rows at a time: the same arithmetic as
    one float64 array of the whole image, without its 8 bytes per pixel (several times over).
    ``shrink``: each ``shrink``x``shrink`` block becomes the mean of its 8-bit values, so only the
    reduced image is ever held in 8 bits (what a 7000x7000 upload needs for a 224-pixel model)."""
    width, height = image.size
    step = max(1, (GREY_BAND if shrink > 1 else 1 << 20) // width)
    step = -(-step // shrink) * shrink  # bands hold whole blocks

    def bands() -> Iterator[tuple[int, np.ndarray]]:
        for y in range(0, height, step):
            yield y, np.asarray(image.crop((0, y, width, min(height, y + step))))

    if image.mode == "F":
        top = 0.0
        for _, band in bands():
            if not np.isfinite(band).all():
                raise ImageError(
                    "unreadable_image", f"{name}: has NaN or infinite pixel values (a garbled float image)"
                )
            top = max(top, float(band.max(initial=0)))
        top = 1.0 if top <= 1.0 else top
    else:
        top = 65535.0 if image.mode.startswith("I;16") or image.getextrema()[1] > 255 else 255.0  # type: ignore[operator]
    if shrink == 1:
        grey = np.empty((height, width), np.uint8)
        for y, band in bands():
            grey[y : y + len(band)] = np.clip(band.astype(np.float64) / top * 255.0 + 0.5, 0, 255)
        return Image.fromarray(grey, "L")
    cols = np.arange(0, width, shrink)
    widths = np.diff(np.append(cols, width))
    small = np.empty((-(-height // shrink), len(cols)), np.uint8)
    for y, band in bands():
        scaled = np.clip(band.astype(np.float64) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        rows = np.arange(0, len(band), shrink)
        sums = np.add.reduceat(np.add.reduceat(scaled.astype(np.float64), rows, axis=0), cols, axis=1)
        counts = np.outer(np.diff(np.append(rows, len(band))), widths)
        small[y // shrink : y // shrink + len(rows)] = np.clip(sums / counts + 0.5, 0, 255)
    return Image.fromarray(small, "L")
