#!/usr/bin/env python3
"""End-to-end latency of `vitrina search COLL "text"` as a user runs it: a new process each time.

    python benchmarks/cli_latency.py [--rounds 5] [--before 40551ae] [--models mini,clip]

For each model (``mini``: the demo collection built offline by `vitrina demo`; ``clip``: a
collection of the same drawings indexed with a randomly initialised ViT-B/32 CLIP, the default
model's architecture and size, saved to disk and loaded through ``from_pretrained`` like the hub
checkpoint — this machine has no network), it times, interleaved round by round:

- before: the code at ``--before`` (a git revision, extracted to a temporary folder), which loads
  the model in every search;
- in-process: this code with ``--no-daemon``;
- cold: this code with the query service stopped first (starts it, loads the model, answers);
- warm: this code with the query service already running.

Medians over the rounds, ratios against ``before`` from the same run. Prints a Markdown table for
docs/benchmarks.md and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ("a car", "a red apple", "a map of the world", "a bicycle", "a cat")


def run(args: list[str], env: dict[str, str], pythonpath: Path) -> float:
    env = {**env, "PYTHONPATH": str(pythonpath)}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vitrina", *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def build_clip(folder: Path) -> Path:
    """A random ViT-B/32 CLIP (CLIPConfig's defaults are openai/clip-vit-base-patch32's sizes)."""
    if (folder / "config.json").exists():
        return folder
    sys.path.insert(0, str(ROOT))
    import torch
    from tests.conftest import _tokenizer
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(0)
    tokenizer, vocab = _tokenizer(77)
    config = CLIPConfig(text_config={"vocab_size": vocab, "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0})
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", default="40551ae", help="git revision of the code before the query service")
    ap.add_argument("--models", default="mini,clip")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "vitrina-cli-bench")
    opts = ap.parse_args()
    work = opts.dir
    work.mkdir(parents=True, exist_ok=True)
    before_src = work / f"before-{opts.before}"
    if not before_src.exists():
        before_src.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", opts.before, "src"], check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(before_src)], input=archive.stdout, check=True)
    runtime = work / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "VITRINA_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1", "VITRINA_RUNTIME_DIR": str(runtime)}
    env.pop("VITRINA_NO_DAEMON", None)
    src, old = ROOT / "src", before_src / "src"
    if not (work / "home" / "demo").exists():
        subprocess.run(
            [sys.executable, "-m", "vitrina", "demo"],
            env={**env, "PYTHONPATH": str(src)},
            check=True,
            capture_output=True,
        )
    collections = {"mini": "demo"}
    if "clip" in opts.models:
        model = build_clip(work / "clip-b32")
        if not (work / "home" / "clip").exists():
            demo_images = src / "vitrina" / "demo"
            subprocess.run([sys.executable, "-m", "vitrina", "index", str(demo_images), "--collection", "clip", "--model", f"hf:{model}"],
                           env={**env, "PYTHONPATH": str(src)}, check=True, capture_output=True)  # fmt: skip
        collections["clip"] = "clip"
    sys.path.insert(0, str(src))
    from vitrina import query_service

    results: dict[str, dict[str, list[float]]] = {}
    for name in opts.models.split(","):
        coll = collections[name]
        times: dict[str, list[float]] = {"before": [], "in-process": [], "cold": [], "warm": []}
        for r in range(opts.rounds):
            q = QUERIES[r % len(QUERIES)]
            times["before"].append(run(["search", coll, q], env, old))
            times["in-process"].append(run(["search", coll, q, "--no-daemon"], env, src))
            os.environ["VITRINA_RUNTIME_DIR"] = str(runtime)
            query_service.stop_all(runtime)
            times["cold"].append(run(["search", coll, q], env, src))
            times["warm"].append(run(["search", coll, q + " again"], env, src))
        query_service.stop_all(runtime)
        results[name] = times
    load = os.getloadavg()
    print(f"\n{platform.node()} · {os.cpu_count()} cores · load {load[0]:.1f} · {opts.rounds} rounds, interleaved\n")
    print(
        "| model | before (s) | in-process now (s) | cold, service starts (s) | warm (s) | warm / before | cold / before |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, times in results.items():
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"| {name} | {med['before']:.2f} | {med['in-process']:.2f} | {med['cold']:.2f} | {med['warm']:.2f} | "
              f"{med['warm'] / med['before']:.2f} | {med['cold'] / med['before']:.2f} |")  # fmt: skip
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "cli_latency.json").write_text(json.dumps({"load": load, "results": results}, indent=2))


if __name__ == "__main__":
    main()
