#!/usr/bin/env python3
"""Training-step throughput of a ViT-B/32-sized CLIP (random weights), as `vitrina finetune` runs
it (fp32, AdamW, the model's own contrastive loss), on synthetic pixels and captions.

    python benchmarks/finetune_throughput.py --device cuda --batch-size 64 --steps 20
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import CLIPConfig, CLIPModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).to(args.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
    pixels = torch.randn(args.batch_size, 3, 224, 224, device=args.device)
    ids = torch.randint(0, 49000, (args.batch_size, 32), device=args.device)

    def step() -> float:
        loss = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    for _ in range(3):
        step()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    print(json.dumps({"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu", "batch_size": args.batch_size,
                      "steps_per_second": round(args.steps / seconds, 2), "pairs_per_second": round(args.steps * args.batch_size / seconds, 1),
                      "torch": torch.__version__}))  # fmt: skip


if __name__ == "__main__":
    main()
