"""The embedded store on disk: schema migrations from older releases, and damage it must name."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vitrina import StoreCorrupt, open_collection
from vitrina.store import SCHEMA_VERSION, Store
from vitrina.vectors import HEADER_SIZE

DATA = Path(__file__).parent / "data"


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    """A collection written by vitrina 0.1 (schema 1): 12 items, one failed, one re-embedded
    (a dead row), tags that override a metadata key. See tests/data/PROVENANCE.md."""
    path = tmp_path / "v1"
    shutil.copytree(DATA / "v1-collection", path)
    return path


def _version(path: Path) -> int:
    db = sqlite3.connect(path / "collection.sqlite")
    try:
        return int(db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
    finally:
        db.close()


def test_a_release_1_collection_is_upgraded_on_open_and_answers_as_before(v1: Path) -> None:
    assert _version(v1) == 1
    coll = open_collection(v1)  # a reader: upgrades under the writer lock, then reads
    assert _version(v1) == SCHEMA_VERSION == coll.info()["schema_version"]
    assert len(coll) == 12 and coll.info()["by_status"] == {"ok": 11, "failed": 1}
    ids, matrix = coll.vectors()
    expected = np.load(DATA / "v1-collection-vectors.npy")  # live vectors of m00..m10, m03 re-embedded
    order = np.argsort(ids)
    assert [ids[i] for i in order] == [f"m{i:02d}" for i in range(11)]
    np.testing.assert_array_equal(matrix[order], expected)
    # The re-embedded item answers with its new vector; its dead row never shows.
    hits = coll.search_vectors(expected[3], limit=11)[0]
    assert hits[0].id == "m03" and hits[0].score == pytest.approx(1, abs=1e-6) and len(hits) == 11

    def found(*where: str) -> set[str]:
        return {h.id for h in coll.search_vectors(expected[0], where=list(where), limit=50)[0]}

    assert found("date>=1700", "date<1800") == {"m01", "m02", "m03", "m08", "m10"}  # "[1754?]", 1755, "1750-1760"
    assert found("place=boston") == {"m00", "m01", "m04", "m07"}
    assert found("place=Trondheim") == {"m06"}  # a tag wins over the metadata key of the same name
    assert found("subjects=list") == {"m06"}  # nested lists are flattened
    assert found("kind=blank") == {"m00", "m03", "m06", "m09"}
    assert coll.facets()["place"]["values"][0] == {"value": "Boston", "count": 4}  # Boston, boston: one value
    assert coll.item("m11").status == "failed" and coll.item("m11").reason == "corrupt"
    assert open_collection(v1).info(check=True)["problems"] == []


def test_a_migration_killed_before_its_commit_leaves_the_old_version(v1: Path) -> None:
    code = f"from vitrina import open_collection; open_collection({str(v1)!r})"
    env = {**os.environ, "VITRINA_FAULT": "before_migration_commit"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert out.returncode == 137
    assert _version(v1) == 1
    coll = open_collection(v1)
    assert _version(v1) == SCHEMA_VERSION and len(coll) == 12


def test_a_collection_from_a_newer_release_is_refused(v1: Path) -> None:
    db = sqlite3.connect(v1 / "collection.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreCorrupt, match="newer vitrina"):
        open_collection(v1)


def test_a_truncated_vector_file_is_named(v1: Path) -> None:
    open_collection(v1).close()
    path = v1 / "spaces" / "random.f32"
    with open(path, "r+b") as f:
        f.truncate(HEADER_SIZE + 5 * 16 * 4)  # 5 rows left of 12 committed
    coll = open_collection(v1)
    with pytest.raises(StoreCorrupt, match="truncated.*--reembed"):
        coll.search_vectors(np.ones(16))
    assert any("truncated" in p for p in coll.info(check=True)["problems"])


def test_a_vector_file_of_another_model_is_named(v1: Path) -> None:
    path = v1 / "spaces" / "random.f32"
    data = bytearray(path.read_bytes())
    header = data[:HEADER_SIZE].decode()
    data[:HEADER_SIZE] = header.replace('"revision": "r1"', '"revision": "r2"').encode()
    path.write_bytes(bytes(data))
    coll = open_collection(v1)
    with pytest.raises(StoreCorrupt, match="r2.*records.*r1|replaced or copied"):
        coll.search_vectors(np.ones(16))


def test_a_folder_that_is_not_a_collection_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    sqlite3.connect(tmp_path / "x" / "collection.sqlite").close()  # an empty database
    with pytest.raises(StoreCorrupt, match="not a vitrina collection"):
        Store(tmp_path / "x")
    assert json.loads(json.dumps(Store(tmp_path / "y", create=True).schema_version())) == SCHEMA_VERSION


def test_gathered_rows_are_the_stored_rows_by_reads_or_through_the_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vitrina.vectors as vectors_module
    from vitrina import Item, ModelFingerprint

    coll = open_collection(tmp_path / "g", create=True)
    ids = [f"i{n}" for n in range(3000)]
    data = np.random.default_rng(3).standard_normal((3000, 24)).astype(np.float32)
    with coll.writer():
        coll.add_items(Item(id=i, image=f"/x/{i}.jpg", fingerprint="1", source="s") for i in ids)
        coll.import_vectors(
            ids, data, fingerprint=ModelFingerprint(spec="t", revision="1", dim=24, preprocessing="none"), space="v"
        )
    store = coll._store
    vf = store.vector_file(store.space("v"))
    stored = vf.matrix(3000)
    rows = np.sort(np.random.default_rng(4).choice(3000, 300, replace=False))
    for reads in (4096, 10):  # concurrent preads; the map (more rows than the read limit)
        monkeypatch.setattr(vectors_module, "GATHER_READS", reads)
        for some in (rows, rows[:3], rows[-1:], np.array([], np.int64)):
            got = vf.gather(some)
            assert got.shape == (len(some), 24) and np.array_equal(got, np.asarray(stored[some]))


def test_a_cached_filter_mask_is_never_stale(tmp_path: Path) -> None:
    from vitrina import Item
    from vitrina.filters import parse_filters

    coll = open_collection(tmp_path / "m", create=True)
    coll.add_items(
        [Item(id=f"i{n}", image=f"/x/{n}.jpg", fingerprint="1", source="s", metadata={"n": n}) for n in range(10)]
    )
    reader, late = coll._store, list(parse_filters(["n>=5"]))
    first = reader.filter_mask(late)
    assert reader.filter_mask(late) is first and not first.flags.writeable  # kept, and nobody can change it
    passing = lambda store, mask: sorted(store.ids_of_rids(np.flatnonzero(mask[:-1]).tolist()).values())  # noqa: E731
    assert passing(reader, first) == ["i5", "i6", "i7", "i8", "i9"]
    coll.add_items([Item(id="i10", image="/x/10.jpg", fingerprint="1", source="s", metadata={"n": 10}),
                    Item(id="i6", image="/x/6.jpg", fingerprint="1", source="s", metadata={"n": 1})])  # another connection commits  # fmt: skip
    assert passing(reader, reader.filter_mask(late)) == ["i10", "i5", "i7", "i8", "i9"]
    writer = Store(coll.path, writer=True)  # this connection's own writes
    before = writer.filter_mask(late)
    assert passing(writer, before) == ["i10", "i5", "i7", "i8", "i9"]
    with writer.transaction():
        writer.db.execute("DELETE FROM items WHERE id = 'i7'")
    after = writer.filter_mask(late)
    assert after is not before and int(after.sum()) == 4 and passing(writer, after) == ["i10", "i5", "i8", "i9"]
