"""The item page outlines the words the search matched where they are printed (Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from vitrina.collection import open_collection
from vitrina.ocr.run import ocr_collection

from .test_ocr import render
from .test_web import ARTIFACTS, _serve, browser, new_page  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.slow


@pytest.fixture
def ocr_server(tmp_path: Path, tiny_clip: str) -> Iterator[tuple[str, str]]:
    folder = tmp_path / "maps"
    folder.mkdir()
    path = render(folder / "map.png", "Kristiansand", size=(900, 600), at=(500, 380), px=36)
    coll = open_collection("ocrweb", create=True)
    coll.index(str(folder), model=tiny_clip)
    assert ocr_collection(coll.path, engine="rapidocr").read == 1
    item_id = next(iter(coll.iter_items())).id
    assert Path(item_id).name == path.name or path.name in item_id
    for url in _serve("ocrweb"):
        yield url, item_id


def test_the_matched_word_is_outlined_where_it_is_printed(ocr_server: tuple[str, str], browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    url, item_id = ocr_server
    page = new_page(browser, viewport={"width": 1200, "height": 1000})
    page.goto(f"{url}/item?" + urlencode({"id": item_id, "back": "/?" + urlencode({"kw": "Kristiansand"})}))
    page.wait_for_selector(".vitrina-box.ocr-word")
    page.wait_for_function("window.vitrinaViewer && window.vitrinaViewer.opened")
    # The whole image's rectangle on screen, by the viewer's own mapping (after any zoom settles).
    page.wait_for_timeout(500)
    image = page.evaluate(
        """() => { const v = window.vitrinaViewer.viewer, it = v.world.getItemAt(0);
                   const r = v.viewport.viewportToViewerElementRectangle(it.getBounds(true));
                   const e = document.getElementById("viewer").getBoundingClientRect();
                   return [e.x + r.x, e.y + r.y, r.width, r.height]; }"""
    )
    box = page.eval_on_selector(
        ".vitrina-box.ocr-word", "e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }"
    )
    scale = image[2] / 900
    # printed at (500, 380) in source pixels, 36 px type: the word's box in page pixels
    assert abs(box[0] - (image[0] + 500 * scale)) < 12 * scale + 4
    assert abs(box[1] - (image[1] + 388 * scale)) < 14 * scale + 4
    assert 180 * scale < box[2] < 280 * scale and 20 * scale < box[3] < 50 * scale
    page.screenshot(path=str(ARTIFACTS / "ocr-item.png"))
    assert page.locator(".vitrina-box.ocr-word").count() == 1 and "Kristiansand" in page.inner_text(".ocr-note")
    # no keywords on the results page: no outlines
    page.goto(f"{url}/item?" + urlencode({"id": item_id}))
    page.wait_for_function("window.vitrinaViewer && window.vitrinaViewer.opened")
    assert page.locator(".ocr-word").count() == 0
