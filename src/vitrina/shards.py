"""Shard sink: workers write their vectors to files, the single writer merges them.

Workers (other processes, other machines) never open the store. Each writes a *shard* — a
directory holding ``vectors.npy``, ``shard.json`` (item ids with the item fingerprints they were
embedded from, the model fingerprint, failures as (id, reason, detail)) and a ``done`` marker —
into a temporary directory that is fsynced and renamed into place, so a shard is either whole or
absent. The driver merges finished shards through ``Collection.import_vectors``; the shard's name
is recorded in the collection's state in the same transaction as its vectors, and the shard is
deleted after, so a merge killed at any point and run again stores every item exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .collection import Collection
from .embedding import Embedder, PreparedEmbedder, space_name_for
from .errors import QueryError
from .faults import fault_point
from .indexer import embed_robustly
from .reader import Reader
from .records import ModelFingerprint

SUFFIX = ".shard"
MERGED_KEY = "shards.merged"  # JSON list of merged shard names still on disk (bounded: pruned as they go)
FORMAT = 1


@dataclass
class Shard:
    path: Path
    ids: list[str]
    item_fingerprints: list[str]  # the item fingerprint (file identity) each vector was made from
    vectors: np.ndarray
    fingerprint: ModelFingerprint
    failures: list[tuple[str, str, str]]

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class MergeReport:
    shards: int = 0  # merged by this run
    skipped: int = 0  # already merged by an earlier (killed) run, only deleted now
    vectors: int = 0
    failures: int = 0
    stale: int = 0  # items changed or removed since their shard was written: left pending
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # unreadable shards, left on disk
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    failure_samples: list[tuple[str, str, str]] = field(default_factory=list)  # (id, reason, detail), first 100

    def to_dict(self) -> dict[str, Any]:
        return {"shards": self.shards, "skipped": self.skipped, "vectors": self.vectors, "failures": self.failures,
                "stale": self.stale, "seconds": round(self.seconds, 3), "problems": self.problems}  # fmt: skip


def new_shard_name(prefix: str = "part") -> str:
    """Unique over time, so a recorded merged name can never be mistaken for a new shard."""
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(
    directory: Path | str,
    name: str,
    items: Sequence[tuple[str, str]],
    vectors: np.ndarray,
    fingerprint: ModelFingerprint,
    failures: Sequence[tuple[str, str, str]] = (),
) -> Path:
    """Write one shard atomically: ``items`` are (id, item fingerprint) pairs, one per vector row."""
    matrix = np.ascontiguousarray(vectors, np.float32)
    if matrix.shape != (len(items), fingerprint.dim):
        raise ValueError(
            f"shard {name}: expected {len(items)} vectors of {fingerprint.dim} dimensions, got {matrix.shape}"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{name}{SUFFIX}"
    tmp = directory / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    np.save(tmp / "vectors.npy", matrix, allow_pickle=False)
    meta = {"format": FORMAT, "ids": [i for i, _ in items], "item_fingerprints": [f for _, f in items],
            "fingerprint": json.loads(fingerprint.to_json()), "failures": [list(f) for f in failures]}  # fmt: skip
    (tmp / "shard.json").write_text(json.dumps(meta))
    (tmp / "done").write_text(str(len(items)))
    for f in ("vectors.npy", "shard.json", "done"):
        _fsync_file(tmp / f)
    _fsync_file(tmp)
    os.replace(tmp, final)
    _fsync_file(directory)
    return final


def read_shard(path: Path) -> Shard:
    if not (path / "done").exists():
        raise QueryError(f"Shard {path} is incomplete (no done marker); its worker did not finish it.")
    meta = json.loads((path / "shard.json").read_text())
    if meta.get("format") != FORMAT:
        raise QueryError(f"Shard {path} has format {meta.get('format')!r}; this vitrina reads format {FORMAT}.")
    vectors = np.load(path / "vectors.npy", allow_pickle=False)
    fp = ModelFingerprint.from_json(json.dumps(meta["fingerprint"]))
    if vectors.shape != (len(meta["ids"]), fp.dim) or len(meta["item_fingerprints"]) != len(meta["ids"]):
        raise QueryError(
            f"Shard {path}: {vectors.shape} vectors for {len(meta['ids'])} ids; the shard is damaged, delete it and index again."
        )
    return Shard(
        path,
        list(meta["ids"]),
        list(meta["item_fingerprints"]),
        vectors,
        fp,
        [(str(a), str(b), str(c)) for a, b, c in meta["failures"]],
    )


def finished_shards(directory: Path | str) -> list[Path]:
    """Whole shards in ``directory``, oldest name first (temporary directories are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX) and (p / "done").exists())


def merge_shards(collection: Collection, directory: Path | str, *, space: str | None = None) -> MergeReport:
    """Merge every finished shard of ``directory`` into ``collection`` exactly once, deleting each
    after. Items whose file changed (or that were removed) since their shard was written stay
    pending for the next run, and a damaged shard is reported and left in place."""
    report = MergeReport()
    started = time.perf_counter()
    for path in finished_shards(directory):
        merged = set(json.loads(collection.state(MERGED_KEY) or "[]"))
        if path.name in merged:  # committed by a run killed before it could delete the shard
            shutil.rmtree(path, ignore_errors=True)
            report.skipped += 1
            continue
        try:
            shard = read_shard(path)
        except (OSError, ValueError, KeyError, TypeError, QueryError) as e:
            report.problems.append(f"{path}: {e}")
            continue
        current = collection.fingerprints(shard.ids + [f[0] for f in shard.failures])
        keep = [n for n, (i, f) in enumerate(zip(shard.ids, shard.item_fingerprints)) if current.get(i) == f]
        failures = [f for f in shard.failures if f[0] in current]
        report.stale += len(shard.ids) - len(keep) + len(shard.failures) - len(failures)
        # Names of shards already deleted are dropped, so the recorded list stays small.
        on_disk = {p.name for p in finished_shards(directory)}
        checkpoint = (MERGED_KEY, json.dumps(sorted((merged & on_disk) | {path.name})))
        if failures:  # idempotent (the item is marked failed again), so safe to redo after a kill
            collection.record_failures(space or _default_space(shard.fingerprint), shard.fingerprint, failures)
        ids = [shard.ids[n] for n in keep]
        collection.import_vectors(ids, shard.vectors[keep], fingerprint=shard.fingerprint, space=space,
                                  batch=max(1, len(ids)), checkpoint=checkpoint)  # fmt: skip  # one transaction
        fault_point("after_shard_merge")
        shutil.rmtree(path, ignore_errors=True)
        report.shards += 1
        report.vectors += len(ids)
        report.failures += len(failures)
        report.failed_by_reason.update(f[1] for f in failures)
        report.failure_samples += failures[: 100 - len(report.failure_samples)]
    report.seconds = time.perf_counter() - started
    return report


def _default_space(fingerprint: ModelFingerprint) -> str:
    return space_name_for(fingerprint.spec)


def embed_rows(
    embedder: Embedder,
    rows: Sequence[dict[str, str]],
    *,
    max_pixels: int | None = None,
    max_decode_bytes: int | None = None,
    fetcher: Any = None,
    reader: Reader | None = None,
) -> tuple[list[tuple[str, str]], np.ndarray, list[tuple[str, str, str]], int]:
    """Decode and embed ``rows`` ({"id", "image", "fingerprint"}): the worker side of the
    pipeline, with ``reader`` (a worker's long-lived one, e.g. decoding in processes) or one
    thread of this process. Returns (items, vectors, failures, blocked): an item whose host
    refused us is neither stored nor failed, so it stays pending."""
    items: list[tuple[str, str]] = []
    pixels: list[np.ndarray] = []
    failures: list[tuple[str, str, str]] = []
    blocked = 0
    with ExitStack() as stack:
        if reader is None:
            reader = stack.enter_context(
                Reader(
                    embedder,
                    mode="threads",
                    workers=1,
                    fetcher=fetcher,
                    max_pixels=max_pixels,
                    max_decode_bytes=max_decode_bytes,
                )
            )
        for row, (prepared, failure, _) in zip(rows, reader.pool.map(reader.read, rows), strict=True):
            if failure and failure[0] == "blocked":
                blocked += 1
            elif failure:
                failures.append((row["id"], failure[0], failure[1]))
            else:
                items.append((row["id"], row["fingerprint"]))
                pixels.append(prepared)  # type: ignore[arg-type]
    vectors, embed_failures = embed_robustly(embedder, items, pixels, prepared=isinstance(embedder, PreparedEmbedder))
    bad = {f[0] for f in embed_failures}
    return [it for it in items if it[0] not in bad], vectors, failures + embed_failures, blocked


def embed_to_shard(
    embedder: Embedder, rows: Sequence[dict[str, str]], directory: Path | str, *, prefix: str = "part", **limits: Any
) -> Path:
    """Worker entry point: embed ``rows`` and write them as one shard."""
    items, vectors, failures, _ = embed_rows(embedder, rows, **limits)
    return write_shard(directory, new_shard_name(prefix), items, vectors, embedder.fingerprint, failures)
