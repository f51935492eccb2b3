"""A moved or renamed file is recognised by its content: its item (vectors, tags, sets, labels,
corrections) follows it to the new id and nothing is embedded again (vitrina.moves)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_images
from tests.fakes import FAKE_SPEC, FakeEmbedder
from vitrina import open_collection
from vitrina.moves import file_hash
from vitrina.store import SCHEMA_VERSION, CollectionPaths, Store


class CountingEmbedder(FakeEmbedder):
    """The fake embedder, counting the images it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        self.images += len(pixels)
        return super().embed_pixels(pixels)


@pytest.fixture
def indexed(tmp_path: Path):  # type: ignore[no-untyped-def]
    folder = tmp_path / "scans"
    make_images(folder, 6)
    embedder = CountingEmbedder()
    coll = open_collection(tmp_path / "coll", create=True, embedder=embedder)
    report = coll.index(str(folder), model=FAKE_SPEC)
    assert report.embedded == 6 and embedder.images == 6
    embedder.images = 0
    return coll, folder, embedder


def rid_of(coll, item_id: str) -> int | None:  # type: ignore[no-untyped-def]
    db = sqlite3.connect(CollectionPaths(coll.path).db)
    row = db.execute("SELECT rid FROM items WHERE id = ?", (item_id,)).fetchone()
    db.close()
    return row[0] if row else None


def test_a_renamed_file_keeps_its_item_vectors_tags_and_what_people_made(indexed) -> None:  # type: ignore[no-untyped-def]
    coll, folder, embedder = indexed
    wb = coll.workbench
    wb.add("favourites", ["img0001.jpg", "img0002.png"], who="ana")
    wb.label("is_a_map", "img0001.jpg", "yes", who="ana")
    wb.correct("page_kind", "img0001.jpg", "plate", who="ana")
    coll.set_tags("colour", "probe:test", [("img0001.jpg", "red", 0.9)])
    coll.set_state("workbench.random.is_a_map", '["img0002.png", "img0001.jpg"]')  # the review's random picks
    rid = rid_of(coll, "img0001.jpg")
    (folder / "img0001.jpg").rename(folder / "Kart over Bergen.jpg")
    report = coll.index(str(folder))
    assert (report.count("moved_by_content"), report.count("moved"), report.count("new"), report.count("removed")) == (
        1, 1, 0, 0)  # fmt: skip
    assert report.embedded == 0 and embedder.images == 0  # not re-embedded
    assert rid_of(coll, "Kart over Bergen.jpg") == rid and rid_of(coll, "img0001.jpg") is None
    item = coll.item("Kart over Bergen.jpg")
    assert item.image == str(folder / "Kart over Bergen.jpg") and item.metadata["title"] == "Kart over Bergen"
    hit = coll.search(image=str(folder / "Kart over Bergen.jpg"), limit=1, include_self=True)[0]
    assert hit.id == "Kart over Bergen.jpg" and hit.score == pytest.approx(1, abs=1e-4)
    assert sorted(coll.ids_where(["set=favourites"])) == ["Kart over Bergen.jpg", "img0002.png"]
    assert wb.labels("is_a_map")[0]["id"] == "Kart over Bergen.jpg"
    assert [c["id"] for c in wb.corrections("page_kind")] == ["Kart over Bergen.jpg"]
    assert coll.state("workbench.random.is_a_map") == '["img0002.png", "Kart over Bergen.jpg"]'
    assert coll.ids_where(["colour=red"]) == ["Kart over Bergen.jpg"]
    assert coll.search(keywords="bergen", limit=1)[0].id == "Kart over Bergen.jpg"  # the FTS row follows the new title
    info = coll.info(check=True)
    assert info["items"] == 6 and info["spaces"][0]["vectors"] == 6 and info["problems"] == []
    # The next run finds everything unchanged and reads no file again.
    again = coll.ingest(str(folder))
    assert (again.unchanged, again.hashed, again.moved) == (6, 0, 0)


def test_a_file_moved_into_a_subfolder_keeps_its_item(indexed) -> None:  # type: ignore[no-untyped-def]
    coll, folder, embedder = indexed
    (folder / "1859").mkdir()
    shutil.move(folder / "img0002.png", folder / "1859" / "img0002.png")
    report = coll.index(str(folder))
    assert (report.count("moved_by_content"), report.count("new"), report.count("removed"), report.embedded) == (
        1, 0, 0, 0)  # fmt: skip
    assert embedder.images == 0
    item = coll.item("1859/img0002.png")
    assert item.metadata["folder"] == "1859" and item.status == "ok"


def test_a_moved_file_and_a_copy_of_it_are_one_move_and_one_new_item(indexed) -> None:  # type: ignore[no-untyped-def]
    coll, folder, embedder = indexed
    (folder / "img0003.jpg").rename(folder / "a.jpg")
    shutil.copy(folder / "a.jpg", folder / "b.jpg")  # same bytes, a new modification time
    report = coll.index(str(folder))
    assert (report.count("moved_by_content"), report.count("new"), report.count("removed")) == (1, 1, 0)
    assert report.embedded == 1 and embedder.images == 1 and len(coll) == 7
    assert rid_of(coll, "a.jpg") is not None and rid_of(coll, "b.jpg") is not None  # first in id order took the item
    # True duplicates both present stay two items; deleting one removes just it.
    shutil.copy(folder / "img0004.png", folder / "img0004 copy.png")
    report = coll.index(str(folder))
    assert (report.count("moved_by_content"), report.count("new"), report.embedded) == (0, 1, 1) and len(coll) == 8
    (folder / "img0004.png").unlink()
    report = coll.index(str(folder))
    assert (report.count("moved_by_content"), report.count("removed"), report.embedded) == (0, 1, 0)
    assert rid_of(coll, "img0004 copy.png") is not None and len(coll) == 7


def test_a_moved_file_whose_content_changed_is_new(indexed) -> None:  # type: ignore[no-untyped-def]
    coll, folder, embedder = indexed
    coll.workbench.label("is_a_map", "img0005.jpg", "no", who="ana")
    (folder / "img0005.jpg").rename(folder / "edited.jpg")
    Image.new("RGB", (64, 48), (200, 10, 10)).save(folder / "edited.jpg")
    report = coll.index(str(folder))
    assert (report.count("moved_by_content"), report.count("new"), report.count("removed")) == (0, 1, 1)
    assert report.embedded == 1 and embedder.images == 1
    assert [row["id"] for row in coll.workbench.labels("is_a_map")] == ["img0005.jpg"]  # kept for the old id


def test_file_hash_reads_in_blocks_and_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(3 << 20) + b"x")
    h = file_hash(str(path))
    assert h is not None and h.startswith("b2:") and h == file_hash(str(path))
    assert file_hash(str(path), limit=1 << 20) is None  # over the bound: not hashed
    assert file_hash(str(tmp_path / "gone.jpg")) is None and file_hash(str(tmp_path)) is None


def ingest_cli(folder: Path, coll: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if fault:
        env["VITRINA_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "vitrina", "ingest", str(folder), "--collection", str(coll), "--json"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_kill_in_the_middle_of_a_move_leaves_the_collection_consistent(indexed) -> None:  # type: ignore[no-untyped-def]
    coll, folder, embedder = indexed
    coll.workbench.add("favourites", ["img0001.jpg", "img0003.jpg"], who="ana")
    (folder / "img0001.jpg").rename(folder / "x.jpg")
    (folder / "img0003.jpg").rename(folder / "y.jpg")
    killed = ingest_cli(folder, coll.path, "mid_move:2")  # after the first of two carries, before the commit
    assert killed.returncode == 137, killed.stderr
    info = coll.info(check=True)
    assert info["problems"] == [] and info["spaces"][0]["vectors"] == 6
    assert sorted(coll.ids_where(["set=favourites"])) == ["img0001.jpg", "img0003.jpg"]  # nothing half-moved
    done = ingest_cli(folder, coll.path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["moved_by_content"], out["moved"], out["removed"]) == (2, 2, 0)
    assert sorted(coll.ids_where(["set=favourites"])) == ["x.jpg", "y.jpg"]
    assert coll.index().embedded == 0 and embedder.images == 0
    assert coll.info(check=True)["problems"] == []
    # The summary a person reads says it.
    (folder / "x.jpg").rename(folder / "z.jpg")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    text = subprocess.run([sys.executable, "-m", "vitrina", "ingest", str(folder), "--collection", str(coll.path)],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "1 moved (1 recognised by content)" in text.stderr, text.stderr


def test_schema_11_hashes_items_stored_before_it_once(tmp_path: Path, indexed) -> None:  # type: ignore[no-untyped-def]
    coll, folder, embedder = indexed
    db = sqlite3.connect(CollectionPaths(coll.path).db)
    db.execute("DROP INDEX items_content_hash")
    db.execute("ALTER TABLE items DROP COLUMN content_hash")  # as schema 10 stored it
    db.execute("UPDATE meta SET value='10' WHERE key='schema_version'")
    db.commit()
    db.close()
    # A kill before the migration's commit leaves schema 10 as it was; the next open upgrades.
    env = {**os.environ, "VITRINA_FAULT": "before_migration_commit", "PYTHONPATH": os.pathsep.join(sys.path)}
    code = f"from pathlib import Path; from vitrina.store import Store; Store(Path({str(coll.path)!r}), writer=True)"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode == 137
    db = sqlite3.connect(CollectionPaths(coll.path).db)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "10"
    assert "content_hash" not in {r[1] for r in db.execute("PRAGMA table_info(items)")}
    db.close()
    store = Store(coll.path, writer=True)
    assert store.schema_version() == SCHEMA_VERSION >= 11
    store.close()
    first = coll.ingest(str(folder))
    assert (first.hashed, first.unchanged) == (6, 6)  # once, after the upgrade
    (folder / "img0000.png").rename(folder / "renamed.png")
    second = coll.ingest(str(folder))
    assert (second.hashed, second.moved_by_content, second.new) == (1, 1, 0)


def test_a_map_built_before_a_move_is_stale_after_it(indexed) -> None:  # type: ignore[no-untyped-def]
    from vitrina import QueryError
    from vitrina.layout import build_map, load_map

    coll, folder, _ = indexed
    build_map(coll, method="pca")
    load_map(coll)  # fits
    (folder / "img0001.jpg").rename(folder / "renamed.jpg")
    assert coll.ingest(str(folder)).moved_by_content == 1
    with pytest.raises(QueryError, match="moved or renamed since the map was built"):
        load_map(coll)  # it lists the old id
    build_map(coll, method="pca")
    assert "renamed.jpg" in load_map(coll)[0].decode("utf-8", "replace")


def test_the_count_moves_while_files_are_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vitrina.ingest

    monkeypatch.setattr(vitrina.ingest, "HASH_PART", 2)
    make_images(tmp_path / "scans", 5)
    seen: list[int] = []
    report = open_collection(tmp_path / "c", create=True).ingest(
        str(tmp_path / "scans"), on_page=lambda done, total: seen.append(done)
    )
    assert seen == [2, 4, 5] and (report.found, report.new, report.hashed) == (5, 5, 5)


def test_a_qdrant_copy_follows_a_move_without_new_points(indexed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("qdrant_client")
    coll, folder, _ = indexed
    target = f"qdrant:{tmp_path / 'q'}#scans"
    assert coll.sync(target).new == 6
    (folder / "img0001.jpg").rename(folder / "renamed.jpg")
    assert coll.ingest(str(folder)).moved_by_content == 1
    # Before the next sync the copy's point still names the old id; the answer names the new one.
    stale = open_collection(coll.path, index=target, embedder=FakeEmbedder())
    assert stale.search(image=str(folder / "renamed.jpg"), limit=1, include_self=True)[0].id == "renamed.jpg"
    stale.close()
    again = coll.sync(target)  # the point is the item's internal key: updated in place, its payload names the new id
    assert (again.new, again.changed, again.removed, again.points) == (0, 1, 0, 6)
    via = open_collection(coll.path, index=target, embedder=FakeEmbedder())
    hits = via.search(image=str(folder / "renamed.jpg"), limit=1, include_self=True)
    assert hits[0].id == "renamed.jpg"


def test_regions_and_ocr_words_stay_with_a_moved_file_and_are_not_redone(tmp_path: Path) -> None:
    from tests.test_regions import make_pages
    from vitrina.ocr import Word

    make_pages(tmp_path / "imgs", 3)
    embedder = CountingEmbedder()
    coll = open_collection(tmp_path / "c", create=True, embedder=embedder)
    first = coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC, regions="grid")
    assert first.regions > 0
    name = sorted(p.name for p in (tmp_path / "imgs").iterdir())[1]
    rid = rid_of(coll, name)
    store = Store(coll.path, writer=True)
    [fp] = store.fingerprints_of([name]).values()
    store.save_words(rid, fp, "e@1", [Word("Tromsø", 10, 20, 80, 20, 0.9, "e")], (300, 200))
    space = store.space().name
    regions_before = [(r.row, r.box) for r in store.regions_of(space, [rid])]
    store.close()
    coll.workbench.fix_word(name, 0, "Tromsö", who="ana")  # a person's correction of the reading
    os.rename(tmp_path / "imgs" / name, tmp_path / "imgs" / "moved.png")
    os.utime(tmp_path / "imgs" / "moved.png", ns=(1, 1))  # a new modification time too (a copy would have one)
    embedder.images = 0
    report = coll.index(str(tmp_path / "imgs"), regions="grid")
    assert (report.count("moved_by_content"), report.embedded, report.regions, embedder.images) == (1, 0, 0, 0)
    store = Store(coll.path)
    assert (
        rid_of(coll, "moved.png") == rid and [(r.row, r.box) for r in store.regions_of(space, [rid])] == regions_before
    )
    assert [w["text"] for w in store.words_of(rid)] == ["Tromsö"]
    assert [f["text"] for f in store.curation().word_fixes("moved.png")] == ["Tromsö"]  # the correction moved too
    assert "moved.png" not in {r["id"] for r in store.ocr_pending("e@1")}  # read for these bytes: not read again
    store.close()
    assert coll.info(check=True)["problems"] == []


def test_a_fifo_is_not_hashed_and_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    out: list[str | None] = []
    worker = threading.Thread(target=lambda: out.append(file_hash(str(fifo))), daemon=True)
    worker.start()
    worker.join(10)
    assert out == [None]  # answered at once (an open() would wait for a writer forever)


def test_an_old_id_still_leads_to_the_moved_picture(indexed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A citation of the old id (an exported list, a bookmarked page) still finds the picture: the
    item page redirects, the API and the library say the id it has now; chains follow the latest
    move, and a name taken by a file again is that file's."""
    from fastapi.testclient import TestClient

    from vitrina import embedding
    from vitrina.errors import QueryError
    from vitrina.query import ItemNotFound
    from vitrina.service import create_app

    coll, folder, embedder = indexed
    monkeypatch.setitem(embedding._CACHE, (FAKE_SPEC, None, None), embedder)
    (folder / "img0001.jpg").rename(folder / "Bergen.jpg")
    coll.index(str(folder))
    assert coll.moved_to("img0001.jpg") == "Bergen.jpg" and coll.moved_to("img0002.png") is None
    with pytest.raises(QueryError, match="it is now 'Bergen.jpg'"):
        coll.item("img0001.jpg")
    with pytest.raises(ItemNotFound, match="it is now 'Bergen.jpg'"):
        coll.search(image="img0001.jpg")
    (folder / "Bergen.jpg").rename(folder / "Kart over Bergen.jpg")  # moved again
    coll.index(str(folder))
    assert coll.moved_to("img0001.jpg") == coll.moved_to("Bergen.jpg") == "Kart over Bergen.jpg"
    with TestClient(create_app(coll.path), follow_redirects=False) as client:
        page = client.get("/item", params={"id": "img0001.jpg", "back": "/?q=sea"})
        assert page.status_code == 301
        assert page.headers["location"] == "/item?id=Kart+over+Bergen.jpg&back=%2F%3Fq%3Dsea"
        assert client.get(page.headers["location"]).status_code == 200
        api = client.get("/api/items", params={"id": "Bergen.jpg"})
        assert api.status_code == 404 and api.json()["error"]["code"] == "item_moved"
        assert "Kart over Bergen.jpg" in api.json()["error"]["message"]
        gone = client.get("/api/search", params={"item": "img0001.jpg"})
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "item_moved"
        assert client.get("/item", params={"id": "never-there.jpg"}).status_code == 404
    # A new file under an old name is that file: the name no longer leads elsewhere.
    Image.new("RGB", (40, 30), (10, 200, 30)).save(folder / "img0001.jpg")
    coll.index(str(folder))
    assert coll.moved_to("img0001.jpg") is None and coll.item("img0001.jpg").id == "img0001.jpg"
    assert coll.moved_to("Bergen.jpg") == "Kart over Bergen.jpg"
