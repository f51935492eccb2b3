"""What regions cost (issue #24, part 5): vectors per item, indexing time and disk per 1,000 large
images with and without regions, and search latency with regions at 100k items.

    python benchmarks/regions_cost.py index  [--images 40]              # real pipeline, model apart
    python benchmarks/regions_cost.py search [--items 100000] [--large 0.2]

``index``: ``--images`` generated 2400x1800 map-like JPEG pages (benchmarks/regions_gain.py) are
indexed through the real pipeline (decode with JPEG draft, cut, proposals, preprocess to the
``mini`` model's 224 px input, write to the store) with ``--regions off`` and ``auto``, by an
embedder that has mini's preprocessing but a random projection for a model, so the figures are
the pipeline's own; the model's time per vector is measured apart (mini, same machine, same run)
and added as ``vectors x that``. Scaled to 1,000 images linearly.

``search``: ``--items`` items with random 256-d unit vectors, ``--large`` of them with the
regions ``--regions auto`` gives a 2400x1800 page (1 + 28 rows), in the real store format; p50
and p95 of one text-like query (limit 10) through RegionIndex over exact and over ANN (IVF-sq8),
against the same items without regions (a second space) in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from vitrina.records import ModelFingerprint  # noqa: E402

SPEC = "hf:bench/projection"  # a spec the model parser accepts; the given embedder serves it


class ProjectionEmbedder:
    """mini's preprocessing (224 px, shortest-edge resize + centre crop), a random projection for a model."""

    def __init__(self, dim: int = 256):
        from vitrina.embedding.mini import PREPROCESS

        self.prep = PREPROCESS
        self.min_side = PREPROCESS.min_side
        self.fingerprint = ModelFingerprint(spec=SPEC, revision="p1", dim=dim, preprocessing=PREPROCESS.describe())
        self.projection = np.random.default_rng(0).standard_normal((3 * 8 * 8, dim)).astype(np.float32)

    def preprocess(self, image):  # type: ignore[no-untyped-def]
        return self.prep(image)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        x = np.asarray(pixels, np.float32)
        n, c, h, w = x.shape
        pooled = x.reshape(n, c, 8, h // 8, 8, w // 8).mean((3, 5)).reshape(n, -1)
        out = pooled @ self.projection
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), self.fingerprint.dim), np.float32)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_index(images: int, work: Path) -> dict:
    from regions_gain import PAGE, map_page

    from vitrina import open_collection

    src = work / "pages"
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(images):
        map_page(rng).save(src / f"p{i:04d}.jpg", quality=88)
    source_mb = folder_bytes(src) / 1e6
    embedder = ProjectionEmbedder()
    out: dict = {"images": images, "page": list(PAGE), "source_mb_per_1000": round(source_mb * 1000 / images, 1)}
    for mode in ("off", "auto"):
        path = work / f"c-{mode}"
        coll = open_collection(path, create=True, embedder=embedder)  # type: ignore[arg-type]
        coll.ingest(str(src))
        t0 = time.perf_counter()
        report = coll.index(model=SPEC, regions=mode, workers=2)
        seconds = time.perf_counter() - t0
        coll.close()
        vectors = images + report.regions
        out[mode] = {
            "vectors_per_item": round(vectors / images, 2),
            "pipeline_s_per_1000": round(seconds * 1000 / images, 1),
            "timings_s": {k: round(v, 2) for k, v in report.timings.items()},
            # The vector file grows in preallocated steps: its share is counted by the rows it holds.
            "vectors_mb_per_1000": round(vectors * embedder.fingerprint.dim * 4 * 1000 / images / 1e6, 1),
            "sqlite_mb_per_1000": round(
                sum(f.stat().st_size for f in path.rglob("*.sqlite*")) * 1000 / images / 1e6, 1
            ),
        }
    # The model apart: mini's time per vector on this machine, now.
    try:
        from vitrina.embedding import get_embedder

        mini = get_embedder("mini")
        batch = np.stack([mini.preprocess(map_page(rng).resize((224, 224))) for _ in range(32)])
        mini.embed_pixels(batch[:4])
        t0 = time.perf_counter()
        mini.embed_pixels(batch)
        per_vector = (time.perf_counter() - t0) / len(batch)
        out["mini_s_per_vector"] = round(per_vector, 4)
        for mode in ("off", "auto"):
            v = out[mode]["vectors_per_item"] * 1000
            out[mode]["with_mini_s_per_1000"] = round(out[mode]["pipeline_s_per_1000"] + v * per_vector, 1)
    except Exception as e:  # pragma: no cover - mini needs torch
        out["mini_s_per_vector"] = f"unavailable: {e}"
    return out


def bench_search(items: int, large: float, work: Path, repeats: int) -> dict:
    from vitrina import Item, open_collection
    from vitrina.index.ann import AnnParams
    from vitrina.index.ann_build import build_ann
    from vitrina.store import RegionBatch

    dim, per_large = 256, 28
    fp = ModelFingerprint(spec="bench:random", revision="0", dim=dim, preprocessing="none")
    rng = np.random.default_rng(0)
    if (work / "c").exists():  # built by an earlier run with --dir: time the queries only
        return _time_queries(work, repeats, {"items": items, "reused": str(work / "c")})
    coll = open_collection(work / "c", create=True)
    ids = [f"i{i:07d}" for i in range(items)]

    def unit(n: int) -> np.ndarray:
        v = rng.standard_normal((n, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    t0 = time.perf_counter()
    with coll.writer():
        coll.add_items([Item(id=i, image=f"/x/{i}.jpg", fingerprint="1", source="s") for i in ids])
        whole = unit(items)
        for space in ("plain", "regions"):
            for s in range(0, items, 50_000):
                coll.import_vectors(ids[s : s + 50_000], whole[s : s + 50_000], fingerprint=fp, space=space)
    store = coll._store  # noqa: SLF001 - a benchmark writes regions the way an indexing run does
    n_large = int(items * large)
    for s in range(0, n_large, 2000):
        chunk = ids[s : min(n_large, s + 2000)]
        owners = [i for i in chunk for _ in range(per_large)]
        batch = RegionBatch(items=[(i, "1") for i in chunk], owners=owners, boxes=[(k, k, 10, 10) for _ in chunk for k in range(per_large)],
                            vectors=unit(len(owners)), cut="bench")  # fmt: skip
        with coll.writer():
            store.add_vectors("regions", [], np.zeros((0, dim), np.float32), regions=batch)
    build_s = time.perf_counter() - t0
    out: dict = {"items": items, "large_items": n_large, "rows_with_regions": store.space("regions").rows,
                 "dim": dim, "build_s": round(build_s, 1)}  # fmt: skip
    params = AnnParams(structure="ivf", codes="sq8")
    t0 = time.perf_counter()
    for space in ("plain", "regions"):
        build_ann(store, space, params)
    out["ann_build_s"] = round(time.perf_counter() - t0, 1)
    coll.close()
    return _time_queries(work, repeats, out)


def _time_queries(work: Path, repeats: int, out: dict) -> dict:
    """p50/p95 of one query (limit 10), plain and with regions, exact and ANN, interleaved."""
    from vitrina.index.ann import AnnIndex, AnnParams
    from vitrina.region_search import collapsing
    from vitrina.store import Store

    store = Store(work / "c")
    params = AnnParams(structure="ivf", codes="sq8")
    queries = np.random.default_rng(5).standard_normal((repeats, 256)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    indexes = {
        (space, kind): collapsing(
            _exact(store, space) if kind == "exact" else AnnIndex(store, space, params), store, space
        )  # type: ignore[arg-type]
        for space in ("plain", "regions")
        for kind in ("exact", "ann_ivf_sq8")
    }
    ms: dict[tuple[str, str], list[float]] = {key: [] for key in indexes}
    for index in indexes.values():
        index.search(queries[:1], limit=10)
    for q in queries:  # interleaved: the machine's load falls on all four alike
        for key, index in indexes.items():
            t = time.perf_counter()
            index.search(q[None], limit=10)
            ms[key].append((time.perf_counter() - t) * 1000)
    for (space, kind), times in ms.items():
        out.setdefault(space, {})[kind] = {"p50_ms": round(float(np.percentile(times, 50)), 2),
                                           "p95_ms": round(float(np.percentile(times, 95)), 2)}  # fmt: skip
    store.close()
    return out


def _exact(store, space):  # type: ignore[no-untyped-def]
    from vitrina.index.exact import ExactIndex

    return ExactIndex(store, space)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["index", "search"])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--large", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--dir", type=Path)
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="regions-cost-"))
    try:
        if args.what == "index":
            out = bench_index(args.images, work)
        else:
            out = bench_search(args.items, args.large, work, args.repeats)
        out["machine"] = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
        print(json.dumps(out, indent=2))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
