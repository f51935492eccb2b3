"""Indexing on a local Ray cluster with the tiny model: the vectors of a single-process run, a
worker killed mid-job and a driver killed and restarted, every item stored exactly once; remote
images fetched by all workers within one per-host budget, and a ban that stops the whole run.

Ray is in the test extras, so CI runs these (all marked slow: starting a cluster and its workers
takes about a minute on a small machine; the six took 261 s on the 2-core dev machine at load 16).
Skipped where Ray is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_images
from tests.fakes import FAKE_SPEC, FakeEmbedder
from vitrina import open_collection
from vitrina.http import Fetcher

ray = pytest.importorskip("ray")
from vitrina.ray_runner import HostBudget, index_on_ray  # noqa: E402

pytestmark = pytest.mark.slow  # a local Ray cluster starts (about 2 minutes)

ROOT = Path(__file__).resolve().parent.parent
SRC = str(ROOT / "src")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    arm = tmp_path_factory.mktemp("ray-fault") / "arm"  # exists = the next worker to embed dies
    env = {
        "PYTHONPATH": os.pathsep.join([SRC, str(ROOT)]),
        "HF_HUB_OFFLINE": "1",
        "VITRINA_FAULT": f"ray_embed:{arm}",
    }  # ROOT: tests.fakes
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield arm
    ray.shutdown()


def folder_with_a_broken_image(folder: Path, n: int) -> Path:
    make_images(folder, n)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return folder


def assert_same_vectors(a_coll, b_coll) -> None:  # type: ignore[no-untyped-def]
    a_ids, a = a_coll.vectors()
    b_ids, b = b_coll.vectors()
    assert sorted(a_ids) == sorted(b_ids)
    order = [b_ids.index(i) for i in a_ids]
    assert np.min(np.sum(a * b[order], axis=1)) >= 0.9999


def local_run_and_ingested(folder: Path, name: str, model: str):  # type: ignore[no-untyped-def]
    """(``folder`` indexed in this process, ``folder`` only ingested: for the Ray run to compare)."""
    single = open_collection(f"{name}-single", create=True)
    single.index(str(folder), model=model)
    coll = open_collection(name, create=True)
    coll.ingest(str(folder))
    return single, coll


def test_ray_equals_a_single_process_run_even_when_a_worker_dies(cluster: Path, tmp_path: Path, tiny_clip: str) -> None:
    single, coll = local_run_and_ingested(folder_with_a_broken_image(tmp_path / "scans", 9), "onray", tiny_clip)
    cluster.touch()  # one worker process is killed in the middle of the job
    report = index_on_ray(coll, model=tiny_clip, part_size=2)
    assert not cluster.exists()  # a worker did die
    assert report.pending == 10 and report.embedded == 9 and report.failed == 1 and report.parts == 5
    sp = coll.space()
    assert sp.live == 9 and sp.rows == 9  # exactly once
    assert [f["id"] for f in coll._store.failures()] == [f["id"] for f in single._store.failures()]
    assert coll.info(check=True)["problems"] == []
    assert list((coll.path / "shards").iterdir()) == []
    assert_same_vectors(coll, single)


def test_actors_decoding_in_processes_give_the_same_vectors(cluster: Path, tmp_path: Path, tiny_clip: str) -> None:
    single, coll = local_run_and_ingested(folder_with_a_broken_image(tmp_path / "scans", 6), "onray-p", tiny_clip)
    report = index_on_ray(
        coll, model=tiny_clip, part_size=4, decoders=1
    )  # one actor: a core for it, one for its decoder
    assert (report.actors, report.decoders) == (1, 1)
    assert report.embedded == 6 and report.failed == 1 and dict(report.failed_by_reason) == {"truncated": 1}
    assert_same_vectors(coll, single)


def test_a_killed_driver_resumes_without_loss_or_duplicates(cluster: Path, tmp_path: Path, tiny_clip: str) -> None:
    folder = folder_with_a_broken_image(tmp_path / "scans", 8)
    address = ray.get_runtime_context().gcs_address
    base = [
        sys.executable,
        "-m",
        "vitrina",
        "index",
        str(folder),
        "-c",
        "driven",
        "-m",
        tiny_clip,
        "--ray",
        address,
        "--part-size",
        "2",
        "-q",
        "--json",
    ]
    env = {**os.environ, "PYTHONPATH": SRC}
    killed = subprocess.run(base, env={**env, "VITRINA_FAULT": "after_shard_merge:2"}, capture_output=True, text=True)
    assert killed.returncode == 137, killed.stderr
    done = subprocess.run(base, env=env, capture_output=True, text=True)
    report = json.loads(done.stdout)
    # Exit 3 (as a local run) when this run merged the broken image's failure, else 0.
    assert done.returncode == (3 if report["failed"] else 0), done.stderr
    assert not report["interrupted"]
    assert 0 < report["pending"] < 9  # the killed run's merged shards were kept
    coll = open_collection("driven")
    sp = coll.space()
    assert sp.live == 8 and sp.rows == 8 and len(coll._store.failures()) == 1
    assert coll._store.pending(sp.name) == []
    single = open_collection("single2", create=True)
    single.index(str(folder), model=tiny_clip)
    assert_same_vectors(coll, single)
    assert report["failed_by_reason"] == ({single._store.failures()[0]["reason"]: 1} if report["failed"] else {})


class ImageHost:
    """A loopback image host that logs when each request started and when its answer was ready
    (before the body is written, so before the client can have it), and answers 429 on demand."""

    def __init__(self, folder: Path, n: int) -> None:
        files = make_images(folder, n)
        self.bodies = {f"/img/{p.name}": p.read_bytes() for p in files}
        self.log: list[tuple[float, float, str]] = []
        self.ban = False
        lock, host = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                start = time.monotonic()
                time.sleep(0.04)  # long enough for two workers with a gate each to overlap often
                body = host.bodies.get(self.path)
                status = 429 if host.ban else 200 if body is not None else 404
                self.send_response(status)
                self.send_header("Content-Length", str(len(body or b"")) if status == 200 else "0")
                if status == 429:
                    self.send_header("Retry-After", "600")
                self.end_headers()
                with lock:
                    host.log.append((start, time.monotonic(), self.path))
                if status == 200:
                    self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def listing(self, path: Path) -> str:
        path.write_text(
            "id,url\n" + "".join(f"{name.rsplit('/', 1)[-1]},{self.url}{name}\n" for name in sorted(self.bodies))
        )
        return f"urls:{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def image_host(tmp_path: Path) -> Iterator[ImageHost]:
    host = ImageHost(tmp_path / "served", 12)
    yield host
    host.close()


def polite(**kw: object) -> Fetcher:
    """10 requests a second and one at a time to 127.0.0.1, which bans (stops at the first 429)."""
    return Fetcher(
        allow_private=True, host_rates={"127.0.0.1": 10.0}, concurrency_per_host=1, stop_on_429=("127.0.0.1",), **kw
    )  # type: ignore[arg-type]


def test_workers_share_one_per_host_budget(cluster: Path, image_host: ImageHost, tmp_path: Path) -> None:
    source = image_host.listing(tmp_path / "list.csv")
    single = open_collection("remote-single", create=True, embedder=FakeEmbedder())  # numpy: workers start in seconds
    single.index(source, model=FAKE_SPEC, fetcher=Fetcher(allow_private=True, requests_per_second=0))
    image_host.log.clear()
    coll = open_collection("remote-ray", create=True)
    coll.ingest(source)
    seen: list[tuple[int, int]] = []
    report = index_on_ray(
        coll,
        model=FAKE_SPEC,
        embedder_factory=FakeEmbedder,
        part_size=3,
        fetcher=polite(),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert report.actors == 2 and report.embedded == 12 and report.failed == 0 and not report.interrupted
    assert seen == [(0, 12), (3, 12), (6, 12), (9, 12), (12, 12)]  # exact counts, one step per part
    log = sorted(image_host.log)
    assert len(log) == 12  # one request per image: no retries
    # One at a time for the whole cluster: two workers with a gate each would overlap.
    for (_, ready, path), (next_start, _, next_path) in zip(log, log[1:]):
        assert next_start >= ready, f"{next_path} started before {path} was answered"
    # 0.1 s apart: a start may lag its slot by the scheduling delay of a busy machine (the first
    # one too, which shortens the span), so the typical gap and the span less one slot are checked
    # (with a gate per worker: ~0.05 s and ~0.55 s).
    gaps = sorted(b[0] - a[0] for a, b in zip(log, log[1:]))
    assert gaps[len(gaps) // 2] >= 0.095 and log[-1][0] - log[0][0] >= 10 * 0.1, gaps
    assert_same_vectors(coll, single)


def test_a_ban_met_by_one_worker_stops_every_worker(cluster: Path, image_host: ImageHost, tmp_path: Path) -> None:
    coll = open_collection("remote-ban", create=True)
    coll.ingest(image_host.listing(tmp_path / "list.csv"))
    image_host.ban = True
    report = index_on_ray(coll, model=FAKE_SPEC, embedder_factory=FakeEmbedder, part_size=3, fetcher=polite())
    assert report.interrupted and "127.0.0.1 answered 429" in report.message, report.to_dict()
    assert len(image_host.log) == 1  # the other worker never asked the banned host
    assert report.parts == 4 and report.embedded == 0 and report.failed == 0
    assert (
        len(coll._store.pending(report.space)) == 12 and coll._store.failures() == []
    )  # all pending: the next run resumes


def test_a_host_budget_reclaims_the_slot_of_a_dead_worker_and_keeps_bans() -> None:
    now = [100.0]
    budget = HostBudget(clock=lambda: now[0])
    assert budget.acquire("h", 0.5, 1, lease=30.0) == ("go", 0.0, 1)
    answer, wait, _ = budget.acquire("h", 0.5, 1, lease=30.0)
    assert answer == "wait" and 0 < wait <= 0.25  # the one slot is held
    now[0] += 31.0  # its worker died holding it: the lease lapses
    assert budget.acquire("h", 0.5, 1, lease=30.0)[0] == "go"
    budget.release("h", 2)
    assert budget.acquire("h", 0.5, 1, lease=30.0) == ("go", 0.5, 3)  # the next start is an interval later
    budget.release("h", 3)
    budget.block("h", 600.0)
    assert budget.acquire("h", 0.5, 1, lease=30.0) == ("blocked", 600.0, 0) and budget.blocks() == {"h": 600.0}
    assert budget.acquire("other", 0.5, 1, lease=30.0)[0] == "go"
