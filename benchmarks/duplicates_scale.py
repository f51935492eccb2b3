#!/usr/bin/env python3
"""Near-duplicate detection over a whole collection of CLIP-like vectors, approximate vs exact.

    python benchmarks/duplicates_scale.py [--rows 562842] [--dim 512] [--dup-fraction 0.01] [--exact-rows 50000]

Builds a collection of --rows synthetic image vectors (benchmarks/synthetic.py) of which
--dup-fraction are planted near-copies of other rows (the original plus noise, cosine ~0.97,
like a rescaled or recompressed scan), builds its approximate index (`build_ann`), and times
`find_duplicates` through the search seam (the ANN index, k=10, threshold 0.95), reporting the
precision and recall of the planted pairs. As a baseline measured in the same run, the same call
with the exact index on the first --exact-rows rows (its own small collection): the exact
method is quadratic, so its full-size time is extrapolated, labelled as such.
Writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from synthetic import CloudModel  # noqa: E402


def make(path: Path, rows: int, dim: int, dup_fraction: float, seed: int = 0) -> list[tuple[str, str]]:
    from vitrina import Item, ModelFingerprint, open_collection

    rng = np.random.default_rng(seed)
    vectors = CloudModel(dim).images(rows)
    ndup = int(rows * dup_fraction)
    copies = rng.choice(rows, size=2 * ndup, replace=False)
    src, dst = copies[:ndup], copies[ndup:]
    noise = rng.standard_normal((ndup, dim)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vectors[dst] = vectors[src] + 0.25 * noise  # cosine to the original ~ 1/sqrt(1 + 0.0625) = 0.97
    vectors[dst] /= np.linalg.norm(vectors[dst], axis=1, keepdims=True)
    ids = [f"item-{i:07d}" for i in range(rows)]
    fp = ModelFingerprint(spec="bench:clip-like", revision="0", dim=dim, preprocessing="none")
    coll = open_collection(path, create=True)
    with coll.writer():
        coll.add_items(Item(id=ids[i], image=f"{i}.jpg", fingerprint="1", source="bench") for i in range(rows))
        coll.import_vectors(ids, vectors, fingerprint=fp, space="bench")
    return [(ids[a], ids[b]) for a, b in zip(src, dst)]


def run(path: Path, planted: list[tuple[str, str]], index: str, threshold: float, k: int) -> dict:
    from vitrina import open_collection
    from vitrina.duplicates import find_duplicates, planted_scores

    coll = open_collection(path, index=index)
    t = time.perf_counter()
    result = find_duplicates(coll, threshold=threshold, k=k, tag=True)
    seconds = time.perf_counter() - t
    return {"index": result.index, "rows": result.items, "seconds_with_tagging": round(seconds, 2), "seconds_search": round(result.seconds, 2),
            "groups": len(result.groups), **planted_scores(result.pairs(), planted)}  # fmt: skip


def sample(path: Path, n: int, threshold: float, k: int) -> dict:
    """The search `find_duplicates` makes (k + 1 neighbours per item, through the seam), for the
    first n items with the ANN index and n // 10 exactly, at the collection's full size."""
    from vitrina import open_collection

    out: dict = {}
    for kind, count in (("ann", n), ("exact", max(1, n // 10))):
        coll = open_collection(path, index="auto" if kind == "ann" else "exact")
        index = coll.index_for()
        ids, vectors = next(coll.iter_vectors(chunk=count))
        t = time.perf_counter()
        for start in range(0, len(ids), 1024 if kind == "ann" else 128):
            index.search(vectors[start : start + (1024 if kind == "ann" else 128)], limit=k + 1, min_score=threshold)
        out[f"{kind}_ms_per_item"] = round((time.perf_counter() - t) * 1000 / len(ids), 3)
        out[f"{kind}_items_timed"] = len(ids)
        out[f"{kind}_index"] = str(index.kind)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=562_842)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--dup-fraction", type=float, default=0.01)
    ap.add_argument("--exact-rows", type=int, default=50_000)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument(
        "--query-sample",
        type=int,
        default=0,
        help="time the neighbour search for only this many items (ANN) and 1/10 of them (exact) at full size, and extrapolate",
    )
    a = ap.parse_args()
    base = a.dir or Path(tempfile.mkdtemp(prefix="vitrina-dups-"))
    out: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "args": {k: str(v) for k, v in vars(a).items()},
    }

    from vitrina import open_collection

    t = time.perf_counter()
    planted = make(base / "big", a.rows, a.dim, a.dup_fraction)
    out["store_build_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    report = open_collection(base / "big").build_ann()
    out["ann_build_s"] = round(time.perf_counter() - t, 1)
    out["ann_kind"] = report.kind
    if a.query_sample:
        out["sampled"] = sample(base / "big", a.query_sample, a.threshold, a.k)
        out["ann_extrapolated_search_s"] = round(out["sampled"]["ann_ms_per_item"] * a.rows / 1000)
        out["exact_extrapolated_search_s"] = round(out["sampled"]["exact_ms_per_item"] * a.rows / 1000)
        out["ann_total_extrapolated_s"] = round(out["ann_build_s"] + out["ann_extrapolated_search_s"])
        print(json.dumps(out, indent=2))
        (ROOT / "benchmarks" / "results" / f"duplicates_scale_{a.rows}_sampled.json").write_text(
            json.dumps(out, indent=2)
        )
        return
    out["ann"] = run(base / "big", planted, "auto", a.threshold, a.k)
    print(json.dumps(out), flush=True)
    if a.exact_rows:
        small = make(base / "small", a.exact_rows, a.dim, a.dup_fraction)
        out["exact_small"] = run(base / "small", small, "exact", a.threshold, a.k)
        open_collection(base / "small").build_ann()
        out["ann_small"] = run(base / "small", small, "auto", a.threshold, a.k)
        out["exact_extrapolated_to_rows_s"] = round(
            out["exact_small"]["seconds_search"] * (a.rows / a.exact_rows) ** 2, 0
        )
    out["ann_total_s"] = round(out["ann_build_s"] + out["ann"]["seconds_with_tagging"], 1)
    res = ROOT / "benchmarks" / "results" / f"duplicates_scale_{a.rows}.json"
    res.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
