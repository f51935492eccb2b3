"""Decoding stays bounded and honest under hostile files (issue 17): a memory budget counted from
the header, a bound on concurrent decodes, a time budget per file, and garbled pixels refused."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from vitrina import ImageError, images, load_image

SRC = Path(__file__).resolve().parent.parent / "src"


def reason_of(source, **kw) -> ImageError:  # type: ignore[no-untyped-def]
    with pytest.raises(ImageError) as info:
        load_image(source, **kw)
    return info.value


def png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes, interlace: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int, **save: object) -> bytes:
    """A real 64x64 JPEG whose frame header claims another size."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG", **save)
    data = buf.getvalue()
    at = 2
    while not (0xC0 <= data[at + 1] <= 0xCF and data[at + 1] not in (0xC4, 0xC8, 0xCC)):
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def peak_mb(*paths: Path) -> list[tuple[int, str]]:
    """Peak RSS growth (VmHWM of a fresh process, which the parent's size does not inflate as
    ru_maxrss would) of load_image(path, min_side=448), and the outcome; one process per path."""
    code = (
        "import sys; from vitrina import load_image, ImageError\n"
        "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024\n"
        "before = hwm()\n"
        "try:\n    out = 'ok %dx%d' % load_image(sys.argv[1], min_side=448).size\n"
        "except ImageError as e:\n    out = e.reason\n"
        "print(hwm() - before, out)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(p)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for p in paths
    ]
    results = []
    for run in runs:
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        mb, outcome = out.split(" ", 1)
        results.append((int(mb), outcome.strip()))
    return results


needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc")


# -- 1. a budget on decoded bytes, from the header ---------------------------------------------


def test_progressive_jpeg_claiming_a_huge_size_is_refused_from_the_header(tmp_path: Path) -> None:
    # libjpeg keeps every coefficient of a progressive file, whatever the draft scale: 15 KB
    # claiming 20000x20000 cost 1.2 GB and was indexed as ok.
    (tmp_path / "prog.jpg").write_bytes(jpeg_claiming(20000, 20000, progressive=True))
    started = time.process_time()
    error = reason_of(tmp_path / "prog.jpg", min_side=448)
    assert error.reason == "over_budget"
    assert (
        "prog.jpg" in str(error)
        and "20000x20000" in str(error)
        and "progressive" in str(error)
        and "--max-decode-mb" in str(error)
    )
    assert time.process_time() - started < 1
    # A baseline JPEG of that size is decoded at 1/8 per side, within the budget.
    (tmp_path / "baseline.jpg").write_bytes(jpeg_claiming(20000, 20000))
    assert load_image(tmp_path / "baseline.jpg", min_side=448).size == (2500, 2500)


def test_small_files_claiming_huge_images_are_refused_per_format(tmp_path: Path) -> None:
    # 96 bytes of PNG claiming 14000x14000 greyscale (0.9 GB as RGB; was indexed as ok).
    (tmp_path / "tiny.png").write_bytes(png(14000, 14000, 8, 0, zlib.compress(bytes(14001 * 2), 9)))
    assert len((tmp_path / "tiny.png").read_bytes()) < 120
    assert reason_of(tmp_path / "tiny.png").reason == "over_budget"
    # A WebP header claiming 14000x14000: libwebp allocates its canvas when the file is opened.
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 110, 90)).save(buf, "WEBP", quality=50)
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"VP8 "
    data[26:30] = struct.pack("<HH", 14000, 14000)
    (tmp_path / "flat.webp").write_bytes(bytes(data))
    assert reason_of(tmp_path / "flat.webp").reason == "over_budget"
    # Real small WebP and JPEG 2000 files still decode.
    Image.new("RGB", (300, 200), (10, 200, 30)).save(tmp_path / "ok.webp", lossless=True)
    Image.new("RGB", (1200, 900), (10, 200, 30)).save(tmp_path / "ok.jp2")
    assert load_image(tmp_path / "ok.webp").getpixel((5, 5)) == (10, 200, 30)
    assert load_image(tmp_path / "ok.jp2", min_side=200).size == (300, 225)


def test_the_budget_can_be_raised_or_lowered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (3000, 2000), (1, 2, 3)).save(tmp_path / "scan.png")  # 24 MB decoded
    assert load_image(tmp_path / "scan.png").size == (3000, 2000)
    error = reason_of(tmp_path / "scan.png", max_decode_bytes=16 << 20)
    assert error.reason == "over_budget" and "3000x2000" in str(error) and "over the budget of 16 MiB" in str(error)
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", 16 << 20)  # the process default (VITRINA_MAX_DECODE_MB)
    assert reason_of(tmp_path / "scan.png").reason == "over_budget"
    assert load_image(tmp_path / "scan.png", max_decode_bytes=64 << 20).size == (3000, 2000)
    assert images._GATE.in_use == 0


@needs_proc
def test_peak_memory_stays_near_the_decoded_size(tmp_path: Path) -> None:
    # 16-bit grey went through full-size float64 arrays (4000x4000: +430 MB); an RGB image was
    # copied by exif_transpose without an orientation tag (4000x4000: +122 MB); float (+276 MB).
    Image.fromarray(np.full((3000, 3000), 40000, np.uint16)).save(tmp_path / "grey16.png", compress_level=1)
    Image.new("RGB", (3000, 3000), (10, 200, 30)).save(tmp_path / "rgb.png", compress_level=1)
    Image.fromarray(np.full((2000, 2000), 0.5, np.float32)).save(tmp_path / "float.tif")
    grey16, rgb, grey32 = peak_mb(tmp_path / "grey16.png", tmp_path / "rgb.png", tmp_path / "float.tif")
    # 16/32-bit images are reduced to min_side before their grey and RGB copies (issue 28)
    assert grey16[1] == "ok 500x500" and grey16[0] < 50  # 18 MB decoded (was + 9 MB grey + 36 MB RGB)
    assert rgb[1] == "ok 3000x3000" and rgb[0] < 60  # 36 MB decoded, returned as is
    assert grey32[1] == "ok 500x500" and grey32[0] < 50  # 16 MB decoded (was + 4 MB grey + 16 MB RGB)


def test_16_bit_and_float_pixels_convert_as_before() -> None:
    rng = np.random.default_rng(3)
    i16 = rng.integers(0, 65536, (700, 900), np.uint16)
    i32 = rng.integers(-5, 300, (700, 900), np.int32)
    f32 = rng.random((700, 900), np.float32) * 7
    for arr, image in ((i16, Image.fromarray(i16)), (i32, Image.fromarray(i32, "I")), (f32, Image.fromarray(f32))):
        wide = arr.astype(np.float64)  # the previous, full-size float64 formula
        top = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        if image.mode == "F":
            top = 1.0 if wide.max() <= 1 else float(wide.max())
        expected = np.clip(wide / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        got = np.asarray(images.to_rgb(image))
        assert got.shape == (700, 900, 3) and (got[..., 0] == expected).all() and (got[..., 2] == expected).all()
    ones = Image.fromarray(np.full((10, 10), 300, np.int32), "I")
    assert images.to_rgb(ones).getpixel((0, 0)) == (1, 1, 1)  # 300 of 65535, scaled, not clamped to 255


# -- 3. one bound on concurrent decodes in the process ---------------------------------------


def test_concurrent_decodes_share_one_memory_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (1500, 1000), (9, 9, 9)).save(tmp_path / "a.png")  # 6 MB to decode
    Image.new("RGB", (1500, 1000), (8, 8, 8)).save(tmp_path / "b.png")
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", 8 << 20)  # room for one at a time
    holding, release, done = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with images.hold_decoded():  # decoded and still in use (preprocessing, embedding)
            load_image(tmp_path / "a.png")
            holding.set()
            release.wait(10)

    def second() -> None:
        load_image(tmp_path / "b.png")
        done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert holding.wait(10)
    threads[1].start()
    assert not done.wait(0.5)  # waits for the memory the first image holds
    release.set()
    assert done.wait(10)
    for t in threads:
        t.join()
    assert images._GATE.in_use == 0
    # An image alone always gets through, even over the shared total, if within its own budget.
    assert load_image(tmp_path / "a.png", max_decode_bytes=64 << 20).size == (1500, 1000)


def test_indexer_decode_workers_stay_within_the_shared_budget(
    tmp_path: Path, tiny_clip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vitrina import open_collection

    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (1500, 1000), (i * 40, 9, 9)).save(folder / f"p{i}.png")  # 6 MB each to decode
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", 8 << 20)
    images._GATE.high_water = 0
    report = open_collection("gate", create=True).index(str(folder), model=tiny_clip, workers=3, batch_size=2)
    assert report.embedded == 6 and not report.failed
    assert 0 < images._GATE.high_water <= 8 << 20  # three workers, one image in memory at a time
    assert images._GATE.in_use == 0


def test_service_refuses_an_upload_over_the_budget_with_413(
    scans: Path, tiny_clip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from vitrina import open_collection
    from vitrina.service import create_app

    open_collection("svc-budget", create=True).index(str(scans), model=tiny_clip)
    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000), (1, 2, 3)).save(buf, "PNG")
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", 16 << 20)
    with TestClient(create_app("svc-budget"), raise_server_exceptions=False) as client:
        r = client.post("/api/search", files={"image": ("scan.png", buf.getvalue(), "image/png")})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        small = io.BytesIO()
        Image.new("RGB", (300, 200), (1, 2, 3)).save(small, "PNG")
        assert client.post("/api/search", files={"image": ("s.png", small.getvalue(), "image/png")}).status_code == 200
    assert images._GATE.in_use == 0


# -- 4. a time budget per file ------------------------------------------------------------------


def test_a_jpeg_header_followed_by_junk_fails_at_once(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (400, 300)).save(buf, "JPEG")
    head = buf.getvalue()
    junk = np.random.default_rng(1).integers(0, 255, 16 << 20, np.uint8)  # no 0xFF: no marker anywhere
    (tmp_path / "junk.jpg").write_bytes(head[: head.index(b"\xff\xda")] + junk.tobytes())
    started = time.process_time()
    error = reason_of(tmp_path / "junk.jpg")
    assert error.reason == "unreadable_image" and "junk" in str(error)
    assert time.process_time() - started < 1.5  # Pillow's byte-at-a-time marker hunt took 0.4 s per MB


def test_a_decode_over_the_time_budget_fails_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 100,000 tiny private chunks before the pixels: Pillow reads each in Python (seconds).
    chunk = struct.pack(">I", 0) + b"prVt" + struct.pack(">I", zlib.crc32(b"prVt"))
    data = png(64, 64, 8, 0, zlib.compress(bytes(65 * 64)))
    (tmp_path / "slow.png").write_bytes(data[:33] + chunk * 100_000 + data[33:])
    monkeypatch.setattr(images, "DECODE_SECONDS", 0.2)
    started = time.monotonic()
    error = reason_of(tmp_path / "slow.png")
    assert error.reason == "decode_timeout" and "slow.png" in str(error)
    assert time.monotonic() - started < 3  # Pillow alone took seconds, and returned the image
    assert load_image(data, decode_seconds=5).size == (64, 64)


# -- 5. garbled files are failures, not garbage pixels -----------------------------------------


def test_garbled_pixels_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows = b"".join(b"\x00" + rng.integers(1, 255, 300, np.uint8).tobytes() for _ in range(10))
    (tmp_path / "early.png").write_bytes(png(100, 100, 8, 2, zlib.compress(rows)))  # 10 of 100 rows, cleanly ended
    assert reason_of(tmp_path / "early.png").reason == "truncated"
    first_pass = bytes(13 * (1 + 13 * 3))  # the first of 7 interlacing passes, then a clean end
    (tmp_path / "early-interlaced.png").write_bytes(png(100, 100, 8, 2, zlib.compress(first_pass), interlace=1))
    assert reason_of(tmp_path / "early-interlaced.png").reason == "truncated"

    buf = io.BytesIO()
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[278] = 16  # rows per strip
    Image.fromarray(np.full((256, 256), 200, np.uint8)).save(buf, "TIFF", tiffinfo=info)
    tiff = bytearray(buf.getvalue())
    ifd = struct.unpack_from("<I", tiff, 4)[0]
    for k in range(struct.unpack_from("<H", tiff, ifd)[0]):
        tag, kind, count, value = struct.unpack_from("<HHII", tiff, ifd + 2 + 12 * k)
        if tag in (273, 279):  # strips 2..16 never written: offsets and byte counts zero
            size = 4 if kind == 4 else 2
            tiff[value + size : value + count * size] = bytes((count - 1) * size)
    (tmp_path / "strips.tif").write_bytes(bytes(tiff))
    error = reason_of(tmp_path / "strips.tif")
    assert error.reason == "truncated" and "strip 2 of 16" in str(error)

    Image.fromarray(np.full((50, 50), np.nan, np.float32)).save(tmp_path / "nan.tif")
    assert reason_of(tmp_path / "nan.tif").reason == "unreadable_image"
    inf = np.ones((50, 50), np.float32)
    inf[3, 3] = np.inf
    Image.fromarray(inf).save(tmp_path / "inf.tif")
    assert reason_of(tmp_path / "inf.tif").reason == "unreadable_image"


def test_complete_images_with_black_bottom_rows_are_kept(tmp_path: Path) -> None:
    arr = np.zeros((100, 120, 3), np.uint8)
    arr[:50] = 200
    Image.fromarray(arr).save(tmp_path / "black-bottom.png")
    assert load_image(tmp_path / "black-bottom.png").getpixel((5, 99)) == (0, 0, 0)
    Image.fromarray(np.zeros((40, 40), np.uint16)).save(tmp_path / "black16.png")
    assert load_image(tmp_path / "black16.png").getpixel((1, 1)) == (0, 0, 0)
    Image.new("1", (64, 64), 0).save(tmp_path / "black1.png")
    assert load_image(tmp_path / "black1.png").getpixel((1, 1)) == (0, 0, 0)
    full_rows = b"".join(b"\x00" + bytes(300) for _ in range(100))
    (tmp_path / "interlaced.png").write_bytes(png(100, 100, 8, 2, zlib.compress(full_rows * 2), interlace=1))
    assert load_image(tmp_path / "interlaced.png").size == (100, 100)
