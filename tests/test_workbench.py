"""The curator's workbench (issue 29): sets, labels, corrections, the train-review loop, "similar
to this set" and exports, on real SQLite with real images embedded by the numpy FakeEmbedder."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fakes import FAKE_SPEC
from vitrina import open_collection
from vitrina.errors import QueryError
from vitrina.store import SCHEMA_VERSION, CollectionPaths, Store

Q = "Is this a blank page?"
TAG = "is_this_a_blank_page"


def blank_and_printed(folder: Path, n: int, side: int, seed: int, white: int) -> dict[str, str]:
    """``n`` pages in ``folder``, every other one blank (``white`` with noise), the rest printed
    (random noise); returns each page's answer to "is this a blank page?"."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    kinds = {}
    for k in range(n):
        blank = k % 2 == 1
        base = np.full((side, side, 3), white) if blank else rng.integers(0, 255, (side, side, 3)).astype(int)
        pixels = np.clip(base + rng.integers(-10, 10, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"p{k:02d}.png")
        kinds[f"p{k:02d}.png"] = "yes" if blank else "no"
    return kinds


@pytest.fixture
def pages(tmp_path: Path, fake_embedder):  # type: ignore[no-untyped-def]
    """40 pages, every other one blank (near-white with noise), the rest printed (random noise)."""
    folder = tmp_path / "pages"
    kinds = blank_and_printed(folder, 40, 32, seed=1, white=240)
    coll = open_collection(tmp_path / "pages-coll", create=True, embedder=fake_embedder)
    coll.index(str(folder), model=FAKE_SPEC)
    return coll, kinds, folder


def test_schema_9_adds_the_workbench_tables_in_one_transaction(tmp_path: Path) -> None:
    Store(tmp_path / "c", create=True).close()
    db = sqlite3.connect(CollectionPaths(tmp_path / "c").db)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert SCHEMA_VERSION >= 9 and {"sets", "set_items", "labels", "corrections"} <= tables
    # Back to 8 without the tables; a crash before the commit of migration 9 leaves 8, the next open gets 9.
    for table in ("sets", "set_items", "labels", "corrections"):
        db.execute(f"DROP TABLE {table}")
    db.execute("DROP TABLE IF EXISTS word_fixes")  # schema 10's: a version-8 database has none
    db.execute("UPDATE meta SET value='8' WHERE key='schema_version'")
    db.commit()
    db.close()
    env = {**os.environ, "VITRINA_FAULT": "before_migration_commit", "PYTHONPATH": os.pathsep.join(sys.path)}
    code = (
        f"from pathlib import Path; from vitrina.store import Store; Store(Path({str(tmp_path / 'c')!r}), writer=True)"
    )
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode != 0
    db = sqlite3.connect(CollectionPaths(tmp_path / "c").db)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "8"
    assert not db.execute("SELECT 1 FROM sqlite_master WHERE name='labels'").fetchone()
    db.close()
    assert Store(tmp_path / "c", writer=True).schema_version() == SCHEMA_VERSION


def test_a_set_is_a_filter_and_survives_reindexing(pages) -> None:  # type: ignore[no-untyped-def]
    coll, kinds, folder = pages
    wb = coll.workbench
    blank = sorted(i for i, k in kinds.items() if k == "yes")
    out = wb.add("blank pages", blank[:5], query={"text": "empty paper"}, who="ana")
    assert out == {"set": "blank pages", "added": 5, "items": 5}
    assert wb.add("blank pages", blank[:7], who="ana")["added"] == 2
    assert sorted(coll.ids_where(["set=blank pages"])) == blank[:7]
    assert sorted(coll.ids_where(["set=Blank Pages"])) == blank[:7]  # filters fold case, as for any value
    hits = coll.search(image=str(folder / blank[0]), where=["set=blank pages"], limit=50, include_self=True)
    assert {h.id for h in hits} == set(blank[:7])
    [record] = wb.sets()
    assert record["name"] == "blank pages" and record["items"] == 7 and record["query"] == {"text": "empty paper"}
    assert record["created_by"] == "ana" and record["created_at"] > 0
    # A re-index (new model run over the same folder) and a re-embed keep the set.
    coll.index(str(folder), model=FAKE_SPEC)
    assert sorted(coll.ids_where(["set=blank pages"])) == blank[:7]
    # --where adds the items passing filters; the filters are recorded.
    both = wb.add("everything blank", where=["set=blank pages"], who="ana")
    assert both["items"] == 7 and wb.show("everything blank")["query"]["where"] == ["set=blank pages"]
    assert wb.remove("blank pages", blank[:2])["removed"] == 2
    assert sorted(coll.ids_where(["set=blank pages"])) == blank[2:7]
    assert wb.remove("blank pages")["deleted"] and coll.ids_where(["set=blank pages"]) == []
    assert [s["name"] for s in wb.sets()] == ["everything blank"]


def test_untrusted_names_are_bounded_and_refused_with_a_reason(pages) -> None:  # type: ignore[no-untyped-def]
    coll, kinds, _ = pages
    wb = coll.workbench
    some = next(iter(kinds))
    for bad, match in [("", "empty"), ("x" * 81, "at most 80"), ("a\x00b", "control"), ("<script>", "letters, digits"),
                       ("a=b", "letters, digits")]:  # fmt: skip
        with pytest.raises(QueryError, match=match):
            wb.add(bad, [some], who="ana")
    with pytest.raises(QueryError, match="not items of"):
        wb.add("ok", [some, "nope.png"], who="ana")
    assert wb.sets() == []  # nothing half-written
    with pytest.raises(QueryError, match="at most 200"):
        wb.label("q" * 201, some, "yes")
    with pytest.raises(QueryError, match="yes, no or skip"):
        wb.label(Q, some, "maybe")
    with pytest.raises(QueryError, match="No item"):
        wb.label(Q, "nope.png", "yes")
    assert wb.add("Sjøkart 1700-tallet", [some], who="ana")["items"] == 1  # any script
    assert coll.ids_where(["set=sjøkart 1700-tallet"]) == [some]


def test_labels_keep_who_and_when_apart_from_tags_and_the_last_answer_wins(pages) -> None:  # type: ignore[no-untyped-def]
    coll, kinds, _ = pages
    wb = coll.workbench
    first = sorted(kinds)[0]
    wb.label(Q, first, "y", who="ana")
    out = wb.label(Q, first, "no", who="bo")
    assert out["no"] == 1 and out["yes"] == 0
    [lab] = wb.labels(Q)
    assert (lab["id"], lab["answer"], lab["who"]) == (first, "no", "bo") and lab["at"] > 0
    assert coll.item(first).tags == {} or TAG not in coll.tagged_items([first])[first].tags  # labels are not tags
    assert wb.questions()[0]["question"] == Q and wb.questions()[0]["tag"] == TAG


def test_train_review_and_corrections_win_over_the_machine(pages) -> None:  # type: ignore[no-untyped-def]
    coll, kinds, _ = pages
    wb = coll.workbench
    ids = sorted(kinds)
    with pytest.raises(QueryError, match="at least 2 of each"):
        wb.train(Q)
    for i in ids[:8]:
        wb.label(Q, i, kinds[i], who="ana")
    wb.label(Q, ids[8], "skip", who="ana")
    report = wb.train(Q)
    assert report["tag"] == TAG and report["trained_on"] == 8 and report["f1_macro_cv"] >= 0.75
    assert report["f1_macro_cv_ci95"][0] <= report["f1_macro_cv"] <= report["f1_macro_cv_ci95"][1]
    # The probe is the same tag `vitrina classify` makes: a filter.
    tagged_yes = set(coll.ids_where([f"{TAG}=yes"]))
    truth_yes = {i for i, k in kinds.items() if k == "yes"}
    assert len(tagged_yes & truth_yes) >= 16 and len(tagged_yes - truth_yes) <= 4
    # The review queue: unlabelled items (skip counts as seen), least sure first.
    queue = wb.review(Q, limit=10, order="uncertain")
    assert len(queue) == 10 and not {q["id"] for q in queue} & set(ids[:9])
    t = report["threshold"]

    def margin(q: dict) -> float:  # distance from the threshold in log-odds
        p = min(max(q["p_yes"], 1e-6), 1 - 1e-6)
        return abs(np.log(p / (1 - p)) - np.log(t / (1 - t)))

    everything = wb.review(Q, limit=31, order="uncertain")  # every unlabelled item
    rest = [q for q in everything if q["id"] not in {x["id"] for x in queue}]
    assert len(everything) == 31 and max(map(margin, queue)) <= min(map(margin, rest)) + 1e-3
    # A labelled item's answer wins over the probe, also after a re-run of the classifier.
    wrong = ids[0]
    wb.label(Q, wrong, "no" if kinds[wrong] == "yes" else "yes", who="bo")
    wb.train(Q)
    from vitrina.classify import apply_probe

    apply_probe(coll, TAG)
    value = "no" if kinds[wrong] == "yes" else "yes"
    assert wrong in coll.ids_where([f"{TAG}={value}"])
    assert {(c["id"], c["value"], c["source"]) for c in wb.corrections(TAG)} >= {(wrong, value, f"label:{Q}")}
    # A hand correction of a machine tag, and taking it back.
    other = ids[20]
    machine = "yes" if other in coll.ids_where([f"{TAG}=yes"]) else "no"
    flipped = "no" if machine == "yes" else "yes"
    wb.correct(TAG, other, flipped, who="cy")
    apply_probe(coll, TAG)
    assert other in coll.ids_where([f"{TAG}={flipped}"])
    assert any(c["id"] == other and c["who"] == "cy" for c in wb.corrections(TAG))
    wb.correct(TAG, other, None)
    assert other in coll.ids_where([f"{TAG}={machine}"])
    curve = wb.curve(Q)
    assert [p["labels"] for p in curve] == [8, 8] and all("ci95" in p for p in curve)


def test_similar_to_a_set_finds_its_kind_and_leaves_the_set_out(pages) -> None:  # type: ignore[no-untyped-def]
    coll, kinds, _ = pages
    wb = coll.workbench
    blank = sorted(i for i, k in kinds.items() if k == "yes")
    printed = sorted(i for i, k in kinds.items() if k == "no")
    wb.add("blank", blank[:4], who="ana")
    wb.add("printed", printed[:4], who="ana")
    hits = wb.similar("blank", negative="printed", limit=10)
    found = [h.id for h in hits]
    assert len(found) == 10 and not set(found) & set(blank[:4] + printed[:4])
    assert sum(kinds[i] == "yes" for i in found) >= 9


def test_exports_carry_ids_scores_labels_query_and_model(pages) -> None:  # type: ignore[no-untyped-def]
    coll, kinds, _ = pages
    wb = coll.workbench
    ids = sorted(kinds)[:3]
    wb.add("picked", ids, scores={ids[0]: 0.5}, query={"text": "=HYPERLINK(evil)"}, who="ana")
    wb.label(Q, ids[0], "yes", who="ana")
    data = json.loads(wb.export("picked", "json"))
    assert data["format"] == "vitrina-set/1" and data["set"]["query"] == {"text": "=HYPERLINK(evil)"}
    assert data["model"]["spec"] == FAKE_SPEC and data["collection"] == coll.name
    rows = {r["id"]: r for r in data["items"]}
    assert set(rows) == set(ids) and rows[ids[0]]["set_score"] == 0.5 and rows[ids[0]]["labels"] == {Q: "yes"}
    table = list(csv.DictReader(io.StringIO(wb.export("picked", "csv"))))
    assert [r["id"] for r in table] == ids and json.loads(table[0]["labels"]) == {Q: "yes"}
    assert json.loads(table[0]["model"])["spec"] == FAKE_SPEC and json.loads(table[0]["set_query"])["text"].startswith(
        "="
    )
    manifest = json.loads(wb.export("picked", "iiif-manifest", base="https://example.org/v"))
    assert manifest["type"] == "Manifest" and len(manifest["items"]) == 3
    assert manifest["id"] == "https://example.org/v/sets/picked/manifest.json"
    with pytest.raises(QueryError, match="Unknown export format"):
        wb.export("picked", "xml")
    with pytest.raises(QueryError, match="No set"):
        wb.export("nothing", "json")


def test_the_cli_keeps_labels_trains_reviews_and_exports(pages, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from vitrina.cli import cli

    coll, kinds, _ = pages
    path = str(coll.path)
    monkeypatch.setenv("VITRINA_WHO", "dana")
    run = CliRunner().invoke
    ids = sorted(kinds)
    for i in ids[:10]:
        result = run(cli, ["label", path, Q, i, kinds[i][0]])
        assert result.exit_code == 0, result.output
    trained = run(cli, ["label", path, Q, "--train", "--review", "5", "--json"])
    assert trained.exit_code == 0, trained.output
    data = json.loads(trained.output)
    assert data["trained"]["tag"] == TAG and len(data["review"]) == 5
    assert not {r["id"] for r in data["review"]} & set(ids[:10])
    shown = run(cli, ["label", path, Q])
    assert "by dana" in shown.output and ids[0] in shown.output
    added = run(cli, ["sets", path, "add", "picked", "--ids", ids[0], "--ids", ids[1], "--query", "paper"])
    assert added.exit_code == 0 and "set=picked" in added.output, added.output
    assert "picked" in run(cli, ["sets", path]).output
    out = tmp_path / "picked.csv"
    exported = run(cli, ["sets", path, "export", "picked", "--format", "csv", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    assert [r["id"] for r in csv.DictReader(io.StringIO(out.read_text()))] == ids[:2]
    similar = run(cli, ["sets", path, "similar", "picked", "--json", "--limit", "3"])
    assert similar.exit_code == 0 and len(json.loads(similar.output)) == 3
    bad = run(cli, ["sets", path, "add", "a=b", "--ids", ids[0]])
    assert bad.exit_code == 1 and "letters, digits" in bad.output
    fixed = run(cli, ["correct", path, TAG, ids[30], "yes", "--json"])
    assert fixed.exit_code == 0 and ids[30] in coll.ids_where([f"{TAG}=yes"])
    assert run(cli, ["sets", path, "delete", "picked"]).exit_code == 0 and coll.workbench.sets() == []
