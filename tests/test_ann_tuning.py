"""The recall target of the approximate index (index/ann_tuning.py): tuning on probe queries,
the exact fallback, the stamp kept and re-measured on incremental adds, and `info`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vitrina import Item, ModelFingerprint, open_collection
from vitrina.cli import cli
from vitrina.index.ann import AnnIndex, AnnParams, ann_path, read_ann
from vitrina.index.ann_tuning import Probes, measure_gap, shifted, truth_rows, tune

faiss = pytest.importorskip("faiss")

DIM = 48
FP = ModelFingerprint(spec="hf:test/random", revision="r1", dim=DIM, preprocessing="none")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class _Cloud:
    """A small hard cloud: power-law cluster sizes, diffuse clusters of unequal spread, text
    queries off the cloud by a fixed gap aimed half at big clusters, half at any."""

    def __init__(self, clusters: int = 300, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.mean = _unit(rng.standard_normal(DIM))
        g = rng.standard_normal(DIM)
        self.gap = _unit(g - (g @ self.mean) * self.mean)
        self.centres = rng.standard_normal((clusters, DIM)).astype(np.float32) / np.sqrt(DIM)
        w = np.arange(1, clusters + 1, dtype=np.float64) ** -1.1
        self.weights = rng.permutation(w / w.sum())
        self.spreads = np.exp(rng.uniform(np.log(0.5), np.log(1.8), clusters)).astype(np.float32)

    def _lat(self, rng: np.random.Generator, n: int, uniform: float) -> np.ndarray:
        pick = np.where(rng.random(n) < uniform, rng.integers(0, len(self.weights), n),
                        rng.choice(len(self.weights), n, p=self.weights))  # fmt: skip
        return self.centres[pick] + self.spreads[pick, None] * rng.standard_normal((n, DIM)).astype(
            np.float32
        ) / np.sqrt(DIM)

    def images(self, n: int, seed: int = 1) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return _unit(0.9 * self.mean + self._lat(rng, n, 0.0))

    def texts(self, n: int, seed: int = 2) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return _unit(0.35 * self.mean + 1.1 * self.gap + self._lat(rng, n, 0.5))


def _index(vectors: np.ndarray, nlist: int) -> object:
    index = faiss.index_factory(DIM, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    return index


def _recall(index: object, vectors: np.ndarray, queries: np.ndarray, nprobe: int, candidates: int) -> float:
    truth = truth_rows(vectors, np.ones(len(vectors), bool), queries)
    _, found = index.search(queries, candidates, params=faiss.SearchParametersIVF(nprobe=nprobe))  # type: ignore[attr-defined]
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth)]))


@pytest.mark.slow
def test_tuning_reaches_the_target_where_the_default_settings_do_not() -> None:
    cloud = _Cloud()
    vectors = cloud.images(20_000)
    index = _index(vectors, 1024)
    defaults = AnnParams()
    held_out = cloud.texts(300, seed=11)
    assert _recall(index, vectors, held_out, defaults.nprobe, defaults.min_candidates) < 0.95  # the defaults miss
    probes = Probes(cloud.texts(200, seed=5), vectors[::100], "captions")
    searched: list[int] = []

    def timed(settings: dict[str, int], q: np.ndarray) -> float:  # the real faiss search, timed
        searched.append(settings["nprobe"])
        p = faiss.SearchParametersIVF(nprobe=settings["nprobe"])
        return _clocked(lambda: index.search(q[None], settings["candidates"], params=p))  # type: ignore[attr-defined]

    # A scan that takes a second a query (a space far larger than this one): the index must win.
    tuning = tune(index, "ivf", 1024, vectors, np.ones(len(vectors), bool), probes, 0.98, timed, lambda q: 1.0)
    assert tuning.mode == "ann" and tuning.recall["text"] >= 0.98 and tuning.recall["image"] >= 0.98
    assert tuning.settings["nprobe"] > defaults.nprobe and max(searched) == tuning.settings["nprobe"]
    assert _recall(index, vectors, held_out, tuning.settings["nprobe"], tuning.settings["candidates"]) >= 0.96
    assert [p[0] for p in tuning.curve] == sorted(p[0] for p in tuning.curve) and tuning.curve[-1][2] >= 0.98
    # Where reaching the target costs more than the scan, the answer is: search exactly.
    quick = tune(index, "ivf", 1024, vectors, np.ones(len(vectors), bool), probes, 0.98, timed, lambda q: 1e-6)
    assert quick.mode == "exact" and "searching exactly" in (quick.note or "")


def _clocked(fn) -> float:  # type: ignore[no-untyped-def]
    import time

    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_shifted_images_follow_the_measured_gap() -> None:
    cloud = _Cloud()
    images, texts = cloud.images(3000), cloud.texts(64)
    gap = measure_gap(texts, images)
    probes = shifted(images[:50], gap)
    # Shifted probes sit where text queries sit: their mean is the text mean's direction.
    assert float(_unit(probes.mean(0)) @ _unit(texts.mean(0))) > 0.95
    assert float(_unit(images[:50].mean(0)) @ _unit(texts.mean(0))) < 0.6


def _collection(path: Path, vectors: np.ndarray, start: int = 0):  # type: ignore[no-untyped-def]
    coll = open_collection(path, create=True)
    ids = [f"it-{i:05d}" for i in range(start, start + len(vectors))]
    with coll.writer():
        coll.add_items(
            [Item(id=i, image=f"/x/{i}.jpg", fingerprint="1", source="s", metadata={"n": k}) for k, i in enumerate(ids)]
        )
        coll.import_vectors(ids, vectors, fingerprint=FP, space="v")
    return coll, ids


@pytest.mark.slow
def test_small_space_falls_back_to_exact_and_the_stamp_is_kept_rechecked_and_shown(tmp_path: Path) -> None:
    cloud = _Cloud()
    coll, ids = _collection(tmp_path / "c", cloud.images(3000))
    report = coll.build_ann(threads=1)  # default target 0.98: on 3,000 rows a scan is faster than any index
    assert report.tuning["target"] == 0.98 and report.tuning["mode"] == "exact" and report.tuning["rows"] == 3000
    stamp, _ = read_ann(ann_path(coll._store, "v"))  # noqa: SLF001
    assert stamp["tuning"]["mode"] == "exact" and stamp["tuning"]["curve"]
    fresh = open_collection(coll.path)
    assert fresh.index_for().kind == "exact"
    q = cloud.texts(5, seed=9)
    exact = open_collection(coll.path, index="exact")
    assert [h.id for h in fresh.search_vectors(q[0], limit=10)[0]] == [
        h.id for h in exact.search_vectors(q[0], limit=10)[0]
    ]
    # Filtered search keeps the guarantee (exact here, and the selective-filter fallback stays).
    hits = fresh.search_vectors(q[1], limit=5, where=["n<100"])[0]
    assert hits and all(int(h.id[3:]) < 100 for h in hits)
    # Rows appended, the index brought up to date: the tuning is measured again on the new rows.
    _collection(tmp_path / "c", cloud.images(400, seed=4), start=3000)
    again = coll.build_ann(threads=1)
    assert not again.rebuilt and again.tuning["rows"] == 3400
    assert read_ann(ann_path(coll._store, "v"))[0]["tuning"]["rows"] == 3400  # noqa: SLF001
    # info shows the target, the settings and the measured recall
    runner = CliRunner()
    out = runner.invoke(cli, ["info", str(coll.path)])
    assert out.exit_code == 0 and "target: recall@10 0.98" in out.output and "searching exactly" in out.output, (
        out.output
    )
    info = json.loads(runner.invoke(cli, ["info", str(coll.path), "--json"]).output)
    tuning = info["spaces"][0]["ann"]["tuning"]
    assert tuning["mode"] == "exact" and "nprobe" in tuning["settings"] and "text" in tuning["recall"]


def test_without_tuning_the_fixed_settings_are_used(tmp_path: Path) -> None:
    coll, _ = _collection(tmp_path / "c", _Cloud().images(1500))
    runner = CliRunner()
    out = runner.invoke(cli, ["index-ann", str(coll.path), "--target-recall", "0", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["tuning"] is None
    assert open_collection(coll.path).index_for().kind == "ann:ivf-pq4"
    out = runner.invoke(cli, ["index-ann", str(coll.path), "--rebuild", "--max-latency-ms", "0.001"])
    assert out.exit_code == 0 and "target: recall@10 0.98" in out.output, out.output


def test_candidates_read_through_the_map_or_with_preads_give_the_same_hits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vitrina.index.ann import fits_in_memory

    cloud = _Cloud()
    coll, _ = _collection(tmp_path / "c", cloud.images(1200))
    coll.build_ann(threads=1, target_recall=None)
    q = cloud.texts(3, seed=8)
    answers = []
    for way in ("map", "pread"):
        monkeypatch.setenv("VITRINA_ANN_GATHER", way)
        assert fits_in_memory(10**15) == (way == "map")
        index = AnnIndex(coll._store, "v", AnnParams(exact_below=0, selective=0.0))  # noqa: SLF001 - the index path itself
        answers.append([list(zip(m.ids, np.round(m.scores, 5).tolist())) for m in index.search(q, limit=10)])
    assert answers[0] == answers[1] and len(answers[0][0]) == 10
    monkeypatch.delenv("VITRINA_ANN_GATHER")
    assert fits_in_memory(1 << 20) and not fits_in_memory(1 << 60)


def test_hnsw_tunes_ef_search_to_the_target() -> None:
    cloud = _Cloud()
    vectors = cloud.images(4000)
    index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.add(vectors)
    probes = Probes(cloud.texts(100, seed=5), vectors[::40], "captions")

    def timed(settings: dict[str, int], q: np.ndarray) -> float:
        p = faiss.SearchParametersHNSW(efSearch=max(settings["efSearch"], settings["candidates"]))
        return _clocked(lambda: index.search(q[None], settings["candidates"], params=p))

    tuning = tune(index, "hnsw", 0, vectors, np.ones(len(vectors), bool), probes, 0.98, timed, lambda q: 1.0)
    assert tuning.mode == "ann" and tuning.knob == "efSearch" and min(tuning.recall.values()) >= 0.98
    assert set(tuning.settings) == {"efSearch", "candidates"}
    assert AnnParams(structure="hnsw").tuned(tuning.settings).ef_search == tuning.settings["efSearch"]


def test_shifted_image_probes_aim_higher_and_say_so() -> None:
    """Without captions the probes are shifted images, which overstate recall: the tuner asks more
    of them than the target (a third of the misses), the stamp and ``info`` say so."""
    from vitrina.index.ann_tuning import aim_for, describe_tuning

    cloud = _Cloud()
    vectors = cloud.images(4000)
    index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.add(vectors)
    texts = cloud.texts(100, seed=5)

    def timed(settings: dict[str, int], q: np.ndarray) -> float:  # a cost that grows with the knob
        return settings["efSearch"] * 1e-6 + settings["candidates"] * 1e-7

    def run(shifted_probes: bool):  # type: ignore[no-untyped-def]
        probes = Probes(texts, vectors[::40], "p", shifted=shifted_probes)
        return tune(index, "hnsw", 0, vectors, np.ones(len(vectors), bool), probes, 0.9, timed, lambda q: 1.0)

    plain, careful = run(False), run(True)
    assert plain.aim == 0.9 and plain.probe_kind == "text"
    assert careful.aim == aim_for(0.9, Probes(texts, vectors, "p", shifted=True)) == pytest.approx(0.9667, abs=1e-4)
    assert careful.probe_kind == "shifted" and careful.mode == "ann" and min(careful.recall.values()) >= careful.aim
    knobs = [(t.settings["efSearch"], t.settings["candidates"]) for t in (plain, careful)]
    assert knobs[1] > knobs[0] and min(plain.recall.values()) < careful.aim  # the target alone would stop earlier
    stamp = careful.to_stamp()
    assert stamp["probe_kind"] == "shifted" and "aimed at 0.9667" in describe_tuning(stamp)
    assert "aimed at" not in describe_tuning(plain.to_stamp())


def test_one_index_per_process_shared_by_threads_and_collections(tmp_path: Path) -> None:
    import threading

    from vitrina.index import ann

    cloud = _Cloud()
    coll, _ = _collection(tmp_path / "c", cloud.images(1500))
    coll.build_ann(threads=1, target_recall=None)
    q = cloud.texts(1, seed=8)[0]
    loads: list[Path] = []
    real = ann.read_ann

    def counting(path: Path, **kw):  # type: ignore[no-untyped-def]
        loads.append(path)
        return real(path, **kw)

    ann.read_ann = counting  # count the real loads
    try:
        results: list[list[str]] = []

        def serve() -> None:  # what a server's worker thread does: its own collection, a query
            results.append([h.id for h in open_collection(coll.path).search_vectors(q, limit=5)[0]])

        threads = [threading.Thread(target=serve) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 6 and all(r == results[0] for r in results)
        assert len(loads) <= 1  # loaded once (or already, by the build's process), never per thread
        coll.build_ann(threads=1, target_recall=None, rebuild=True)  # a new file: loaded again, once
        for _ in range(3):
            open_collection(coll.path).search_vectors(q, limit=5)
        assert len(loads) <= 2
    finally:
        ann.read_ann = real
