"""The approximate index file: freshness, the exact tail, staleness, kills during a build, CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vitrina import Item, ModelFingerprint, open_collection
from vitrina.cli import cli
from vitrina.index.ann import AnnIndex, AnnParams, ann_path
from vitrina.index.ann_build import build_ann
from vitrina.store import Store

pytest.importorskip("faiss")

DIM = 32
FP = ModelFingerprint(spec="hf:test/random", revision="r1", dim=DIM, preprocessing="none")
SMALL = AnnParams(nlist=16, nprobe=16, exact_below=0, selective=0.0)


def _collection(path: Path, n: int, seed: int = 0, start: int = 0):  # type: ignore[no-untyped-def]
    coll = open_collection(path, create=True)
    ids = [f"it-{i:05d}" for i in range(start, start + n)]
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    with coll.writer():
        coll.add_items(
            [
                Item(id=i, image=f"/x/{i}.jpg", fingerprint="1", source="s", metadata={"n": k + start})
                for k, i in enumerate(ids)
            ]
        )
        coll.import_vectors(ids, vectors, fingerprint=FP, space="v")
    return coll, ids, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _exact_ids(coll, q, **kw):  # type: ignore[no-untyped-def]
    return [h.id for h in open_collection(coll.path, index="exact").search_vectors(q, **kw)[0]]


def test_fresh_index_is_used_new_rows_are_scanned_exactly_and_added_incrementally(tmp_path: Path) -> None:
    coll, ids, unit = _collection(tmp_path / "c", 2000)
    report = coll.build_ann(threads=1, target_recall=None)  # fixed settings: on 2,000 rows a scan is faster
    assert (
        report.rebuilt and report.rows == 2000 and report.recall["image"] >= 0.9 and report.recall["text-like"] >= 0.8
    )
    index = coll.index_for()
    assert index.kind == "ann:ivf-pq4"
    hits = coll.search_vectors(unit[5], limit=10)[0]
    assert hits[0].id == ids[5] and hits[0].score == pytest.approx(1.0, abs=1e-5)  # exact re-ranking: the exact cosine
    info = coll.info()["spaces"][0]
    assert (
        info["index"] == "ann:ivf-pq4"
        and info["ann"]["status"] == "fresh"
        and info["ann"]["recall_at_10"]["text-like"] >= 0.8
    )

    _, new_ids, new_unit = _collection(tmp_path / "c", 300, seed=1, start=2000)  # appended after the build
    hits = coll.search_vectors(new_unit[7], limit=3)[0]
    assert hits[0].id == new_ids[7]  # the tail past the index is searched exactly
    assert coll.info()["spaces"][0]["ann"]["behind"] == 300
    again = coll.build_ann(target_recall=None)
    assert not again.rebuilt and again.added == 300 and again.rows == 2300
    assert coll.info()["spaces"][0]["ann"]["status"] == "fresh"
    assert coll.search_vectors(new_unit[7], limit=1)[0][0].id == new_ids[7]


def test_an_index_built_by_the_old_default_still_loads_searches_and_grows(tmp_path: Path) -> None:
    """Indexes built before pq4 became the default (IVF + sq8, an older stamp) keep working as they are:
    searched, shown, and grown incrementally as sq8; only --rebuild moves them to the new default."""
    from vitrina.index.ann import read_ann, write_ann

    coll, ids, unit = _collection(tmp_path / "c", 2000)
    build_ann(Store(coll.path), "v", AnnParams(structure="ivf", codes="sq8"), target_recall=None)
    path = ann_path(Store(coll.path), "v")
    stamp, index = read_ann(path)
    assert stamp["params"]["codes"] == "sq8" and type(index).__name__ == "IndexIVFScalarQuantizer"
    stamp["recall"].pop("sample", None)  # a stamp as an older vitrina wrote it: no aim, no probe kind
    stamp["tuning"] = {"target": 0.98, "mode": "ann", "settings": {"nprobe": 16, "candidates": 100}, "recall": {"text": 0.99, "image": 1.0},
                       "p50_ms": 0.5, "exact_p50_ms": 1.0, "probes": "captions", "queries": 200, "rows": 2000, "curve": [], "knob": "nprobe"}  # fmt: skip
    write_ann(path, stamp, index)
    fresh = open_collection(coll.path)
    assert fresh.index_for().kind == "ann:ivf-sq8" and fresh.info()["spaces"][0]["ann"]["status"] == "fresh"
    hits = fresh.search_vectors(unit[5], limit=10)[0]
    assert hits[0].id == ids[5] and len(hits) == 10
    summary = fresh.info()["spaces"][0]["ann"]["tuning"]["summary"]
    assert "tuned nprobe 16, candidates 100" in summary and "aimed at" not in summary
    _collection(tmp_path / "c", 100, seed=1, start=2000)
    grown = open_collection(coll.path).build_ann(target_recall=None)
    assert not grown.rebuilt and grown.added == 100 and grown.kind == "ivf-sq8"
    rebuilt = open_collection(coll.path).build_ann(rebuild=True, target_recall=None)
    assert rebuilt.rebuilt and rebuilt.kind == "ivf-pq4" == AnnParams().kind
    assert open_collection(coll.path).search_vectors(unit[5], limit=1)[0][0].id == ids[5]


def test_codes_and_their_faiss_specs() -> None:
    from vitrina.errors import ConfigError

    assert AnnParams().spec(100_000, 512) == "IVF1264,PQ256x4fsr"  # pq4: one 4-bit sub-quantiser per 2 dims
    assert AnnParams(codes="sq8").spec(100_000, 512) == "IVF1264,SQ8"  # the default before
    assert AnnParams(structure="hnsw").spec(100_000, 512) == "HNSW32,SQ8"
    with pytest.raises(ConfigError, match="pq4"):
        AnnParams(structure="hnsw", codes="pq4").spec(1000, 512)
    with pytest.raises(ConfigError, match="even dimension"):
        AnnParams().spec(1000, 31)


def test_filters_and_dead_rows_hold_with_the_index(tmp_path: Path) -> None:
    coll, ids, unit = _collection(tmp_path / "c", 3000)
    build_ann(Store(coll.path), "v", SMALL)
    with coll.writer():  # re-embed some items after the build: their indexed rows are dead
        coll.import_vectors(ids[:50], unit[100:150], fingerprint=FP, space="v")
    index = AnnIndex(Store(coll.path), "v", SMALL)
    q = unit[120]
    got = index.search(q[None], limit=5)[0]
    assert got.considered == 3000 and got.ids[0] in {ids[20], ids[120]}
    for where, selective in ((["n<1500"], 0.0), (["n<40"], 0.0), (["n<1500"], 0.9)):
        params = AnnParams(**{**SMALL.__dict__, "selective": selective})
        got = AnnIndex(Store(coll.path), "v", params).search(
            q[None], filters=[__import__("vitrina").Filter.parse(w) for w in where], limit=10
        )[0]
        want = _exact_ids(coll, q, where=where, limit=10)
        limit = int(where[0][2:])
        assert got.considered == limit and all(int(i[3:]) < limit for i in got.ids)
        assert len(set(got.ids) & set(want)) >= 8


def test_a_stale_index_is_ignored_with_a_notice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    coll, ids, unit = _collection(tmp_path / "c", 500)
    coll.build_ann(target_recall=None)  # the index searched (tuned, a scan of 500 rows would win)
    store = Store(coll.path)
    with coll.writer() as w:  # re-embed the whole space: a new generation
        w._writing.drop_space("v")  # type: ignore[union-attr]
    _collection(tmp_path / "c", 500, seed=9)
    with caplog.at_level(logging.WARNING, logger="vitrina.index"):
        fresh = open_collection(coll.path)
        assert fresh.index_for().kind == "exact"
        other = np.random.default_rng(9).standard_normal((500, DIM)).astype(np.float32)
        q = other[3] / np.linalg.norm(other[3])
        assert fresh.search_vectors(q, limit=1)[0][0].id == ids[3]
    assert "stale" in caplog.text and "re-embedded" in caplog.text
    assert fresh.info()["spaces"][0]["ann"]["status"] == "stale"
    ann_path(store, "v").write_bytes(b"garbage")
    assert open_collection(coll.path).search_vectors(q, limit=1)[0][0].id == ids[3]


@pytest.mark.parametrize("point", ["ann_after_chunk:2", "ann_before_fsync", "ann_before_rename"])
@pytest.mark.slow
def test_killing_a_build_leaves_the_collection_searchable(tmp_path: Path, point: str) -> None:
    coll, ids, unit = _collection(tmp_path / "c", 1200)
    coll.build_ann(structure="hnsw", codes="flat")  # an older index: it must survive the killed build
    _collection(tmp_path / "c", 120_000 - 1200 if point.startswith("ann_after_chunk") else 10, seed=3, start=1200)
    before = ann_path(Store(coll.path), "v").read_bytes()
    env = {**os.environ, "VITRINA_FAULT": point, "PYTHONPATH": os.pathsep.join(sys.path)}
    code = (
        f"from vitrina import open_collection; open_collection({str(coll.path)!r}).build_ann(rebuild=True, threads=1)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr
    assert ann_path(Store(coll.path), "v").read_bytes() == before  # the old index, untouched
    fresh = open_collection(coll.path)
    assert fresh.search_vectors(unit[4], limit=1)[0][0].id == ids[4]
    report = fresh.build_ann(rebuild=True)
    assert report.rebuilt and not list(ann_path(Store(coll.path), "v").parent.glob(".*.tmp"))
    assert fresh.search_vectors(unit[4], limit=1)[0][0].id == ids[4]


def test_cli_index_ann_info_and_exact_search(tmp_path: Path) -> None:
    coll, ids, unit = _collection(tmp_path / "c", 800)
    runner = CliRunner()
    out = runner.invoke(cli, ["index-ann", str(coll.path), "--nlist", "24", "--target-recall", "0", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["rows"] == 800
    out = runner.invoke(cli, ["info", str(coll.path)])
    assert out.exit_code == 0 and "ann:ivf-pq4 (fresh" in out.output and "recall@10" in out.output
    info = json.loads(runner.invoke(cli, ["info", str(coll.path), "--json"]).output)
    assert info["spaces"][0]["ann"]["recall_at_10"]["image"] > 0.5
    assert info["spaces"][0]["ann"]["params"]["nlist"] == 24
    assert open_collection(coll.path, index="exact").index_for().kind == "exact"


def test_qdrant_sync_is_incremental_resumable_and_searchable(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_client")
    from vitrina.index.qdrant import sync

    coll, ids, unit = _collection(tmp_path / "c", 300)
    target = f"qdrant:{tmp_path / 'q'}#maps"
    env = {**os.environ, "VITRINA_FAULT": "qdrant_after_batch:1", "PYTHONPATH": os.pathsep.join(sys.path)}
    code = f"from vitrina.index.qdrant import sync; from vitrina.store import Store; from pathlib import Path; sync(Store(Path({str(coll.path)!r})), 'v', {target!r}, batch=100)"
    assert (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120).returncode == 137
    )  # killed after one batch
    first = sync(Store(coll.path), "v", target)
    assert (first.new, first.unchanged, first.points) == (200, 100, 300)
    with coll.writer():
        coll.add_items(
            [Item(id=ids[0], image=f"/x/{ids[0]}.jpg", fingerprint="1", source="s", metadata={"n": 9999})]
        )  # metadata changed
        coll.import_vectors(ids[1:3], unit[10:12], fingerprint=FP, space="v")  # re-embedded
    _collection(tmp_path / "c", 5, seed=4, start=300)  # new
    with coll.writer() as w:
        w._writing.remove_missing("s", (set(ids) - {ids[3], ids[4]}) | {f"it-{i:05d}" for i in range(300, 305)})  # type: ignore[union-attr]  # removed: ids[3:5]
    again = sync(Store(coll.path), "v", target)
    assert (again.new, again.changed, again.removed, again.points) == (5, 3, 2, 303)
    out = CliRunner().invoke(
        cli,
        [
            "search",
            str(coll.path),
            "--image",
            ids[10],
            "--where",
            "n>=9999",
            "--index",
            target,
            "--include-self",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    assert [h["id"] for h in json.loads(out.output)["hits"]] == [ids[0]]
    # `vitrina serve --index` answers from the same copy (an item query needs no model).
    from vitrina.service.core import SearchParams, Service, ServiceConfig

    service = Service(ServiceConfig(collection=str(coll.path), index=target))
    assert service.collection().index_for().kind.startswith("qdrant")
    hits = service.search(SearchParams(item=[ids[10]], where=["n>=9999"]))
    assert [h.id for h in hits] == [ids[0]]


def test_recall_is_measured_on_the_items_own_captions_when_the_model_loads(
    tmp_path: Path, fake_embedder, caplog
) -> None:  # type: ignore[no-untyped-def]
    coll = open_collection(tmp_path / "c", create=True)
    ids = [f"it-{i:04d}" for i in range(600)]
    vectors = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32)
    with coll.writer():
        coll.add_items(
            [
                Item(id=i, image=f"/x/{i}.jpg", fingerprint="1", source="s", metadata={"title": f"map number {k}"})
                for k, i in enumerate(ids)
            ]
        )
        coll.import_vectors(ids, vectors, fingerprint=fake_embedder.fingerprint, space="v")
    coll.use_embedder(fake_embedder)
    report = coll.build_ann(caption_queries=50, threads=1)
    assert 0.0 <= report.recall["captions"] <= 1.0 and report.recall["image"] > 0.5
    assert "captions" in open_collection(coll.path).info()["spaces"][0]["ann"]["recall_at_10"]
    # Without a model (here: a spec that cannot load offline) the build still completes, with a notice.
    other = open_collection(tmp_path / "d", create=True)
    with other.writer():
        other.add_items(
            [
                Item(id=i, image=f"/x/{i}.jpg", fingerprint="1", source="s", metadata={"title": "a map"})
                for i in ids[:300]
            ]
        )
        other.import_vectors(
            ids[:300],
            vectors[:300],
            fingerprint=ModelFingerprint(spec="hf:test/random", revision="r1", dim=16, preprocessing="none"),
            space="v",
        )
    report = other.build_ann(caption_queries=50, threads=1)
    assert "captions" not in report.recall and "did not load" in caplog.text


def test_a_large_batch_is_scored_in_blocks_of_rows_with_the_same_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vitrina.index.exact as exact
    from vitrina.filters import parse_filters

    coll, ids, unit = _collection(tmp_path / "c", 500)
    index = open_collection(coll.path, index="exact").index_for()
    queries = unit[:7] + 0.1 * unit[7:14]
    exclude = [{ids[i]} for i in range(7)]
    odd = list(parse_filters(["n>=101"]))
    whole = [index.search(queries, exclude=exclude, limit=5, offset=1), index.search(queries[:1], limit=8, filters=odd)]
    # 7 queries x 60 rows of scores a block: 9 blocks, the best so far kept across them (one pass over the vectors)
    monkeypatch.setattr(exact, "SCORE_BYTES", 4 * 7 * 60)
    blocked = [
        index.search(queries, exclude=exclude, limit=5, offset=1),
        index.search(queries[:1], limit=8, filters=odd),
    ]
    for a, b in zip(blocked, whole, strict=True):
        assert [m.ids for m in a] == [m.ids for m in b]
        assert np.allclose([m.scores for m in a], [m.scores for m in b], atol=1e-6)  # BLAS rounds by batch shape
    assert all(ids[i] not in m.ids for i, m in enumerate(blocked[0])) and len(blocked[0]) == 7
    assert all(int(i[3:]) >= 101 for i in blocked[1][0].ids) and len(blocked[1][0].ids) == 8
