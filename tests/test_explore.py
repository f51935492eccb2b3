"""Exploring a whole collection: near-duplicate groups (planted copies of real images, indexed
with the offline mini model) and the 2-D map artifact."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.test_web import browser  # noqa: F401  (the Chromium fixture)
from vitrina import Item, ModelFingerprint, open_collection
from vitrina.cli import cli
from vitrina.duplicates import find_duplicates, group_pairs, planted_scores

DATA = Path(__file__).resolve().parent / "data"
DEMO = Path(__file__).resolve().parent.parent / "src" / "vitrina" / "demo" / "openclipart"


def _flat(path: Path) -> Image.Image:
    im = Image.open(path)
    im.load()
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, "white")
        bg.paste(im, mask=im.split()[-1])
        return bg
    return im.convert("RGB")


COPIES = {  # how a second scan of the same page differs
    "rescaled": lambda im: im.resize((max(8, im.width // 2), max(8, im.height // 2)), Image.Resampling.LANCZOS),
    "recompressed": None,  # JPEG at quality 25
    "cropped": lambda im: im.crop(
        (im.width * 6 // 100, im.height * 6 // 100, im.width * 94 // 100, im.height * 94 // 100)
    ),
    "rotated": lambda im: im.rotate(4, expand=True, fillcolor="white"),
    "rotated90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[tuple[str, str]]]:
    """24 distinct real images (2 scanned pages, 22 drawings) and 15 altered copies of 15 of them."""
    folder = tmp_path_factory.mktemp("dups") / "scans"
    folder.mkdir()
    sources = [DATA / "images" / "book-page-poulpes.jpg", DATA / "images" / "manuscript-page.jpg"]
    sources += sorted(DEMO.rglob("*.png"))[:: 215 // 22][:22]
    pairs = []
    for i, path in enumerate(sources):
        im = _flat(path)
        im.save(folder / f"orig{i:02d}.png")
        if i < 15:
            kind = list(COPIES)[i % len(COPIES)]
            copy = folder / f"orig{i:02d}-{kind}.{'jpg' if kind == 'recompressed' else 'png'}"
            if kind == "recompressed":
                im.save(copy, quality=25)
            else:
                COPIES[kind](im).save(copy)  # type: ignore[misc]
            pairs.append((f"orig{i:02d}.png", copy.name))
    coll = open_collection(folder.parent / "coll", create=True)
    report = coll.index(str(folder), model="mini")
    assert report.embedded == len(sources) + len(pairs)
    return coll, pairs


def test_planted_duplicates_are_found_with_few_false_pairs(planted: tuple[Any, list[tuple[str, str]]]) -> None:
    coll, pairs = planted
    # The mini model's threshold: distinct images here score at most ~0.65 with each other.
    result = find_duplicates(coll, threshold=0.7, k=5)
    scores = planted_scores(result.pairs(), pairs)
    # Measured (docs/benchmarks.md): precision 1.0, recall 0.80 (12/15: one JPEG q25 line drawing,
    # one 6 % crop and one 90-degree rotation fall below 0.7).
    assert scores["precision"] >= 0.9, scores
    assert scores["recall"] >= 0.7, scores
    stricter = planted_scores(find_duplicates(coll, threshold=0.95, k=5, tag=False).pairs(), pairs)
    assert stricter["precision"] == 1.0 and stricter["recall"] < scores["recall"]  # the threshold matters
    # Stored as a tag: --where narrows a search to one group; the item page's list comes from it.
    group = next(g for g in result.groups if "orig00.png" in g.members)
    assert coll.item("orig00-rescaled.png").tags["duplicate_of"]["value"] == group.id
    hits = coll.search(image="orig00.png", where=[f"duplicate_of={group.id}"], include_self=True, limit=10)
    assert sorted(h.id for h in hits) == group.members
    from vitrina.duplicates import duplicates_of

    assert [d["id"] for d in duplicates_of(coll, "orig00.png")] == ["orig00-rescaled.png"]
    assert duplicates_of(coll, "orig23.png") == []


def _vector_collection(tmp_path: Path, vectors: np.ndarray) -> Any:
    coll = open_collection(tmp_path / "c", create=True)
    ids = [f"i{i:03d}" for i in range(len(vectors))]
    fp = ModelFingerprint(spec="test:v", revision="1", dim=vectors.shape[1], preprocessing="none")
    with coll.writer():
        coll.add_items(
            Item(
                id=i, image=f"{i}.jpg", fingerprint="1", source="t", metadata={"kind": "even" if n % 2 == 0 else "odd"}
            )
            for n, i in enumerate(ids)
        )
        coll.import_vectors(ids, vectors, fingerprint=fp, space="v")
    return coll


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_groups_are_connected_components_and_exports_carry_what_reproduces_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = _unit(rng.standard_normal((40, 32)))
    base[1] = _unit(base[:1] + 0.1 * _unit(rng.standard_normal((1, 32))))[0]  # i001 ~ i000
    base[2] = _unit(base[1:2] + 0.1 * _unit(rng.standard_normal((1, 32))))[0]  # i002 ~ i001: a chain
    base[11] = _unit(base[10:11] + 0.05 * _unit(rng.standard_normal((1, 32))))[0]
    coll = _vector_collection(tmp_path, base)
    run = CliRunner().invoke(cli, ["duplicates", str(coll.path), "--threshold", "0.97", "--json"])
    assert run.exit_code == 0, run.output
    out = json.loads(run.output)
    groups = {g["id"]: g for g in out["groups"]}
    assert set(groups) == {"i000", "i010"}
    assert [m["id"] for m in groups["i000"]["members"]] == ["i000", "i001", "i002"]
    assert groups["i000"]["min_score"] >= 0.97 and len(groups["i000"]["pairs"]) >= 2
    assert out["model_fingerprint"]["spec"] == "test:v" and out["threshold"] == 0.97 and out["k"] == 10
    assert "connected components" in out["rule"]
    rows = list(
        csv.DictReader(
            io.StringIO(CliRunner().invoke(cli, ["duplicates", str(coll.path), "--threshold", "0.97", "--csv"]).output)
        )
    )
    assert {r["item_id"] for r in rows} == {"i000", "i001", "i002", "i010", "i011"}
    assert all(
        r["group"] in groups and float(r["score"]) >= 0.97 and json.loads(r["model_fingerprint"])["dim"] == 32
        for r in rows
    )
    # A later run replaces the tag: nothing left from the earlier groups.
    CliRunner().invoke(cli, ["duplicates", str(coll.path), "--threshold", "0.9999", "-q"])
    coll = open_collection(coll.path)
    assert "duplicate_of" not in coll.item("i001").tags
    bad = CliRunner().invoke(cli, ["duplicates", str(coll.path), "--threshold", "2"])
    assert bad.exit_code == 1 and "--threshold" in bad.output


def test_group_pairs_unions_chains() -> None:
    groups = group_pairs({("a", "b"): 0.99, ("b", "c"): 0.96, ("x", "y"): 0.98})
    assert [(g.id, g.members, round(g.min_score, 2)) for g in groups] == [
        ("a", ["a", "b", "c"], 0.96),
        ("x", ["x", "y"], 0.98),
    ]
    assert groups[0].best["b"] == ("a", 0.99)


def test_map_is_a_stamped_artifact_that_goes_stale(tmp_path: Path) -> None:
    from vitrina.layout import load_map, read_map

    rng = np.random.default_rng(1)
    centres = _unit(rng.standard_normal((2, 32)))
    vectors = _unit(np.repeat(centres, 20, axis=0) + 0.1 * rng.standard_normal((40, 32)))
    coll = _vector_collection(tmp_path, vectors)
    from vitrina.errors import QueryError

    with pytest.raises(QueryError, match="vitrina map"):
        load_map(coll)
    run = CliRunner().invoke(cli, ["map", str(coll.path), "--method", "pca", "--json"])
    assert run.exit_code == 0, run.output
    assert json.loads(run.output)["method"] == "pca"
    data, stamp = load_map(coll)
    m = read_map(coll.path / "spaces" / "v.map")
    assert (
        m.ids == [f"i{i:03d}" for i in range(40)]
        and m.xy.shape == (40, 2)
        and len(data) == 4096 + 4 * 40 + len(json.dumps(m.ids))
    )
    # The two clusters land apart: every point nearer its own cluster's centre on the map.
    xy = m.xy.astype(float)
    a, b = xy[:20].mean(0), xy[20:].mean(0)
    assert all(np.linalg.norm(p - a) < np.linalg.norm(p - b) for p in xy[:20])
    assert all(np.linalg.norm(p - b) < np.linalg.norm(p - a) for p in xy[20:])
    # Re-embedding an item changes the space: the stored map is reported stale, not drawn wrong.
    fp = coll.fingerprint("v")
    coll.import_vectors(["i000"], _unit(rng.standard_normal((1, 32))), fingerprint=fp, space="v")
    with pytest.raises(QueryError, match="stale"):
        load_map(open_collection(coll.path))
    if importlib.util.find_spec("umap") is None:
        bad = CliRunner().invoke(cli, ["map", str(coll.path), "--method", "umap"])
        assert bad.exit_code == 1 and "vitrina[map]" in bad.output


# -- the service: map data, duplicates, IIIF out, and the Map view in a browser ----------------

M1, M2 = "https://iiif.example.org/book1/manifest", "https://iiif.example.org/book2/manifest"


@pytest.fixture
def explore_name(scans: Path, tiny_clip: str) -> str:
    """The scans, plus three canvases of two IIIF manifests; two of them are the same image as a
    scan (a second digitisation). Mapped, and its duplicates found."""
    from vitrina.layout import build_map

    coll = open_collection("explore", create=True)
    coll.index(str(scans), model=tiny_clip)
    page, other = str(scans / "manuscript-page.jpg"), str(scans / "book-page-poulpes.jpg")
    coll.add_items([
        Item(id="canvas-1", image=page, fingerprint="1", source="iiif", metadata={"title": "Folio 1", "manifest": M1, "canvas": M1 + "/canvas/1", "box_pixels": [10, 20, 300, 400]}),
        Item(id="canvas-2", image=page, fingerprint="1", source="iiif", metadata={"title": "Folio 2", "manifest": M1, "canvas": M1 + "/canvas/2"}),
        Item(id="canvas-3", image=other, fingerprint="1", source="iiif", metadata={"title": "Plate", "manifest": M2, "canvas": M2 + "/canvas/1"}),
    ])  # fmt: skip
    coll.index()
    build_map(coll, method="pca")
    find_duplicates(coll, threshold=0.9999)
    return "explore"


def test_service_serves_the_map_duplicates_and_iiif(explore_name: str) -> None:
    from fastapi.testclient import TestClient

    from vitrina.layout import read_map
    from vitrina.service import create_app

    with TestClient(create_app(explore_name), raise_server_exceptions=False) as client:
        r = client.get("/api/map")
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
        path = open_collection(explore_name).path / "spaces"
        stored = read_map(next(path.glob("*.map")))
        assert r.content == next(path.glob("*.map")).read_bytes() and len(stored.ids) == len(
            open_collection(explore_name)
        )
        assert client.get("/api/map", headers={"If-None-Match": r.headers["etag"]}).status_code == 304

        colours = client.get("/api/map/colours", params={"key": "manifest"}).json()
        assert colours["values"] == [M1, M2] and len(colours["codes"]) == len(stored.ids)
        assert [colours["codes"][stored.ids.index(i)] for i in ("canvas-1", "canvas-3", "manuscript-page.jpg")] == [
            0,
            1,
            -1,
        ]

        dups = client.get("/api/duplicates", params={"id": "canvas-1"}).json()
        assert dups["group"] == "canvas-1" and {d["id"] for d in dups["duplicates"]} == {
            "canvas-2",
            "manuscript-page.jpg",
        }
        assert client.get("/api/duplicates", params={"id": "nope"}).status_code == 404

        hits = client.get("/api/search", params={"q": "page", "limit": 50}).json()["hits"]
        by_id = {h["id"]: h for h in hits}
        assert by_id["canvas-1"]["iiif"] == {"manifest": M1, "canvas": M1 + "/canvas/1", "xywh": "10,20,300,400"}
        assert by_id["canvas-2"]["iiif"]["xywh"] is None and by_id["manuscript-page.jpg"]["iiif"] is None

        r = client.get("/api/iiif/search", params={"q": "a page", "manifest": M1})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/ld+json")
        page = r.json()
        # The shape of the IIIF Content Search 2.0 examples: an AnnotationPage of Annotations whose
        # targets are canvases (with an xywh fragment when the hit is a region) partOf the manifest.
        assert page["@context"] == "http://iiif.io/api/search/2/context.json" and page["type"] == "AnnotationPage"
        assert page["id"].startswith("http") and "manifest=" in page["id"]
        assert {a["target"]["id"] for a in page["items"]} == {M1 + "/canvas/1#xywh=10,20,300,400", M1 + "/canvas/2"}
        for a in page["items"]:
            assert a["type"] == "Annotation" and a["motivation"] == "highlighting" and a["id"].startswith(page["id"])
            assert a["body"]["type"] == "TextualBody" and a["body"]["format"] == "text/plain"
            assert a["target"]["type"] == "Canvas" and a["target"]["partOf"] == [{"id": M1, "type": "Manifest"}]
        assert client.get("/api/iiif/search", params={"q": "x", "manifest": "file:///etc/passwd"}).status_code == 422

        item = client.get("/item", params={"id": "canvas-1"}).text
        assert "Same image as" in item and "canvas-2" in item and "iiif-content=" in item


def test_content_state_round_trips() -> None:
    import base64

    from vitrina.iiif_out import content_state, encode_content_state, target_of, viewer_url

    target = target_of(
        {"manifest": M1, "canvas": M1 + "/c1"}, "https://img.example.org/iiif/abc/5,6,70,80/max/0/default.jpg"
    )
    assert target == {"manifest": M1, "canvas": M1 + "/c1", "xywh": "5,6,70,80"}
    encoded = encode_content_state(content_state(target))
    decoded = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    assert decoded["motivation"] == ["contentState"] and decoded["target"]["id"] == M1 + "/c1#xywh=5,6,70,80"
    assert viewer_url(target, "https://viewer.example/?iiif-content={content}").endswith(encoded)
    assert target_of({"manifest": "javascript:alert(1)", "canvas": M1}) is None


@pytest.fixture
def explore_server(explore_name: str) -> Any:
    from tests.test_web import _serve

    yield from _serve(explore_name)


def test_the_map_view_in_a_browser(explore_name: str, explore_server: str, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from tests.test_web import new_page

    base = explore_server
    page = new_page(browser, viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/map?q=page")
    page.wait_for_function("document.getElementById('map').dataset.hits !== undefined")
    total = len(open_collection(explore_name))
    assert (
        page.get_attribute("#map", "data-points") == str(total)
        and int(page.get_attribute("#map", "data-hits") or 0) > 0
    )
    # Something is drawn: the canvas is not blank.
    assert (
        page.evaluate(
            "(() => { const c = document.getElementById('map'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; })()"
        )
        > 50
    )
    ids = open_collection(explore_name).vectors()[0]
    where = {i: page.evaluate("id => window.vitrinaMap.screenOf(id)", i) for i in ids}

    def gap(i: str) -> float:
        return min(np.hypot(where[i]["x"] - p["x"], where[i]["y"] - p["y"]) for j, p in where.items() if j != i)

    loner = max(ids, key=gap)  # a point no other one is drawn near: the click must open it
    # Box-select a region around it (shift-drag): the map shows only the items inside.
    x, y = where[loner]["x"], where[loner]["y"]
    page.keyboard.down("Shift")
    page.mouse.move(x - 4, y - 4)
    page.mouse.down()
    page.mouse.move(x + 2, y + 2)
    page.mouse.move(x + 4, y + 4)
    page.mouse.up()
    page.keyboard.up("Shift")
    assert page.get_attribute("#map", "data-shown") == "1"
    page.wait_for_function("document.getElementById('map-selection').dataset.titled === '1'")
    from vitrina.service.explore import short_title

    title = short_title(open_collection(explore_name).item(loner).metadata, loner)
    assert page.eval_on_selector_all("#map-selection a", "els => els.map(e => [e.textContent, e.title])") == [
        [title, f"{title}\n{loner}"]
    ]
    assert "like=" in (page.get_attribute("#map-search", "href") or "")
    page.click("#map-clear")
    # Colour by a metadata key: a legend of its values.
    page.select_option("#map-colour", "manifest")
    page.click(".map-bar button[type=submit]")
    page.wait_for_function("document.getElementById('map').dataset.coloured === '2'")
    assert page.eval_on_selector_all("#map-legend li", "els => els.map(e => e.textContent.trim())") == [M1, M2]
    assert page.get_attribute("#map", "data-shown") == str(total)
    page.mouse.click(x, y)
    page.wait_for_url("**/item?*")
    from urllib.parse import parse_qs, urlparse

    assert parse_qs(urlparse(page.url).query)["id"] == [loner]
    assert not errors, errors


def test_search_exports_say_what_reproduces_them(tmp_path: Path) -> None:
    coll = _vector_collection(tmp_path, _unit(np.random.default_rng(2).standard_normal((12, 16))))
    args = ["search", str(coll.path), "--image", "i003", "--where", "kind=odd", "-n", "3"]
    out = json.loads(CliRunner().invoke(cli, [*args, "--json"]).output)
    assert out["model_fingerprint"]["spec"] == "test:v" and out["space"] == "v" and out["index"] == "exact"
    assert out["query"]["images"] == ["i003"] and out["query"]["where"] == ["kind=odd"] and out["query"]["limit"] == 3
    rows = list(csv.DictReader(io.StringIO(CliRunner().invoke(cli, [*args, "--csv"]).output)))
    assert [r["id"] for r in rows] == [h["id"] for h in out["hits"]] and len(rows) == 3
    assert all(
        json.loads(r["query"])["images"] == ["i003"] and json.loads(r["model_fingerprint"])["dim"] == 16 for r in rows
    )
