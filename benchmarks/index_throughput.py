#!/usr/bin/env python3
"""Indexing throughput with a ViT-B/32-sized CLIP (random weights: timing only) on real-sized scans.

    python benchmarks/index_throughput.py [--images 64] [--side 4000] [--device cpu|cuda] [--threads N]

Makes --images JPEG scans (a real book page, upscaled to --side pixels on its long edge, with
noise so no two are alike), then times, per image: decode (reduced JPEG decoding, as the indexer
does it), preprocess (resize, crop, normalise), the model; and the whole `Collection.index` run.
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
sys.path.insert(0, str(ROOT / "src"))


def make_scans(folder: Path, n: int, side: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    page = Image.open(ROOT / "src" / "vitrina" / "demo" / "heritage" / "book-page-poulpes.jpg").convert("RGB")
    w, h = page.size
    big = page.resize((int(side * w / max(w, h)), int(side * h / max(w, h))), Image.Resampling.BILINEAR)
    rng = np.random.default_rng(0)
    paths = []
    base = np.asarray(big, np.int16)
    for i in range(n):
        path = folder / f"scan{i:04d}.jpg"
        if not path.exists():
            noisy = np.clip(base + rng.integers(-12, 12, (1, 1, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--side", type=int, default=4000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "vitrina-bench-index")
    args = ap.parse_args()

    import torch
    from gpu_pipeline import clip_b32

    from vitrina import get_embedder, load_image, open_collection

    model_dir = clip_b32(args.dir / "clip-vit-b32-random")
    scans = make_scans(args.dir / f"scans-{args.side}", args.images, args.side)
    embedder = get_embedder(f"hf:{model_dir}", device=args.device, threads=args.threads)

    decode, prep, pixels = [], [], []
    for path in scans:
        t0 = time.perf_counter()
        image = load_image(path, min_side=embedder.min_side)
        t1 = time.perf_counter()
        pixels.append(embedder.preprocess(image))
        t2 = time.perf_counter()
        decode.append(t1 - t0)
        prep.append(t2 - t1)
    full_decode = []
    for path in scans[:4]:
        t0 = time.perf_counter()
        load_image(path)
        full_decode.append(time.perf_counter() - t0)
    batch = np.stack(pixels[: args.batch_size])
    embedder.embed_pixels(batch[:2])  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model_batches = 0
    for i in range(0, len(pixels), args.batch_size):
        embedder.embed_pixels(np.stack(pixels[i : i + args.batch_size]))
        model_batches += 1
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    model_time = time.perf_counter() - t0

    home = Path(tempfile.mkdtemp())
    coll = open_collection(home / "bench", create=True)
    t0 = time.perf_counter()
    report = coll.index(
        str(scans[0].parent),
        model=f"hf:{model_dir}",
        device=args.device,
        threads=args.threads,
        batch_size=args.batch_size,
        workers=args.workers,
    )
    wall = time.perf_counter() - t0
    from PIL import Image

    with Image.open(scans[0]) as im:
        size = im.size
    result = {
        "images": len(scans), "scan_size": list(size), "megapixels": round(size[0] * size[1] / 1e6, 1), "jpeg_mb": round(scans[0].stat().st_size / 1e6, 2),
        "device": args.device, "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size, "workers": args.workers,
        "decode_reduced_ms_per_image": 1000 * float(np.mean(decode)), "decode_full_ms_per_image": 1000 * float(np.mean(full_decode)),
        "preprocess_ms_per_image": 1000 * float(np.mean(prep)), "model_ms_per_image": 1000 * model_time / len(pixels),
        "index_images_per_second": round(report.embedded / wall, 2), "index_wall_s": round(wall, 2), "index_timings_s": report.to_dict()["timings"],
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores" + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""),
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    assert report.embedded == len(scans), report.to_dict()
    out = ROOT / "benchmarks" / "results" / f"index-{args.device.replace(':', '')}-{args.side}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
