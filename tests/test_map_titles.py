"""The Map view's selection list reads as titles (GET /api/titles), not raw file ids that
overflow their column. Checked over HTTP and in Chromium, with a screenshot in test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_images
from tests.test_web import ARTIFACTS, browser  # noqa: F401  (the Chromium fixture)
from vitrina import Item, open_collection

LONG = "Carta_marina_et_descriptio_septentrionalium_terrarum_ac_mirabilium_rerum_in_eis_contentarum_diligentissime_elaborata_1539"
DEEP = "Kartverket/Fylkeskart/Finnmark/Sjøkart over kysten fra Hammerfest til Vardø med innløp og havner/blad_07.jpg"
CANVAS = "https://iiif.example.org/presentation/manuscripts/ms-1234-psalter-with-illuminations/canvas/f017r"


@pytest.fixture
def titled(tmp_path: Path, tiny_clip: str) -> str:
    from vitrina.layout import build_map

    folder = tmp_path / "maps"
    paths = make_images(folder, 8)
    paths[0].rename(folder / f"{LONG}.png")
    (folder / Path(DEEP).parent).mkdir(parents=True)
    paths[1].rename(folder / DEEP)
    coll = open_collection("titled", create=True)
    coll.index(str(folder), model=tiny_clip)
    coll.add_items([Item(id=CANVAS, image=str(paths[2]), fingerprint="1", source="iiif",
                         metadata={"title": ["Psalter, fol. 17 recto", "Psalterium"]})])  # fmt: skip
    coll.index()
    build_map(coll, method="pca")
    return "titled"


def test_titles_endpoint_gives_titles_else_file_names_and_is_bounded(titled: str) -> None:
    from fastapi.testclient import TestClient

    from vitrina.service import create_app

    with TestClient(create_app(titled), raise_server_exceptions=False) as client:
        r = client.get("/api/titles", params=[("id", CANVAS), ("id", DEEP), ("id", "img0004.png"), ("id", "nope")])
        assert r.status_code == 200
        body = r.json()
        assert body["titles"] == {CANVAS: "Psalter, fol. 17 recto", DEEP: "blad 07", "img0004.png": "img0004"}
        assert body["missing"] == ["nope"]
        assert client.get("/api/titles", params=[("id", f"{LONG}.png")]).json()["titles"][f"{LONG}.png"] == (
            LONG.replace("_", " "))  # fmt: skip
        too_many = client.get("/api/titles", params=[("id", f"i{n}") for n in range(201)])
        assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "too_many_ids"
        assert client.get("/api/titles", params=[("id", "x" * 2001)]).status_code == 400
        assert client.get("/api/titles").status_code == 422  # no id at all
        spec = client.get("/openapi.json").json()["paths"]["/api/titles"]["get"]
        assert {"400", "422"} <= set(spec["responses"])


@pytest.fixture
def titled_server(titled: str) -> Iterator[str]:
    from tests.test_web import _serve

    yield from _serve(titled)


@pytest.mark.slow  # a real browser (chromium)
def test_the_map_selection_lists_titles_that_fit_their_column(titled_server: str, browser: Any) -> None:  # noqa: F811
    from tests.test_web import new_page

    page = new_page(browser, viewport={"width": 1100, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(titled_server + "/map")
    page.wait_for_function("document.getElementById('map').dataset.points === '9'")
    box = page.locator("#map").bounding_box()
    assert box is not None
    # Shift-drag over the whole map: every item is selected.
    page.keyboard.down("Shift")
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.wait_for_function("document.getElementById('map-selection').dataset.titled === '9'")
    links = page.eval_on_selector_all(
        "#map-selection a", "els => els.map(a => ({text: a.textContent, hover: a.title, href: a.getAttribute('href')}))"
    )
    shown = {a["text"] for a in links}
    assert {"Psalter, fol. 17 recto", "blad 07", LONG.replace("_", " "), "img0003"} <= shown
    assert not shown & {CANVAS, DEEP, f"{LONG}.png"}  # no raw ids
    psalter = next(a for a in links if a["text"] == "Psalter, fol. 17 recto")
    assert psalter["hover"] == f"Psalter, fol. 17 recto\n{CANVAS}" and "id=https" in psalter["href"]
    # Each entry stays inside its column: long titles end in an ellipsis instead of running over.
    fit = page.evaluate(
        """(() => { const ul = document.getElementById('map-selection'), r = ul.getBoundingClientRect();
        const cols = getComputedStyle(ul).columnCount, w = r.width / cols;
        return [...ul.querySelectorAll('li')].map(li => { const b = li.getBoundingClientRect();
          return {inside: b.right <= r.right + 1 && b.width <= w + 1, clipped: li.scrollWidth > li.clientWidth,
                  ellipsis: getComputedStyle(li).textOverflow}; }); })()"""
    )
    assert all(f["inside"] for f in fit) and any(f["clipped"] for f in fit)
    assert {f["ellipsis"] for f in fit} == {"ellipsis"}
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(".map-view").screenshot(path=str(ARTIFACTS / "map-selection-titles.png"))
    assert not errors, errors
