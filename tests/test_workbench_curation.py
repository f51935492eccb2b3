"""The curator's workbench, second part (issue 29): a set exported as a collection of its own that
reuses the vectors, renaming sets, and the item page's id-keyed corrections; real SQLite, real
images embedded by the numpy FakeEmbedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_workbench import pages  # noqa: F401 — the fixture
from vitrina import open_collection
from vitrina.errors import QueryError


def test_a_set_exported_as_a_collection_answers_like_the_set(pages, tmp_path: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    coll, kinds, folder = pages
    wb = coll.workbench
    chosen = sorted(kinds)[3:23]
    wb.add("first half", chosen, query={"text": "pages"}, who="ana")
    coll.set_tags("kind", "probe-x", [(i, k, 0.9) for i, k in kinds.items()])
    wb.correct("kind", chosen[0], "corrected", who="bo")
    wb.review_duplicates(chosen[1], "different", who="bo")  # a verdict about the old collection's groups
    out = wb.to_collection("first half", tmp_path / "half", who="ana")
    assert out["items"] == 20 and list(out["vectors"].values()) == [20] and out["corrections"] == 1
    new = open_collection(tmp_path / "half", embedder=fake_embedder)
    assert len(new) == 20 and new.fingerprint() == coll.fingerprint()
    ids, matrix = new.vectors()
    old_ids, old_matrix = coll.vectors()
    row = {i: n for n, i in enumerate(old_ids)}
    assert np.allclose(
        matrix, np.asarray(old_matrix)[[row[i] for i in ids]], atol=1e-6
    )  # copied (renormalised), not re-embedded
    for probe in (chosen[5], sorted(kinds)[30]):  # an item of the set, and one outside it
        there = new.search(image=str(folder / probe), limit=10, include_self=True)
        here = coll.search(image=str(folder / probe), where=["set=first half"], limit=10, include_self=True)
        assert [h.id for h in there] == [h.id for h in here]
        assert [h.score for h in there] == pytest.approx([h.score for h in here], abs=1e-5)
    assert new.item(chosen[0]).metadata == coll.item(chosen[0]).metadata
    assert sorted(new.ids_where(["set=first half"])) == chosen
    assert new.workbench.show("first half")["created_by"] == "ana"
    assert new.workbench.show("first half")["query"] == {"text": "pages", "from": coll.name, "exported_by": "ana"}
    assert new.ids_where(["kind=corrected"]) == [chosen[0]]  # the correction came along and wins
    assert new.workbench.corrections(item_id=chosen[0])[0]["who"] == "bo"
    assert new.workbench.corrections(item_id=chosen[1]) == []  # duplicate verdicts stay with their groups
    # A target that is not empty is refused, and nothing is written there.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(QueryError, match="not empty"):
        wb.to_collection("first half", tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    # An existing empty folder is fine.
    (tmp_path / "empty").mkdir()
    assert wb.to_collection("first half", tmp_path / "empty")["items"] == 20


def test_rename_keeps_the_items_and_the_filter_follows(pages) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    coll, kinds, _ = pages
    wb = coll.workbench
    ids = sorted(kinds)[:4]
    wb.add("draft", ids, query={"text": "x"}, who="ana")
    assert wb.rename("draft", "draft")["set"] == "draft" and len(wb.show("draft")["members"]) == 4  # a no-op
    wb.add("other", ids[:1], who="ana")
    assert wb.rename("draft", "final picks") == {"set": "final picks", "renamed_from": "draft", "items": 4}
    assert sorted(coll.ids_where(["set=final picks"])) == ids and coll.ids_where(["set=draft"]) == []
    assert [s["name"] for s in wb.sets()] == ["final picks", "other"]
    assert wb.show("final picks")["query"] == {"text": "x"}
    with pytest.raises(QueryError, match="already a set"):
        wb.rename("final picks", "other")
    with pytest.raises(QueryError, match="No set"):
        wb.rename("draft", "again")


def test_corrections_of_one_item(pages) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    coll, kinds, _ = pages
    a, b = sorted(kinds)[:2]
    coll.set_tags("kind", "probe-x", [(i, k, 0.9) for i, k in kinds.items()])
    coll.workbench.correct("kind", a, "map", who="ana")
    coll.workbench.correct("kind", b, "plan", who="bo")
    assert [(c["id"], c["value"]) for c in coll.workbench.corrections(item_id=a)] == [(a, "map")]
    assert coll.workbench.corrections(item_id=sorted(kinds)[5]) == []


def test_duplicate_verdicts_win_over_the_machine_and_survive_a_rerun(pages) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from vitrina.duplicates import duplicates_of, find_duplicates

    coll, kinds, folder = pages
    for copy in ("copy-a.png", "copy-b.png"):
        (folder / copy).write_bytes((folder / "p00.png").read_bytes())
    coll.index(str(folder))
    find_duplicates(coll, threshold=0.999)
    wb = coll.workbench
    shown = wb.duplicates("p00.png")
    assert sorted(m["id"] for m in shown["members"]) == ["copy-a.png", "copy-b.png"] and not shown["corrected"]
    # "Not a duplicate" takes copy-b out of the group, on every member's page and in filters.
    wb.review_duplicates("p00.png", "different", ["copy-b.png"], who="ana")
    assert [m["id"] for m in duplicates_of(coll, "p00.png")] == ["copy-a.png"]
    assert duplicates_of(coll, "copy-b.png") == []
    assert wb.duplicates("p00.png")["removed"] == [{"id": "copy-b.png", "who": "ana"}]
    # "These are duplicates" pins the rest as one group.
    wb.review_duplicates("p00.png", "same", who="bo")
    pinned = wb.duplicates("copy-a.png")
    assert pinned["corrected"] and pinned["who"] == "bo" and [m["id"] for m in pinned["members"]] == ["p00.png"]
    # A re-run that finds no group at all (threshold above 1) leaves people's verdicts standing.
    find_duplicates(coll, threshold=1.0)
    coll.set_tags("duplicate_of", "rerun", [])
    assert [m["id"] for m in duplicates_of(coll, "p00.png")] == ["copy-a.png"]
    assert duplicates_of(coll, "copy-b.png") == []
    # Back to the machine's: copy-b follows the machine again (now: no group).
    wb.review_duplicates("p00.png", "machine", ["copy-b.png"], who="ana")
    assert wb.duplicates("p00.png")["removed"] == []
    with pytest.raises(QueryError, match="Verdict"):
        wb.review_duplicates("p00.png", "maybe")


def test_a_corrected_ocr_word_is_shown_searched_and_survives_a_new_reading(pages) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from vitrina.ocr import Word
    from vitrina.store import Store

    coll, kinds, _ = pages
    item = sorted(kinds)[2]
    read = [
        Word("Kristiania", 10, 10, 120, 20, 0.9, "e"),
        Word("Trondhjern", 10, 40, 120, 20, 0.6, "e"),
        Word("1859", 10, 70, 50, 20, 0.9, "e"),
    ]

    def ocr_run(words: list[Word]) -> None:
        store = Store(coll.path, writer=True)
        store.save_words(store.rids_of([item])[item], "f", "e@1", words, (400, 300))
        store.close()

    ocr_run(read)
    wb = coll.workbench
    assert [w["text"] for w in wb.words(item)["words"]] == ["Kristiania", "Trondhjern", "1859"]
    [exact] = coll.search(keywords="trondhjern", limit=5)
    out = wb.fix_word(item, 1, "Trondhjem", who="ana")
    assert out == {"id": item, "n": 1, "text": "Trondhjem", "was": "Trondhjern", "corrected": True}
    shown = wb.words(item)
    assert [w["text"] for w in shown["words"]] == ["Kristiania", "Trondhjem", "1859"]
    assert shown["fixes"][0]["was"] == "Trondhjern" and shown["fixes"][0]["who"] == "ana"
    assert [h.id for h in coll.search(keywords="trondhjem", limit=5)] == [item]  # the corrected word is found
    [near] = coll.search(keywords="trondhjern", limit=5)  # the misreading: only as a near miss now
    assert near.score < exact.score and near.words[0]["text"] == "Trondhjem"
    # A new reading (boxes a little off, a word before it) gets the correction again.
    ocr_run([Word("Oslo", 200, 10, 40, 20, 0.9, "e"), Word("Kristiania", 11, 10, 120, 20, 0.9, "e"),
             Word("Trondhjern", 12, 41, 118, 20, 0.6, "e"), Word("1859", 10, 70, 50, 20, 0.9, "e")])  # fmt: skip
    assert [w["text"] for w in wb.words(item)["words"]] == ["Oslo", "Kristiania", "Trondhjem", "1859"]
    assert [h.id for h in coll.search(keywords="trondhjem", limit=5)] == [item]
    # Correcting it again keeps what the OCR read; back to the reading drops the correction.
    assert wb.fix_word(item, 2, "Trondhjem.", who="bo")["was"] == "Trondhjern"
    assert wb.fix_word(item, 2, None, who="bo") == {
        "id": item,
        "n": 2,
        "text": "Trondhjern",
        "was": "Trondhjern",
        "corrected": False,
    }
    assert wb.words(item)["fixes"] == [] and [h.id for h in coll.search(keywords="trondhjern", limit=5)] == [item]
    # A smudge read as a word, corrected to a dash: the misreading is no longer searchable, even
    # after a new reading puts the correction back.
    assert [h.id for h in coll.search(keywords="1859", limit=5)] == [item]
    wb.fix_word(item, 3, "—", who="ana")
    assert coll.search(keywords="1859", limit=5) == []
    ocr_run([Word("Kristiania", 11, 10, 120, 20, 0.9, "e"), Word("1859", 10, 70, 50, 20, 0.9, "e")])
    assert [w["text"] for w in wb.words(item)["words"]] == ["Kristiania", "—"]
    assert coll.search(keywords="1859", limit=5) == []
    with pytest.raises(QueryError, match="no word 9"):
        wb.fix_word(item, 9, "x")


def test_schema_10_adds_word_fixes_to_a_version_9_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from vitrina.store import CollectionPaths, Store

    Store(tmp_path / "c", create=True).close()
    db = sqlite3.connect(CollectionPaths(tmp_path / "c").db)
    db.execute("DROP TABLE word_fixes")
    db.execute("UPDATE meta SET value='9' WHERE key='schema_version'")
    db.commit()
    db.close()
    store = Store(tmp_path / "c", writer=True)
    assert store.schema_version() >= 10 and store.curation().word_fixes("x") == []
    store.close()


def test_the_cli_renames_exports_reviews_duplicates_and_fixes_words(pages, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    import json

    from click.testing import CliRunner

    from vitrina.cli import cli
    from vitrina.duplicates import find_duplicates
    from vitrina.ocr import Word
    from vitrina.store import Store

    coll, kinds, folder = pages
    (folder / "copy.png").write_bytes((folder / "p00.png").read_bytes())
    coll.index(str(folder))
    find_duplicates(coll, threshold=0.999)
    path, ids = str(coll.path), sorted(kinds)
    monkeypatch.setenv("VITRINA_WHO", "dana")
    run = CliRunner().invoke
    assert run(cli, ["sets", path, "add", "draft", "--ids", ids[0], "--ids", ids[1]]).exit_code == 0
    renamed = run(cli, ["sets", path, "rename", "draft", "--to", "picked"])
    assert renamed.exit_code == 0 and "is now" in renamed.output, renamed.output
    made = run(cli, ["sets", path, "export", "picked", "--as-collection", str(tmp_path / "picked"), "--json"])
    assert made.exit_code == 0 and json.loads(made.output)["items"] == 2, made.output
    again = run(cli, ["sets", path, "export", "picked", "--as-collection", str(tmp_path / "picked")])
    assert again.exit_code == 1 and "not empty" in again.output
    shown = run(cli, ["review-duplicates", path, "p00.png"])
    assert shown.exit_code == 0 and "copy.png" in shown.output, shown.output
    out = run(cli, ["review-duplicates", path, "p00.png", "different", "--ids", "copy.png"])
    assert "not a duplicate: copy.png (by dana)" in out.output, out.output
    store = Store(coll.path, writer=True)
    store.save_words(store.rids_of([ids[0]])[ids[0]], "f", "e@1", [Word("Bergen", 1, 1, 40, 10, 0.9, "e")], (100, 100))
    store.close()
    assert "0  Bergen" in run(cli, ["fix-word", path, ids[0]]).output
    fixed = run(cli, ["fix-word", path, ids[0], "0", "Bergen."])
    assert fixed.exit_code == 0 and "read as Bergen" in fixed.output, fixed.output
