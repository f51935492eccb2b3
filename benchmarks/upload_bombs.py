#!/usr/bin/env python3
"""Peak memory of a running `vitrina serve` under concurrent decompression-bomb uploads (issue 28).

    python benchmarks/upload_bombs.py [--concurrency 4 8] [--baseline-src /work/main/src]

Each bomb is a 95 KB PNG that decodes to 7000x7000 16-bit grey (49 megapixels, under the
upload limit of 50). Indexes a few demo scans with the offline `mini` model, then for each
source tree (this checkout's src/, and --baseline-src when given) starts `vitrina serve` in a
subprocess, POSTs N bombs to /api/uploads at once over loopback HTTP, and reads the server's
VmHWM (peak) and VmRSS (after) from /proc, minus its RSS before the uploads. Each concurrency
level gets a fresh server. Writes JSON to benchmarks/results/upload_bombs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bomb(width: int = 7000, height: int = 7000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([16, 0, 0, 0, 0])
    idat = zlib.compress(bytes((1 + 2 * width) * height), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def mib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1]) >> 10


def post(port: int, data: bytes, codes: list[int]) -> None:
    body = b'--x\r\nContent-Disposition: form-data; name="image"; filename="b.png"\r\n'
    body += b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--x--\r\n"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/uploads", body,
                                 {"content-type": "multipart/form-data; boundary=x"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            codes.append(r.status)
    except urllib.error.HTTPError as e:
        codes.append(e.code)


def run_server(src: str, home: str, n: int, data: bytes) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": src, "VITRINA_HOME": home, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "vitrina", "serve", "bench", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        post(port, b"\x89PNG", [])  # warm up: load the model before measuring
        base = mib(server.pid, "VmRSS")
        codes: list[int] = []
        started = time.perf_counter()
        threads = [threading.Thread(target=post, args=(port, data, codes)) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - started
        time.sleep(0.5)
        return {"concurrency": n, "peak_mib": mib(server.pid, "VmHWM") - base, "after_mib": mib(server.pid, "VmRSS") - base,
                "seconds": round(took, 2), "codes": sorted(codes)}  # fmt: skip
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--baseline-src", help="another checkout's src/ to compare with (e.g. before the fix)")
    args = ap.parse_args()
    data = bomb()
    results: dict = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
                     "bomb_bytes": len(data), "runs": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as home:
        scans = ROOT / "src" / "vitrina" / "demo" / "heritage"
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VITRINA_HOME": home, "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, "-m", "vitrina", "index", str(scans), "--collection", "bench", "--model", "mini"],
                       env=env, check=True, capture_output=True)  # fmt: skip
        trees = {"this": str(ROOT / "src")}
        if args.baseline_src:
            trees["baseline"] = args.baseline_src
        for label, src in trees.items():
            for n in args.concurrency:
                row = {"src": label, **run_server(src, home, n, data)}
                results["runs"].append(row)
                print(json.dumps(row))
    out = ROOT / "benchmarks" / "results" / "upload_bombs.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
