"""The query service behind `vitrina search` (vitrina.query_service): it answers what the command
would answer in-process, byte for byte; it is started on first use and reused; it lives in a
private folder, refuses what it should, stops when idle or asked, and its absence or failure only
means the command answers in-process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import make_images
from vitrina import open_collection, query_service
from vitrina.cli import cli


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime folder with the service turned on; every service in it is stopped after."""
    folder = Path(tempfile.mkdtemp(prefix="vq-"))  # short: a socket path has at most 107 bytes
    monkeypatch.setenv("VITRINA_RUNTIME_DIR", str(folder))
    monkeypatch.delenv("VITRINA_NO_DAEMON", raising=False)
    monkeypatch.setenv("VITRINA_DAEMON_IDLE", "120")
    try:
        yield folder
    finally:
        query_service.stop_all(folder)
        for lock in folder.glob("*.lock"):  # a service that did not stop when asked
            pid = lock.read_text().strip()
            if pid.isdigit():
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except ProcessLookupError:
                    pass
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def clip_collection(tmp_path_factory: pytest.TempPathFactory, tiny_clip: str) -> Path:
    root = tmp_path_factory.mktemp("qs")
    images = make_images(root / "scans", 12)
    coll = open_collection(root / "coll", create=True)
    report = coll.index(str(images[0].parent), model=tiny_clip)
    assert report.embedded == 12
    return coll.path


def _pid(folder: Path) -> int:
    (lock,) = folder.glob("q-*.lock")
    return int(lock.read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _wait_gone(pid: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


@pytest.mark.slow
def test_the_service_answers_byte_for_byte_what_the_command_answers_in_process(
    runtime: Path, clip_collection: Path
) -> None:
    runner = CliRunner()
    queries = (
        ["map of the sea", "--limit", "5"],
        ["red ship", "2:harbour", "-0.5:colour", "--json"],
        ["old chart", "--csv", "--min-score", "-1"],
        ["sea", "--image", str(next((clip_collection.parent / "scans").iterdir())), "--json"],
        ["nothing", "--min-score", "0.99"],
    )
    for args in queries:
        served = runner.invoke(cli, ["search", str(clip_collection), *args])
        local = runner.invoke(cli, ["search", str(clip_collection), *args, "--no-daemon"])
        assert served.exit_code == local.exit_code == 0, (served.output, local.output)
        assert served.stdout == local.stdout and served.stderr == local.stderr, args
        assert len(list(runtime.glob("q-*.sock"))) == 1, "one service, started on first use and reused"
    pid = _pid(runtime)
    assert _alive(pid)
    # `vitrina query-services` says what runs (a look is not a query), and --stop stops it
    for _ in range(2):
        listed = runner.invoke(cli, ["query-services", "--json"])
        assert listed.exit_code == 0, listed.output
        (svc,) = json.loads(listed.stdout)["services"]
        assert svc["pid"] == pid and svc["queries"] == len(queries)
        assert svc["collections"] == [{"collection": str(clip_collection), "index": "auto"}]
    human = runner.invoke(cli, ["query-services"])
    assert f"pid {pid}: {clip_collection}; {len(queries)} queries" in human.stdout.replace("\n", "")
    stopped = runner.invoke(cli, ["query-services", "--stop"])
    assert stopped.exit_code == 0 and "Stopped 1 query service." in stopped.stdout
    assert not list(runtime.glob("q-*.sock")) and not list(runtime.glob("q-*.lock"))
    _wait_gone(pid)
    assert "No query service is running" in runner.invoke(cli, ["query-services"]).stdout


@pytest.mark.slow
def test_errors_keep_their_message_and_exit_code_and_a_wrong_name_leaves_no_service(
    runtime: Path, clip_collection: Path
) -> None:
    runner = CliRunner()
    served = runner.invoke(cli, ["search", str(clip_collection), "sea", "--space", "nope"])
    local = runner.invoke(cli, ["search", str(clip_collection), "sea", "--space", "nope", "--no-daemon"])
    assert served.exit_code == local.exit_code == 1 and served.stderr == local.stderr and "nope" in served.stderr
    query_service.stop_all(runtime)
    missing = runner.invoke(cli, ["search", str(clip_collection.parent / "missing"), "sea"])
    assert missing.exit_code == 1 and "No collection" in missing.stderr
    deadline = time.monotonic() + 10
    while list(runtime.glob("q-*.sock")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(runtime.glob("q-*.sock")), "a collection that does not open leaves no service running"


@pytest.mark.slow
def test_an_idle_service_stops_by_itself(runtime: Path, clip_collection: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITRINA_DAEMON_IDLE", "1")
    result = CliRunner().invoke(cli, ["search", str(clip_collection), "sea"])
    assert result.exit_code == 0 and list(runtime.glob("q-*.sock"))
    pid = _pid(runtime)
    _wait_gone(pid, 30)
    assert not list(runtime.glob("q-*.sock"))


def test_an_unsafe_runtime_folder_means_in_process(runtime: Path, clip_collection: Path) -> None:
    runtime.chmod(0o777)
    assert query_service.runtime_dir() is None
    result = CliRunner().invoke(cli, ["search", str(clip_collection), "sea", "--limit", "2"])
    assert result.exit_code == 0 and "score" in result.stdout
    assert not list(runtime.iterdir()), "nothing started where others could reach it"


def test_queries_that_need_no_model_and_opting_out_start_nothing(
    runtime: Path, clip_collection: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    some_id = open_collection(clip_collection).vectors()[0][0]
    assert runner.invoke(cli, ["search", str(clip_collection), "--image", some_id]).exit_code == 0
    assert runner.invoke(cli, ["search", str(clip_collection), "sea", "--no-daemon"]).exit_code == 0
    monkeypatch.setenv("VITRINA_NO_DAEMON", "1")
    assert runner.invoke(cli, ["search", str(clip_collection), "sea"]).exit_code == 0
    assert not list(runtime.iterdir())


def test_a_service_is_one_per_collection_index_environment_and_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = query_service.service_key
    monkeypatch.chdir(tmp_path)
    assert key("./maps", "auto") == key(str(tmp_path / "maps"), "auto") != key("maps", "auto")
    assert key("maps", "auto") != key("maps", "exact")
    before = key("maps", "auto")
    monkeypatch.setenv("VITRINA_MODEL", "mini")
    with_model = key("maps", "auto")
    assert with_model != before
    monkeypatch.setenv("VITRINA_DAEMON_IDLE", "5")  # how long it waits does not change an answer
    assert key("maps", "auto") == with_model
