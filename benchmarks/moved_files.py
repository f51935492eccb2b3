#!/usr/bin/env python3
"""What recognising moved files costs and saves (issue 28, item 12).

    python benchmarks/moved_files.py [--files 400] [--mb 2] [--dir /tmp/vitrina-moved]

A folder of ``--files`` real PNG images padded to about ``--mb`` MB each (a scan-sized read per
file; decoding stays small), indexed with the numpy fake embedder of the tests. Times, in one
run and one process:

- the first ingest of the folder with content hashing (this code) and with hashing switched off
  (``vitrina.ingest.hash_files`` replaced by a no-op: the code before it), in fresh collections;
- the first ingest followed by embedding everything (with ``--model mini``: a real model);
- a re-run over the unchanged folder, both ways (no file is read again: the hash is kept);
- renaming a tenth of the files and re-indexing: images embedded, both ways.

Prints a Markdown table for docs/benchmarks.md (ratios against the no-hashing baseline).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.fakes import FAKE_SPEC, FakeEmbedder  # noqa: E402

from vitrina import ingest as ingest_module  # noqa: E402
from vitrina import open_collection  # noqa: E402


def make_folder(folder: Path, files: int, mb: float) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pad = int(mb * 2**20)
    for n in range(files):
        path = folder / f"scan_{n:05d}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        with open(path, "ab") as f:  # trailing bytes after IEND: read by the hash, ignored by decoders
            f.write(rng.bytes(pad))


def run(folder: Path, coll_dir: Path, hashing: bool, model: str | None) -> dict[str, float]:
    original = ingest_module.hash_files
    if not hashing:
        ingest_module.hash_files = lambda store, ids: 0
    try:
        coll = open_collection(coll_dir, create=True, embedder=None if model else FakeEmbedder())
        started = time.perf_counter()
        first = coll.ingest(str(folder))
        t_first = time.perf_counter() - started
        coll.index(model=model or FAKE_SPEC)
        t_index = time.perf_counter() - started
        started = time.perf_counter()
        coll.ingest(str(folder))
        t_again = time.perf_counter() - started
        names = sorted(p.name for p in folder.iterdir())[::10]
        for name in names:
            (folder / name).rename(folder / ("moved_" + name))
        started = time.perf_counter()
        report = coll.index(str(folder))
        t_moved = time.perf_counter() - started
        for name in names:
            (folder / ("moved_" + name)).rename(folder / name)
        return {"index": t_index, "first": t_first, "again": t_again, "moved": t_moved, "embedded": report.embedded,
                "renamed": len(names), "hashed": first.hashed, "by_content": report.count("moved_by_content")}  # fmt: skip
    finally:
        ingest_module.hash_files = original


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--mb", type=float, default=2.0)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/vitrina-moved"))
    ap.add_argument("--model", default=None, help="a real model (e.g. mini) instead of the numpy fake embedder")
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    folder = args.dir / "scans"
    make_folder(folder, args.files, args.mb)
    os.environ.setdefault("VITRINA_HOME", str(args.dir / "home"))
    base = run(folder, args.dir / "base", hashing=False, model=args.model)
    mine = run(folder, args.dir / "hash", hashing=True, model=args.model)
    print(
        f"model {args.model or 'fake numpy'}; {args.files} files of ~{args.mb} MB; {platform.node()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    print("| step | without hashing | with hashing | ratio |")
    print("|---|---|---|---|")
    for key, label in (("first", "first ingest"), ("index", "first ingest + embedding"), ("again", "ingest, nothing changed"), ("moved", f"index after renaming {mine['renamed']} files")):  # fmt: skip
        print(f"| {label} | {base[key]:.2f} s | {mine[key]:.2f} s | {mine[key] / base[key]:.2f} |")
    print(f"| images embedded after the renames | {base['embedded']} | {mine['embedded']} "
          f"({mine['by_content']} recognised by content) | |")  # fmt: skip
    print(f"files hashed at the first ingest: {mine['hashed']}")


if __name__ == "__main__":
    main()
