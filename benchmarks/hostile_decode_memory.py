#!/usr/bin/env python3
"""Peak memory of indexing a folder of hostile image files (issue 17), with two decode workers.

    python benchmarks/hostile_decode_memory.py [--src DIR] [--workers 2] [--junk-mb 64] [--probe]

Builds (once) a corpus of small files that decode to huge or garbled images: a 15 KB progressive
JPEG claiming 20000x20000, a flat WebP 14000x14000, a PNG 10000x19000, a 96-byte PNG
14000x14000, a 16-bit PNG 7000x7000, a 120-megapixel TIFF, a JPEG header followed by --junk-mb of
junk, a PNG ending early but cleanly, a TIFF with missing strips, an all-NaN float TIFF; plus a few
normal images. Then runs `vitrina index DIR --collection C --model mini --workers 2` in a
subprocess (PYTHONPATH=--src, default this checkout's src/) and reports its peak RSS
(ru_maxrss of the child), wall time and the outcome per file. Writes JSON to benchmarks/results/.

--probe: load_image on each file alone, one subprocess each, with its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, colour_type, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header (SOF0..SOF15) of a JPEG to claim another size."""
    at = 2
    while at < len(data):
        marker, length = data[at + 1], int.from_bytes(data[at + 2 : at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            sof = at + 5  # marker (2), length (2), precision (1), then height, width
            return data[:sof] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[sof + 4 :]
        at += 2 + length
    raise ValueError("no frame header")


def build_corpus(folder: Path, junk_mb: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    made: list[Path] = []

    def out(name: str) -> Path | None:
        path = folder / name
        made.append(path)
        return None if path.exists() else path

    # Normal images: the demo scans, a small PNG, a small TIFF.
    for src in sorted((ROOT / "src" / "vitrina" / "demo" / "heritage").glob("*.jpg")):
        if p := out(f"normal-{src.name}"):
            p.write_bytes(src.read_bytes())
    if p := out("normal-small.png"):
        Image.fromarray(rng.integers(0, 255, (600, 800, 3), np.uint8)).save(p)
    if p := out("normal-small.tif"):
        Image.fromarray(rng.integers(0, 255, (600, 800), np.uint8)).save(p, compression="tiff_lzw")

    # A 15 KB progressive JPEG claiming 20000x20000: libjpeg allocates every coefficient.
    if p := out("bomb-progressive-20000.jpg"):
        buf = tempfile.SpooledTemporaryFile()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG", progressive=True, quality=90)
        buf.seek(0)
        p.write_bytes(_patch_jpeg_size(buf.read(), 20000, 20000))
    # A flat lossy WebP 14000x14000 (about 0.5 MB).
    if p := out("bomb-flat-14000.webp"):
        Image.new("RGB", (14000, 14000), (120, 110, 90)).save(p, quality=50)
    # A flat PNG 10000x19000 (about 0.5 MB).
    if p := out("bomb-flat-10000x19000.png"):
        Image.new("RGB", (10000, 19000), (120, 110, 90)).save(p, optimize=False, compress_level=9)
    # 96 bytes claiming 14000x14000 greyscale: a zlib stream of a few zero rows that ends cleanly.
    if p := out("bomb-96-bytes-14000.png"):
        p.write_bytes(_png(14000, 14000, 8, 0, zlib.compress(bytes(14001 * 2), 9)))
    # A 16-bit greyscale PNG 7000x7000 (about 0.1 MB).
    if p := out("bomb-grey16-7000.png"):
        Image.fromarray(np.full((7000, 7000), 1000, np.uint16)).save(p, compress_level=9)
    # A 120-megapixel RGB TIFF scan (LZW).
    if p := out("big-120mp.tif"):
        Image.new("RGB", (12000, 10000), (200, 190, 170)).save(p, compression="tiff_lzw")
    # A JPEG header followed by junk (no 0xFF byte, so no marker): Pillow hunts for the next
    # marker one byte at a time, about 0.4 s per MB.
    if p := out(f"junk-{junk_mb}mb.jpg"):
        buf = tempfile.SpooledTemporaryFile()
        Image.new("RGB", (4000, 3000), (90, 90, 90)).save(buf, "JPEG", quality=80)
        buf.seek(0)
        head = buf.read()
        with p.open("wb") as f:
            f.write(head[: head.index(b"\xff\xda")])  # up to the start of scan
            junk = np.random.default_rng(1)
            for _ in range(junk_mb):
                f.write(junk.integers(0, 255, 1 << 20, np.uint8).tobytes())
    # A PNG whose compressed data ends cleanly after 10 of its 1000 rows.
    if p := out("garbled-png-ends-early.png"):
        rows = b"".join(b"\x00" + rng.integers(0, 255, 1000 * 3, np.uint8).tobytes() for _ in range(10))
        p.write_bytes(_png(1000, 1000, 8, 2, zlib.compress(rows)))
    # A TIFF whose strips after the first are missing (offsets and counts zeroed).
    if p := out("garbled-tiff-missing-strips.tif"):
        p.write_bytes(missing_strips_tiff())
    # An all-NaN float TIFF.
    if p := out("garbled-nan.tif"):
        Image.fromarray(np.full((500, 500), np.nan, np.float32)).save(p)
    return made


def missing_strips_tiff() -> bytes:
    """An uncompressed greyscale TIFF, 256x256 in 16 strips, whose strips 2..16 were never
    written (offsets and byte counts zero): Pillow decoded the file's own header as pixels."""
    import struct

    from PIL import Image, TiffImagePlugin

    buf = tempfile.SpooledTemporaryFile()
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[278] = 16  # RowsPerStrip
    Image.fromarray(np.full((256, 256), 200, np.uint8)).save(buf, "TIFF", tiffinfo=info)
    buf.seek(0)
    data = bytearray(buf.read())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        tag, kind, count, value = struct.unpack_from("<HHII", data, ifd + 2 + 12 * k)
        if tag in (273, 279):
            size = 4 if kind == 4 else 2
            data[value + size : value + count * size] = bytes((count - 1) * size)
    return bytes(data)


def _run(cmd: list[str], env: dict[str, str]) -> tuple[int, float, str, str]:
    """Run cmd: its own peak RSS in MB (ru_maxrss from os.wait4, this child only), seconds,
    stdout, stderr. A child's ru_maxrss starts at its parent's RSS, so this process stays small."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return round(usage.ru_maxrss / 1024), seconds, out.read(), err.read()


def probe(files: list[Path], src: Path) -> None:
    code = (
        "import sys, time; from vitrina import load_image, ImageError\n"
        "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024\n"
        "before = hwm(); t = time.perf_counter()\n"
        "try:\n    im = load_image(sys.argv[1], min_side=448); out = f'ok {im.size}'\n"
        "except ImageError as e:\n    out = f'{e.reason}: {e}'\n"
        "print(hwm() - before, round(time.perf_counter() - t, 2), out[:200])\n"
    )
    for path in files:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(src)},
        )
        delta, seconds, outcome = (
            proc.stdout.split(" ", 2) if proc.returncode == 0 else ("?", "?", proc.stderr.strip()[-200:])
        )
        print(f"{path.name:36s} {path.stat().st_size:>10d} B  +{delta} MB  {seconds} s  {outcome.strip()}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, default=ROOT / "src", help="the vitrina source tree to measure (PYTHONPATH)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--junk-mb", type=int, default=64)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "vitrina-bench-hostile")
    ap.add_argument("--probe", action="store_true", help="decode each file alone and report its peak memory")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.build_only:
        build_corpus(args.dir, args.junk_mb)
        return
    # Build in a child: making a 14000x14000 WebP takes gigabytes, which would count in the
    # peak of every child this process starts afterwards.
    subprocess.run(
        [sys.executable, __file__, "--build-only", "--dir", str(args.dir), "--junk-mb", str(args.junk_mb)], check=True
    )
    files = sorted(args.dir.iterdir())
    src = args.src.resolve()
    if args.probe:
        probe(files, src)
        return
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "VITRINA_HOME": home}
        cmd = [sys.executable, "-m", "vitrina", "index", str(args.dir), "--collection", "hostile", "--model", "mini",
               "--workers", str(args.workers), "--json", "--quiet"]  # fmt: skip
        peak_mb, seconds, out, err = _run(cmd, env)
    own_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        report = {"error": (err or out)[-2000:]}
    failures = {f["id"]: f["reason"] for f in report.get("failures", [])}
    print(f"{len(files)} files: {report.get('embedded')} embedded, {report.get('failed')} failed")
    for path in files:
        print(f"  {path.name:36s} {path.stat().st_size:>10d} B  {failures.get(path.name, 'ok')}")
    print(
        f"peak RSS of `vitrina index --workers {args.workers}`: {peak_mb} MB ({seconds:.1f} s; this process: {own_mb} MB)"
    )
    if "error" in report:
        print(report["error"])
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    record = {"benchmark": "hostile_decode_memory", "machine": f"{platform.machine()} {os.cpu_count()} cores",
              "python": platform.python_version(), "src": str(src), "workers": args.workers, "peak_rss_mb": peak_mb,
              "seconds": round(seconds, 1), "embedded": report.get("embedded"), "failed_by_reason": report.get("failed_by_reason"),
              "outcome": {p.name: failures.get(p.name, "ok") for p in files}}  # fmt: skip
    (results / "hostile_decode_memory.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
