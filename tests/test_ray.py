"""Indexing on a local Ray cluster with the tiny model: the vectors of a single-process run, a
worker killed mid-job and a driver killed and restarted, every item stored exactly once.

Skipped without Ray (the `ray` extra is not in the test extras: starting a cluster and its
workers takes about a minute on a small machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_images
from vitrina import open_collection

ray = pytest.importorskip("ray")
from vitrina.ray_runner import index_on_ray  # noqa: E402

SRC = str(Path(__file__).resolve().parent.parent / "src")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    arm = tmp_path_factory.mktemp("ray-fault") / "arm"  # exists = the next worker to embed dies
    env = {"PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "VITRINA_FAULT": f"ray_embed:{arm}"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield arm
    ray.shutdown()


def folder_with_a_broken_image(folder: Path, n: int) -> Path:
    make_images(folder, n)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return folder


def assert_same_vectors(a_coll, b_coll) -> None:  # type: ignore[no-untyped-def]
    a_ids, a = a_coll.vectors()
    b_ids, b = b_coll.vectors()
    assert sorted(a_ids) == sorted(b_ids)
    order = [b_ids.index(i) for i in a_ids]
    assert np.min(np.sum(a * b[order], axis=1)) >= 0.9999


def test_ray_equals_a_single_process_run_even_when_a_worker_dies(cluster: Path, tmp_path: Path, tiny_clip: str) -> None:
    folder = folder_with_a_broken_image(tmp_path / "scans", 9)
    single = open_collection("single", create=True)
    single.index(str(folder), model=tiny_clip)
    coll = open_collection("onray", create=True)
    coll.ingest(str(folder))
    cluster.touch()  # one worker process is killed in the middle of the job
    report = index_on_ray(coll, model=tiny_clip, part_size=2)
    assert not cluster.exists()  # a worker did die
    assert report.pending == 10 and report.embedded == 9 and report.failed == 1 and report.parts == 5
    sp = coll.space()
    assert sp.live == 9 and sp.rows == 9  # exactly once
    assert [f["id"] for f in coll._store.failures()] == [f["id"] for f in single._store.failures()]
    assert coll.info(check=True)["problems"] == []
    assert list((coll.path / "shards").iterdir()) == []
    assert_same_vectors(coll, single)


def test_a_killed_driver_resumes_without_loss_or_duplicates(cluster: Path, tmp_path: Path, tiny_clip: str) -> None:
    folder = folder_with_a_broken_image(tmp_path / "scans", 8)
    address = ray.get_runtime_context().gcs_address
    base = [sys.executable, "-m", "vitrina", "index", str(folder), "-c", "driven", "-m", tiny_clip, "--ray", address, "--part-size", "2", "-q", "--json"]
    env = {**os.environ, "PYTHONPATH": SRC}
    killed = subprocess.run(base, env={**env, "VITRINA_FAULT": "after_shard_merge:2"}, capture_output=True, text=True)
    assert killed.returncode == 137, killed.stderr
    done = subprocess.run(base, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert 0 < report["pending"] < 9  # the killed run's merged shards were kept
    coll = open_collection("driven")
    sp = coll.space()
    assert sp.live == 8 and sp.rows == 8 and len(coll._store.failures()) == 1
    assert coll._store.pending(sp.name) == []
    single = open_collection("single2", create=True)
    single.index(str(folder), model=tiny_clip)
    assert_same_vectors(coll, single)
