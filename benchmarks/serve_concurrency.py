#!/usr/bin/env python3
"""Serving under concurrency (issue 26 part 2): memory and item-query latency of `vitrina serve`
with its approximate index, after sequential queries and with 1, 4 and 16 concurrent clients.

    python benchmarks/serve_concurrency.py [--rows 100000] [--dim 512] [--rounds 2] [--seconds 8]

Builds (once, cached under --dir) a collection of --rows CLIP-like synthetic vectors
(benchmarks/synthetic.py) in a space whose model does not exist, so the server starts without a
model and item queries (`/api/search?item=ID`, which need none) are the load; builds its ANN index
(IVF, int8 codes, fixed settings). Starts the real `vitrina serve` on 127.0.0.1 and measures, in
one run: sequential queries, then rounds of 1, 4, 16 concurrent clients interleaved (1, 4, 16,
1, 4, 16, ...), each level for --seconds per round. After each phase it reads the server's
/proc/PID/status (VmRSS, VmHWM) and smaps_rollup (Anonymous, file-backed Rss) and counts how many
times the index file is mapped into the server (one mapping per load: a per-thread reload shows
as more than one). Writes JSON to benchmarks/results/. Client and server share this machine's
cores, so compare levels within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import start_server  # noqa: E402
from synthetic import CloudModel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def build(path: Path, rows: int, dim: int) -> None:
    from vitrina import Item, ModelFingerprint, open_collection

    coll = open_collection(path, create=not (path / "collection.sqlite").exists())
    if not coll.spaces():
        fp = ModelFingerprint(spec="bench:serve-cloud", revision="0", dim=dim, preprocessing="none")
        cloud = CloudModel(dim=dim)
        ids = [f"loc-{i:07d}" for i in range(rows)]
        with coll.writer():
            coll.add_items(Item(id=ids[i], image=f"{i}.jpg", fingerprint="1", source="bench",
                                metadata={"title": f"Map {i}", "date": str(1500 + i % 500)}) for i in range(rows))  # fmt: skip
            for start in range(0, rows, 100_000):
                chunk = cloud.images(min(100_000, rows - start), seed=1 + start)
                coll.import_vectors(ids[start : start + len(chunk)], chunk, fingerprint=fp, space="bench")
    if not (path / "spaces" / "bench.ann").exists():
        t0 = time.perf_counter()
        coll.build_ann(threads=os.cpu_count(), target_recall=None)
        print(f"built the index in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def memory(pid: int, ann: Path) -> dict:
    out: dict = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            out[key] = int(value.split()[0]) // 1024 if key != "Threads" else int(value)
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Anonymous", "Pss_File"):
            out[key] = int(value.split()[0]) // 1024
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    out["index_mappings"] = sum(1 for m in maps if m.endswith(str(ann)) or m.endswith(str(ann) + " (deleted)"))
    return out  # MiB, except Threads and index_mappings


async def drive(base: str, clients: int, seconds: float, ids: list[str], rng: random.Random) -> list[float]:
    import httpx

    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    failures: dict[int, int] = {}

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            r = await http.get("/api/search", params={"item": rng.choice(ids), "limit": 20})
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                failures[r.status_code] = failures.get(r.status_code, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    if failures:
        raise SystemExit(f"non-200 answers at {clients} clients: {failures}")
    return latencies


def stats(latencies: list[float]) -> dict:
    ms = np.asarray(latencies) * 1000
    return {"requests": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}  # fmt: skip


class Side:
    """One server under test: this checkout's code, or --baseline-src's."""

    def __init__(self, name: str, src: Path, path: Path, env: dict[str, str]):
        self.name, self.src = name, src
        saved = dict(os.environ)
        os.environ.update({**env, "PYTHONPATH": str(src)})
        try:
            self.server, self.base = start_server(path)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.memory: dict[str, dict] = {}
        self.latency: dict[str, list[float]] = {}

    def note(self, phase: str, ann: Path) -> None:
        self.memory[phase] = memory(self.server.pid, ann)

    def add(self, phase: str, latencies: list[float]) -> None:
        self.latency.setdefault(phase, []).extend(latencies)

    def stop(self) -> None:
        self.server.terminate()
        try:
            self.server.wait(10)
        except subprocess.TimeoutExpired:
            self.server.kill()

    def report(self, last: str) -> dict:
        mem, seq = self.memory, self.memory["sequential"]
        return {
            "src": str(self.src), "latency": {k: stats(v) for k, v in self.latency.items()}, "memory_mib": mem,
            "rss_ratio_last_vs_sequential": round(mem[last]["VmRSS"] / seq["VmRSS"], 3),
            "anon_ratio_last_vs_sequential": round(mem[last]["Anonymous"] / seq["Anonymous"], 3),
            "peak_rss_mib": max(m["VmHWM"] for m in mem.values()),
            "index_mappings": max(m["index_mappings"] for m in mem.values()),
        }  # fmt: skip


def sequential(base: str, n: int, ids: list[str], rng: random.Random) -> list[float]:
    import httpx

    out: list[float] = []
    with httpx.Client(base_url=base, timeout=120) as http:
        for _ in range(n):
            t0 = time.perf_counter()
            r = http.get("/api/search", params={"item": rng.choice(ids), "limit": 20})
            out.append(time.perf_counter() - t0)
            r.raise_for_status()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8, help="per level per round")
    ap.add_argument("--sequential", type=int, default=200, help="queries one after another first")
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "vitrina-bench")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server (e.g. VITRINA_ANN_MMAP=0)")
    ap.add_argument("--baseline-src", type=Path, help="another checkout's src/ served beside this one, phase by phase")
    args = ap.parse_args()
    path = args.dir / f"serve-{args.rows}-{args.dim}"
    build(path, args.rows, args.dim)
    ann = (path / "spaces" / "bench.ann").resolve()
    env = dict(kv.split("=", 1) for kv in args.env)
    sides = [Side("this", ROOT / "src", path, env)]
    if args.baseline_src:
        sides.append(Side("baseline", args.baseline_src.resolve(), path, env))
    ids = [f"loc-{i:07d}" for i in range(args.rows)]
    rng = random.Random(0)
    try:
        for side in sides:
            side.note("started", ann)
        for side in sides:  # the sides take turns in every phase (the order alternates by round)
            side.add("sequential", sequential(side.base, args.sequential, ids, rng))
            side.note("sequential", ann)
        for rnd in range(args.rounds):
            for c in args.levels:
                for side in sides if rnd % 2 == 0 else sides[::-1]:
                    side.add(f"clients_{c}", asyncio.run(drive(side.base, c, args.seconds, ids, rng)))
                    side.note(f"round{rnd + 1}_clients{c}", ann)
    finally:
        for side in sides:
            side.stop()
    last = f"round{args.rounds}_clients{args.levels[-1]}"
    result = {
        "rows": args.rows, "dim": args.dim, "index_file_mb": round(ann.stat().st_size / 2**20, 1),
        "vector_file_mb": round(sum(f.stat().st_size for f in (path / "spaces").glob("*.f32")) / 2**20, 1),
        "server_env": args.env, **{side.name: side.report(last) for side in sides},
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/serve_concurrency.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"serve-concurrency-{args.rows}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
