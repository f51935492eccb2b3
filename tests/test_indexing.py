"""Indexing a folder: incremental, tolerant of bad files, exactly-once across kills."""

from __future__ import annotations

import errno
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_images
from vitrina import Collection, DiskFull, QueryError, StoreLocked, get_embedder, load_image, open_collection
from vitrina.embedding import embed_images
from vitrina.store import Store, resolve_collection


def cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "vitrina", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=240,
    )
    if check and result.returncode not in (0, 3):
        raise AssertionError(f"vitrina {' '.join(args)} exited {result.returncode}\n{result.stderr}")
    return result


def invoke(*args: str):  # type: ignore[no-untyped-def]
    """The command line in this process (faster than a subprocess); stdout and stderr apart."""
    from click.testing import CliRunner

    from vitrina.cli import cli as main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def vectors_by_id(name: str) -> dict[str, np.ndarray]:
    coll = open_collection(name)
    ids, matrix = coll.vectors()
    assert coll.info(check=True)["problems"] == []  # SQLite integrity, row mapping, no zero or stray vectors
    coll.close()
    return dict(zip(ids, matrix))


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


@pytest.mark.slow
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
    assert coll.search(image=str(folder / "ünïcødé café 地図.png"), limit=1, include_self=True)[
        0
    ].score == pytest.approx(1, abs=1e-4)
    latin1 = [h for h in coll.search("map", limit=20) if "latin1" in h.id]
    assert len(latin1) == 1 and latin1[0].id.startswith("fsbytes:")
    assert (
        "[red]markup.png" in cli("search", "messy", "--image", str(folder / "img0003.jpg"), "-n", "3").stdout
    )  # shown, not parsed
    info = json.loads(cli("info", "messy", "--json").stdout)
    assert info["failed_by_reason"] == report["failed_by_reason"]
    # Failed files are not retried on every run, only when asked.
    assert json.loads(cli("index", "messy", "--json").stdout)["failed"] == 0
    assert json.loads(cli("index", "messy", "--retry-failed", "--json").stdout)["failed"] == 3


@pytest.mark.slow
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
        proc = subprocess.Popen(
            [sys.executable, "-m", "vitrina", *base], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
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
    holder = open_collection("locked").writer()
    holder.__enter__()
    try:
        with pytest.raises(StoreLocked, match=f"PID {os.getpid()}"):
            open_collection("locked").index(str(scans))
        # Readers are not blocked by a writer.
        assert open_collection("locked").search("a map", limit=1)
    finally:
        holder.__exit__(None, None, None)
    assert open_collection("locked").index(str(scans)).count("unchanged") == 14


@pytest.mark.slow
def test_cli_index_search_info(scans: Path, tiny_clip: str) -> None:
    out = cli("index", str(scans), "--collection", "clitest", "--model", tiny_clip)
    assert "14 embedded" in out.stderr and "Embedding" in out.stderr
    found = json.loads(
        cli("search", "clitest", "--image", str(scans / "manuscript-page.jpg"), "-n", "3", "--json").stdout
    )
    assert found["hits"][0]["id"] == "manuscript-page.jpg" and len(found["hits"]) == 3
    weighted = json.loads(cli("search", "clitest", "sea monster", "2:ship", "-0.5:colour", "--json").stdout)
    assert len(weighted["hits"]) == 10
    table = cli("search", "clitest", "old map", "--where", "folder=generated", "-n", "4").stdout
    assert table.count("generated/") == 4
    batch = cli("search", "clitest", "--batch", "-", "-n", "2", check=False)
    assert batch.returncode == 0 and batch.stdout == ""
    lines = subprocess.run(
        [sys.executable, "-m", "vitrina", "search", "clitest", "--batch", "-", "-n", "2"],
        input="a ship\nold map\n",
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert [json.loads(line)["query"] for line in lines] == ["a ship", "old map"]
    info = cli("info", "clitest", "--check").stdout
    assert "14 vectors" in info and "check: ok" in info
    offline = cli("index", str(scans), "--collection", "needs-hub", check=False)  # default model, no hub here
    assert offline.returncode == 1 and "--model mini" in offline.stderr and "vitrina[mini]" in offline.stderr
    missing = cli("search", "nope", "a map", check=False)
    assert missing.returncode == 1 and "No collection" in missing.stderr and "Traceback" not in missing.stderr


def test_a_collection_addressed_by_path_is_indexed_and_suggested_by_path(
    tmp_path: Path, tiny_clip: str, vitrina_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    expected = [
        "symlink loop: self -> self",
        "symlink loop: a/up -> ..",
        "folder reached twice, skipped: alias -> a (walked as a)",
    ]

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


def test_a_corrupt_replacement_takes_the_old_vector_with_it(tmp_path: Path, tiny_clip: str) -> None:
    folder = tmp_path / "b"
    make_images(folder, 6)
    coll = open_collection("corrupt", create=True)
    coll.index(str(folder), model=tiny_clip)
    victim = folder / "img0002.png"
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    os.utime(victim, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert sum(coll.index(str(folder)).failed.values()) == 1
    assert coll.item("img0002.png").status == "failed"
    with pytest.raises(QueryError):  # no stored vector answers for it any more...
        coll.search(image="img0002.png")
    assert "img0002.png" not in {
        h.id for h in coll.search(image="img0000.png", limit=50, include_self=True)
    }  # ...nor in others' hits
    info = coll.info(check=True)
    assert info["by_status"] == {"ok": 5, "failed": 1} and info["spaces"][0]["vectors"] == 5 and info["problems"] == []
    # --check sees a failed item with a vector and a zeroed vector.
    store = Store(resolve_collection("corrupt"), writer=True)
    space = store.space()
    with store.transaction():
        store.db.execute("UPDATE items SET status='failed' WHERE id='img0003.jpg'")
    row = store.rows_of(space.name, ["img0004.png"])["img0004.png"]
    store.vector_file(space, writable=True).write_rows(row, np.zeros((1, space.fingerprint.dim), np.float32))
    problems = store.check()
    store.close()
    assert any("1 failed items still have a vector" in p for p in problems)
    assert any(f"1 live vectors are zero or not finite (rows {row})" in p for p in problems)
    assert cli("info", "corrupt", "--check", check=False).returncode == 1


def test_a_moved_folder_keeps_its_items_and_vectors_at_the_new_place(tmp_path: Path, tiny_clip: str) -> None:
    b1, b2 = tmp_path / "b1", tmp_path / "b2"
    make_images(b1, 6)
    coll = open_collection("cb", create=True)
    coll.index(str(b1), model=tiny_clip)
    b1.rename(b2)  # mv b1 b2; rm b2/img0000.png
    (b2 / "img0000.png").unlink()
    report = coll.index(str(b2))
    assert (report.count("moved"), report.count("removed"), report.count("new"), report.embedded) == (5, 1, 0, 0)
    items = list(coll.iter_items())
    assert sorted(i.id for i in items) == sorted(p.name for p in b2.iterdir())
    assert all(i.image.startswith(str(b2) + "/") and i.source == f"folder:{b2}" and i.status == "ok" for i in items)
    hit = coll.search(image=str(b2 / "img0003.jpg"), limit=1, include_self=True)[0]
    assert (hit.id, hit.image) == ("img0003.jpg", str(b2 / "img0003.jpg")) and hit.score == pytest.approx(1, abs=1e-4)
    info = coll.info(check=True)
    assert info["items"] == 5 and info["spaces"][0]["vectors"] == 5 and info["problems"] == []
    # A folder that still exists is another source, not a move: indexing a copy elsewhere removes nothing of it.
    make_images(tmp_path / "other", 2, seed=5)
    (tmp_path / "other" / "img0000.png").rename(tmp_path / "other" / "x.png")
    (tmp_path / "other" / "img0001.jpg").rename(tmp_path / "other" / "y.jpg")
    assert coll.index(str(tmp_path / "other")).count("removed") == 0 and len(coll) == 7


def test_a_moved_url_list_takes_its_items_along(tmp_path: Path) -> None:
    rows = "id,url,title\n" + "".join(f"u{i},https://example.org/{i}.jpg,t{i}\n" for i in range(4))
    (tmp_path / "old.csv").write_text(rows)
    coll = open_collection("ul", create=True)
    coll.ingest(f"urls:{tmp_path / 'old.csv'}")
    (tmp_path / "old.csv").rename(tmp_path / "new.csv")
    (tmp_path / "new.csv").write_text(rows.replace("u3,https://example.org/3.jpg,t3\n", ""))
    report = coll.ingest(f"urls:{tmp_path / 'new.csv'}")
    assert (report.moved, report.removed, report.new) == (3, 1, 0)
    assert {i.id: i.source for i in coll.iter_items()} == {f"u{i}": f"urls:{tmp_path / 'new.csv'}" for i in range(3)}


def _vector_collection(name: str, n: int, dim: int) -> tuple[Any, list[str], Any]:
    from vitrina import Item
    from vitrina.records import ModelFingerprint

    coll = open_collection(name, create=True)
    ids = [f"i{k:04d}" for k in range(n)]
    coll.add_items([Item(id=i, image=f"/nowhere/{i}.png", fingerprint="f") for i in ids])
    return coll, ids, ModelFingerprint("hf:test/vectors", "1", dim, "none")


def _expected(vectors: np.ndarray, ids: list[str], queries: np.ndarray, k: int = 10) -> list[list[str]]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return [[ids[i] for i in np.argsort(-(unit @ q), kind="stable")[:k]] for q in queries]


def test_dead_rows_are_compacted_and_searches_see_the_same_answers(tmp_path: Path) -> None:
    coll, ids, fp = _vector_collection("compact", 400, 16)
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    coll.import_vectors(ids, rng.normal(size=(400, 16)), fingerprint=fp)
    reader = open_collection("compact")  # long-lived, like `vitrina serve`
    reader.search_vectors(queries)
    for _ in range(3):  # the third round passes 1000 dead rows and a quarter of the file: compacted on the spot
        latest = rng.normal(size=(400, 16)).astype(np.float32)
        coll.import_vectors(ids, latest, fingerprint=fp)
    space = coll.space()
    assert (space.rows, space.live) == (400, 400)
    files = list((resolve_collection("compact") / "spaces").glob("*.f32"))
    assert len(files) == 1 and files[0].stat().st_size < 4096 + 1600 * 16 * 4
    assert [[h.id for h in hits] for hits in reader.search_vectors(queries)] == _expected(latest, ids, queries)
    # Below the threshold nothing happens by itself; compact() reclaims, and every reader re-maps.
    coll.import_vectors(ids[:100], rng.normal(size=(100, 16)), fingerprint=fp)
    before = reader.search_vectors(queries)
    item_query = reader.search(image="i0007", limit=5)
    assert coll.info()["spaces"][0]["dead_rows"] == 100
    assert Collection(resolve_collection("compact")).compact() == 100
    after = reader.search_vectors(queries)
    assert [[h.id for h in hits] for hits in after] == [[h.id for h in hits] for hits in before]
    assert [h.score for hits in after for h in hits] == pytest.approx(
        [h.score for hits in before for h in hits], abs=1e-6
    )  # BLAS order
    again = reader.search(image="i0007", limit=5)
    assert [h.id for h in again] == [h.id for h in item_query] and [h.score for h in again] == pytest.approx(
        [h.score for h in item_query], abs=1e-6
    )
    fresh_ids, fresh = open_collection("compact").vectors()
    reader_ids, mapped = reader.vectors()
    assert reader_ids == fresh_ids and np.array_equal(mapped, fresh)
    info = reader.info(check=True)
    assert info["spaces"][0]["dead_rows"] == 0 and info["problems"] == []


def test_a_kill_at_any_step_of_a_compaction_leaves_a_consistent_collection(tmp_path: Path) -> None:
    coll, ids, fp = _vector_collection("killed", 60, 8)
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(4, 8)).astype(np.float32)
    spaces = resolve_collection("killed") / "spaces"
    for point in ("compact_written", "compact_before_commit", "compact_committed"):
        latest = rng.normal(size=(60, 8)).astype(np.float32)
        coll.import_vectors(ids, rng.normal(size=(60, 8)), fingerprint=fp)
        coll.import_vectors(ids, latest, fingerprint=fp)
        reader = open_collection("killed")
        assert [[h.id for h in hits] for hits in reader.search_vectors(queries)] == _expected(latest, ids, queries)
        dead = reader.info()["spaces"][0]["dead_rows"]
        assert dead > 0
        code = "from vitrina import open_collection; open_collection('killed').compact()"
        assert (
            subprocess.run(
                [sys.executable, "-c", code], env={**os.environ, "VITRINA_FAULT": point}, timeout=120
            ).returncode
            == 137
        )
        assert len(list(spaces.glob("*.f32"))) == 2  # the new file beside the old: a stray, one or the other
        for c in (reader, open_collection("killed")):
            assert [[h.id for h in hits] for hits in c.search_vectors(queries)] == _expected(latest, ids, queries)
            assert c.info(check=True)["problems"] == []
        assert reader.info()["spaces"][0]["dead_rows"] == (0 if point == "compact_committed" else dead)
        Store(resolve_collection("killed"), writer=True).close()  # a writer removes the stray
        assert len(list(spaces.glob("*.f32"))) == 1
        assert [[h.id for h in hits] for hits in reader.search_vectors(queries)] == _expected(latest, ids, queries)
    coll.import_vectors(ids, latest, fingerprint=fp)
    assert coll.compact() == 60 and coll.info(check=True)["problems"] == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True).returncode
    ):
        pytest.skip(
            "needs root to mount a small tmpfs (test_a_full_disk_while_growing_vectors covers ENOSPC without one)"
        )
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, shutil.disk_usage(disk).free - leave))
    return filler


def test_a_full_disk_is_one_clear_error_and_a_rerun_recovers(
    small_disk: Path, tmp_path: Path, tiny_clip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "imgs"
    make_images(folder, 40)
    monkeypatch.setenv("VITRINA_HOME", str(small_disk / "home"))
    where = str(small_disk / "home" / "full")
    for leave in (0, 8_000, 40_000, 200_000):  # full at creation, at the schema, at the items, at the vectors
        filler = _fill(small_disk, leave)
        with pytest.raises(DiskFull, match="run the same command again") as raised:
            open_collection("full", create=True).index(str(folder), model=tiny_clip, batch_size=4)
        assert (
            where in str(raised.value)
            and f"on {small_disk}" in str(raised.value)
            and "Free at least" in str(raised.value)
        )
        filler.unlink()
    filler = _fill(small_disk, 0)
    result = cli("index", str(folder), "--collection", "full", "--model", tiny_clip, "-q", check=False)
    assert result.returncode == 75 and "is full" in result.stderr and "Traceback" not in result.stderr
    filler.unlink()
    report = open_collection("full").index(str(folder), model=tiny_clip)
    coll = open_collection("full")
    assert report.embedded <= 40 and coll.info(check=True)["problems"] == [] and coll.info()["by_status"] == {"ok": 40}


def test_a_full_disk_while_growing_vectors(scans: Path, tiny_clip: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch, pytest.raises(DiskFull, match="is full"):
        patch.setattr(os, "posix_fallocate", no_space)
        open_collection("enospc", create=True).index(str(scans), model=tiny_clip)
    assert open_collection("enospc").index(str(scans), model=tiny_clip).embedded == 14


def test_the_download_cache_is_capped_and_says_when_it_cannot_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from vitrina.diskcache import FileCache

    cache = FileCache(tmp_path / "http", max_bytes=1000)
    for n in range(6):
        cache.put(tmp_path / "http" / f"f{n}", bytes(300))
    assert sorted(p.name for p in (tmp_path / "http").iterdir()) == ["f3", "f4", "f5"]  # oldest first out
    assert sum(p.stat().st_size for p in (tmp_path / "http").iterdir()) <= 1000
    again = FileCache(tmp_path / "http", max_bytes=700)  # a new run counts what is there
    again.put(tmp_path / "http" / "f6", bytes(300))
    assert sorted(p.name for p in (tmp_path / "http").iterdir()) == ["f5", "f6"]
    (tmp_path / "blocked").write_text("a file where the cache wants a folder")
    broken = FileCache(tmp_path / "blocked" / "http", max_bytes=1000)
    with caplog.at_level("WARNING", logger="vitrina.cache"):
        broken.put(tmp_path / "blocked" / "http" / "x", b"data")
        broken.put(tmp_path / "blocked" / "http" / "y", b"data")
    assert broken.broken and len([r for r in caplog.records if "cannot be written" in r.message]) == 1
