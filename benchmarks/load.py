#!/usr/bin/env python3
"""Load on the HTTP service: text queries against a 562,842-item collection, over loopback.

    python benchmarks/load.py [--rows 562842] [--concurrency 4] [--seconds 30]

Builds (once) a collection of --rows random unit vectors in the `mini` model's space (so text
queries are embedded by the real mini text tower), starts `vitrina serve` on 127.0.0.1 in a
subprocess, and drives it with an asyncio httpx client sending distinct text queries for
--seconds. Reports requests/s, p50/p90/p99 latency and status counts; writes JSON to
benchmarks/results/. The server and the load generator share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORDS = "map chart harbour city river coast sea monster ship old world island mountain road plan town castle church bridge garden".split()


def build(path: Path, rows: int) -> None:
    from vitrina import Item, open_collection
    from vitrina.embedding import get_embedder

    if (path / "collection.sqlite").exists():
        return
    fp = get_embedder("mini").fingerprint
    rng = np.random.default_rng(0)
    coll = open_collection(path, create=True)
    ids = [f"loc-{i:07d}" for i in range(rows)]
    with coll.writer():
        coll.add_items(Item(id=ids[i], image=f"https://tile.loc.gov/iiif/{i}/full/!512,512/0/default.jpg", fingerprint="1", source="bench",
                            metadata={"title": f"Map {i}", "date": str(1500 + i % 500)}) for i in range(rows))  # fmt: skip
        for start in range(0, rows, 50_000):
            chunk = rng.standard_normal((min(50_000, rows - start), fp.dim), dtype=np.float32)
            coll.import_vectors(ids[start : start + len(chunk)], chunk, fingerprint=fp, space="mini")


def start_server(path: Path, *extra: str, threads: int = 1) -> tuple[subprocess.Popen, str]:
    """`vitrina serve PATH` on a free loopback port, returned once /readyz answers 200."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    server = subprocess.Popen(
        [sys.executable, "-m", "vitrina", "serve", str(path), "--host", "127.0.0.1", "--port", str(port), *extra],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(900):
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return server, base


async def drive(base: str, concurrency: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    rng = random.Random(0)
    deadline = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            q = " ".join(rng.sample(WORDS, 3))
            t0 = time.perf_counter()
            r = await client.get("/api/search", params={"q": q, "limit": 20})
            latencies.append(time.perf_counter() - t0)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        started = time.monotonic()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    ms = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "seconds": round(elapsed, 2), "requests_per_second": round(len(latencies) / elapsed, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p90_ms": round(float(np.percentile(ms, 90)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "statuses": statuses}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=562_842)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--threads", type=int, default=1, help="BLAS/torch threads in the server")
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "vitrina-bench")
    args = ap.parse_args()
    path = args.dir / f"load-{args.rows}"
    build(path, args.rows)
    server, base = start_server(path, threads=args.threads)
    try:
        runs = {}
        asyncio.run(drive(base, 1, 3))  # warm-up
        for c in args.concurrency:
            runs[f"concurrency_{c}"] = asyncio.run(drive(base, c, args.seconds))
    finally:
        server.terminate()
        server.wait(10)
    result = {"rows": args.rows, "model": "mini (text tower on CPU)", "limit": 20, "server_threads": args.threads, **runs,
              "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"load-{args.rows}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
