"""Uploads hold the decode budget whatever their number (issue 28, item 1): 16-bit images are
reduced before their 8-bit and RGB copies, concurrent uploads share the process's decode budget,
and the memory of a decoded bomb goes back to the OS (glibc kept it in per-thread arenas)."""

from __future__ import annotations

import io
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitrina import images, load_image

SRC = Path(__file__).resolve().parent.parent / "src"


def flat_16bit_png(width: int, height: int) -> bytes:
    """A ~100 KB PNG that decodes to width x height 16-bit grey."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([16, 0, 0, 0, 0])
    idat = zlib.compress(bytes((1 + 2 * width) * height), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_16bit_image_is_reduced_before_it_is_converted() -> None:
    data = flat_16bit_png(4000, 3000)
    images._GATE.high_water = 0
    with images.hold_decoded():
        image = load_image(data, min_side=448)
    assert image.mode == "RGB" and min(image.size) >= 448 and image.size[0] < 4000
    # In full: 2 bytes a pixel decoded, then 1 of grey and 4 of RGB = 84 MB. Reduced: the 16-bit
    # pixels, one band of rows, and a small RGB copy.
    assert images._GATE.high_water < 4000 * 3000 * 2 + (12 << 20)
    assert images._GATE.in_use == 0


def test_the_reduced_pixels_are_the_mean_of_each_block() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 65535, (1003, 2007)).astype(np.uint16))
    assert image.mode == "I;16"
    full = np.asarray(images.to_rgb(image).reduce(4)).astype(int)
    small = np.asarray(images.to_rgb(image, shrink=4)).astype(int)
    assert small.shape == full.shape and np.abs(full - small).max() <= 1
    buf = io.BytesIO()
    image.save(buf, "PNG")
    assert load_image(buf.getvalue()).size == (2007, 1003)  # no min_side: not reduced


BOMBS = """
import sys, threading, time
sys.path.insert(0, {tests!r})
from test_upload_memory import flat_16bit_png
from vitrina import images, load_image

def kib(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])

data = flat_16bit_png(7000, 7000)
base = kib("VmRSS")
def upload():
    with images.hold_decoded():  # as Collection.image_vector holds an upload until it is embedded
        load_image(data, min_side=448, max_pixels=50_000_000)
        time.sleep(0.1)
threads = [threading.Thread(target=upload) for _ in range({n})]
for t in threads: t.start()
for t in threads: t.join()
print((kib("VmHWM") - base) >> 10, (kib("VmRSS") - base) >> 10)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_eight_concurrent_16bit_bombs_stay_within_the_budget_and_give_memory_back() -> None:
    code = BOMBS.format(tests=str(Path(__file__).parent), n=8)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)}, timeout=120
    )
    assert out.returncode == 0, out.stderr
    peak, after = (int(v) for v in out.stdout.split())
    assert peak < images.MAX_DECODE_BYTES >> 20  # was +556 MiB with four, +820 through the server
    assert after < 64  # was +467 MiB kept for good
