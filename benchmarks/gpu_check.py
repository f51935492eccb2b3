#!/usr/bin/env python3
"""Check the CUDA path: the same images embedded on the GPU (fp16) and on the CPU (fp32) agree,
and indexing with --device cuda gives the same top hits as on the CPU. Run on a GPU machine:

    PYTHONPATH=src python benchmarks/gpu_check.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import build_tiny_clip, make_images  # noqa: E402

from vitrina import get_embedder, load_image, open_collection  # noqa: E402
from vitrina.embedding import embed_images  # noqa: E402


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    tmp = Path(tempfile.mkdtemp())
    model = build_tiny_clip(tmp / "clip")
    images = make_images(tmp / "imgs", 40)
    cpu = get_embedder(f"hf:{model}", device="cpu")
    gpu = get_embedder(f"hf:{model}")  # auto: must pick cuda, fp16
    assert gpu.device == "cuda" and gpu.dtype == torch.float16, (gpu.device, gpu.dtype)
    decoded = [load_image(p) for p in images]
    a, b = embed_images(cpu, decoded), embed_images(gpu, decoded)
    cos = (a * b).sum(1)
    t_a, t_b = cpu.embed_texts(["a map", "sea monster"]), gpu.embed_texts(["a map", "sea monster"])
    print(
        f"image cosine cpu-fp32 vs cuda-fp16: min {cos.min():.5f} mean {cos.mean():.5f}; text: {(t_a * t_b).sum(1).min():.5f}"
    )
    assert cos.min() > 0.999 and (t_a * t_b).sum(1).min() > 0.999
    assert gpu.fingerprint.revision == cpu.fingerprint.revision and gpu.fingerprint.dim == cpu.fingerprint.dim
    coll = open_collection(tmp / "coll", create=True)
    report = coll.index(str(tmp / "imgs"), model=f"hf:{model}", device="cuda")
    assert report.embedded == 40, report.to_dict()
    hits = coll.search(image=str(images[7]), limit=1)
    assert hits[0].id == images[7].name and abs(hits[0].score - 1) < 2e-3, hits
    print("GPU path OK:", torch.cuda.get_device_name(), "torch", torch.__version__)


if __name__ == "__main__":
    main()


def finetune_check() -> None:
    """Fine-tune a tiny CLIP on CUDA for two epochs, embed into a new space on CUDA, evaluate both."""
    import json

    from vitrina.evaluate import eval_pairs
    from vitrina.finetune import FinetuneConfig, finetune

    tmp = Path(tempfile.mkdtemp())
    model = build_tiny_clip(tmp / "clip")
    make_images(tmp / "imgs", 32)
    coll = open_collection(tmp / "coll", create=True)
    coll.index(str(tmp / "imgs"), model=f"hf:{model}", device="cuda")
    pairs = [
        {"id": p.name, "caption": f"a map {n % 5}", "split": "train"}
        for n, p in enumerate(sorted((tmp / "imgs").iterdir()))
    ]
    report = finetune(
        coll, pairs, tmp / "ft", config=FinetuneConfig(epochs=2, batch_size=8, lr=1e-3, val_percent=0), device="cuda"
    )
    losses = [h["train_loss"] for h in report.history]
    assert losses[-1] < losses[0], losses
    coll.index(model=f"hf:{tmp / 'ft'}", space="ft", device="cuda")
    scores = {
        s.name: eval_pairs(coll, [(p["id"], p["caption"]) for p in pairs], space=s.name)["mrr"] for s in coll.spaces()
    }
    print("finetune on CUDA OK:", json.dumps({"losses": losses, "mrr_by_space": scores}))


if __name__ == "__main__" and torch.cuda.is_available():
    finetune_check()
