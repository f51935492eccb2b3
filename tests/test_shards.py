"""Shard sink and merge: workers write whole shards or nothing; a merge killed at any point and
run again stores every item exactly once, with the vectors a single-process run makes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import make_images
from tests.fakes import FAKE_SPEC, FakeEmbedder
from vitrina import open_collection
from vitrina.embedding import space_name_for
from vitrina.shards import embed_to_shard, finished_shards, merge_shards, read_shard

MERGE = "import sys; from vitrina import open_collection; from vitrina.shards import merge_shards; merge_shards(open_collection(sys.argv[1]), sys.argv[2])"


def test_shards_merge_exactly_once_when_the_merge_is_killed(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    make_images(folder, 12)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    coll = open_collection("sharded", create=True)
    coll.ingest(str(folder))
    space = space_name_for(FAKE_SPEC)
    rows = [dict(r) for r in coll._store.pending(space)]
    assert len(rows) == 13
    shards = tmp_path / "shards"
    for start in range(0, 13, 5):
        embed_to_shard(FakeEmbedder(), rows[start : start + 5], shards)
    (shards / ".part-x.tmp-1").mkdir()  # a worker killed while writing: ignored
    assert len(finished_shards(shards)) == 3
    assert sum(len(read_shard(p).failures) for p in finished_shards(shards)) == 1

    base = [sys.executable, "-c", MERGE, "sharded", str(shards)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    # Killed before the second shard's commit, then just after a commit and before its shard is deleted.
    for fault in ("after_vector_write:2", "after_shard_merge:1"):
        assert subprocess.run(base, env={**env, "VITRINA_FAULT": fault}, capture_output=True).returncode == 137
    done = subprocess.run(base, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert finished_shards(shards) == []

    coll = open_collection("sharded")
    sp = coll.space()
    assert sp.live == 12 and sp.rows == 12  # every vector exactly once, no dead rows
    assert [f["id"] if isinstance(f, dict) else f[0] for f in coll._store.failures()] == [
        r["id"] for r in rows if r["image"].endswith("broken.jpg")
    ]
    assert coll._store.pending(space) == []
    assert coll.info(check=True)["problems"] == []
    assert merge_shards(coll, shards).shards == 0  # nothing left to do

    single = open_collection("single", create=True, embedder=FakeEmbedder())
    single.index(str(folder), model=FAKE_SPEC)
    a_ids, a = coll.vectors()
    b_ids, b = single.vectors()
    assert sorted(a_ids) == sorted(b_ids)
    order = [b_ids.index(i) for i in a_ids]
    assert np.min(np.sum(a * b[order], axis=1)) >= 0.9999


def test_a_stale_shard_leaves_changed_items_pending(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    paths = make_images(folder, 4)
    coll = open_collection("stale", create=True)
    coll.ingest(str(folder))
    space = space_name_for(FAKE_SPEC)
    embed_to_shard(FakeEmbedder(), [dict(r) for r in coll._store.pending(space)], tmp_path / "shards")
    make_images(tmp_path / "other", 1, seed=9)[0].replace(paths[0])  # the file changes before the merge
    coll.ingest(str(folder))
    report = merge_shards(coll, tmp_path / "shards")
    assert report.vectors == 3 and report.stale == 1
    assert [r["image"] for r in coll._store.pending(space)] == [str(paths[0])]
