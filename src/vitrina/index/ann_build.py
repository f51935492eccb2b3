"""Building the approximate index (``build_ann``): the faiss index of ``AnnParams.spec`` trained on
a sample, filled in chunks (or only the rows appended since the last build), tuned to a recall target
(``ann_tuning``) and written beside the vectors (``ann.write_ann``: all or nothing). Searching it is
``ann.AnnIndex``'s.

The default (measured in ``benchmarks/ann_structures.py``, docs/benchmarks.md "Which index meets the
target"): IVF with 4·√rows lists and 4-bit PQ fast-scan codes, one sub-quantiser per 2 dimensions
(``pq4``). On heavy-tailed, diffuse clouds queried with text, IVF must scan about a quarter of its
lists whatever the partition (more lists with an HNSW coarse quantizer, or a pure HNSW graph, did
worse); fast-scan codes make that scan about 4× cheaper than int8 (``sq8``, the default before,
still what older stamps say and what HNSW uses).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..faults import fault_point
from ..store import Space, Store
from .ann import FORMAT, HEADER_SIZE, AnnParams, ann_path, checksum, faiss_module, read_ann, search_rows, write_ann
from .ann_tuning import Probes, Tuning, clock, describe_tuning, probe_set, tune
from .exact import ExactIndex

log = logging.getLogger("vitrina.index")


@dataclass
class AnnReport:
    space: str
    kind: str
    rows: int
    added: int
    rebuilt: bool
    seconds: float
    bytes: int
    recall: dict[str, float]
    tuning: dict[str, Any] | None = None  # the recall target, chosen settings and measured curve

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def build_ann(store: Store, space: str, params: AnnParams | None = None, *, rebuild: bool = False, threads: int | None = None,
              sample: int = 200, queries: np.ndarray | None = None, queries_label: str = "given", progress: Callable[[int, int], None] | None = None,
              path: Path | None = None, target_recall: float | None = None, prompts: np.ndarray | None = None,
              max_latency_ms: float | None = None) -> AnnReport:  # fmt: skip
    """Build the index of ``space`` from its vectors, or add the rows appended since the last
    build (same generation, same parameters, few dead rows). ``queries``: real query vectors
    (e.g. embedded captions) to measure recall on, besides stored and off-cloud ones.
    ``target_recall``: tune the search settings until recall@10 meets it (``ann_tuning``), on
    ``queries`` when given, else on stored vectors shifted by the text-image offset measured from
    ``prompts`` (generic prompts embedded by the space's model; None: an assumed offset); None keeps the settings of ``params``."""
    faiss = faiss_module()
    started = time.perf_counter()
    if threads:
        faiss.omp_set_num_threads(threads)
    path = path or ann_path(store, space)
    for stray in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed build
        stray.unlink(missing_ok=True)
    view = store.space_view(space)
    sp = view.space()
    vectors = view.vectors(sp)
    index, start, params = _reusable(path, sp, vectors, params, rebuild)
    if index is None:
        index = faiss.index_factory(
            sp.fingerprint.dim, params.spec(sp.rows, sp.fingerprint.dim), faiss.METRIC_INNER_PRODUCT
        )
        if params.structure == "hnsw":
            index.hnsw.efConstruction = params.ef_construction
        if not index.is_trained:
            if params.structure != "hnsw":  # few rows train IVF lists well enough: no "please provide at least" warning
                ivf = faiss.extract_index_ivf(index)
                ivf.cp.min_points_per_centroid = 1
                pq = getattr(faiss.downcast_index(ivf), "pq", None)  # pq4: its 16-centroid sub-quantisers
                if pq is not None:
                    pq.cp.min_points_per_centroid = 1
            rng = np.random.default_rng(0)
            live = np.flatnonzero(view.live_rows(sp))
            train = np.sort(rng.choice(live, min(len(live), max(100_000, 40 * params.lists(sp.rows))), replace=False))
            index.train(np.ascontiguousarray(vectors[train]))
    chunk = 50_000
    for s in range(start, sp.rows, chunk):
        index.add(np.ascontiguousarray(vectors[s : min(sp.rows, s + chunk)]))
        fault_point("ann_after_chunk")
        if progress:
            progress(min(sp.rows, s + chunk) - start, sp.rows - start)
    stamp = {"format": FORMAT, "space": sp.name, "dim": sp.fingerprint.dim, "generation": sp.generation, "rows": sp.rows,
             "checksum": checksum(vectors, sp.rows), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "faiss": faiss.__version__}  # fmt: skip
    probes = probe_set(store, sp, sample=sample, queries=queries, queries_label=queries_label, prompts=prompts)
    if target_recall is not None and probes is not None and target_recall > 0:
        tuning = tune_index(store, sp, index, params, probes, target_recall, max_latency_ms)
        params = params.tuned(tuning.settings)
        stamp["tuning"] = tuning.to_stamp()
        while len(json.dumps(stamp)) > HEADER_SIZE - 512 and len(stamp["tuning"]["curve"]) > 2:
            stamp["tuning"]["curve"] = stamp["tuning"]["curve"][::-2][::-1]  # within the 4 KB header; the last kept
        if tuning.note:
            log.info("Space %s: %s", sp.name, tuning.note)  # the report carries it; the CLI prints it once
    stamp["params"] = params.__dict__
    stamp["recall"] = measure_recall(
        store, sp, index, params, sample=sample, queries=queries, queries_label=queries_label, prompts=prompts
    )
    write_ann(path, stamp, index)
    tuned = stamp.get("tuning")
    return AnnReport(sp.name, params.kind, sp.rows, sp.rows - start, start == 0, time.perf_counter() - started,
                     path.stat().st_size, stamp["recall"], tuned and {**tuned, "summary": describe_tuning(tuned)})  # fmt: skip


def _reusable(
    path: Path, sp: Space, vectors: np.ndarray, params: AnnParams | None, rebuild: bool
) -> tuple[Any, int, AnnParams]:
    """(index, rows it holds, params) of the index file when rows can be added to it, else (None, 0, params)."""
    dim = sp.fingerprint.dim
    if not rebuild and path.exists():
        try:
            stamp, old = read_ann(path)
        except Exception:
            stamp, old = None, None
        if stamp is not None:
            same = (
                stamp.get("generation") == sp.generation
                and stamp["rows"] <= sp.rows
                and checksum(vectors, stamp["rows"]) == stamp.get("checksum")
            )
            wanted = params is None or AnnParams(**stamp["params"]).spec(stamp["rows"], dim) == params.spec(
                stamp["rows"], dim
            )
            dead = (sp.rows - sp.live) / max(sp.rows, 1)
            grow = (
                params is None or params.structure != "ivf" or sp.rows <= 2 * stamp["rows"]
            )  # IVF lists are trained once
            if same and wanted and dead < 0.2 and grow:
                return old, stamp["rows"], params or AnnParams(**stamp["params"])
    return None, 0, params or AnnParams()


def tune_index(store: Store, sp: Space, index: Any, params: AnnParams, probes: Probes, target: float,
               max_latency_ms: float | None = None) -> Tuning:  # fmt: skip
    """The fastest search settings of ``index`` meeting ``target`` on ``probes`` (see ``ann_tuning``)."""
    faiss = faiss_module()
    exact = ExactIndex(store, sp.name)
    live = exact.view.live_rows(sp)
    selector, bits = None, None
    if not live[: index.ntotal].all():
        bits = np.packbits(live[: index.ntotal], bitorder="little")
        selector = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(bits))
    plain = AnnParams(**{**params.__dict__, "exact_below": 0, "selective": 0.0})  # time the index, not the fallbacks

    def timed(settings: dict[str, int], q: np.ndarray) -> float:
        return clock(
            lambda: search_rows(exact, index, index.ntotal, plain.tuned(settings), q[None], (), (), 10, 0, None)
        )

    def exact_timed(q: np.ndarray) -> float:
        return clock(lambda: exact.search(q[None], limit=10))

    vectors = exact.view.vectors(sp)
    tuning = tune(index, params.structure, params.lists(index.ntotal), vectors, live, probes, target, timed, exact_timed,
                  max_latency_ms, selector, coarse=params.codes == "pq4")  # fmt: skip
    del bits
    return tuning


def measure_recall(store: Store, sp: Space, index: Any, params: AnnParams, *, sample: int = 200, queries: np.ndarray | None = None,
                   queries_label: str = "given", k: int = 10, prompts: np.ndarray | None = None) -> dict[str, float]:  # fmt: skip
    """recall@k of the index (with its re-ranking) against exact search, on stored vectors
    ("image"), on text-like probes made from them ("text-like": shifted by the gap of ``prompts`` when given,
    else off the cloud by an assumed gap) and on ``queries`` (``queries_label``)."""
    exact = ExactIndex(store, sp.name)
    probes = probe_set(store, sp, sample=sample, prompts=prompts)
    if probes is None:
        return {}
    sets = {"image": probes.image, "text-like": probes.text}
    if queries is not None and len(queries):
        sets[queries_label] = np.asarray(queries, np.float32)
    timing = AnnParams(**{**params.__dict__, "exact_below": 0, "selective": 0.0})  # measure the index, not the fallback
    out: dict[str, float] = {"sample": float(len(probes.image))}
    for name, qs in sets.items():
        want = exact.search(qs, limit=k)
        got = search_rows(exact, index, index.ntotal, timing, qs, (), (), k, 0, None)
        out[name] = round(
            float(np.mean([len(set(g.ids) & set(w.ids)) / max(len(w.ids), 1) for g, w in zip(got, want)])), 4
        )
    return out
