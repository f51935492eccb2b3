"""Noise and silence: normal commands print vitrina's own words only; summaries say what they did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import build_tiny_clip, make_images

NOISE = ("LOAD REPORT", "Loading weights", "WARNING clustering", "please provide at least", "Warning:", "warnings.warn",
         "FutureWarning", "UserWarning", "DeprecationWarning", "huggingface/tokenizers")  # fmt: skip


def _vitrina(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vitrina", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _clip_with_a_load_report(path: Path) -> Path:
    """A tiny CLIP checkpoint whose file misses one weight and holds a stray one: transformers
    prints a load report and a weight-loading bar for it unless told not to."""
    from safetensors.numpy import load_file, save_file

    build_tiny_clip(path)
    weights = load_file(path / "model.safetensors")
    del weights["logit_scale"]
    weights["stray.weight"] = np.zeros(3, dtype=np.float32)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    return path


@pytest.mark.slow
def test_index_search_and_index_ann_print_no_library_chatter(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    model = _clip_with_a_load_report(tmp_path / "clip")
    make_images(tmp_path / "scans", 30)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop("TOKENIZERS_PARALLELISM", None)
    coll = str(tmp_path / "coll")
    runs = [
        _vitrina("index", str(tmp_path / "scans"), "--collection", coll, "--model", f"hf:{model}", "-q", env=env),
        _vitrina("search", coll, "a map", env=env),
        _vitrina("index-ann", coll, env=env),  # 30 rows into 21 IVF lists: faiss warns unless told
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
        for noise in NOISE:
            assert noise not in run.stderr and noise not in run.stdout, f"{run.args[3:5]}: {noise!r} in\n{run.stderr}"
    assert "30 embedded" in runs[0].stderr
    assert runs[2].stdout.count("searching exactly") <= 1 and "searching exactly" not in runs[2].stderr  # said once


def test_index_compact_says_what_it_reclaimed(tmp_path: Path, tiny_clip: str) -> None:
    from click.testing import CliRunner

    from vitrina.cli import cli

    scans, coll = tmp_path / "scans", str(tmp_path / "coll")
    files = make_images(scans, 12)
    runner = CliRunner()
    first = runner.invoke(cli, ["index", str(scans), "--collection", coll, "--model", tiny_clip, "-q", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["compacted"] == {"rows": 0, "bytes": 0, "asked": False}

    def vector_bytes() -> int:
        return sum(f.stat().st_size for f in (tmp_path / "coll" / "spaces").glob("*.f32"))

    for f in files[:3]:
        f.unlink()
    before = vector_bytes()
    run = runner.invoke(cli, ["index", str(scans), "--collection", coll, "-q", "--json", "--compact"])
    assert run.exit_code == 0, run.output
    compacted = json.loads(run.stdout)["compacted"]
    assert compacted["rows"] == 3 and compacted["asked"]
    assert compacted["bytes"] == before - vector_bytes()  # what the disk really got back

    for f in files[3:5]:
        f.unlink()
    text = runner.invoke(cli, ["index", str(scans), "--collection", coll, "-q", "--compact"])
    assert text.exit_code == 0, text.output
    assert "2 removed" in text.stderr and "compacted the vector file: 2 dead rows" in text.stderr
    again = runner.invoke(cli, ["index", str(scans), "--collection", coll, "-q", "--compact"])
    assert "compacted the vector file: nothing to reclaim" in again.stderr


def test_eval_exact_image_progress_is_one_message_a_line(tmp_path: Path, tiny_clip: str) -> None:
    from click.testing import CliRunner

    from vitrina.cli import cli

    scans, coll = tmp_path / "scans", str(tmp_path / "coll")
    make_images(scans, 30)
    runner = CliRunner()
    assert runner.invoke(cli, ["index", str(scans), "--collection", coll, "--model", tiny_clip, "-q"]).exit_code == 0
    run = runner.invoke(cli, ["eval", coll, "--exact-image", "--sample", "20"])  # 100 perturbed copies: 2 batches each
    assert run.exit_code == 0, run.output
    progress = [line for line in run.stderr.splitlines() if "exact image" in line]
    assert progress and "\r" not in run.stderr
    assert all(line.count("exact image") == 1 for line in progress), run.stderr
    assert progress[0] == "tiny-clip0: exact image: 230/230" and progress[1].startswith(
        "Warning:"
    )  # one step: 100 queries, then the baseline's 100 + 30
