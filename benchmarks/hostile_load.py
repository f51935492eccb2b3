#!/usr/bin/env python3
"""The service under hostile traffic: does it stay up and keep serving normal queries?

    python benchmarks/hostile_load.py [--rows 20000] [--seconds 30]

Starts `vitrina serve` (mini model, a collection of random vectors built through the public API)
and a loopback image server that drips one byte per second. Then, for --seconds, at the same time:
normal text queries (2 clients), slow-drip image URLs (6 clients: more than the 4 fetch slots),
decompression-bomb uploads (2 clients: a 110 KB 16-bit 7000x7000 PNG), many-terms queries
(1 client: 40 terms) and a /healthz probe every 0.5 s. Reports per kind: statuses and latency,
the server's peak RSS, and the same normal-query latency measured alone beforehand (the baseline
of the same run). Writes benchmarks/results/hostile-load.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import WORDS, build, start_server  # noqa: E402  (the plain load benchmark's collection and server)

ROOT = Path(__file__).resolve().parent.parent


class Drip(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100_000):
                self.wfile.write(b"\xff")
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


def bomb_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("I;16", (7000, 7000)).save(buf, "PNG")
    return buf.getvalue()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(base: str, drip: str, seconds: float, pid: int, hostile: bool) -> dict:
    import httpx

    stop = time.monotonic() + seconds
    results: dict[str, list[tuple[int, float]]] = {k: [] for k in ("normal", "drip", "bomb", "terms", "healthz")}
    lock = threading.Lock()
    bomb = bomb_png()
    peak = [0.0]

    def loop(kind: str, call, pause: float = 0.0) -> None:  # type: ignore[no-untyped-def]
        with httpx.Client(base_url=base, timeout=60) as client:
            rng = np.random.default_rng(abs(hash(kind)) % 2**32)
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    status = call(client, rng).status_code
                except httpx.HTTPError:
                    status = 0
                with lock:
                    results[kind].append((status, time.perf_counter() - t0))
                if pause:
                    time.sleep(pause)

    normal = lambda c, rng: c.get("/api/search", params={"q": " ".join(rng.choice(WORDS, 3)), "limit": 20})  # noqa: E731
    plan = [("normal", normal, 0.0)] * 2 + [("healthz", lambda c, rng: c.get("/healthz"), 0.5)]
    if hostile:
        plan += [("drip", lambda c, rng: c.get("/api/search", params={"image_url": drip}), 0.0)] * 6
        plan += [
            ("bomb", lambda c, rng: c.post("/api/search", files={"image": ("bomb.png", bomb, "image/png")}), 0.0)
        ] * 2
        plan += [("terms", lambda c, rng: c.get("/api/search", params=[("q", w) for w in rng.choice(WORDS, 40)]), 0.0)]
    threads = [threading.Thread(target=loop, args=p, daemon=True) for p in plan]
    for t in threads:
        t.start()
    while time.monotonic() < stop:
        peak[0] = max(peak[0], _rss_mb(pid))
        time.sleep(0.2)
    for t in threads:
        t.join(90)
    out: dict = {"server_peak_rss_mb": round(peak[0])}
    for kind, rows in results.items():
        if not rows:
            continue
        ms = np.asarray([s for _, s in rows]) * 1000
        statuses: dict[str, int] = {}
        for status, _ in rows:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        out[kind] = {"requests": len(rows), "statuses": statuses, "p50_ms": round(float(np.percentile(ms, 50)), 1),
                     "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "vitrina-bench")
    args = ap.parse_args()
    path = args.dir / f"load-{args.rows}"
    build(path, args.rows)
    drip_server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    drip_server.daemon_threads = True
    threading.Thread(target=drip_server.serve_forever, daemon=True).start()
    drip = f"http://127.0.0.1:{drip_server.server_address[1]}/slow.jpg"
    server, base = start_server(path, "--allow-private-urls")
    try:
        alone = run(base, drip, args.seconds / 2, server.pid, hostile=False)
        mixed = run(base, drip, args.seconds, server.pid, hostile=True)
        stopping = time.monotonic()
        server.terminate()
        server.wait(30)
        shutdown_s = time.monotonic() - stopping
    finally:
        if server.poll() is None:
            server.kill()
        drip_server.shutdown()
    result = {"rows": args.rows, "model": "mini", "seconds": args.seconds, "normal_alone": alone, "mixed": mixed, "shutdown_s": round(shutdown_s, 2),
              "machine": f"{platform.machine()} {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "hostile-load.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
