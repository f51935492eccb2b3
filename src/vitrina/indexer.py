"""Indexing: bring a collection's vectors up to date with its items.

Three stages overlap: the reader (``vitrina.reader``: fetching in threads, decoding in threads or
processes) keeps about two batches ahead of the model; the model runs on its own thread; the
calling thread commits each batch to the store while the model works on the next. Each batch is
committed on its own, so an interrupted run loses at most the batches in flight and the next run
carries on from there. An image that cannot be used is recorded with its reason and skipped; a
batch the model fails on is split until the culprit is found.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .embedding import Embedder, PreparedEmbedder, device_of, get_embedder
from .reader import Reader, choose_decode, default_batch_size, default_workers
from .store import Store

ProgressCallback = Callable[[int, int], None]  # (items processed, items to process)


@dataclass
class IndexReport:
    collection: str
    space: str
    model: str
    ingest: dict[str, Any] | None = None  # the IngestReport of the source, when one was given
    embedded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (id, reason, detail), first 100
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "model": 0.0, "write": 0.0})
    interrupted: bool = False
    message: str = ""  # why the run stopped early, if it did
    settings: dict[str, Any] = field(default_factory=dict)  # device, batch_size, workers, decode as chosen
    decoder_crashes: int = 0  # decoding processes that died (and were restarted)
    regions: int = 0  # region vectors embedded (vitrina.regions)
    compacted: dict[str, Any] = field(default_factory=dict)  # rows and bytes reclaimed; "asked": --compact given

    def count(self, key: str) -> int:
        """new / changed / updated / moved / unchanged / removed items of the ingested source (0 without one)."""
        return int((self.ingest or {}).get(key, 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection, "space": self.space, "model": self.model,
            **{k: self.count(k) for k in ("new", "changed", "updated", "moved", "moved_by_content", "unchanged", "removed")},
            "embedded": self.embedded, "failed": sum(self.failed.values()), "failed_by_reason": dict(self.failed),
            "failures": [{"id": i, "reason": r, "detail": d} for i, r, d in self.failures],
            "seconds": round(self.seconds, 3), "images_per_second": round(self.embedded / self.seconds, 2) if self.seconds else None,
            "timings": {k: round(v, 3) for k, v in self.timings.items()}, "interrupted": self.interrupted, "message": self.message,
            "settings": self.settings, "decoder_crashes": self.decoder_crashes, "regions": self.regions,
            "compacted": self.compacted or {"rows": 0, "bytes": 0, "asked": False},
        }  # fmt: skip


def index_space(
    store: Store,
    collection: str,
    space: str,
    spec: str,
    *,
    ingested: Any = None,
    embedder: Embedder | None = None,
    device: str | None = None,
    threads: int | None = None,
    reembed: bool = False,
    compact: bool = False,
    regions: str | None = None,
    **options: Any,
) -> IndexReport:
    """One indexing run on a writable ``store``: embed every item of ``space`` that lacks a current
    vector with ``embedder`` (else the model ``spec``, loaded here), then reclaim dead rows when
    due (always with ``compact``). ``ingested``, the ``IngestReport`` of a source ingested just
    before, goes into the report; an interrupted ingest stops the run before the model loads.
    ``options`` go to ``embed_pending``. ``regions`` ("off", "auto", "grid"; None: as the space
    was last indexed) also embeds boxes of large images (``vitrina.regions``). See ``Collection.index``."""
    report = IndexReport(collection=collection, space=space, model=spec)
    if ingested is not None:
        report.ingest = ingested.to_dict()
        if ingested.interrupted:
            report.interrupted, report.message = True, ingested.message
            return report
    embedder = embedder or get_embedder(spec, device=device, threads=threads)
    if reembed and space in {s.name for s in store.spaces()}:
        store.drop_space(space)
    store.ensure_space(space, embedder.fingerprint)
    from .region_indexer import embed_pending_regions, region_policy

    policy = region_policy(store, space, regions)
    try:
        if policy.on:
            embed_pending_regions(store, embedder, space, report, policy, **options)
        else:
            embed_pending(store, embedder, space, report, **options)
    except KeyboardInterrupt:
        report.interrupted = True
    if not report.interrupted:
        before = _file_size(store, space)
        rows = store.compact(space, force=compact)
        freed = max(0, before - _file_size(store, space)) if rows else 0  # on disk: files grow in steps
        report.compacted = {"rows": rows, "bytes": freed, "asked": compact}
    return report


def _file_size(store: Store, space: str) -> int:
    return store.vector_file(store.space(space)).path.stat().st_size


def embed_pending(
    store: Store,
    embedder: Embedder,
    space: str,
    report: IndexReport,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    decode: str = "auto",
    retry_failed: bool = False,
    max_pixels: int | None = None,
    max_decode_bytes: int | None = None,
    progress: ProgressCallback | None = None,
    fetcher: Any = None,
) -> IndexReport:
    """Embed every item of ``store`` that has no current vector in ``space``. Remote images go
    through ``fetcher``; if a host bans us (429 from loc.gov), the run stops cleanly, resumable.
    ``batch_size`` / ``workers`` default to what suits the embedder's device; ``decode`` is
    "threads", "processes" or "auto" (see ``vitrina.reader``)."""
    todo = store.pending(space, retry_failed=retry_failed)
    total = len(todo)
    batch_size = batch_size or default_batch_size(embedder)
    workers = workers or default_workers(embedder)
    mode = choose_decode(decode, embedder, total, workers, batch_size)
    report.settings = {"device": device_of(embedder), "batch_size": batch_size, "workers": workers}
    done = 0
    if progress:
        progress(0, total)
    started = time.perf_counter()
    embed = _embed_prepared if isinstance(embedder, PreparedEmbedder) else embed_robustly

    def model_step(
        items: list[tuple[str, str]], pixels: list[np.ndarray]
    ) -> tuple[np.ndarray, list[tuple[str, str, str]], float]:
        t0 = time.perf_counter()
        vectors, failures = embed(embedder, items, pixels)
        return vectors, failures, time.perf_counter() - t0

    def commit(
        items: list[tuple[str, str]], failures: list[tuple[str, str, str]], future: Future[Any], size: int
    ) -> None:
        nonlocal done
        vectors, embed_failures, seconds = future.result()
        report.timings["model"] += seconds
        failures = failures + embed_failures
        failed_ids = {f[0] for f in embed_failures}
        kept = [it for it in items if it[0] not in failed_ids]
        t0 = time.perf_counter()
        store.add_vectors(space, kept, vectors, failures)
        report.timings["write"] += time.perf_counter() - t0
        report.embedded += len(kept)
        for item_id, reason, detail in failures:
            report.failed[reason] += 1
            if len(report.failures) < 100:
                report.failures.append((item_id, reason, detail))
        done += size
        report.seconds = time.perf_counter() - started
        if progress:
            progress(done, total)

    limits = {"max_pixels": max_pixels, "max_decode_bytes": max_decode_bytes}
    with Reader(embedder, mode=mode, workers=workers, fetcher=fetcher, **limits) as reader, \
         ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitrina-model") as model:  # fmt: skip
        report.settings["decode"] = reader.mode  # threads when the embedder has no picklable recipe
        in_flight: tuple[Any, ...] | None = None  # the batch the model is embedding while the last one is committed
        for batch in _prefetched(reader.pool, reader.read, todo, batch_size):
            ok_items: list[tuple[str, str]] = []
            ok_pixels: list[np.ndarray] = []
            failures: list[tuple[str, str, str]] = []
            blocked = None
            for row, (pixels, failure, seconds) in batch:
                report.timings["decode"] += seconds
                if failure and failure[0] == "blocked":
                    blocked = failure[1]  # not the item's fault: it stays pending
                elif failure:
                    failures.append((row["id"], failure[0], failure[1]))
                else:
                    ok_items.append((row["id"], row["fingerprint"]))
                    ok_pixels.append(pixels)  # type: ignore[arg-type]
            future = model.submit(model_step, ok_items, ok_pixels)
            if in_flight:
                commit(*in_flight)
            in_flight = (ok_items, failures, future, len(batch))
            if blocked:
                report.interrupted, report.message = True, blocked
                break
        if in_flight:
            commit(*in_flight)
    report.decoder_crashes = reader.crashes
    report.seconds = time.perf_counter() - started
    return report


def _prefetched(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Any], rows: Sequence[Any], batch_size: int
) -> Iterator[list[tuple[Any, Any]]]:
    """Batches of (row, fn(row)) in order, keeping about two batches decoding ahead of the model."""
    window: list[tuple[Any, Future[Any]]] = []
    position = 0
    ahead = 2 * batch_size
    while position < len(rows) or window:
        while position < len(rows) and len(window) < ahead + batch_size:
            window.append((rows[position], pool.submit(fn, rows[position])))
            position += 1
        batch, window = window[:batch_size], window[batch_size:]
        yield [(row, future.result()) for row, future in batch]


def _embed_prepared(
    embedder: Embedder, items: list[tuple[str, str]], pixels: list[np.ndarray]
) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
    return embed_robustly(embedder, items, pixels, prepared=True)


def embed_robustly(
    embedder: Embedder, items: list[tuple[str, str]], pixels: list[np.ndarray], *, prepared: bool = False
) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
    """Embed a batch (float32 model input, or uint8 pixels when ``prepared``); if the model
    fails, bisect to find and drop the items it fails on."""
    dim = embedder.fingerprint.dim
    if not items:
        return np.zeros((0, dim), np.float32), []
    try:
        batch = np.stack(pixels)
        vectors = embedder.embed_prepared(batch) if prepared else embedder.embed_pixels(batch)  # type: ignore[attr-defined]
        if not np.isfinite(vectors).all():
            raise ValueError("the model produced NaN or infinite values")
        return vectors, []
    except Exception as e:
        if len(items) == 1:
            return np.zeros((0, dim), np.float32), [(items[0][0], "embed_error", f"{type(e).__name__}: {e}")]
    mid = len(items) // 2
    left, lf = embed_robustly(embedder, items[:mid], pixels[:mid], prepared=prepared)
    right, rf = embed_robustly(embedder, items[mid:], pixels[mid:], prepared=prepared)
    return np.concatenate([left, right]), lf + rf
