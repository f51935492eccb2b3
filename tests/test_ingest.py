"""Ingest from IIIF, URL lists, a loc.gov-shaped API and ALTO pages, over real HTTP on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.heritage_server import HeritageServer, picture
from vitrina import open_collection
from vitrina.captions import build_caption
from vitrina.errors import SourceError
from vitrina.http import Fetcher
from vitrina.iiif import ImageService, children, manifest_images

FIXTURES = Path(__file__).parent / "data"


_OPEN: list[Fetcher] = []


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VITRINA_ALLOW_PRIVATE_URLS", "1")  # the "remote" hosts are on loopback
    with HeritageServer() as s:
        yield s
        while _OPEN:
            _OPEN.pop().close()


def fetcher(tmp_path: Path, **kw) -> Fetcher:  # type: ignore[no-untyped-def]
    f = Fetcher(cache_dir=tmp_path / "http-cache", allow_private=True, requests_per_second=0, backoff=0.05, **kw)
    _OPEN.append(f)
    return f


def test_real_world_manifests_parse(tmp_path: Path) -> None:
    counts = {}
    for path in sorted((FIXTURES / "iiif").glob("v*/*.json")):
        if path.name == "problem-invalid.json":
            continue
        doc = json.loads(path.read_text())
        counts[path.name] = len(manifest_images(doc, str(path))) if isinstance(doc, dict) else None
    from vitrina.sources import open_source

    broken = open_source(f"iiif:{FIXTURES / 'iiif/v2/problem-invalid.json'}", fetcher=Fetcher())
    with pytest.raises(SourceError, match="not a readable JSON file"):  # the one document named: nothing else to ingest
        list(broken.pages())
    assert counts["stanford.json"] == 1 and counts["loc-sanborn-map.json"] == 2 and counts["nlw.json"] == 219
    assert counts["iiif-v3.json"] == 2 and counts["princeton-chto.json"] == 22 and counts["nls.json"] == 40
    loc = manifest_images(json.loads((FIXTURES / "iiif/v2/loc-sanborn-map.json").read_text()), "loc")
    assert loc[0]["image"].startswith("https://tile.loc.gov/image-services/iiif/service:gmd:") and loc[0][
        "image"
    ].endswith("/full/full/0/default.jpg")
    v3 = manifest_images(json.loads((FIXTURES / "iiif/v3/iiif-v3.json").read_text()), "nu")
    assert v3[0]["service"].startswith("https://iiif.dc.library.northwestern.edu/iiif/3/") and v3[0]["metadata"][
        "title"
    ].startswith("Translation of a letter")
    collection = json.loads((FIXTURES / "iiif/v3/collection-with-subcollections.json").read_text())
    assert children(collection) and all(c.get("id") or c.get("@id") for c in children(collection))
    paged = json.loads((FIXTURES / "iiif/v2/bsb-collection-paged.json").read_text())
    assert paged.get("first")  # v2.1 paging: followed by the source
    info2 = ImageService.from_info(json.loads((FIXTURES / "iiif/image/info-v2.json").read_text()))
    info3 = ImageService.from_info(json.loads((FIXTURES / "iiif/image/info-v3.json").read_text()))
    assert (info2.version, info3.version) == (2, 3) and info2.width > 0 and info3.height > 0


def test_image_urls_honour_info_json_limits() -> None:
    big = ImageService(base="https://x/iiif/a", version=2, level=2, width=6000, height=4000)
    assert big.url_for("full", 448) == ("https://x/iiif/a/full/672,/0/default.jpg", None)  # short side 448, no more
    assert big.url_for("100,200,1000,500", 448) == ("https://x/iiif/a/100,200,1000,500/896,/0/default.jpg", None)
    capped = ImageService(base="https://x/iiif/a", version=3, level=1, width=6000, height=4000, max_width=400)
    assert capped.url_for("full", 448)[0] == "https://x/iiif/a/full/400,/0/default.jpg"
    area = ImageService(base="https://x/iiif/a", version=2, level=2, width=6000, height=4000, max_area=60_000)
    w = int(area.url_for("full", 448)[0].split("/full/")[1].split(",")[0])
    assert w * w * 4000 / 6000 <= 60_000
    small = ImageService(base="https://x/iiif/a", version=2, level=2, width=300, height=200)
    assert small.url_for("full", 448)[0] == "https://x/iiif/a/full/300,/0/default.jpg"  # never upscaled
    static = ImageService(
        base="https://x/iiif/a",
        version=3,
        level=0,
        width=6000,
        height=4000,
        sizes=((750, 500), (1500, 1000), (3000, 2000)),
    )
    assert static.url_for("full", 448) == ("https://x/iiif/a/full/750,500/0/default.jpg", None)
    url, crop = static.url_for("600,400,1200,800", 448)
    assert url == "https://x/iiif/a/full/max/0/default.jpg" and crop == (
        600,
        400,
        1200,
        800,
    )  # level 0 cannot crop: we do
    url, crop = static.url_for("600,400,2400,1600", 448)
    assert url == "https://x/iiif/a/full/3000,2000/0/default.jpg" and crop == (
        300,
        200,
        1200,
        800,
    )  # smallest listed size that suffices


def test_iiif_collection_over_http_is_ingested_and_indexed_at_the_right_size(
    server: HeritageServer, tmp_path: Path, tiny_clip: str
) -> None:
    s = server
    svc_a = s.add_image("a", picture(1, (3000, 2000)), level=2, version=2)
    svc_b = s.add_image("b", picture(2, (2000, 3000)), level=1, version=3, maxWidth=50)
    svc_c = s.add_image(
        "c",
        picture(3, (1200, 800)),
        level=0,
        version=3,
        sizes=[{"width": 150, "height": 100}, {"width": 300, "height": 200}],
    )
    s.docs["/m/v2.json"] = {"@context": "http://iiif.io/api/presentation/2/context.json", "@id": f"{s.url}/m/v2.json", "@type": "sc:Manifest",
        "label": "Atlas maritime", "metadata": [{"label": "Date", "value": "1754"}], "license": "https://creativecommons.org/publicdomain/mark/1.0/",
        "sequences": [{"canvases": [
            {"@id": f"{s.url}/c/1", "@type": "sc:Canvas", "label": "Plate 1", "width": 1500, "height": 1000,
             "images": [{"motivation": "sc:painting", "resource": {"@id": f"{svc_a}/full/full/0/default.jpg", "service": {"@id": svc_a, "profile": "http://iiif.io/api/image/2/level2.json"}}}]},
            {"@id": f"{s.url}/c/empty", "@type": "sc:Canvas", "images": []}]}]}  # fmt: skip
    s.docs["/m/v3.json"] = {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{s.url}/m/v3.json", "type": "Manifest",
        "label": {"en": ["Views of the harbour"]}, "summary": {"en": ["Two engraved views."]},
        "items": [{"id": f"{s.url}/c/{n}", "type": "Canvas", "label": {"none": [f"View {n}"]}, "items": [{"type": "AnnotationPage", "items": [
            {"type": "Annotation", "motivation": "painting", "body": {"id": f"{svc}/full/max/0/default.jpg", "type": "Image",
             "service": [{"id": svc, "type": "ImageService3", "profile": f"level{lvl}"}]}}]}]}
            for n, svc, lvl in ((2, svc_b, 1), (3, svc_c, 0))]}  # fmt: skip
    s.docs["/col/sub.json"] = {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{s.url}/col/sub.json", "type": "Collection",
                               "items": [{"id": f"{s.url}/m/v3.json", "type": "Manifest"}, {"id": f"{s.url}/m/broken.json", "type": "Manifest"}]}  # fmt: skip
    s.docs["/col/top.json"] = {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{s.url}/col/top.json", "type": "Collection",
                               "items": [{"id": f"{s.url}/col/sub.json", "type": "Collection"}, {"id": f"{s.url}/m/v2.json", "type": "Manifest"},
                                         {"id": f"{s.url}/col/sub.json", "type": "Collection"}]}  # fmt: skip
    s.docs["/m/broken.json"] = b"<html>Server error page with a 200</html>"
    coll = open_collection("books", create=True)
    report = coll.ingest(f"iiif:{s.url}/col/top.json", fetcher=fetcher(tmp_path))
    assert (report.found, report.new) == (3, 3)
    assert any("broken.json" in p for p in report.problems)  # reported and skipped, not fatal
    assert s.requests("/col/sub.json") == ["/col/sub.json"]  # a duplicate sub-collection is fetched once
    item = coll.item(f"{s.url}/c/1")
    assert (
        item.metadata["date"] == "1754"
        and item.metadata["title"] == "Atlas maritime — Plate 1"
        and item.metadata["manifest"] == f"{s.url}/m/v2.json"
    )
    assert coll.item(f"{s.url}/c/2").context == "Two engraved views."

    f = fetcher(tmp_path)
    index = coll.index(model=tiny_clip, fetcher=f)
    assert index.embedded == 3 and not index.failed, index.to_dict()
    asked = [p for p in s.requests("/iiif/") if not p.endswith("info.json")]
    assert "/iiif/a/full/96,/0/default.jpg" in asked  # short side 64 (2 x the tiny model's 32 px input)
    assert "/iiif/b/full/33,/0/default.jpg" in asked  # maxWidth 50, hence maxHeight 50 (v3), on a portrait
    assert "/iiif/c/full/150,100/0/default.jpg" in asked  # level 0: a listed size
    assert not any("/full/full/" in p or "/full/max/" in p for p in asked)  # never the master
    # The vector is the image's: querying with the original finds it.
    hits = coll.search(image=str(_save(picture(1, (3000, 2000)), tmp_path / "a.png")), limit=1)
    assert hits[0].id == f"{s.url}/c/1"
    # A re-run downloads nothing: derivatives and info.json come from the cache.
    before = len(s.log)
    again = coll.index(model=tiny_clip, reembed=True, fetcher=fetcher(tmp_path))
    assert again.embedded == 3 and len(s.log) == before


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


@pytest.mark.slow
def test_url_list_survives_misbehaving_servers(server: HeritageServer, tmp_path: Path, tiny_clip: str) -> None:
    s = server
    for n in range(6):
        s.add_image(f"p{n}", picture(10 + n, (400, 300)))
    good = lambda n: f"{s.url}/iiif/p{n}/full/pct:100/0/default.jpg"  # noqa: E731
    s.faults[f"/iiif/p1/full/{load_size(400, 300)},/0/default.jpg"] = [(503, {}, b"busy"), (503, {}, b"busy")]
    s.faults[f"/iiif/p2/full/{load_size(400, 300)},/0/default.jpg"] = [(429, {"Retry-After": "1"}, b"slow down")]
    s.faults[f"/iiif/p3/full/{load_size(400, 300)},/0/default.jpg"] = [(-1, {}, b"\xff\xd8\xff" + b"0" * 500)]
    s.faults["/login.jpg"] = [(200, {"Content-Type": "image/jpeg"}, b"<html><form>Please log in</form></html>")]
    s.slow.add("/slow.jpg")  # answers after 3 s: past the 1 s timeout, every time
    import io

    bomb = io.BytesIO()
    Image.new("1", (30000, 30000)).save(bomb, "PNG")  # ~100 KB on the wire, 900 megapixels
    s.faults["/bomb.png"] = [(200, {"Content-Type": "image/png"}, bomb.getvalue())]
    rows = [{"id": f"p{n}", "url": good(n), "title": f"Plate {n}", "date": str(1800 + n)} for n in range(5)]
    rows += [
        {"id": "gone", "url": f"{s.url}/missing.jpg"},
        {"id": "login", "url": f"{s.url}/login.jpg"},
        {"id": "nourl", "url": "ftp://x"},
        {"id": "slow", "url": f"{s.url}/slow.jpg"},
        {"id": "bomb", "url": f"{s.url}/bomb.png"},
    ]
    listing = tmp_path / "list.jsonl"
    listing.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    coll = open_collection("urls", create=True)
    report = coll.index(f"urls:{listing}", model=tiny_clip, fetcher=fetcher(tmp_path, retries=3, timeout=1.0))
    assert report.embedded == 5, report.to_dict()
    assert report.failed == {"not_found": 1, "unreadable_image": 1, "fetch_failed": 1, "too_large": 1}
    assert len(s.requests("/slow.jpg")) == 4  # 1 + 3 retries, each cut at the timeout
    assert len(coll) == 9  # the row without an http URL and the bad line are reported, not stored
    assert len(s.requests("/iiif/p1/full/")) == 3  # 503, 503, 200
    times = [t for t, p in s.log if p.startswith("/iiif/p2/full/")]
    assert len(times) == 2 and times[1] - times[0] >= 0.95  # Retry-After honoured
    assert len(s.requests("/iiif/p3/full/")) == 2  # truncated, then complete
    assert coll.item("p4").metadata["caption"] == "Plate 4 from 1804."


def load_size(w: int, h: int) -> int:
    """The width vitrina asks for so the short side is 64 px (tiny CLIP's 2 x 32)."""
    import math

    return math.ceil(w * 64 / min(w, h))


def loc_api(server: HeritageServer, pages: int = 3, per_page: int = 3) -> None:
    for n in range(pages * per_page):
        server.add_image(f"loc{n}", picture(100 + n, (500, 400)))

    def page(query: dict) -> dict:
        sp = int(query.get("sp", ["1"])[0])
        assert query["fo"] == ["json"] and query["at"] == ["results,pagination"]
        results = [{"id": f"http://www.loc.gov/item/map{n:04d}/", "url": f"https://www.loc.gov/item/map{n:04d}/", "title": f"Map of harbour {n}",
                    "date": str(1700 + n), "location": ["boston", "massachusetts"], "original_format": ["map"], "subject": ["harbors"],
                    "item": {"notes": ["Scale 1:12,000.", "Call number G3764"]},
                    "image_url": [f"//{server.url.removeprefix('http://')}/iiif/loc{n}/full/pct:12.5/0/default.jpg#h=50&w=62",
                                  f"{server.url}/iiif/loc{n}/full/pct:25/0/default.jpg#h=100&w=125"]}
                   for n in range((sp - 1) * per_page, sp * per_page)]  # fmt: skip
        results.append(
            {"id": "http://www.loc.gov/collections/maps/", "original_format": ["collection"], "title": "not an item"}
        )
        nxt = f"{server.url}/maps/?q=harbour&fo=json&c=100&at=results,pagination&sp={sp + 1}" if sp < pages else None
        return {
            "results": results,
            "pagination": {
                "current": sp,
                "total": pages,
                "next": nxt,
                "of": pages * per_page,
                "from": (sp - 1) * per_page + 1,
                "to": sp * per_page,
            },
        }

    server.docs["/maps/"] = page


def test_locgov_harvest_stops_at_the_first_429_and_resumes(server: HeritageServer, tmp_path: Path) -> None:
    loc_api(server)
    coll = open_collection("loc", create=True)
    page1 = server.docs["/maps/"]({"sp": ["1"], "fo": ["json"], "at": ["results,pagination"]})
    # Page 1 answers normally, page 2 with a 429 ban: the harvest must stop there, not retry.
    server.faults["/maps/"] = [
        (200, {}, json.dumps(page1).encode()),
        (429, {"Retry-After": "3600"}, b"Too many requests"),
    ]
    report = coll.ingest(f"locgov:{server.url}/maps/?q=harbour", fetcher=fetcher(tmp_path))
    assert report.interrupted and "429" in report.message and report.found == 3
    api_calls = server.requests("/maps/")
    assert len(api_calls) == 2  # page 1, then the 429: nothing after it
    assert all("fo=json" in p and "c=100" in p for p in api_calls)
    # Later: the same command resumes at page 2 and finishes; nothing is duplicated.
    again = coll.ingest(f"locgov:{server.url}/maps/?q=harbour", fetcher=fetcher(tmp_path))
    assert again.resumed and again.found == 6 and not again.interrupted
    assert len(coll) == 9
    times = [t for t, p in server.log if p.startswith("/maps/")][-2:]
    assert times[1] - times[0] >= 0.95  # at most one API request per second
    item = coll.item("loc:map0004")
    md = item.metadata
    assert (
        md["link"] == "https://www.loc.gov/item/map0004/"
        and md["manifest"] == "https://www.loc.gov/item/map0004/manifest.json"
    )
    assert md["caption"] == "Map of harbour 4 from 1704, in Boston, Massachusetts. Scale 1:12,000."
    assert item.image == f"{server.url}/iiif/loc4/full/full/0/default.jpg"  # the service, not the 25% derivative


def test_alto_illustrations_are_cropped_locally_and_through_iiif(
    server: HeritageServer, tmp_path: Path, tiny_clip: str
) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    shutil.copy(FIXTURES / "alto" / "sbb-alto-v3-illustration.xml", pages / "page1.xml")
    # The page image is twice the ALTO page size (OCR ran on a half-size image), with a
    # distinctive picture where the Illustration block is.
    page = Image.new("RGB", (537 * 2, 922 * 2), (240, 236, 226))
    art = picture(7, (622, 402))  # the ALTO box runs 20 px past the page edge: clamped
    page.paste(art, (452, 122))
    page.save(pages / "page1.jpg", quality=95)
    # A namespace-less ALTO v1 page in mm10 units, no image beside it, and a billion-laughs file.
    v1 = (
        (FIXTURES / "alto" / "sbb-alto-v3-illustration.xml")
        .read_text()
        .replace(' xmlns="http://www.loc.gov/standards/alto/ns-v3#"', "")
        .replace(">pixel<", ">mm10<")
    )
    (pages / "noimage.xml").write_text(v1)
    (pages / "bomb.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><alto>&b;</alto>'
    )
    coll = open_collection("illustrations", create=True)
    report = coll.ingest(f"alto:{pages}")
    assert report.found == 1  # two overlapping Illustration blocks merged into one
    assert any("bomb.xml" in p for p in report.problems) and any("noimage.xml" in p for p in report.problems)
    item = coll.item("page1.xml#block_20")
    assert item.image.endswith("#xywh=452,122,622,402") and item.metadata["unit"] == "pixel"
    assert "Albert Schütt" in item.context
    coll.index(model=tiny_clip)
    hit = coll.search(image=str(_save(art, tmp_path / "art.png")), limit=1)[0]
    assert hit.id == "page1.xml#block_20" and hit.score > 0.98

    # The same page behind a IIIF image server: the crop is requested as a region.
    server.add_image("page1", page, level=2)
    iiif_coll = open_collection("illustrations-iiif", create=True)
    got = iiif_coll.ingest(f"alto:{pages / 'page1.xml'}", images=f"iiif:{server.url}/iiif/{{stem}}")
    assert got.found == 1
    iiif_coll.index(model=tiny_clip)
    assert any(re.match(r"/iiif/page1/452,122,622,402/\d+,/0/default.jpg", p) for p in server.requests())
    found = iiif_coll.search(image=str(tmp_path / "art.png"), limit=1)[0]
    assert found.score > 0.98


def test_captions_follow_the_loc_recipe() -> None:
    assert build_caption({"title": "[Map of Boston harbor]: with soundings", "original_format": ["map"], "date": "1775-03",
                          "location": ["boston", "massachusetts"], "notes": ["Scale 1:12,000.", "Call number G3764 1775", "Hand colored.", "Geography and Map Division"]}) == (
        "Map of Boston harbor from 1775, in Massachusetts. With soundings. Scale 1:12,000. Hand colored.")  # fmt: skip
    assert build_caption(
        {"title": "Bird's eye view of Albany", "original_format": ["map"], "date": "1879", "location": ["new york"]}
    ) == ("A map of a bird's eye view of Albany from 1879, in New York.")
    assert build_caption({"title": "[Map of Boston harbor 2]: from an actual survey", "original_format": ["map"]}) == (
        "Map of Boston harbor 2. From an actual survey."  # a number before the ':' is not a scale
    )
    assert build_caption({}) == ""


@pytest.mark.slow
def test_a_killed_remote_index_resumes_exactly_once(server: HeritageServer, tmp_path: Path, tiny_clip: str) -> None:
    rows = []
    for n in range(30):
        server.add_image(f"k{n}", picture(300 + n, (320, 240)))
        rows.append({"id": f"k{n}", "url": f"{server.url}/iiif/k{n}/full/full/0/default.jpg"})
    listing = tmp_path / "list.csv"
    listing.write_text("id,url\n" + "".join(f"{r['id']},{r['url']}\n" for r in rows))
    env = {**os.environ, "VITRINA_ALLOW_PRIVATE_URLS": "1"}
    base = [
        sys.executable,
        "-m",
        "vitrina",
        "index",
        f"urls:{listing}",
        "--collection",
        "killed",
        "--model",
        tiny_clip,
        "--batch-size",
        "4",
        "-q",
    ]
    for fault in ("after_vector_write:2", "before_commit:3"):
        assert subprocess.run(base, env={**env, "VITRINA_FAULT": fault}, capture_output=True).returncode == 137
    done = subprocess.run([*base, "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    coll = open_collection("killed")
    space = coll.spaces()[0]
    assert space.live == 30 and len(coll) == 30
    info = coll.info(check=True)
    assert info["problems"] == []
    for n in (0, 13, 29):
        hit = coll.search(image=str(_save(picture(300 + n, (320, 240)), tmp_path / "q.png")), limit=1)[0]
        assert hit.id == f"k{n}"


def test_cli_ingest_reports_and_exit_codes(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vitrina", *args], capture_output=True, text=True, timeout=120)

    manifest = tmp_path / "nlw.json"
    shutil.copy(FIXTURES / "iiif/v2/nlw.json", manifest)
    ok = run("ingest", f"iiif:{manifest}", "--collection", "register", "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["found"] == 219 and report["new"] == 219 and report["requests"] == 0
    again = json.loads(run("ingest", f"iiif:{manifest}", "--collection", "register", "--json").stdout)
    assert again["unchanged"] == 219 and again["new"] == 0
    # The catalogue corrects the title: metadata is updated in place, nothing needs re-embedding.
    doc = json.loads(manifest.read_text())
    doc["label"] = "Cardiganshire Constabulary register (corrected)"
    manifest.write_text(json.dumps(doc))
    corrected = json.loads(run("ingest", f"iiif:{manifest}", "--collection", "register", "--json").stdout)
    assert (corrected["updated"], corrected["changed"], corrected["unchanged"]) == (219, 0, 0)
    first_canvas = doc["sequences"][0]["canvases"][0]["@id"]
    assert (
        open_collection("register")
        .item(first_canvas)
        .metadata["title"]
        .startswith("Cardiganshire Constabulary register (corrected)")
    )
    broken = run("ingest", f"iiif:{FIXTURES / 'iiif/v2/problem-invalid.json'}", "--collection", "register")
    assert broken.returncode == 1 and "not a readable JSON file" in broken.stderr
    wrong = run("ingest", "locgov:https://example.org/maps/", "--collection", "register")
    assert wrong.returncode == 1 and "not a loc.gov address" in wrong.stderr
    info = json.loads(run("info", "register", "--json").stdout)
    assert info["items"] == 219 and info["by_status"] == {"pending": 219}
