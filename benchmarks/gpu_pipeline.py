#!/usr/bin/env python3
"""Indexing throughput next to the ceilings of its parts, in one run (issue #11): a ViT-B/32-sized
CLIP with random weights (timing only), IIIF-sized derivatives (~640 px JPEGs) and 10.7 MP scans.

    python benchmarks/gpu_pipeline.py --device cuda                       # on a GPU lease (< 5 min)
    python benchmarks/gpu_pipeline.py --device cpu --small 192 --large 48 --baseline-src /path/to/old/src

Prints and saves (benchmarks/results/pipeline-DEVICE.json):
- model alone: images/s of ``embed_prepared`` (uint8 in, normalised on the device) and of the
  float32 ``embed_pixels`` path, on batches already in memory;
- decoding alone: images/s of the reader stage (``vitrina.reader``) in processes and in threads,
  and of nvjpeg on the GPU when torchvision is installed (a ceiling only: vitrina does not use it);
- end to end: ``Collection.index`` images/s (embedding phase: after the folder scan and the model
  load) with ``decode="processes"`` and ``decode="threads"``, and with the code at
  ``--baseline-src`` (an older checkout's ``src``) for a before/after ratio. Each end-to-end run is
  its own process, in alternating order, ``--repeats`` times; the best of each is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
PAGE = ROOT / "src" / "vitrina" / "demo" / "heritage" / "book-page-poulpes.jpg"


def clip_b32(model_dir: Path) -> Path:
    """A ViT-B/32-sized CLIP (CLIPConfig's defaults) with random weights and OpenAI's preprocessing."""
    if (model_dir / "config.json").exists():
        return model_dir
    import torch
    from tokenizers import Tokenizer, models
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(0)
    CLIPModel(CLIPConfig()).save_pretrained(model_dir)
    CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(
        model_dir
    )
    tokenizer = Tokenizer(models.WordLevel({"<unk>": 0, "<pad>": 1}, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>").save_pretrained(model_dir)
    return model_dir


def _make_one(args: tuple[str, int, int, int]) -> None:
    from PIL import Image

    path, side, seed, quality = args
    page = Image.open(PAGE).convert("RGB")
    w, h = page.size
    rng = np.random.default_rng(seed)
    # A different crop, tint and grain for each, so no two files are alike and JPEG entropy is realistic.
    left, top = int(rng.integers(0, w // 8)), int(rng.integers(0, h // 8))
    page = page.crop((left, top, left + w * 7 // 8, top + h * 7 // 8))
    w, h = page.size
    size = (int(side * w / max(w, h)), int(side * h / max(w, h)))
    base = np.asarray(page.resize(size, Image.Resampling.BILINEAR), np.int16)
    grain = (
        rng.integers(-6, 7, (size[1] // 8 + 1, size[0] // 8 + 1, 1), dtype=np.int16)
        .repeat(8, 0)
        .repeat(8, 1)[: size[1], : size[0]]
    )
    pixels = np.clip(base + rng.integers(-12, 12, (1, 1, 3)) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=quality)


def make_inputs(folder: Path, n: int, side: int, quality: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    todo = [
        (str(folder / f"p{i:05d}.jpg"), side, i, quality) for i in range(n) if not (folder / f"p{i:05d}.jpg").exists()
    ]
    with ProcessPoolExecutor(max(1, (os.cpu_count() or 2))) as pool:
        list(pool.map(_make_one, todo, chunksize=16))
    return folder


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def model_alone(spec: str, device: str, batch_size: int, seconds: float) -> dict[str, float]:
    from vitrina.embedding import get_embedder

    embedder = get_embedder(spec, device=device)
    prep = embedder.prep  # type: ignore[attr-defined]
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, prep.height, prep.width, 3), dtype=np.uint8)
    floats = prep.normalise(batch)
    out = {}
    for name, run in (
        ("uint8_on_device", lambda: embedder.embed_prepared(batch)),
        ("float32_from_host", lambda: embedder.embed_pixels(floats)),
    ):  # type: ignore[attr-defined]
        run()
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            run()
            n += batch_size
        _sync(device)
        out[f"model_{name}_images_per_s"] = round(n / (time.perf_counter() - t0), 1)
    return out


def decode_alone(spec: str, device: str, folder: Path, workers: int) -> dict[str, float]:
    from vitrina.embedding import get_embedder
    from vitrina.reader import Reader

    embedder = get_embedder(spec, device=device)
    rows = [{"image": str(p)} for p in sorted(folder.glob("*.jpg"))]
    out = {}
    for mode in ("processes", "threads"):
        with Reader(embedder, mode=mode, workers=workers) as reader:
            list(reader.pool.map(reader.read, rows[: 2 * workers]))  # start the processes
            t0 = time.perf_counter()
            results = list(reader.pool.map(reader.read, rows))
            out[f"decode_{mode}_images_per_s"] = round(len(rows) / (time.perf_counter() - t0), 1)
            assert all(r[1] is None for r in results), [r[1] for r in results if r[1]][:3]
    try:  # the GPU decoding ceiling the issue quotes (nvjpeg through torchvision), when installed
        import torch
        import torchvision  # noqa: F401
        from torchvision.io import decode_jpeg

        if device.startswith("cuda"):
            datas = [torch.frombuffer(bytearray(Path(r["image"]).read_bytes()), dtype=torch.uint8) for r in rows]
            decode_jpeg(datas[:8], device=device)
            _sync(device)
            t0 = time.perf_counter()
            for i in range(0, len(datas), 64):
                decode_jpeg(datas[i : i + 64], device=device)
            _sync(device)
            out["decode_nvjpeg_full_size_images_per_s"] = round(len(datas) / (time.perf_counter() - t0), 1)
    except Exception as e:  # not installed, or no nvjpeg: the ceiling is left out
        out["decode_nvjpeg_note"] = f"not measured ({type(e).__name__})"  # type: ignore[assignment]
    return out


END_TO_END = """
import json, sys, time
sys.path.insert(0, {src!r})
from vitrina import open_collection
coll = open_collection({path!r}, create=True)
t0 = time.perf_counter()
report = coll.index({folder!r}, model={model!r}, **json.loads({kw!r}))
print(json.dumps({{"wall_s": time.perf_counter() - t0, **report.to_dict()}}))
"""


def end_to_end(src: Path, folder: Path, model: str, kw: dict, scratch: Path) -> dict:
    path = tempfile.mkdtemp(dir=scratch)
    code = END_TO_END.format(src=str(src), path=path, folder=str(folder), model=model, kw=json.dumps(kw))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(src)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    if run.returncode:
        raise SystemExit(f"end-to-end run failed ({kw}):\n{run.stderr[-3000:]}")
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["failed"] == 0, report["failures"][:3]
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", type=int, default=4000, help="IIIF-sized derivatives (640 px long side)")
    ap.add_argument("--large", type=int, default=400, help="10.7 MP scans (4000 px long side)")
    ap.add_argument("--batch-size", type=int, help="default: the indexer's for the device")
    ap.add_argument("--workers", type=int, help="decoders (default: the indexer's for the device)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--model-seconds", type=float, default=8.0)
    ap.add_argument(
        "--baseline-src",
        type=Path,
        help="an older checkout's src/ to compare Collection.index against (threads, float32)",
    )
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "vitrina-pipeline")
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.perf_counter()

    import torch

    from vitrina.embedding import get_embedder
    from vitrina.reader import default_batch_size, default_workers

    model = f"hf:{clip_b32(args.dir / 'clip-vit-b32-random')}"
    embedder = get_embedder(model, device=args.device)
    batch_size = args.batch_size or default_batch_size(embedder)
    workers = args.workers or default_workers(embedder)
    kinds = {"iiif_640px": (make_inputs(args.dir / "small", args.small, 640, 85), args.small),
             "scan_10.7MP": (make_inputs(args.dir / "large", args.large, 4000, 90), args.large)}  # fmt: skip
    result: dict = {
        "device": args.device,
        "batch_size": batch_size,
        "workers": workers,
        "inputs_ready_s": round(time.perf_counter() - started, 1),
    }
    result.update(model_alone(model, args.device, batch_size, args.model_seconds))
    scratch = Path(tempfile.mkdtemp(dir=args.dir))
    for kind, (folder, n) in kinds.items():
        if not n:
            continue
        part = decode_alone(model, args.device, folder, workers)
        runs: dict[str, list[dict]] = {}
        configs = {
            "processes": (
                ROOT / "src",
                {"device": args.device, "batch_size": batch_size, "workers": workers, "decode": "processes"},
            ),
            "threads": (
                ROOT / "src",
                {"device": args.device, "batch_size": batch_size, "workers": workers, "decode": "threads"},
            ),
        }
        if args.baseline_src:
            configs["baseline"] = (
                args.baseline_src,
                {"device": args.device, "batch_size": batch_size, "workers": workers},
            )
        for _ in range(args.repeats):
            for name, (src, kw) in configs.items():
                runs.setdefault(name, []).append(end_to_end(src, folder, model, kw, scratch))
        for name, reports in runs.items():
            best = max(reports, key=lambda r: r["images_per_second"])
            part[f"index_{name}_images_per_s"] = best["images_per_second"]
            part[f"index_{name}_timings_s"] = best["timings"]
        if "baseline" in runs:
            part["ratio_processes_vs_baseline"] = round(
                part["index_processes_images_per_s"] / part["index_baseline_images_per_s"], 3
            )
            part["ratio_threads_vs_baseline"] = round(
                part["index_threads_images_per_s"] / part["index_baseline_images_per_s"], 3
            )
        from PIL import Image

        with Image.open(next(folder.glob("*.jpg"))) as im:
            part["image_size"] = list(im.size)
        result[kind] = {"images": n, **part}
        print(json.dumps({kind: result[kind]}), flush=True)
    gpu = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    result.update({"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores{gpu}", "torch": torch.__version__,
                   "torch_threads": torch.get_num_threads(), "total_s": round(time.perf_counter() - started, 1), "date": time.strftime("%Y-%m-%d")})  # fmt: skip
    out = ROOT / "benchmarks" / "results" / f"pipeline-{args.device.replace(':', '')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
