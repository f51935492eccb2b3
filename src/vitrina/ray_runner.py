"""Indexing on a Ray cluster (the ``ray`` extra): many machines, one writer.

The driver (the only process that opens the store) first merges shards left by an earlier,
killed run, then splits the still-pending items into parts. A pool of embedder actors (one per
GPU share, or one per CPU without GPUs) decodes and embeds each part and writes it as a shard
(``vitrina.shards``) into a directory every node can reach. The driver merges each shard as it
arrives, exactly once. A part's shard name is fixed before it is sent, so a part retried after
its actor died overwrites nothing and is merged once; a killed driver loses at most the parts in
flight (their items are still pending) and the next run carries on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .collection import Collection
from .embedding import Embedder, get_embedder
from .shards import embed_rows, merge_shards, new_shard_name, write_shard

ProgressCallback = Callable[[int, int], None]


@dataclass
class RayReport:
    collection: str
    space: str
    model: str
    address: str
    actors: int = 0
    parts: int = 0
    pending: int = 0
    embedded: int = 0
    failed: int = 0
    stale: int = 0
    resumed_shards: int = 0  # finished by an earlier, killed run and merged by this one
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=lambda: {"ray_init": 0.0, "merge": 0.0})

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["images_per_second"] = round(self.embedded / self.seconds, 2) if self.seconds else None
        d["seconds"] = round(self.seconds, 3)
        d["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return d


class _Worker:
    """A Ray actor: loads the model once, turns parts into shards. Never opens the store."""

    def __init__(self, spec: str, device: str | None, factory: Callable[[], Embedder] | None):
        self.embedder = factory() if factory else get_embedder(spec, device=device)

    def embed(self, rows: list[dict[str, str]], directory: str, name: str, limits: dict[str, Any]) -> str:
        final = Path(directory) / f"{name}.shard"
        if (final / "done").exists():  # a retry of a part whose first try got as far as its shard
            return str(final)
        _fault_once("ray_embed")
        items, vectors, failures, _ = embed_rows(self.embedder, rows, **limits)
        return str(write_shard(directory, name, items, vectors, self.embedder.fingerprint, failures))


def _fault_once(name: str) -> None:
    """Crash-test hook: VITRINA_FAULT=ray_embed:/path/arm kills this worker process when the file
    ``arm`` exists, deleting it first, so exactly one worker dies however many processes check."""
    point, _, arm = os.environ.get("VITRINA_FAULT", "").partition(":")
    if point == name and arm:
        try:
            os.unlink(arm)
        except FileNotFoundError:
            return
        os._exit(137)


def index_on_ray(
    collection: Collection,
    *,
    address: str = "auto",
    model: str | None = None,
    space: str | None = None,
    shard_dir: Path | str | None = None,
    part_size: int = 256,
    workers_per_gpu: int = 1,
    actors: int | None = None,
    device: str | None = None,
    retry_failed: bool = False,
    max_pixels: int | None = None,
    max_decode_bytes: int | None = None,
    progress: ProgressCallback | None = None,
    embedder_factory: Callable[[], Embedder] | None = None,
) -> RayReport:
    """Embed ``collection``'s pending items on the Ray cluster at ``address`` ("auto": the running
    one; "local": start one on this machine). ``shard_dir`` must be reachable by every node
    (default: the collection's ``shards`` folder, fine for one machine)."""
    import ray
    from ray.util import ActorPool

    started = time.perf_counter()
    spec, space = collection.model_and_space(model, space)
    directory = Path(shard_dir) if shard_dir else collection.path / "shards"
    directory.mkdir(parents=True, exist_ok=True)
    report = RayReport(collection=collection.name, space=space, model=spec, address=address)

    leftover = merge_shards(collection, directory, space=space)
    report.resumed_shards, report.embedded, report.failed, report.stale = leftover.shards, leftover.vectors, leftover.failures, leftover.stale
    rows = [{"id": r["id"], "image": r["image"], "fingerprint": r["fingerprint"]} for r in collection._store.pending(space, retry_failed=retry_failed)]
    report.pending = len(rows)
    if not rows:
        report.seconds = time.perf_counter() - started
        return report

    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    report.timings["ray_init"] = time.perf_counter() - t0
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus and device != "cpu":
        count = actors or gpus * workers_per_gpu
        options: dict[str, Any] = {"num_gpus": 1 / workers_per_gpu, "num_cpus": 1}
    else:
        count = actors or max(1, int(resources.get("CPU", 1)))
        options = {"num_cpus": 1}
    # A dead actor is restarted and its call retried, so a lost worker costs one part's time.
    remote = ray.remote(**options, max_restarts=-1, max_task_retries=-1)(_Worker)
    pool = ActorPool([remote.remote(spec, device, embedder_factory) for _ in range(count)])
    report.actors = count
    job = new_shard_name("ray")
    parts = [rows[i : i + part_size] for i in range(0, len(rows), part_size)]
    report.parts = len(parts)
    limits = {"max_pixels": max_pixels, "max_decode_bytes": max_decode_bytes}
    done = 0
    if progress:
        progress(0, len(rows))
    work = [(n, part) for n, part in enumerate(parts)]
    for _ in pool.map_unordered(lambda actor, w: actor.embed.remote(w[1], str(directory), f"{job}-{w[0]:05d}", limits), work):
        t0 = time.perf_counter()
        merged = merge_shards(collection, directory, space=space)
        report.timings["merge"] += time.perf_counter() - t0
        report.embedded += merged.vectors
        report.failed += merged.failures
        report.stale += merged.stale
        done += part_size
        if progress:
            progress(min(done, len(rows)), len(rows))
    report.seconds = time.perf_counter() - started
    return report
