#!/usr/bin/env python3
"""Import of the Library of Congress maps paper's embeddings at full size: 562,842 x 512.

    python benchmarks/import_loc.py [--rows 562842] [--dim 512] [--chunk 20000] [--dir /tmp/vitrina-bench-loc] [--csv]

Writes synthetic files in exactly the paper's format (``torch.save`` of a float32 tensor [N, D]
with unit rows, and of a list of N tile.loc.gov IIIF URLs; with --csv also p1_map_file_list.csv),
then, each in a fresh process so that peak memory (``resource.getrusage`` ru_maxrss) is that
step's own:

  import   ``importers.import_vectors`` into a new collection under the declared model
           hf:openai/clip-vit-base-patch32 (not loaded: timing the import, not a model download)
  search   the first search after it in a fresh process (by an item's stored vector: no model),
           then a second one, and a filtered one when --csv gave metadata
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
MODEL = "hf:openai/clip-vit-base-patch32"


def url(n: int) -> str:
    return f"https://tile.loc.gov/image-services/iiif/service:gmd:gmd3:g3700:g3700:ct{n:07d}/full/2000,/0/default.jpg"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def generate(d: Path, rows: int, dim: int, with_csv: bool) -> None:
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    tensor = torch.empty((rows, dim), dtype=torch.float32)
    for a in range(0, rows, 100_000):
        x = rng.standard_normal((min(rows, a + 100_000) - a, dim), dtype=np.float32)
        tensor[a : a + len(x)] = torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True))
    torch.save(tensor, d / "beto.pt")
    torch.save([url(n) for n in range(rows)], d / "beto_idx.pt")
    if with_csv:
        import csv

        with (d / "p1_map_file_list.csv").open("w", newline="") as f:
            w = csv.writer(f)  # file_url has a comma ("2000,"): quoted
            w.writerow(["p1_item_id", "file_url", "resource_url", "segment_num"])
            for n in range(rows):
                w.writerow(
                    [
                        f"http://www.loc.gov/item/{n // 3:08d}/",
                        url(n),
                        f"https://www.loc.gov/resource/g3700.ct{n // 3:07d}/",
                        n % 3,
                    ]
                )


def do_import(d: Path, chunk: int, with_csv: bool) -> dict:
    from vitrina import open_collection
    from vitrina.importers import import_vectors, open_reader

    started = time.perf_counter()
    reader = open_reader(
        "loc-beto",
        [str(d / "beto.pt"), str(d / "beto_idx.pt")],
        csv_path=str(d / "p1_map_file_list.csv") if with_csv else None,
    )
    opened = time.perf_counter() - started
    coll = open_collection(d / "locmaps", create=True)
    report = import_vectors(coll, reader, model=MODEL, chunk=chunk, load_model=False)
    return {"open_files_s": round(opened, 2), "import_s": round(time.perf_counter() - started, 2), "imported": report.imported, "bad": report.bad,
            "rows_per_s": round(report.imported / (time.perf_counter() - started)), "peak_rss_mb": round(peak_rss_mb())}  # fmt: skip


def do_search(d: Path, rows: int, with_csv: bool) -> dict:
    import numpy as np

    from vitrina import open_collection

    started = time.perf_counter()
    coll = open_collection(d / "locmaps")
    target = f"service:gmd:gmd3:g3700:g3700:ct{rows // 2:07d}"
    first = coll.search(image=target, limit=10)
    first_s = time.perf_counter() - started
    t = time.perf_counter()
    query = np.random.default_rng(1).standard_normal(coll.space().fingerprint.dim).astype(np.float32)
    coll.search_vectors(query, limit=10)
    second_s = time.perf_counter() - t
    out = {
        "first_search_s": round(first_s, 3),
        "second_search_s": round(second_s, 3),
        "first_hit": first[0].id,
        "considered": first.total_considered,
    }
    if with_csv:
        t = time.perf_counter()
        hits = coll.search_vectors(query, where=["segment_num=2"], limit=10)[0]
        out["filtered_search_s"] = round(time.perf_counter() - t, 3)
        out["filtered_considered"] = hits.total_considered
    out["peak_rss_mb"] = round(peak_rss_mb())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=562_842)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--csv", action="store_true", help="also write and join p1_map_file_list.csv")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "vitrina-bench-loc")
    ap.add_argument("--keep", action="store_true", help="keep the files and the collection")
    ap.add_argument("--phase", choices=["generate", "import", "search"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    d = args.dir
    if args.phase:
        result = {"generate": lambda: generate(d, args.rows, args.dim, args.csv) or {}, "import": lambda: do_import(d, args.chunk, args.csv),
                  "search": lambda: do_search(d, args.rows, args.csv)}[args.phase]()  # fmt: skip
        print(json.dumps(result))
        return

    def child(phase: str) -> dict:
        cmd = [
            sys.executable,
            __file__,
            "--phase",
            phase,
            "--dir",
            str(d),
            "--rows",
            str(args.rows),
            "--dim",
            str(args.dim),
            "--chunk",
            str(args.chunk),
        ]
        done = subprocess.run(
            cmd + (["--csv"] if args.csv else []),
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        if done.returncode:
            sys.exit(f"{phase} failed:\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    t = time.perf_counter()
    child("generate")
    generated_s = time.perf_counter() - t
    size = sum((d / n).stat().st_size for n in ("beto.pt", "beto_idx.pt"))
    imported = child("import")
    searched = child("search")
    collection = sum(p.stat().st_size for p in (d / "locmaps").rglob("*") if p.is_file())
    result = {
        "rows": args.rows, "dim": args.dim, "chunk": args.chunk, "csv": args.csv,
        "beto_pt_mb": round((d / "beto.pt").stat().st_size / 2**20), "files_mb": round(size / 2**20), "generate_s": round(generated_s, 1),
        "import": imported, "import_peak_rss_over_file_size": round(imported["peak_rss_mb"] / (size / 2**20), 2),
        "search": searched, "collection_mb": round(collection / 2**20),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, {platform.system()} {platform.release()}",
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
