"""Fine-tuning on tiny models: the loss goes down, weights change, the result loads as a model
and embeds into a new space; a killed run resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import make_images
from vitrina import get_embedder, open_collection
from vitrina.finetune import FinetuneConfig, finetune


@pytest.fixture
def captioned(tmp_path: Path, tiny_clip: str):  # type: ignore[no-untyped-def]
    make_images(tmp_path / "imgs", 24, seed=5)
    coll = open_collection("ft", create=True)
    coll.index(str(tmp_path / "imgs"), model=tiny_clip)
    words = ["red ship", "old map", "blue harbour", "green tree", "sea monster", "city river"]
    pairs = [{"id": f"img{n:04d}.{'jpg' if n % 2 else 'png'}", "caption": f"a {words[n % 6]} {n}", "split": "held_out" if n >= 20 else "train"} for n in range(24)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return coll, pairs, path


def test_training_lowers_the_loss_changes_weights_and_saves_a_loadable_model(captioned, tmp_path: Path, tiny_clip: str) -> None:  # type: ignore[no-untyped-def]
    coll, pairs, _ = captioned
    out = tmp_path / "ft-model"
    report = finetune(coll, pairs, out, config=FinetuneConfig(epochs=3, batch_size=8, lr=5e-3, warmup=0.0, patience=5, val_percent=0))
    assert report.train_pairs == 20 and report.held_out_excluded == 4
    losses = [h["train_loss"] for h in report.history]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    before = load_file(str(Path(tiny_clip.removeprefix("hf:")) / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    tuned = get_embedder(f"hf:{out}")
    assert tuned.fingerprint.revision != get_embedder(tiny_clip).fingerprint.revision
    # Re-embedding writes a new space beside the old one; both can be searched and compared.
    new = coll.index(model=f"hf:{out}", space="finetuned")
    assert new.embedded == 24 and len(coll.spaces()) == 2 and coll.spaces()[1].name == "finetuned"
    from vitrina.evaluate import eval_pairs

    trained = [(p["id"], p["caption"]) for p in pairs if p["split"] == "train"]
    base_space = coll.spaces()[0].name
    scores = {s.name: eval_pairs(coll, trained, space=s.name) for s in coll.spaces()}
    # The MRR is the one recomputed here from the stored vectors, and the fine-tune fits its own
    # training pairs better than the base did (lr 5e-3 on 20 pairs).
    ids, matrix = coll.vectors("finetuned")
    texts = tuned.embed_texts([c for _, c in trained])
    sims = matrix @ texts.T
    ranks = [int((sims[:, q] >= sims[ids.index(i), q]).sum()) - 1 for q, (i, _) in enumerate(trained)]
    assert scores["finetuned"]["mrr"] == pytest.approx(float(np.mean([1 / (r + 1) for r in ranks])), abs=1e-4)
    assert scores["finetuned"]["mrr"] > scores[base_space]["mrr"] + 0.02, {k: v["mrr"] for k, v in scores.items()}  # measured 0.100 -> 0.127
    # ... and `eval` says these are the pairs it was trained on.
    assert scores["finetuned"]["training_overlap"]["overlapping"] == 20 and "warning" in scores["finetuned"]["training_overlap"]


def test_freezing_keeps_a_tower_fixed(captioned, tmp_path: Path, tiny_clip: str) -> None:  # type: ignore[no-untyped-def]
    coll, pairs, _ = captioned
    out = tmp_path / "frozen"
    finetune(coll, pairs, out, config=FinetuneConfig(epochs=1, batch_size=8, lr=5e-3, freeze="vision", val_percent=0))
    before = load_file(str(Path(tiny_clip.removeprefix("hf:")) / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    vision = [k for k in before if k.startswith("vision_model.")]
    text = [k for k in before if k.startswith("text_model.")]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in text)


def test_a_killed_run_resumes_from_its_checkpoint(captioned, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coll, _, pairs_file = captioned
    out = tmp_path / "resumable"
    cmd = [sys.executable, "-m", "vitrina", "finetune", str(coll.path), "--pairs", str(pairs_file), "--out", str(out), "--epochs", "3",
           "--batch-size", "8", "--lr", "1e-3", "--patience", "5", "--json"]  # fmt: skip
    killed = subprocess.run(cmd, env={**os.environ, "VITRINA_FAULT": "after_checkpoint:2"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 137, killed.stderr
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch-*")) == ["epoch-001", "epoch-002"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["resumed_from"] == 2 and report["epochs_run"] == 3 and [h["epoch"] for h in report["history"]] == [1, 2, 3]
    assert np.isfinite([h["train_loss"] for h in report["history"]]).all()
    assert (out / "model.safetensors").exists() and (out / "preprocessor_config.json").exists()
