"""Indexing on a Ray cluster (the ``ray`` extra): many machines, one writer.

The driver (the only process that opens the store) first merges shards left by an earlier,
killed run, then splits the still-pending items into parts. A pool of embedder actors (one per
GPU share, or one per CPU without GPUs) decodes and embeds each part and writes it as a shard
(``vitrina.shards``) into a directory every node can reach. The driver merges each shard as it
arrives, exactly once. A part's shard name is fixed before it is sent, so a part retried after
its actor died overwrites nothing and is merged once; a killed driver loses at most the parts in
flight (their items are still pending) and the next run carries on.

Remote images are fetched by the workers within the same per-host politeness as a local run: every
worker's ``Fetcher`` asks one ``HostBudget`` actor of the job for each request slot, so a host's
rate and concurrency limits hold for the whole cluster, not per worker. A host that bans us (a 429
from loc.gov) is blocked for every worker at once, the driver sends no more parts, and the run
ends interrupted with the items of the unfinished parts still pending.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .collection import Collection
from .embedding import Embedder, get_embedder
from .errors import Blocked
from .faults import fault_once
from .http import Fetcher, Offline
from .reader import Reader
from .shards import MergeReport, embed_rows, merge_shards, new_shard_name, write_shard

ProgressCallback = Callable[[int, int], None]


@dataclass
class RayReport:
    collection: str
    space: str
    model: str
    address: str
    actors: int = 0
    decoders: int = 0  # decoding processes per actor
    parts: int = 0
    pending: int = 0
    embedded: int = 0
    failed: int = 0
    stale: int = 0
    resumed_shards: int = 0  # finished by an earlier, killed run and merged by this one
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (id, reason, detail), first 100
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=lambda: {"ray_init": 0.0, "merge": 0.0})
    interrupted: bool = False
    message: str = ""  # why the run stopped early, if it did
    # The ingest run before embedding (``index_source_on_ray``), when there was one; a run whose
    # ingest was cut short (a ban) embeds nothing. Not in ``to_dict``: the summary is the cluster's.
    ingest: dict[str, Any] | None = None

    @property
    def ingest_interrupted(self) -> bool:
        return bool(self.ingest and self.ingest["interrupted"])

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("ingest")
        d["failed_by_reason"] = dict(self.failed_by_reason)
        d["failures"] = [{"id": i, "reason": r, "detail": t} for i, r, t in self.failures]
        d["images_per_second"] = round(self.embedded / self.seconds, 2) if self.seconds else None
        d["seconds"] = round(self.seconds, 3)
        d["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return d

    def add(self, merged: MergeReport) -> None:
        self.embedded += merged.vectors
        self.failed += merged.failures
        self.stale += merged.stale
        self.failed_by_reason.update(merged.failed_by_reason)
        self.failures += merged.failure_samples[: 100 - len(self.failures)]


class HostBudget:
    """Per-host politeness shared by every worker of a job (run as one Ray actor): the next time a
    request may start, the slots in flight and whether the host banned us. It never waits itself:
    ``acquire`` grants a slot with the delay to sleep before sending, or says how long to wait
    before asking again. A slot is a lease: one whose worker died is reclaimed when it expires."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.next_at: dict[str, float] = {}
        self.leases: dict[str, dict[int, float]] = {}  # host -> ticket -> expiry
        self.blocked: dict[str, float] = {}  # host -> until
        self.tickets = itertools.count(1)
        self.granted = 0

    def acquire(self, host: str, interval: float, concurrency: int, lease: float) -> tuple[str, float, int]:
        """("go", delay, ticket), ("wait", seconds, 0) or ("blocked", seconds left, 0)."""
        now = self.clock()
        if self.blocked.get(host, 0.0) > now:
            return "blocked", self.blocked[host] - now, 0
        held = self.leases.setdefault(host, {})
        for ticket in [t for t, expiry in held.items() if expiry <= now]:
            del held[ticket]
        if len(held) >= max(1, concurrency):
            # Poll again soon (a slot frees when a request ends); jittered so workers do not ask in step.
            return "wait", min(max(interval, 0.01), 0.25) * random.uniform(0.5, 1.0), 0
        start = max(now, self.next_at.get(host, 0.0))
        self.next_at[host] = start + interval
        ticket = next(self.tickets)
        held[ticket] = start + lease
        self.granted += 1
        return "go", start - now, ticket

    def release(self, host: str, ticket: int) -> None:
        self.leases.get(host, {}).pop(ticket, None)

    def slow_down(self, host: str, seconds: float) -> None:
        self.next_at[host] = max(self.next_at.get(host, 0.0), self.clock() + seconds)

    def block(self, host: str, seconds: float) -> None:
        self.blocked[host] = max(self.blocked.get(host, 0.0), self.clock() + seconds)

    def blocks(self) -> dict[str, float]:
        """Hosts blocked now, with the seconds left."""
        now = self.clock()
        return {h: until - now for h, until in self.blocked.items() if until > now}


class SharedGates:
    """``http.Gates`` backed by a ``HostBudget`` actor: what a worker's ``Fetcher`` asks."""

    def __init__(self, budget: Any, lease: float):
        self.budget, self.lease = budget, lease
        self.blocked: Blocked | None = None  # the last ban this worker met, for the driver's report

    def enter(self, host: str, interval: float, concurrency: int) -> object:
        import ray

        while True:
            answer, seconds, ticket = ray.get(self.budget.acquire.remote(host, interval, concurrency, self.lease))
            if answer == "blocked":
                self.blocked = Blocked(host, seconds)
                raise self.blocked
            time.sleep(seconds)
            if answer == "go":
                return ticket

    def exit(self, host: str, ticket: object) -> None:
        self.budget.release.remote(host, ticket)  # no need to wait: calls from one worker arrive in order

    def slow_down(self, host: str, seconds: float) -> None:
        self.budget.slow_down.remote(host, seconds)

    def block(self, host: str, seconds: float) -> None:
        self.blocked = Blocked(host, seconds)
        self.budget.block.remote(host, seconds)


class _Worker:
    """A Ray actor: loads the model once, turns parts into shards. Never opens the store. Its one
    ``Fetcher`` (the driver's settings) asks the job's ``HostBudget`` before each request."""

    def __init__(self, spec: str, device: str | None, factory: Callable[[], Embedder] | None, http: dict[str, Any], budget: str,
                 decoders: int = 0, limits: dict[str, Any] | None = None):  # fmt: skip
        import ray

        self.embedder = factory() if factory else get_embedder(spec, device=device)
        # A slot is held at most one request deadline (plus slack); a dead worker's lapses then.
        # The budget is found by name: a handle among the arguments puts them in the object store, and
        # Ray warns that such an actor may fail to restart (ray-project/ray#53727).
        self.gates = SharedGates(ray.get_actor(budget), lease=float(http.get("deadline", 120.0)) + 10.0)
        self.fetcher = Fetcher(**http, gates=self.gates)
        # With decoders, a pool of decoding processes lives as long as the actor (a GPU waits on decoding otherwise).
        self.reader = (
            Reader(self.embedder, mode="processes", workers=decoders, fetcher=self.fetcher, **(limits or {}))
            if decoders
            else None
        )

    def embed(self, rows: list[dict[str, str]], directory: str, name: str, limits: dict[str, Any]) -> dict[str, Any]:
        """Returns the shard's path, the items left pending because a host refused us (or the
        network is down) and why."""
        final = Path(directory) / f"{name}.shard"
        if (final / "done").exists():  # a retry of a part whose first try got as far as its shard
            return {"shard": str(final), "blocked": 0, "message": ""}
        fault_once("ray_embed")
        items, vectors, failures, blocked = embed_rows(
            self.embedder, rows, fetcher=self.fetcher, reader=self.reader, **limits
        )
        shard = write_shard(directory, name, items, vectors, self.embedder.fingerprint, failures)
        offline = self.fetcher.resolver.offline
        why = Offline(*offline) if offline else self.gates.blocked
        return {"shard": str(shard), "blocked": blocked, "message": str(why or "") if blocked else ""}

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.fetcher.close()


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
    fetcher: Fetcher | None = None,
    http_cache: Path | str | None = None,
    decoders: int | None = None,
) -> RayReport:
    """Embed ``collection``'s pending items on the Ray cluster at ``address`` ("auto": the running
    one; "local": start one on this machine). ``shard_dir`` must be reachable by every node
    (default: the collection's ``shards`` folder, fine for one machine).

    Workers fetch remote images with ``fetcher``'s settings (rates, host rates, concurrency,
    hosts that ban: pass the fetcher the source was ingested with; default: a local run's), under
    one per-host budget for the whole cluster. ``http_cache``: a download cache folder every node
    can reach; by default the collection's own with ``address="local"``, else none."""
    import ray

    started = time.perf_counter()
    spec, space = collection.model_and_space(model, space)
    directory = Path(shard_dir) if shard_dir else collection.paths.shards_dir
    directory.mkdir(parents=True, exist_ok=True)
    report = RayReport(collection=collection.name, space=space, model=spec, address=address)

    leftover = merge_shards(collection, directory, space=space)
    report.resumed_shards = leftover.shards
    report.add(leftover)
    rows = collection.pending(space, retry_failed=retry_failed)
    report.pending = len(rows)
    if not rows:
        report.seconds = time.perf_counter() - started
        return report

    http = (fetcher or Fetcher()).settings()
    if http_cache is None and address == "local":
        http_cache = collection.paths.http_cache
    http["cache_dir"] = Path(http_cache) if http_cache is not None else None

    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    report.timings["ray_init"] = time.perf_counter() - t0
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    # Decoding processes per actor (0: the actor decodes in one thread). Each actor reserves a core
    # for itself and one per decoder, so every actor asked for can be placed.
    if gpus and device != "cpu":
        count = actors or gpus * workers_per_gpu
        spare = max(0, cpus // count - 1)
        decoders = spare if decoders is None else min(decoders, spare)  # a GPU waits on decoding otherwise
        options: dict[str, Any] = {"num_gpus": 1 / workers_per_gpu, "num_cpus": 1 + decoders}
    else:
        decoders = decoders or 0  # CPU actors: one per core already suits a CPU model
        count = actors or max(1, cpus // (1 + decoders))
        options = {"num_cpus": 1 + decoders}
    report.decoders = decoders
    job = new_shard_name("ray")
    # The budget lives as long as this driver (an actor it owns); restarted empty if its node dies.
    budget: Any = (
        ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(HostBudget).options(name=f"{job}-budget").remote()
    )
    # A dead actor is restarted and its call retried, so a lost worker costs one part's time.
    remote = ray.remote(**options, max_restarts=-1, max_task_retries=-1)(_Worker)
    limits = {"max_pixels": max_pixels, "max_decode_bytes": max_decode_bytes}
    idle: list[Any] = [
        remote.remote(spec, device, embedder_factory, http, f"{job}-budget", decoders, limits) for _ in range(count)
    ]
    report.actors = count
    queue = deque(enumerate(rows[i : i + part_size] for i in range(0, len(rows), part_size)))
    report.parts = len(queue)
    done = 0
    if progress:
        progress(0, len(rows))
    in_flight: dict[Any, tuple[Any, int]] = {}  # result ref -> (actor, rows in the part)

    def send() -> None:
        while idle and queue and not report.interrupted:
            n, part = queue.popleft()
            actor = idle.pop()
            in_flight[actor.embed.remote(part, str(directory), f"{job}-{n:05d}", limits)] = (actor, len(part))

    try:
        send()
        while in_flight:
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            actor, size = in_flight.pop(ref)
            idle.append(actor)
            result = ray.get(ref)
            if result["blocked"] and not report.interrupted:
                # A host banned us (or the network is down): send no more parts, finish those in flight.
                report.interrupted, report.message = (
                    True,
                    result["message"] or f"{result['blocked']} items could not be fetched; run again later.",
                )
            send()  # before merging, so workers do not wait for the driver
            t0 = time.perf_counter()
            merged = merge_shards(collection, directory, space=space)
            report.timings["merge"] += time.perf_counter() - t0
            report.add(merged)
            done += size
            if progress:
                progress(done, len(rows))
    finally:
        for actor in idle:
            actor.close.remote()
        ray.kill(budget)
    report.seconds = time.perf_counter() - started
    return report


def require_ray() -> None:
    """Raises ImportError (naming the missing module) when the ``ray`` extra is not installed."""
    import ray  # noqa: F401


def index_source_on_ray(
    collection: Collection,
    source: str | None,
    *,
    address: str = "auto",
    limit: int | None = None,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> RayReport:
    """``vitrina index SOURCE --ray ADDRESS``: ingest ``source`` here (the single writer; None: no
    new source), then embed the pending items on the cluster (``index_on_ray``, with ``options``).

    The workers fetch with the settings of the fetcher the source was ingested with (host rates
    set by the source included, such as loc.gov's). As in a local run, nothing is embedded after
    an ingest that a host stopped: the report is then interrupted, with ``ingest`` saying why."""
    http = Fetcher(cache_dir=collection.paths.http_cache)
    try:
        ingested = None if source is None else collection.ingest(source, limit=limit, fetcher=http)
        if ingested is not None and ingested.interrupted:
            report = RayReport(collection.name, options.get("space") or "", options.get("model") or "", address)
            report.interrupted, report.message = True, ingested.message
        else:
            report = index_on_ray(collection, address=address, progress=progress, fetcher=http, **options)
        report.ingest = None if ingested is None else ingested.to_dict()
        return report
    finally:
        http.close()
