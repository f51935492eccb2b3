"""Qdrant's own engine in this process (qdrant-edge-py) as a sync target: ``qdrant+edge:///FOLDER#NAME``.

The congruence suite (test_congruence.py) runs every filter against it; here: the target form, a
sync that pages (chunks and pages far smaller than the space, regions included) and stays
incremental, payload indexes for the filtered keys, and the command line end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.fakes import FAKE_SPEC
from vitrina import ConfigError, open_collection
from vitrina.cli import cli
from vitrina.regions import RegionPolicy

pytest.importorskip("qdrant_client")
pytest.importorskip("qdrant_edge")

from vitrina.index.qdrant import QdrantIndex, connect, field, is_target, sync  # noqa: E402


@pytest.fixture
def edge_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder for edge shards, in memory where possible (the engine syncs each index it creates)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix="vitrina-edge-", dir=shm))
        yield folder
        shutil.rmtree(folder, ignore_errors=True)
    else:
        yield tmp_path / "edge"


def test_edge_targets_name_a_folder_and_a_collection(tmp_path: Path) -> None:
    assert is_target("qdrant+edge:///data/q#maps") and is_target("qdrant+edge:q")
    client, name = connect(f"qdrant+edge://{tmp_path}#maps", "default")
    assert (client.root, name) == (tmp_path, "maps")
    client, name = connect("qdrant+edge:rel/folder", "c-space")
    assert (str(client.root), name) == ("rel/folder", "c-space")
    with pytest.raises(ConfigError, match="names no folder"):
        connect("qdrant+edge://#x", "d")


def _page(path: Path, seed: int) -> None:
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    Image.fromarray(blocks).resize((300, 200), Image.Resampling.NEAREST).save(path)


def test_edge_sync_pages_through_items_and_regions_and_stays_incremental(
    tmp_path: Path, edge_dir: Path, fake_embedder
) -> None:  # type: ignore[no-untyped-def]
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(4):
        _page(images / f"page{i}.png", i)
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    coll.index(str(images), model=FAKE_SPEC, regions="grid")
    store, space = coll._store, coll._store.space().name
    per_page = len(RegionPolicy("grid").boxes(300, 200))
    target = f"qdrant+edge://{edge_dir}#pages"
    first = sync(store, space, target, batch=4, page=3)  # chunks and pages much smaller than the space
    assert (first.new, first.removed, first.points) == (4 * (1 + per_page), 0, 4 * (1 + per_page))
    again = sync(store, space, target, batch=5, page=7)  # the same point ids in other chunkings: nothing to do
    assert (again.new, again.changed, again.removed, again.unchanged) == (0, 0, 0, 4 * (1 + per_page))
    # Payload indexes: rid, and the three fields of every filtered key (metadata and columns).
    client, name = connect(target, "")
    schema = client.get_collection(name).payload_schema
    assert {"rid", field("t", "id"), field("n", "id"), field("v", "id"), field("t", "source")} <= set(schema)
    client.close()
    (images / "page2.png").unlink()  # an item goes: its point and its regions' points go
    coll.index(str(images), model=FAKE_SPEC, regions="grid")
    gone = sync(store, space, target, batch=4, page=3)
    assert (gone.removed, gone.points, gone.new) == (1 + per_page, 3 * (1 + per_page), 0)
    index = QdrantIndex(store, space, target)
    other = QdrantIndex(store, space, target)  # the engine locks its folder: one open shard per process
    try:
        hits = index.search(store.space_view(space).vectors(store.space(space))[:1], limit=500)[0]
        assert "page2.png" not in hits.ids and len(hits.ids) == 3 * (1 + per_page)  # items and regions
        assert other.count() == 3
    finally:
        index.client.close()
        other.client.close()
    coll.close()


def test_sync_and_search_through_the_command_line(tmp_path: Path, edge_dir: Path) -> None:
    coll = open_collection(tmp_path / "c", create=True)
    from vitrina import Item, ModelFingerprint

    fp = ModelFingerprint(spec="hf:test/random", revision="r1", dim=8, preprocessing="none")
    ids = [f"it-{i}" for i in range(40)]
    vectors = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    with coll.writer():
        coll.add_items([Item(id=i, image=f"/x/{i}.jpg", fingerprint="1", metadata={"title": f"Bergen harbour {k}"})
                        for k, i in enumerate(ids)])  # fmt: skip
        coll.import_vectors(ids, vectors, fingerprint=fp, space="v")
    coll.close()
    target = f"qdrant+edge://{edge_dir}#maps"
    run = CliRunner().invoke(cli, ["sync", str(tmp_path / "c"), target])
    assert run.exit_code == 0 and "40 new" in run.output, run.output
    run = CliRunner().invoke(cli, ["search", str(tmp_path / "c"), "--image", "it-3", "--where", "title~OUR 1",
                                   "--index", target, "--json", "--limit", "20"])  # fmt: skip
    assert run.exit_code == 0, run.output
    got = [h["id"] for h in json.loads(run.output)["hits"]]
    assert sorted(got) == sorted(f"it-{k}" for k in [1, *range(10, 20)])  # "harbour 1", "harbour 10".."19"
