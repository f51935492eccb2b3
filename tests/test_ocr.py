"""OCR (vitrina.ocr): folding, word boxes, tiles, the words store and its FTS column, the
misread-tolerant keyword match, `vitrina ocr` (resumable after a kill, hostile images), and the
boxes in search hits. Engine tests use the real RapidOCR / Tesseract on rendered text."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from vitrina import Item
from vitrina.collection import open_collection
from vitrina.index.keyword import KeywordIndex, edit_distance, folded_expression
from vitrina.ocr import Word, get_engine
from vitrina.ocr.fold import fold, fold_words
from vitrina.ocr.rapid import split_line
from vitrina.ocr.tiles import _Found, merge, read_tiled, tile_grid
from vitrina.query import Query
from vitrina.store import Store

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def render(path: Path, text: str, size: tuple[int, int] = (700, 220), at: tuple[int, int] = (60, 80), px: int = 40,
           rotate: bool = False) -> Path:  # fmt: skip
    """``text`` printed on a map-like background (a river line), saved to ``path``."""
    image = Image.new("RGB", size, (236, 226, 196))
    draw = ImageDraw.Draw(image)
    draw.line((0, size[1] - 30, size[0], size[1] - 60), fill=(90, 120, 200), width=6)
    font = ImageFont.truetype(FONT, px)
    if rotate:
        label = Image.new("RGB", (int(font.getlength(text)) + 20, px + 20), (236, 226, 196))
        ImageDraw.Draw(label).text((10, 5), text, font=font, fill=(20, 20, 20))
        image.paste(label.rotate(90, expand=True), at)
    else:
        draw.text(at, text, font=font, fill=(20, 20, 20))
    image.save(path)
    return path


# -- folding, boxes, tiles ---------------------------------------------------------------------


def test_fold_matches_what_an_engine_can_emit() -> None:
    assert fold("Tromsø") == "tromso" and fold("KRAGERØ") == "kragero"
    assert fold("Ålesund") == "alesund" and fold("Straße") == "strasse" and fold("Æbeltoft") == "aebeltoft"
    assert fold("Haſſel") == "hassel" and fold_words("Sør-Trøndelag, 1859.") == ["sor", "trondelag", "1859"]
    assert folded_expression("Tromsø") == '("Tromsø" OR "tromso")'


def test_a_line_is_split_into_words_along_its_quad() -> None:
    words = split_line("Bergen Stift", (0, 0, 120, 0, 120, 20, 0, 20), 0.9, "rapidocr")
    assert [w.text for w in words] == ["Bergen", "Stift"]
    assert (words[0].x, words[0].w) == (0, 60) and (words[1].x, words[1].w) == (70, 50) and words[0].quad is None
    tilted = split_line("Nord Fjord", (0, 50, 100, 0, 110, 20, 10, 70), 0.9, "rapidocr")
    assert tilted[0].quad is not None and tilted[1].x > tilted[0].x and tilted[1].y < tilted[0].y
    vertical = split_line("Glomma elv", (0, 0, 20, 0, 20, 200, 0, 200), 0.9, "rapidocr")
    assert [(w.text, w.w, w.h) for w in vertical] == [("Glomma elv", 20, 200)]  # its direction is unknown: one box


def test_tiles_overlap_and_cover_the_scan() -> None:
    grid = tile_grid(5000, 1000, 1600)
    assert grid[0][:2] == (0, 0) and grid[-1][2] == 5000 and all(b - t == 1000 for _, t, _, b in grid)
    assert all(a[2] - b[0] >= 300 for a, b in zip(grid, grid[1:]))  # neighbours overlap by a fifth
    assert tile_grid(1800, 1200, 1600) == [(0, 0, 1800, 1200)]  # a scan that fits is read whole


def test_a_word_read_twice_in_an_overlap_is_kept_once_whole() -> None:
    whole = Word("Christiania", 1500, 100, 220, 40, 0.8, "e")
    cut = Word("Christia", 1500, 100, 100, 40, 0.95, "e")  # touches the first tile's right edge
    other = Word("Akershus", 1900, 400, 160, 40, 0.9, "e")
    kept = merge([_Found(cut, 0, True), _Found(whole, 1, False), _Found(other, 1, False)])
    assert [w.text for w in kept] == ["Christiania", "Akershus"]
    # the same word twice from one tile is two words (two labels side by side)
    twin = merge([_Found(whole, 0, False), _Found(whole.moved(1, 0), 0, False)])
    assert len(twin) == 2


# -- the store: words table, FTS column, pending, failures -------------------------------------


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "c", create=True, writer=True)
    store.sync_items([Item(id="map", image="/m.png", metadata={"title": "Kart over Norge"}, fingerprint="f1"),
                      Item(id="page", image="/p.png", context="Tromsø bys historie", fingerprint="f2")])  # fmt: skip
    return store


def test_words_are_stored_apart_and_searchable_in_their_own_column(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert [r["id"] for r in store.ocr_pending("e@1")] == ["map", "page"]
    store.save_words(1, "f1", "e@1", [Word("Tromsø", 10, 20, 80, 20, 0.9, "e"), Word("Trondhjem.", 5, 60, 90, 20, 0.7, "e")], (400, 300))  # fmt: skip
    assert [r["id"] for r in store.ocr_pending("e@1")] == ["page"]
    assert [r["id"] for r in store.ocr_pending("other@2")] == ["map", "page"]  # another engine reads again
    kw = KeywordIndex(store)
    # ø folded on both sides: the OCR word (stored "tromso") and the ALTO context ("Tromsø")
    assert set(kw.search("Tromso").ids) == {"map"} and set(kw.search("Tromsø").ids) == {"map", "page"}
    assert kw.word_boxes("trondhjem", ["map", "page"]) == {
        "map": [{"text": "Trondhjem.", "box": [5.0, 60.0, 90.0, 20.0], "confidence": 0.7, "engine": "e"}]
    }
    # metadata edits keep the words column; the words are not in the catalogue metadata
    store.sync_items([Item(id="map", image="/m.png", metadata={"title": "Kart"}, fingerprint="f1")])
    assert kw.search("trondhjem").ids == ["map"] and store.get_items(["map"])["map"].metadata == {"title": "Kart"}
    store.delete_items(["map"], "test")
    assert kw.search("trondhjem").ids == [] and store.words_of(1) == []


def test_a_failure_is_recorded_and_retried_only_when_asked(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save_ocr_failure(2, "f2", "e@1", "too_large", "p.png: 30000 px wide")
    assert store.ocr_counts()["failed"] == 1 and [tuple(r) for r in store.ocr_failures()] == [("page", "too_large", "p.png: 30000 px wide")]  # fmt: skip
    assert [r["id"] for r in store.ocr_pending("e@1")] == ["map"]
    assert [r["id"] for r in store.ocr_pending("e@1", retry_failed=True)] == ["map", "page"]
    store.sync_items([Item(id="page", image="/p.png", fingerprint="f3")])  # the file changed: read again
    assert [r["id"] for r in store.ocr_pending("e@1")] == ["map", "page"]


def test_misread_words_are_found_after_every_exact_match(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save_words(1, "f1", "e@1", [Word("Trondhjern", 0, 0, 90, 20, 0.6, "e")], (100, 100))  # rn for m
    store.save_words(2, "f2", "e@1", [Word("Trondhjem", 0, 0, 90, 20, 0.9, "e")], (100, 100))
    kw = KeywordIndex(store)
    assert kw.search("Trondhjem").ids == ["page", "map"]
    assert KeywordIndex(store, tolerant=False).search("Trondhjem").ids == ["page"]
    assert kw.word_boxes("Trondhjem", ["map"])["map"][0]["text"] == "Trondhjern"
    assert edit_distance("trondhjem", "trondhjern", 2) == 2 and edit_distance("bergen", "stavanger", 1) == 2


# -- engines ---------------------------------------------------------------------------------------


def test_rapidocr_reads_names_with_boxes_where_they_are_printed(tmp_path: Path) -> None:
    path = render(tmp_path / "a.png", "Tromsø Kragerø", at=(60, 80))
    words = read_tiled(get_engine("rapidocr"), Image.open(path).convert("RGB"))
    assert [fold(w.text) for w in words] == ["tromso", "kragero"]
    first = words[0]
    assert abs(first.x - 60) < 12 and abs(first.y - 88) < 14 and 100 < first.w < 200 and first.engine == "rapidocr"


@pytest.mark.slow
def test_a_big_scan_is_read_in_tiles_and_a_vertical_label_found(tmp_path: Path) -> None:
    path = render(tmp_path / "big.png", "Lillehammer", size=(3600, 1400), at=(1400, 600), px=44)
    image = Image.open(path).convert("RGB")
    label = Image.open(render(tmp_path / "v.png", "Glomma", size=(300, 300), at=(100, 20), rotate=True))
    image.paste(label, (3100, 900))
    words = read_tiled(get_engine("rapidocr"), image)
    found = {fold(w.text): w for w in words}
    assert (
        "lillehammer" in found and "glomma" in found and len([w for w in words if fold(w.text) == "lillehammer"]) == 1
    )
    assert abs(found["lillehammer"].x - 1400) < 15 and found["glomma"].h > found["glomma"].w


def test_tesseract_names_the_missing_language_package(tmp_path: Path) -> None:
    from vitrina.errors import ConfigError

    with pytest.raises(ConfigError, match="apt-get install tesseract-ocr-xyz"):
        get_engine("tesseract", "xyz")
    words = get_engine("tesseract:nor").read(Image.open(render(tmp_path / "t.png", "Tromsø")))
    assert [w.text for w in words] == ["Tromsø"] and words[0].engine == "tesseract"


# -- `vitrina ocr`: a collection, hostile images, a kill -------------------------------------------


def _collection(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    for n, name in enumerate(names):
        render(folder / f"{n:02d}.png", name)
    return folder


def _run(*args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    if fault:
        env["VITRINA_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "vitrina", *args], capture_output=True, text=True, env=env, timeout=240
    )


@pytest.mark.slow
def test_ocr_killed_at_a_commit_resumes_reading_each_item_once(tmp_path: Path) -> None:
    folder = _collection(tmp_path, ["Hammerfest", "Trondhjem", "Stavanger", "Kristiansand"])
    coll = open_collection("maps", create=True)
    coll.ingest(str(folder))
    killed = _run("ocr", "maps", "-q", fault="ocr_after_commit:2")
    assert killed.returncode == 137, killed.stderr
    dying = _run("ocr", "maps", "-q", fault="ocr_before_commit:1")  # dies with the third read uncommitted
    assert dying.returncode == 137
    done = _run("ocr", "maps", "--json")
    assert done.returncode == 0, done.stderr
    import json

    report = json.loads(done.stdout)
    assert (report["read"], report["unchanged"], report["failed"]) == (2, 2, 0)
    again = json.loads(_run("ocr", "maps", "--json").stdout)
    assert (again["read"], again["unchanged"]) == (0, 4)
    hits = coll.run([Query.build(keywords="Kristiansand")])[0]
    assert [h.id.endswith("03.png") for h in hits] == [True] and hits[0].words[0]["text"] == "Kristiansand"


@pytest.mark.slow
def test_hostile_images_fail_with_a_reason_and_stop_nothing(tmp_path: Path) -> None:
    folder = _collection(tmp_path, ["Bodø"])
    Image.new("1", (30000, 30000)).save(folder / "bomb.png")
    Image.new("RGB", (30000, 40), "white").save(folder / "wide.png")
    data = (folder / "00.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    coll = open_collection("maps", create=True)
    coll.ingest(str(folder))
    result = _run("ocr", "maps", "--json", "--max-pixels", "100000000")
    import json

    report = json.loads(result.stdout)
    assert result.returncode == 3 and report["read"] >= 1
    reasons = {Path(f["id"]).name: f["reason"] for f in report["failures"]}
    assert reasons["bomb.png"] in ("too_large", "over_budget") and reasons["truncated.png"] == "truncated"
    assert "wide.png" in reasons or report["read"] == 2  # a 30,000 px strip: refused by its aspect, or read
    assert list(coll.run([Query.build(keywords="Bodo")])[0])[0].id.endswith("00.png")


@pytest.mark.slow
def test_index_with_ocr_auto_reads_the_words_once(tmp_path: Path, tiny_clip: str) -> None:
    import json

    from click.testing import CliRunner

    from vitrina.cli import cli

    folder = _collection(tmp_path, ["Hammerfest", "Kristiansand"])
    args = ["index", str(folder), "--collection", "maps", "--model", tiny_clip, "--ocr", "auto", "--json", "-q"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert (
        report["ocr"]["read"] == 2 and report["ocr"]["failed"] == 0 and report["ocr"]["engine"].startswith("rapidocr")
    )
    hits = open_collection("maps").run([Query.build(keywords="Hammerfest")])[0]
    assert [h.id.endswith("00.png") for h in hits] == [True] and hits[0].words[0]["text"] == "Hammerfest"
    again = json.loads(CliRunner().invoke(cli, args).stdout)  # nothing new: nothing read again
    assert (again["ocr"]["read"], again["ocr"]["unchanged"]) == (0, 2)
    off = json.loads(CliRunner().invoke(cli, args[:-4] + ["--json", "-q"]).stdout)
    assert "ocr" not in off


def test_snippets_show_ocr_words_as_read(tmp_path: Path) -> None:
    store = _store(tmp_path)
    read = ["Kart", "over", "Sør-Trøndelag", "med", "Tromsø", "og", "Kragerø,", "1859."]
    store.save_words(1, "f1", "e@1", [Word(t, 10 * n, 0, 9, 9, 0.9, "e") for n, t in enumerate(read)], (100, 20))
    kw = KeywordIndex(store)
    snippet = kw.snippets("Tromso trondelag", ["map"])["map"]
    assert "".join(t for t, _ in snippet) == " ".join(read)  # as read: letters, case, punctuation
    assert [t for t, m in snippet if m] == ["Sør-Trøndelag", "Tromsø"]
    short = kw.snippets("Kragerø", ["map"], words=3)["map"]  # cut: whole words as read, '…' kept
    assert "".join(t for t, _ in short).startswith("…") and ("Kragerø,", True) in short
    # a snippet of the ALTO context is left as it is
    assert kw.snippets("Tromsø", ["page"])["page"] == [("Tromsø", True), (" bys historie", False)]


def test_keywords_alone_search_a_collection_without_vectors(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from vitrina.cli import cli

    folder = _collection(tmp_path, ["Hammerfest", "Vardø"])
    coll = open_collection("unembedded", create=True)
    coll.ingest(str(folder))  # items, no vectors yet
    store = Store(coll.path, writer=True)
    rid = store.rids_of([i.id for i in coll.iter_items() if i.id.endswith("01.png")]).popitem()[1]
    store.save_words(rid, "f", "e@1", [Word("Vardø", 60, 88, 120, 30, 0.9, "e")], (700, 220))
    store.close()
    out = CliRunner().invoke(cli, ["search", "unembedded", "--keywords", "Vardo", "--json"])
    assert out.exit_code == 0, out.output
    found = json.loads(out.stdout)
    assert (found["space"], found["index"]) == (None, "keyword")
    assert [h["id"].endswith("01.png") for h in found["hits"]] == [True]
    refused = CliRunner().invoke(cli, ["search", "unembedded", "harbour", "--json"])  # CLIP needs vectors
    assert refused.exit_code != 0 and "no embeddings" in refused.output
