"""Indexing a folder: incremental, tolerant of bad files, exactly-once across kills."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_images
from vitrina import StoreLocked, get_embedder, load_image, open_collection
from vitrina.embedding import embed_images
from vitrina.store import Store, resolve_collection


def cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "vitrina", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=240)
    if check and result.returncode not in (0, 3):
        raise AssertionError(f"vitrina {' '.join(args)} exited {result.returncode}\n{result.stderr}")
    return result


def invoke(*args: str):  # type: ignore[no-untyped-def]
    """The command line in this process (faster than a subprocess); stdout and stderr apart."""
    from click.testing import CliRunner

    from vitrina.cli import cli as main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def vectors_by_id(name: str) -> dict[str, np.ndarray]:
    store = Store(resolve_collection(name))
    space = store.space()
    matrix = store.vector_file(space).matrix(space.rows)
    rows = {r["item_id"]: r["row"] for r in store.db.execute("SELECT item_id, row FROM vectors WHERE space=?", (space.name,))}
    out = {i: np.array(matrix[r]) for i, r in rows.items()}
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not store.check()
    store.close()
    return out


def test_reindexing_is_incremental(scans: Path, tiny_clip: str) -> None:
    coll = open_collection("inc", create=True)
    first = coll.index(str(scans), model=tiny_clip)
    assert (first.count("new"), first.embedded) == (14, 14)
    again = coll.index(str(scans))  # the collection remembers its model
    assert (again.count("unchanged"), again.embedded, again.count("new")) == (14, 0, 0)

    changed = scans / "generated" / "img0002.png"
    Image.new("RGB", (50, 50), (10, 200, 30)).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    (scans / "generated" / "img0003.jpg").unlink()
    make_images(scans / "more", 2, seed=7)
    third = coll.index(str(scans))
    assert (third.count("changed"), third.count("removed"), third.count("new"), third.embedded) == (1, 1, 2, 3)
    assert len(coll) == 15
    hits = coll.search(image=str(changed), limit=50)
    assert hits[0].id == "generated/img0002.png" and hits[0].score == pytest.approx(1, abs=1e-4)
    assert "generated/img0003.jpg" not in {h.id for h in hits}
    assert len(hits) == 15  # the superseded row of the changed file is not a hit
    info = coll.info(check=True)
    assert info["spaces"][0]["vectors"] == 15 and info["spaces"][0]["dead_rows"] == 2 and info["problems"] == []


def test_bad_files_are_recorded_and_the_run_goes_on(tmp_path: Path, tiny_clip: str) -> None:
    folder = tmp_path / "messy"
    make_images(folder, 4)
    good = (folder / "img0001.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.jpg").write_text("not an image")
    (folder / "ünïcødé café 地図.png").write_bytes((folder / "img0000.png").read_bytes())
    (folder / "[red]markup.png").write_bytes((folder / "img0003.jpg").read_bytes())
    Image.new("1", (30000, 30000)).save(folder / "bomb.png")
    (folder / "readme.txt").write_text("ignored: not an image suffix")
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # a symlink loop
    weird = os.fsencode(str(folder)) + b"/latin1-\xe9t\xe9.png"
    with open(weird, "wb") as f:
        f.write((folder / "img0002.png").read_bytes())
    result = cli("index", str(folder), "--collection", "messy", "--model", tiny_clip, "--json")
    assert result.returncode == 3  # finished, but some items failed
    report = json.loads(result.stdout)
    assert report["embedded"] == 7
    assert report["failed_by_reason"] == {"truncated": 1, "unreadable_image": 1, "too_large": 1}
    coll = open_collection("messy")
    assert coll.search(image=str(folder / "ünïcødé café 地図.png"), limit=1, include_self=True)[0].score == pytest.approx(1, abs=1e-4)
    latin1 = [h for h in coll.search("map", limit=20) if "latin1" in h.id]
    assert len(latin1) == 1 and latin1[0].id.startswith("fsbytes:")
    assert "[red]markup.png" in cli("search", "messy", "--image", str(folder / "img0003.jpg"), "-n", "3").stdout  # shown, not parsed
    info = json.loads(cli("info", "messy", "--json").stdout)
    assert info["failed_by_reason"] == report["failed_by_reason"]
    # Failed files are not retried on every run, only when asked.
    assert json.loads(cli("index", "messy", "--json").stdout)["failed"] == 0
    assert json.loads(cli("index", "messy", "--retry-failed", "--json").stdout)["failed"] == 3


def test_a_killed_run_resumes_with_every_file_indexed_exactly_once(tmp_path: Path, tiny_clip: str) -> None:
    folder = tmp_path / "many"
    make_images(folder, 60, seed=3)
    base = ["index", str(folder), "--collection", "crash", "--model", tiny_clip, "--batch-size", "7", "-q"]
    # Deterministic kills at each boundary of the write path...
    for fault in ("after_vector_write:2", "before_commit:3", "after_commit:4"):
        assert cli(*base, env={"VITRINA_FAULT": fault}, check=False).returncode == 137
        partial = vectors_by_id("crash")
        assert len(partial) < 60
    # ... and SIGKILL at random moments.
    rng = random.Random(1234)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "vitrina", *base], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        vectors_by_id("crash")  # opens, integrity ok, consistent
    final = cli(*base, "--json")
    vectors = vectors_by_id("crash")
    assert sorted(vectors) == sorted(p.relative_to(folder).as_posix() for p in folder.iterdir())
    # Each row holds the vector of the image it is mapped to (no shifted mapping).
    embedder = get_embedder(tiny_clip)
    for item_id in sorted(vectors)[::7]:
        fresh = embed_images(embedder, [load_image(folder / item_id, min_side=embedder.min_side)])[0]
        assert float(fresh @ vectors[item_id]) == pytest.approx(1.0, abs=1e-5)
    assert json.loads(final.stdout)["failed"] == 0
    assert json.loads(cli(*base, "--json").stdout)["embedded"] == 0


def test_a_second_writer_is_refused_with_the_holder_named(scans: Path, tiny_clip: str) -> None:
    open_collection("locked", create=True).index(str(scans), model=tiny_clip)
    holder = Store(resolve_collection("locked"), writer=True)
    try:
        with pytest.raises(StoreLocked, match=f"PID {os.getpid()}"):
            open_collection("locked").index(str(scans))
        # Readers are not blocked by a writer.
        assert open_collection("locked").search("a map", limit=1)
    finally:
        holder.close()
    assert open_collection("locked").index(str(scans)).count("unchanged") == 14


def test_cli_index_search_info(scans: Path, tiny_clip: str) -> None:
    out = cli("index", str(scans), "--collection", "clitest", "--model", tiny_clip)
    assert "14 embedded" in out.stderr and "Embedding" in out.stderr
    found = json.loads(cli("search", "clitest", "--image", str(scans / "manuscript-page.jpg"), "-n", "3", "--json").stdout)
    assert found["hits"][0]["id"] == "manuscript-page.jpg" and len(found["hits"]) == 3
    weighted = json.loads(cli("search", "clitest", "sea monster", "2:ship", "-0.5:colour", "--json").stdout)
    assert len(weighted["hits"]) == 10
    table = cli("search", "clitest", "old map", "--where", "folder=generated", "-n", "4").stdout
    assert table.count("generated/") == 4
    batch = cli("search", "clitest", "--batch", "-", "-n", "2", check=False)
    assert batch.returncode == 0 and batch.stdout == ""
    lines = subprocess.run([sys.executable, "-m", "vitrina", "search", "clitest", "--batch", "-", "-n", "2"], input="a ship\nold map\n", capture_output=True, text=True).stdout.splitlines()
    assert [json.loads(line)["query"] for line in lines] == ["a ship", "old map"]
    info = cli("info", "clitest", "--check").stdout
    assert "14 vectors" in info and "check: ok" in info
    offline = cli("index", str(scans), "--collection", "needs-hub", check=False)  # default model, no hub here
    assert offline.returncode == 1 and "--model mini" in offline.stderr and "vitrina[mini]" in offline.stderr
    missing = cli("search", "nope", "a map", check=False)
    assert missing.returncode == 1 and "No collection" in missing.stderr and "Traceback" not in missing.stderr


def test_a_collection_addressed_by_path_is_indexed_and_suggested_by_path(tmp_path: Path, tiny_clip: str, vitrina_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = tmp_path / "images"
    make_images(images, 3)
    work = tmp_path / "work dir"  # a space: a suggested command must quote the path
    work.mkdir()
    monkeypatch.chdir(work)
    first = invoke("index", str(images), "--collection", "./mycoll", "--model", tiny_clip, "-q", "--json")
    assert first.exit_code == 0 and json.loads(first.stdout)["embedded"] == 3
    coll_path = work / "mycoll"
    assert (coll_path / "collection.sqlite").is_file() and not vitrina_home.joinpath("mycoll").exists()

    make_images(images / "more", 2, seed=5)
    ingested = invoke("ingest", f"folder:{images}", "--collection", str(coll_path), "-q")
    assert ingested.exit_code == 0, ingested.stderr
    hint = ingested.stderr.strip().splitlines()[-1]
    assert hint == f"Next: vitrina index {shlex.quote(str(coll_path))}"
    # Copying the hint indexes that collection, with the model it records, ...
    done = invoke(*shlex.split(hint.removeprefix("Next: vitrina ")), "-q", "--json")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["collection"], report["model"], report["embedded"], report["new"]) == ("mycoll", tiny_clip, 2, 0)
    # ... rather than reading the collection folder as images into a new, empty one in the home folder.
    assert not vitrina_home.joinpath("mycoll").exists()
    assert len(open_collection(coll_path)) == 5 and open_collection(coll_path).spaces()[0].live == 5
    # A relative path works the same way.
    make_images(images / "later", 1, seed=9)
    assert invoke("ingest", f"folder:{images}", "--collection", "./mycoll", "-q").exit_code == 0
    relative = invoke("index", "./mycoll", "-q")
    assert relative.exit_code == 0 and "1 embedded" in relative.stderr and not vitrina_home.joinpath("mycoll").exists()

    # Addressed by name, the hint names it by name...
    named = invoke("ingest", f"folder:{images}", "--collection", "named", "-q")
    assert named.stderr.strip().splitlines()[-1] == "Next: vitrina index named"
    # ... unless a folder of that name here would be read instead.
    (work / "named").mkdir()
    shadowed = invoke("ingest", f"folder:{images}", "--collection", "named", "-q")
    assert shadowed.stderr.strip().splitlines()[-1] == f"Next: vitrina index {vitrina_home / 'named'}"
    # A collection folder given as the SOURCE of another collection is refused, not read as images.
    wrong = invoke("index", str(coll_path), "--collection", "other", "-q")
    assert wrong.exit_code == 2 and "is a collection, not a folder of images" in wrong.stderr
    assert not vitrina_home.joinpath("other").exists()


def test_symlink_loops_are_reported_in_the_summaries(tmp_path: Path, tiny_clip: str) -> None:
    folder = tmp_path / "loops"
    make_images(folder / "a", 2)
    (folder / "a" / "up").symlink_to("..", target_is_directory=True)  # back to the folder above
    (folder / "self").symlink_to("self")  # a link to itself: never resolves
    (folder / "alias").symlink_to("a", target_is_directory=True)  # the same folder again: no loop
    expected = ["symlink loop: self -> self", "symlink loop: a/up -> ..", "folder reached twice, skipped: alias -> a (walked as a)"]

    result = invoke("index", str(folder), "--collection", "loops", "--model", tiny_clip, "-q", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["embedded"] == 2 and report["problems"] == expected
    text = invoke("index", str(folder), "--collection", "loops", "-q")
    assert "skipped symlink loop: a/up -> .." in text.stderr and "skipped symlink loop: self -> self" in text.stderr
    ingested = invoke("ingest", f"folder:{folder}", "--collection", "loops", "--json")
    assert json.loads(ingested.stdout)["problems"] == expected
    assert "skipped folder reached twice" in invoke("ingest", f"folder:{folder}", "--collection", "loops").stderr
    assert open_collection("loops").index(str(folder)).ingest["problems"] == expected  # the Python API
