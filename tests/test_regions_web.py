"""The item page's deep-zoom viewer and the hits' region crops: tiles cut by the server, and in a
real headless Chromium the matched region outlined where the hit says, drawn over the right pixels.

Real images, a real store, the numpy embedder (tests/fakes.py: a crop equal to a cut box scores 1.0
against that box's vector), a real server on loopback."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

from tests.fakes import FAKE_SPEC
from vitrina import open_collection
from vitrina.regions import RegionPolicy

from .test_regions import make_pages
from .test_web import _serve, browser  # noqa: F401 — the browser fixture

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SIZE = (1600, 1000)


def make_maps(folder: Path, n: int, seed: int = 5) -> list[Path]:
    """Large pages of blocky colour, 40-pixel blocks: every part looks different."""
    return make_pages(folder, n, SIZE, seed, block=40, stem="map")


@pytest.fixture
def region_collection(tmp_path: Path, fake_embedder, monkeypatch) -> tuple[Path, list[Path]]:  # type: ignore[no-untyped-def]
    from vitrina import embedding

    monkeypatch.setitem(embedding._CACHE, (FAKE_SPEC, None, None), fake_embedder)  # the service loads "its model"
    maps = make_maps(tmp_path / "imgs", 4)
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC, regions="grid")
    coll.close()
    return tmp_path / "c", maps


def test_tiles_rebuild_the_image_at_every_level(region_collection) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from vitrina.service import create_app
    from vitrina.service.tiles import Pyramid

    path, maps = region_collection
    pyramid = Pyramid(*SIZE)
    assert (pyramid.full, pyramid.top, pyramid.bottom) == (11, 11, 9) and pyramid.size(10) == (800, 500)
    with TestClient(create_app(path), raise_server_exceptions=False) as client:
        page = client.get("/item", params={"id": "map01.png", "xywh": "100,200,300,400"})
        assert page.status_code == 200 and "connect-src 'self' https:" in page.headers["content-security-policy"]
        assert (
            'data-box="100,200,300,400"' in page.text
            and "/static/vendor/openseadragon/openseadragon.min.js" in page.text
        )
        assert client.get("/static/vendor/openseadragon/openseadragon.min.js").status_code == 200
        for level in (9, 11):
            w, h = pyramid.size(level)
            canvas = Image.new("RGB", (w, h))
            nx, ny = pyramid.tiles(level)
            for y in range(ny):
                for x in range(nx):
                    got = client.get("/api/tiles", params={"id": "map01.png", "level": level, "x": x, "y": y})
                    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
                    canvas.paste(Image.open(io.BytesIO(got.content)), (x * 512, y * 512))
            want = Image.open(maps[1]).convert("RGB").resize((w, h), Image.Resampling.LANCZOS)
            small = (w // 8, h // 8)  # JPEG's ringing at the blocks' edges averaged out
            diff = np.abs(
                np.asarray(canvas.resize(small, Image.Resampling.BOX), float)
                - np.asarray(want.resize(small, Image.Resampling.BOX), float)
            )
            assert diff.mean() < 4, (level, diff.mean())
        assert any((path / "tiles").rglob("*.jpg"))  # cut once, kept
        bad = [{"level": 11, "x": 4, "y": 0}, {"level": 8, "x": 0, "y": 0}, {"level": 12, "x": 0, "y": 0}]
        for params in bad:
            assert client.get("/api/tiles", params={"id": "map01.png", **params}).status_code == 404, params
        assert client.get("/api/tiles", params={"id": "nope", "level": 9, "x": 0, "y": 0}).status_code == 404


def test_viewer_sources() -> None:
    from vitrina.service.tiles import Pyramid, viewer_source

    iiif = viewer_source("a", "https://iiif.example.org/img/p1/120,40,500,300/full/0/default.jpg", "/p")
    assert iiif == {
        "type": "iiif",
        "info": "https://iiif.example.org/img/p1/info.json",
        "offset": [120, 40],
        "crop": [120, 40, 500, 300],
        "fallback": "/p",
    }
    assert viewer_source("b", "https://example.org/a.jpg", "/p") == {
        "type": "image",
        "url": "https://example.org/a.jpg",
    }
    assert viewer_source("c", "/no/such/file.jpg", "/p")["url"] == "/p"
    huge = Pyramid(40_000, 30_000)  # 1.2 gigapixels: the deepest level served is a quarter of it
    assert huge.top == huge.full - 2 and huge.size(huge.top) == (10_000, 7_500) and huge.bottom == huge.top - 5


# --- in a real browser ---------------------------------------------------------------------------


@pytest.fixture
def region_server(region_collection) -> Iterator[str]:  # type: ignore[no-untyped-def]
    yield from _serve(region_collection[0])


OPENED = "window.vitrinaViewer && window.vitrinaViewer.opened && window.vitrinaViewer.viewer.world.getItemAt(0).getFullyLoaded()"
# Where item pixels land on the screen, by OpenSeadragon's own mapping (independent of the overlay).
SCREEN_RECT = """([x, y, w, h]) => {
  const v = window.vitrinaViewer.viewer, ti = v.world.getItemAt(0), r = v.element.getBoundingClientRect();
  const a = ti.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
  const b = ti.imageToViewerElementCoordinates(new OpenSeadragon.Point(x + w, y + h));
  return [r.left + a.x, r.top + a.y, b.x - a.x, b.y - a.y];
}"""


def _shown(png: bytes, rect: list[float]) -> np.ndarray:
    """The middle of ``rect`` on the screenshot, as 4x4 colours."""
    x, y, w, h = rect
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    inner = shot.crop((round(x + 0.2 * w), round(y + 0.2 * h), round(x + 0.8 * w), round(y + 0.8 * h)))
    return np.asarray(inner.resize((4, 4), Image.Resampling.BOX), float)


def _source(path: Path, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    inner = Image.open(path).convert("RGB").crop((x + w // 5, y + h // 5, x + 4 * w // 5, y + 4 * h // 5))
    return np.asarray(inner.resize((4, 4), Image.Resampling.BOX), float)


@pytest.mark.slow
def test_the_hit_shows_its_region_and_the_viewer_outlines_it(region_server: str, region_collection, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _, maps = region_collection
    ARTIFACTS.mkdir(exist_ok=True)
    box = RegionPolicy("grid").boxes(*SIZE)[9]
    page = browser.new_context(viewport={"width": 1200, "height": 950}, bypass_csp=True).new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # A detail of map01 as the query: map01 comes first, its card shows the matched crop.
    page.goto(region_server + "/?like=" + f"map01.png%23xywh={','.join(map(str, box))}")
    first = page.locator("#results .hit").first
    assert first.get_attribute("data-id") == "map01.png"
    crop = first.locator("a.thumb.detail img.crop")
    assert "/api/regions?" in crop.get_attribute("src") and crop.get_attribute("alt").startswith("Matched detail of")
    page.wait_for_function(
        "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert page.locator(".detail-query img").count() == 1  # the detail searched for, shown
    page.screenshot(path=str(ARTIFACTS / "regions-hits.png"))
    href = first.locator("a.thumb").get_attribute("href")
    assert parse_qs(urlparse(href).query)["xywh"] == [",".join(map(str, box))]

    # The whole item a click away, zoomed to the region, outlined where the hit says.
    first.locator("a.thumb").click()
    page.wait_for_function(OPENED, timeout=30000)
    page.wait_for_timeout(300)  # the last paint of the tiles
    outline = page.locator(".vitrina-box.region").bounding_box()
    assert outline is not None
    want = page.evaluate(SCREEN_RECT, list(box))
    got = [outline["x"], outline["y"], outline["width"], outline["height"]]
    assert np.allclose(got, want, atol=1.5), (got, want)
    frame = page.locator("#viewer").bounding_box()
    assert frame is not None and max(want[2] / frame["width"], want[3] / frame["height"]) > 0.3  # zoomed in on it
    assert frame["x"] <= want[0] and want[0] + want[2] <= frame["x"] + frame["width"]  # all of it in view
    assert frame["y"] <= want[1] and want[1] + want[3] <= frame["y"] + frame["height"]
    # The pixels under the outline are the region's: the tiles and the outline agree.
    png = page.screenshot(path=str(ARTIFACTS / "regions-item.png"))
    here = np.abs(_shown(png, got) - _source(maps[1], box)).mean()
    beside = np.abs(_shown(png, got) - _source(maps[1], (box[0] + box[2] // 2, box[1], box[2], box[3]))).mean()
    assert here < 20 and beside > 2 * here, (here, beside)

    # Other outlines (e.g. OCR words) go on the same image through the page's function.
    page.evaluate("window.vitrinaViewer.outline([{x: 0, y: 0, w: 800, h: 500}, [800, 500, 800, 500]], 'words')")
    assert page.locator(".vitrina-box.words").count() == 2
    assert problems == []


def _poll(page, expression: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    """Wait until ``expression`` is true (page.evaluate: CDP, not the page's eval, which its CSP forbids)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if page.evaluate(f"() => Boolean({expression})"):
                return
        except Exception:  # the page is between documents
            pass
        assert time.monotonic() < deadline, expression
        time.sleep(0.1)


@pytest.mark.slow
def test_a_box_drawn_on_the_viewer_searches_for_that_detail(region_server: str, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    box = next(b for b in RegionPolicy("grid").boxes(*SIZE) if b[0] > 0 and b[1] > 0)  # inside, off the edges
    page = browser.new_page(viewport={"width": 1200, "height": 950})  # the page's own policy enforced
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(region_server + "/item?id=map02.png")
    _poll(page, OPENED)
    # The toolbar works from the keyboard: focus "Zoom in", press Enter, the image grows.
    zoom = "window.vitrinaViewer.viewer.viewport.getZoom(true)"
    before = page.evaluate(f"() => {zoom}")
    page.focus("#zoom-in")
    page.keyboard.press("Enter")
    _poll(page, f"{zoom} > {before} * 1.2", 5)
    page.focus("#home")
    page.keyboard.press("Enter")
    _poll(page, f"Math.abs({zoom} - {before}) < 0.01 * {before}", 5)
    # Find this detail: drag a box over a part of the image; the search for it opens.
    page.click("#find-detail")
    assert page.get_attribute("#find-detail", "aria-pressed") == "true"
    x, y, w, h = page.evaluate(SCREEN_RECT, list(box))
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + w / 2, y + h / 2, steps=4)
    page.mouse.move(x + w, y + h, steps=4)
    page.screenshot(path=str(ARTIFACTS / "regions-draw.png"))
    page.mouse.up()
    _poll(page, "location.search.startsWith('?like=') && document.querySelector('#results .hit')", 15)
    item, _, xywh = parse_qs(urlparse(page.evaluate("() => location.href")).query)["like"][0].partition("#xywh=")
    drawn = [int(v) for v in xywh.split(",")]
    pixel = box[2] / w  # item pixels per screen pixel
    assert item == "map02.png" and np.allclose(drawn, box, atol=2 * pixel + 1), (drawn, box)
    assert page.locator("#results .hit").first.get_attribute("data-id") == "map02.png"
    assert problems == []


def test_tiles_and_thumbnails_kept_on_disk_stay_within_their_cap(region_collection) -> None:  # type: ignore[no-untyped-def]
    """A visitor who asks for every tile of every item cannot fill the disk: the caches drop their
    oldest files at the cap (serve --image-cache-mb), and what was dropped is cut again on demand."""
    from fastapi.testclient import TestClient

    from vitrina.service import ServiceConfig, create_app
    from vitrina.service.tiles import Pyramid

    path, maps = region_collection
    cap = 150_000
    pyramid = Pyramid(*SIZE)

    def on_disk(folder: str) -> int:
        return sum(p.stat().st_size for p in (path / folder).rglob("*.jpg"))

    with TestClient(create_app(ServiceConfig(collection=path, image_cache_bytes=cap))) as client:
        served = 0
        for i in range(len(maps)):
            for level in (10, 11):
                nx, ny = pyramid.tiles(level)
                for y in range(ny):
                    for x in range(nx):
                        got = client.get("/api/tiles", params={"id": f"map{i:02d}.png", "level": level, "x": x, "y": y})
                        assert got.status_code == 200
                        served += len(got.content)
            for size in (256, 512, 1024):
                got = client.get("/api/thumbnails", params={"id": f"map{i:02d}.png", "size": size})
                assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
                served += len(got.content)
        assert served > 4 * cap  # enough was asked for that an uncapped cache would pass the cap
        assert 0 < on_disk("tiles") <= cap and 0 < on_disk("thumbs") <= cap
        # the first tile was dropped long ago: it is cut again, the same picture
        again = client.get("/api/tiles", params={"id": "map00.png", "level": 11, "x": 0, "y": 0})
        first = Image.open(io.BytesIO(again.content)).convert("RGB")
        want = Image.open(maps[0]).convert("RGB").crop((0, 0, 512, 512))
        assert np.abs(np.asarray(first, float) - np.asarray(want, float)).mean() < 8
