"""OCR of IIIF images: word boxes in the item's full-resolution pixels whatever size the server
gave (a real IIIF image server on loopback, real RapidOCR), and the words out again as IIIF
Presentation 3 annotations (`/api/iiif/manifest`, `/canvas`, `/words`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFont

from tests.heritage_server import HeritageServer
from vitrina import Item
from vitrina.collection import open_collection
from vitrina.http import Fetcher
from vitrina.iiif_out import PRESENTATION_CONTEXT
from vitrina.index.keyword import KeywordIndex
from vitrina.ocr.run import ocr_collection
from vitrina.query import Query

from .test_ocr import FONT, render

# The page: 2000 x 800, "Kristiansand" printed at (700, 350) in 100 px type. The server gives
# at most 500 px wide, so the whole page comes at a quarter, the region item at half its size.
AT, PX, WORD = (700, 350), 100, "Kristiansand"
REGION = (600, 250, 1000, 400)


@pytest.fixture
def iiif_collection(tmp_path: Path, tiny_clip: str) -> Iterator[tuple[str, HeritageServer]]:
    page = Image.open(render(tmp_path / "page.png", WORD, size=(2000, 800), at=AT, px=PX))
    with HeritageServer() as server:
        svc = server.add_image("map", page.copy(), level=2, version=2, maxWidth=500)
        scans = tmp_path / "scans"
        scans.mkdir()
        render(scans / "local.png", "Bergen")
        coll = open_collection("ocriiif", create=True)
        coll.index(str(scans), model=tiny_clip)
        manifest = f"{server.url}/m.json"
        coll.add_items([
            Item(id="page", image=f"{svc}/full/full/0/default.jpg", fingerprint="p", source="iiif",
                 metadata={"title": "Kart", "manifest": manifest, "canvas": f"{server.url}/c/1"}),
            Item(id="part", image=f"{svc}/{','.join(map(str, REGION))}/full/0/default.jpg", fingerprint="q",
                 source="iiif", metadata={"title": "Utsnitt", "manifest": manifest, "canvas": f"{server.url}/c/1"}),
        ])  # fmt: skip
        fetcher = Fetcher(allow_private=True, requests_per_second=0, backoff=0.05)
        report = ocr_collection(coll.path, engine="rapidocr", fetcher=fetcher)
        assert report.read == 3 and not report.failed, report.to_dict()
        asked = [p for p in server.requests("/iiif/map/") if not p.endswith("info.json")]
        assert asked == [
            "/iiif/map/full/500,/0/default.jpg",
            f"/iiif/map/{','.join(map(str, REGION))}/500,/0/default.jpg",
        ]
        yield "ocriiif", server


def _near(box: list[float], x: float, y: float) -> None:
    width = ImageFont.truetype(FONT, PX).getlength(WORD)
    assert abs(box[0] - x) < 30 and abs(box[1] - (y + 0.2 * PX)) < 30, box  # the letters' top: ~0.2 em below
    assert 0.85 * width < box[2] < 1.15 * width and 0.5 * PX < box[3] < 1.2 * PX, box


@pytest.mark.slow
def test_iiif_word_boxes_are_in_the_items_full_resolution_pixels(iiif_collection: tuple[str, HeritageServer]) -> None:
    coll = open_collection(iiif_collection[0])
    hits = coll.run([Query.build(keywords=WORD)])[0]
    by_id = {h.id: h for h in hits}
    assert set(by_id) == {"page", "part"}
    # The whole page was read at a quarter of its size; its boxes are in the page's pixels.
    _near(by_id["page"].words[0]["box"], *AT)
    # A region of the page, read at half size: in its own pixels, from its top-left.
    _near(by_id["part"].words[0]["box"], AT[0] - REGION[0], AT[1] - REGION[1])
    # The item page gets the same boxes, and the size they are in (the region's, full resolution).
    seen = coll.matched_words("part", WORD)
    assert seen is not None and (seen["width"], seen["height"]) == REGION[2:]
    assert seen["words"] == KeywordIndex(coll._store).word_boxes(WORD, ["part"])["part"]  # noqa: SLF001


def _check_presentation3(manifest: dict[str, Any], page: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    """The rules of IIIF Presentation 3 these documents must follow (sections 3, 4 and 5 of the
    spec); returns the word boxes the page targets."""
    uri = re.compile(r"^https?://\S+$")
    assert manifest["@context"] == PRESENTATION_CONTEXT and manifest["type"] == "Manifest"
    assert uri.match(manifest["id"]) and all(isinstance(v, list) for v in manifest["label"].values())
    (canvas,) = manifest["items"]
    assert canvas["type"] == "Canvas" and uri.match(canvas["id"]) and "#" not in canvas["id"]
    width, height = canvas["width"], canvas["height"]
    assert isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0
    (painting_page,) = canvas["items"]
    assert painting_page["type"] == "AnnotationPage" and uri.match(painting_page["id"])
    (painting,) = painting_page["items"]
    assert painting["type"] == "Annotation" and painting["motivation"] == "painting"
    assert painting["target"] == canvas["id"] and painting["body"]["type"] == "Image"
    assert uri.match(painting["body"]["id"]) and painting["body"]["format"] == "image/jpeg"
    # The words page is linked from the canvas by reference: id and type, no items.
    assert canvas["annotations"] == [{"id": page["id"], "type": "AnnotationPage"}]
    assert page["@context"] == PRESENTATION_CONTEXT and page["type"] == "AnnotationPage" and uri.match(page["id"])
    boxes = []
    ids = set()
    for anno in page["items"]:
        assert anno["type"] == "Annotation" and anno["motivation"] == "supplementing" and uri.match(anno["id"])
        assert anno["body"]["type"] == "TextualBody" and anno["body"]["format"] == "text/plain"
        assert isinstance(anno["body"]["value"], str) and anno["body"]["value"]
        m = re.fullmatch(re.escape(canvas["id"]) + r"#xywh=(\d+),(\d+),(\d+),(\d+)", anno["target"])
        assert m, anno["target"]
        x, y, w, h = (int(v) for v in m.groups())
        assert w > 0 and h > 0 and x + w <= width + 1 and y + h <= height + 1
        boxes.append((x, y, w, h))
        ids.add(anno["id"])
    assert len(ids) == len(page["items"])
    return boxes


@pytest.mark.slow
def test_words_go_out_as_iiif_supplementing_annotations(iiif_collection: tuple[str, HeritageServer]) -> None:
    from fastapi.testclient import TestClient

    from vitrina.service import create_app

    with TestClient(create_app(iiif_collection[0]), raise_server_exceptions=False) as client:
        manifest = client.get("/api/iiif/manifest", params={"id": "part"})
        assert manifest.status_code == 200 and "presentation/3" in manifest.headers["content-type"]
        page = client.get(manifest.json()["items"][0]["annotations"][0]["id"])
        assert page.status_code == 200
        boxes = _check_presentation3(manifest.json(), page.json())
        canvas = manifest.json()["items"][0]
        assert (canvas["width"], canvas["height"]) == REGION[2:]
        words = [a["body"]["value"] for a in page.json()["items"]]
        assert words == [WORD]
        _near([float(v) for v in boxes[0]], AT[0] - REGION[0], AT[1] - REGION[1])
        # the canvas on its own, at its id
        alone = client.get(canvas["id"])
        assert alone.status_code == 200 and alone.json()["id"] == canvas["id"] and alone.json()["width"] == REGION[2]
        # a local scan: its canvas in the file's pixels, painted from this server's thumbnails
        local = next(i for i in open_collection(iiif_collection[0]).iter_items() if i.id.endswith("local.png"))
        m = client.get("/api/iiif/manifest", params={"id": local.id}).json()
        assert (m["items"][0]["width"], m["items"][0]["height"]) == (700, 220)
        assert "/api/thumbnails?" in m["items"][0]["items"][0]["items"][0]["body"]["id"]
        assert client.get("/api/iiif/words", params={"id": "nope"}).status_code == 404
