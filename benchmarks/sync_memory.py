#!/usr/bin/env python3
"""Peak memory of ``vitrina sync`` at 1M items: the streaming sync against the one it replaced,
in one run (issue 26, part 5).

    python benchmarks/sync_memory.py [--rows 1000000] [--dim 16] [--dir /tmp/vitrina-syncmem] [--repeats 2]

Builds (once, in --dir) a collection of --rows items with a title, a date and a source, and
synthetic unit vectors of --dim dimensions (small: the vectors' own memory is the same for both
sides and not what is measured; the per-point digests and id sets are). Syncs it to a
``qdrant+edge`` target (Qdrant's engine in-process; the client's local mode holds every point
in Python memory and takes hours at 1M), then times and measures, each in a fresh child process:

- ``after, first sync``: the streaming sync into the empty target (all points new);
- ``before`` / ``after``, alternating --repeats times: a re-sync with nothing changed, the case
  where the old sync held a digest per point (a dict of 1M entries) and a set of every point id.

Peak RSS is the child's ``ru_maxrss``; "base" is its RSS after imports, the store and the engine
are open, before the sync starts (so peak - base is what the sync itself holds). The engine's
optimizer (HNSW building) is left out of the sync runs (measured on its own with --optimize). Prints a
Markdown table for docs/benchmarks.md and writes benchmarks/results/sync_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's vitrina, in the parent (building) as in the children


def build(path: Path, rows: int, dim: int) -> float:
    from vitrina import Item, ModelFingerprint, open_collection

    if (path / "collection.sqlite").exists():
        return 0.0
    fp = ModelFingerprint(spec="hf:bench/random", revision="r1", dim=dim, preprocessing="none")
    coll = open_collection(path, create=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    step = 50_000
    for start in range(0, rows, step):
        ids = [f"it-{i:07d}" for i in range(start, min(rows, start + step))]
        vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
        with coll.writer():
            coll.add_items(
                Item(id=i, image=f"/scans/{i}.jpg", fingerprint="1", source=f"box-{k % 50}",
                     metadata={"title": f"Sheet {k} of the atlas", "date": str(1700 + k % 300)})
                for k, i in enumerate(ids, start)
            )  # fmt: skip
            coll.import_vectors(ids, vectors, fingerprint=fp, space="v")
        print(f"  built {start + len(ids):,} items", file=sys.stderr, flush=True)
    coll.close()
    return time.perf_counter() - t0


def legacy_sync(store: Any, space: str, target: str, batch: int = 256) -> Any:
    """The sync before this change (vitrina 2026-12, index/qdrant.py), kept here as the baseline:
    it reads every point's digest into a dict and keeps a set of every point id it saw."""
    from vitrina.faults import fault_point
    from vitrina.index.qdrant import SyncReport, _payload, _qdrant, connect, region_point_id

    models = _qdrant().models
    sp = store.space(space)
    client, name = connect(target, f"{store.name}-{sp.name}")
    report = SyncReport(target, name, sp.name)
    try:
        known: dict[int, str] = {}
        offset = None
        while True:
            points, offset = client.scroll(name, limit=2048, offset=offset, with_payload=["_d"], with_vectors=False)
            known.update({int(p.id): (p.payload or {}).get("_d", "") for p in points})
            if offset is None:
                break
        view = store.space_view(sp.name)
        vectors = view.vectors(sp)
        seen: set[int] = set()
        for chunk in view.points(sp, batch):
            upserts = []
            for point in chunk:
                pid = point.rid
                if point.box is not None:
                    dup = 0
                    while (pid := region_point_id(point.rid, point.box, dup)) in seen:
                        dup += 1
                seen.add(pid)
                payload = _payload(
                    point.id, point.columns, point.values, point.row, sp.generation, point.rid, point.box
                )
                if known.get(pid) == payload["_d"]:
                    report.unchanged += 1
                    continue
                report.changed += pid in known
                report.new += pid not in known
                upserts.append(
                    models.PointStruct(
                        id=pid, vector=np.asarray(vectors[point.row], np.float32).tolist(), payload=payload
                    )
                )
            if upserts:
                client.upsert(name, points=upserts, wait=True)
                fault_point("qdrant_after_batch")
        gone = sorted(set(known) - seen)
        for i in range(0, len(gone), 1000):
            client.delete(name, points_selector=models.PointIdsList(points=gone[i : i + 1000]), wait=True)
        report.removed = len(gone)
        report.points = client.count(name, exact=True).count
    finally:
        client.close()
    return report


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class NullTarget:
    """A target that stores nothing and answers as if it held a point (with a stale digest) for
    every rid from 1 to ``top``: what is left is vitrina's own memory, at any size, in minutes."""

    def __init__(self, top: int, live: int, dim: int):
        self.top, self.live, self.dim = top, live, dim

    def _record(self, i: int) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(id=i, payload={"_d": "0" * 24, "rid": i})

    def collection_exists(self, name: str) -> bool:
        return True

    def get_collection(self, name: str) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(config=SimpleNamespace(params=SimpleNamespace(vectors=SimpleNamespace(size=self.dim))))

    def scroll(self, name: str, *, limit: int, offset: Any = None, **_: Any) -> Any:
        start = offset or 1
        end = min(self.top + 1, start + limit)
        return [self._record(i) for i in range(start, end)], (end if end <= self.top else None)

    def retrieve(self, name: str, ids: list[int], **_: Any) -> list[Any]:
        return [self._record(i) for i in ids if 1 <= i <= self.top]

    def upsert(self, name: str, points: list[Any], wait: bool = True) -> None:
        pass

    def delete(self, name: str, points_selector: Any, wait: bool = True) -> None:
        pass

    def count(self, name: str, **_: Any) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(count=self.live)

    def close(self) -> None:
        pass


def child(which: str, collection: str, target: str) -> None:
    """One measured sync, in this (fresh) process; prints a JSON line."""
    import qdrant_client  # noqa: F401  (imported before "base", as the sync needs it)
    import qdrant_edge  # noqa: F401

    from vitrina.index import qdrant
    from vitrina.index import qdrant_edge as edge
    from vitrina.store import Store

    edge.EdgeClient.optimize = lambda self, name: False  # type: ignore[method-assign]  # measured on its own
    store = Store(Path(collection))
    space = store.space("v").name
    if target == "null":
        sp = store.space("v")
        null = NullTarget(int(store.space_view("v").current()[1].max()), sp.live, sp.fingerprint.dim)
        qdrant.connect = lambda target, default: (null, "null")  # type: ignore[assignment]
    client, _ = qdrant.connect(target, "")
    if client.collection_exists(_):
        client.get_collection(_)  # the shard open and loaded: part of "base", for both sides
    base = _rss_kb()
    t0 = time.perf_counter()
    if which == "optimize":
        edge._acquire(client.root / _).optimize()  # noqa: SLF001
        report = None
    elif which == "before":
        report = legacy_sync(store, space, target)
    else:
        report = qdrant.sync(store, space, target)
    seconds = time.perf_counter() - t0
    client.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"which": which, "seconds": seconds, "base_mb": base / 1024, "peak_mb": peak / 1024,
                      "report": report.to_dict() if report else None}))  # fmt: skip


def run_child(which: str, collection: Path, target: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, __file__, "--child", which, str(collection), target],
                         env=env, capture_output=True, text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{which} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {which}: {result['seconds']:.1f} s, base {result['base_mb']:.0f} MB, peak {result['peak_mb']:.0f} MB "
          f"(+{result['peak_mb'] - result['base_mb']:.0f})", file=sys.stderr, flush=True)  # fmt: skip
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/vitrina-syncmem"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--null", action="store_true", help="a target that stores nothing: vitrina's own memory only")
    ap.add_argument("--optimize", action="store_true", help="also time the engine's optimizer (HNSW) on its own")
    ap.add_argument(
        "--target-dir", type=Path, help="where the edge shard goes (default --dir; /dev/shm spares the disk's fsyncs)"
    )
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    collection = args.dir / f"c-{args.rows}-{args.dim}"
    built = build(collection, args.rows, args.dim)
    target = f"qdrant+edge://{(args.target_dir or args.dir) / f'edge-{args.rows}-{args.dim}'}#bench"
    if args.null:
        target = "null"
    runs = [] if args.null else [run_child("after-first", collection, target)]
    if args.optimize:
        runs.append(run_child("optimize", collection, target))
    for _ in range(args.repeats):
        runs += [run_child("before", collection, target), run_child("after", collection, target)]
    print(f"\n{args.rows:,} items, {args.dim}-dimensional vectors, target {target}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; build {built:.0f} s\n")  # fmt: skip
    print("| sync | seconds | base RSS MB | peak RSS MB | peak - base MB |")
    print("|---|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['which']} | {r['seconds']:.1f} | {r['base_mb']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} |"
        )
    before = [r["peak_mb"] - r["base_mb"] for r in runs if r["which"] == "before"]
    after = [r["peak_mb"] - r["base_mb"] for r in runs if r["which"] == "after"]
    if before and after:
        print(f"\nre-sync held memory, before / after: {np.median(before) / max(np.median(after), 1):.1f}x")
    out = ROOT / "benchmarks" / "results" / f"sync_memory{'-null' if args.null else ''}-{args.rows}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "dim": args.dim, "build_seconds": built, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
