"""Ingest on data as it is in the wild (issue #13): off-spec IIIF, audio/video canvases, auth
services, Image API 1.1, languages, loc.gov map collections, offline runs, ALTO edge cases and the
National Library of Norway's manifest -> ALTO -> region crops flow. Real HTTP on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.heritage_server import HeritageServer, picture
from vitrina import open_collection
from vitrina.http import Fetcher
from vitrina.iiif import ImageService, manifest_images, text
from vitrina.sources.alto import parse_alto

FIXTURES = Path(__file__).parent / "data"
V2 = "http://iiif.io/api/presentation/2/context.json"
V3 = "http://iiif.io/api/presentation/3/context.json"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VITRINA_ALLOW_PRIVATE_URLS", "1")  # the "remote" hosts are on loopback
    with HeritageServer() as s:
        yield s


def fetcher(tmp_path: Path, **kw) -> Fetcher:  # type: ignore[no-untyped-def]
    return Fetcher(cache_dir=tmp_path / "http-cache", allow_private=True, requests_per_second=0, backoff=0.05, **kw)


def v2_canvas(url: str, n: int, svc: str, width: int = 1000, height: int = 800, **extra) -> dict:  # type: ignore[no-untyped-def]
    return {"@id": f"{url}/canvas/{n}", "@type": "sc:Canvas", "label": f"p. {n}", "width": width, "height": height, **extra,
            "images": [{"@type": "oa:Annotation", "motivation": "sc:painting", "on": f"{url}/canvas/{n}",
                        "resource": {"@id": f"{svc}/full/full/0/default.jpg", "@type": "dctypes:Image", "format": "image/jpeg",
                                     "service": {"@context": "http://iiif.io/api/image/2/context.json", "@id": svc,
                                                 "profile": "http://iiif.io/api/image/2/level2.json"}}}]}  # fmt: skip


# -- 1. one odd document never stops a harvest ------------------------------------------------


def test_an_odd_manifest_is_read_or_skipped_and_the_walk_goes_on(server: HeritageServer, tmp_path: Path) -> None:
    s = server
    svc = s.add_image("a", picture(1, (600, 400)))
    canvases = [v2_canvas(s.url, 1, svc)]
    # `sequences` as one object, not a list (seen in the wild): the meaning is clear, read it.
    s.docs["/m/object-sequence.json"] = {"@context": V2, "@id": f"{s.url}/m/object-sequence.json", "@type": "sc:Manifest", "label": "Atlas",
                                         "sequences": {"@type": "sc:Sequence", "canvases": canvases}}  # fmt: skip
    s.docs["/m/latin1.json"] = '{"label": "Carte g\xe9n\xe9rale"}'.encode("latin-1")  # not UTF-8
    s.docs["/m/list.json"] = [1, 2, 3]  # JSON, not IIIF
    s.docs["/m/ok.json"] = {"@context": V2, "@id": f"{s.url}/m/ok.json", "@type": "sc:Manifest", "label": "Ok",
                            "sequences": [{"canvases": [v2_canvas(s.url, 2, svc)]}]}  # fmt: skip
    s.docs["/col.json"] = {"@context": V2, "@id": f"{s.url}/col.json", "@type": "sc:Collection",
                           "manifests": [{"@id": f"{s.url}/m/{n}.json", "@type": "sc:Manifest"} for n in ("object-sequence", "latin1", "list", "ok")]}  # fmt: skip
    coll = open_collection("odd", create=True)
    for _ in range(2):  # a re-run does not crash at the same place either
        report = coll.ingest(f"iiif:{s.url}/col.json", fetcher=fetcher(tmp_path))
        assert report.found == 2 and not report.interrupted, report.to_dict()
        assert {p.split(":")[2].split("/")[-1] for p in report.problems} == {"latin1.json", "list.json"}
        assert report.skipped == {"unreadable document": 2}
    assert coll.item(f"{s.url}/canvas/1").metadata["title"] == "Atlas — p. 1"


def test_a_single_unreadable_document_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.json"
    bad.write_bytes('{"label": "Carte g\xe9n\xe9rale"}'.encode("latin-1"))
    for doc in (bad, FIXTURES / "iiif/v2/problem-invalid.json"):
        run = subprocess.run(
            [sys.executable, "-m", "vitrina", "ingest", f"iiif:{doc}", "--collection", "bad"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 1 and doc.name in run.stderr and "IIIF manifest" in run.stderr, run.stderr


# -- 2. only images become items ----------------------------------------------------------------


def test_audio_video_and_pdf_canvases_are_skipped_or_use_their_poster(server: HeritageServer, tmp_path: Path) -> None:
    s = server
    poster = s.add_image("poster", picture(2, (640, 360)), version=3)
    page = s.add_image("page", picture(3, (600, 800)), version=3)
    thumb = s.add_image("thumb", picture(4, (300, 400)), version=3)

    def canvas(n: int, body: dict, **extra) -> dict:  # type: ignore[no-untyped-def]
        return {"id": f"{s.url}/c/{n}", "type": "Canvas", "label": {"none": [f"part {n}"]}, **extra,
                "items": [{"type": "AnnotationPage", "items": [{"type": "Annotation", "motivation": "painting", "body": body}]}]}  # fmt: skip

    auth = {"@context": "http://iiif.io/api/auth/1/context.json", "@id": f"{s.url}/auth/login", "profile": "http://iiif.io/api/auth/1/login",
            "service": [{"@id": f"{s.url}/auth/token", "profile": "http://iiif.io/api/auth/1/token"}]}  # fmt: skip
    s.docs["/m/av.json"] = {"@context": V3, "id": f"{s.url}/m/av.json", "type": "Manifest", "label": {"en": ["Oral history"]}, "items": [
        canvas(1, {"id": f"{s.url}/film.mp4", "type": "Video", "format": "video/mp4"},
               thumbnail=[{"id": f"{poster}/full/max/0/default.jpg", "type": "Image", "service": [{"id": poster, "type": "ImageService3", "profile": "level2"}]}]),
        canvas(2, {"id": f"{s.url}/talk.mp3", "type": "Sound"}),
        canvas(3, {"id": f"{s.url}/stream/manifest.mpd", "type": "Video", "format": "application/dash+xml"}),
        canvas(4, {"id": f"{s.url}/report.pdf", "type": "Text", "format": "application/pdf"}),
        canvas(5, {"id": f"{s.url}/model.glb", "type": "Model"}),
        # An auth login service listed before the image service: never taken for it.
        canvas(6, {"id": f"{page}/full/max/0/default.jpg", "type": "Image", "service": [auth, {"id": page, "type": "ImageService3", "profile": "level2"}]}),
        # The image needs a login; the canvas's open thumbnail service is used instead.
        canvas(7, {"id": f"{page}/full/max/0/default.jpg", "type": "Image",
                   "service": [{"id": page, "type": "ImageService3", "profile": "level2", "service": [auth]}]},
               thumbnail=[{"id": f"{thumb}/full/max/0/default.jpg", "type": "Image", "service": [{"id": thumb, "type": "ImageService3", "profile": "level1"}]}]),
    ]}  # fmt: skip
    coll = open_collection("av", create=True)
    report = coll.ingest(f"iiif:{s.url}/m/av.json", fetcher=fetcher(tmp_path))
    assert report.skipped == {"3d": 1, "audio": 1, "pdf": 1, "video": 1}, report.to_dict()
    images = {i.id.rsplit("/", 1)[-1]: i.image for i in coll.iter_items()}
    assert images == {
        "1": f"{poster}/full/max/0/default.jpg",
        "6": f"{page}/full/max/0/default.jpg",
        "7": f"{thumb}/full/max/0/default.jpg",
    }
    assert not any("auth" in i.image or ".mp4" in i.image for i in coll.iter_items())


# -- 3. Image API 1.1 and exact sizes ---------------------------------------------------------------


def test_image_api_1_1_gets_native_quality_and_sizes_are_exact() -> None:
    info = {"@context": "http://library.stanford.edu/iiif/image-api/1.1/context.json", "@id": "https://stacks.example.org/image/bb123/page1",
            "width": 5000, "height": 3750, "scale_factors": [1, 2, 4, 8], "tile_width": 256, "tile_height": 256, "formats": ["jpg", "png"],
            "qualities": ["native", "color", "grey", "bitonal"], "profile": "http://library.stanford.edu/iiif/image-api/1.1/compliance.html#level1"}  # fmt: skip
    service = ImageService.from_info(info)
    assert (service.version, service.level) == (1, 1)
    assert service.url_for("full", 448)[0] == "https://stacks.example.org/image/bb123/page1/full/598,/0/native.jpg"
    square = ImageService(base="https://x/iiif/s", version=2, level=2, width=525, height=525)
    assert square.url_for("full", 448)[0] == "https://x/iiif/s/full/448,/0/default.jpg"  # float ceil asked for 449
    v1_manifest = {"@context": V2, "@id": "m", "@type": "sc:Manifest", "sequences": [{"canvases": [{"@id": "c1", "images": [{"resource": {
        "@id": "https://stacks.example.org/image/bb123/page1/full/full/0/native.jpg",
        "service": {"@context": "http://iiif.io/api/image/1/context.json", "@id": "https://stacks.example.org/image/bb123/page1",
                    "profile": "http://library.stanford.edu/iiif/image-api/1.1/compliance.html#level1"}}}]}]}]}  # fmt: skip
    assert manifest_images(v1_manifest, "m")[0]["image"].endswith("/full/full/0/native.jpg")


# -- 4. languages -------------------------------------------------------------------------------


def test_one_language_is_chosen() -> None:
    label = [
        {"@value": "Map of Norway", "@language": "en-GB"},
        {"@value": "Kart over Norge", "@language": "no"},
        {"@value": "ノルウェーの地図", "@language": "ja"},
    ]
    assert text(label) == "Map of Norway"
    assert text(label, "no") == "Kart over Norge"
    assert text(label, "de") == "Map of Norway"  # none in German, none without a language: the first
    assert text({"ja": ["書名"], "none": ["Tittel"], "de": ["Titel"]}) == "Tittel"
    assert text({"ja": ["書名"], "de": ["Titel"]}) == "書名"
    assert text(["two", "plain strings"]) == "two; plain strings"
    manifest = {"@context": V2, "@id": "m", "@type": "sc:Manifest", "label": label,
                "metadata": [{"label": [{"@value": "Date", "@language": "en"}, {"@value": "Dato", "@language": "no"}], "value": "1859"}],
                "sequences": [{"canvases": [v2_canvas("http://x", 1, "http://x/iiif/a")]}]}  # fmt: skip
    assert manifest_images(manifest, "m", lang="nb-NO")[0]["metadata"]["title"].startswith(
        "Map of Norway"
    )  # nb is not no: the first
    assert manifest_images(manifest, "m", lang="no")[0]["metadata"]["title"] == "Kart over Norge — p. 1"
    assert manifest_images(manifest, "m")[0]["metadata"]["date"] == "1859"


# -- 6. loc.gov ---------------------------------------------------------------------------------------


def test_locgov_keeps_map_collections_every_sheet_and_results_without_image_urls(
    server: HeritageServer, tmp_path: Path
) -> None:
    s = server
    for n in range(4):
        s.add_image(f"sheet{n}", picture(50 + n, (500, 400)))
    host = s.url.removeprefix("http://")

    def derivative(name: str) -> list[str]:
        return [
            f"//{host}/iiif/{name}/full/pct:6.25/0/default.jpg#h=25&w=31",
            f"//{host}/iiif/{name}/full/pct:25/0/default.jpg#h=100&w=125",
        ]

    results = [
        # A real multi-sheet map: original_format ["map", "collection"], 3 files in its resources.
        {"id": "http://www.loc.gov/item/2013593216/", "title": "Sanborn fire insurance maps of Bergen", "date": "1885",
         "original_format": ["map", "collection"], "image_url": derivative("sheet0"),
         "resources": [{"files": 3, "url": "https://www.loc.gov/resource/g3804bm.g000001885/"}]},
        # A result with an empty image_url: its manifest has the image.
        {"id": "http://www.loc.gov/item/2001620000/", "title": "Map of Christiania", "date": "1860", "original_format": ["map"], "image_url": []},
        {"id": "http://www.loc.gov/collections/sanborn-maps/", "title": "Sanborn Maps", "original_format": ["collection"]},
        {"id": "http://www.loc.gov/item/2002000000/", "title": "A map whose manifest is gone", "original_format": ["map"], "image_url": ""},
    ]  # fmt: skip
    s.docs["/maps/"] = {"results": results, "pagination": {"current": 1, "total": 1, "next": None, "of": 4}}

    def loc_manifest(item: str, sheets: list[str]) -> dict:
        return {"@context": V2, "@id": f"{s.url}/item/{item}/manifest.json", "@type": "sc:Manifest", "label": "x",
                "sequences": [{"canvases": [v2_canvas(f"{s.url}/item/{item}", n + 1, f"{s.url}/iiif/{name}") for n, name in enumerate(sheets)]}]}  # fmt: skip

    s.docs["/item/2013593216/manifest.json"] = loc_manifest("2013593216", ["sheet0", "sheet1", "sheet2"])
    s.docs["/item/2001620000/manifest.json"] = loc_manifest("2001620000", ["sheet3"])
    coll = open_collection("loc-maps", create=True)
    report = coll.ingest(f"locgov:{s.url}/maps/?q=bergen", fetcher=fetcher(tmp_path))
    assert report.found == 4, report.to_dict()
    assert report.skipped == {"no image": 1, "not an item (collection, web page)": 1}
    assert any("2002000000" in p for p in report.problems)
    ids = sorted(i.id for i in coll.iter_items())
    assert ids == ["loc:2001620000", "loc:2013593216", "loc:2013593216/sheet-2", "loc:2013593216/sheet-3"]
    sheet = coll.item("loc:2013593216/sheet-2")
    assert sheet.image == f"{s.url}/iiif/sheet1/full/full/0/default.jpg" and sheet.metadata["sheets"] == 3
    assert sheet.metadata["title"] == "Sanborn fire insurance maps of Bergen"
    assert coll.item("loc:2001620000").image == f"{s.url}/iiif/sheet3/full/full/0/default.jpg"
    # An item URL is a source too.
    s.docs["/item/2001620000/"] = {
        "item": {"title": "Map of Christiania", "date": "1860", "original_format": ["map"]},
        "resources": [{"files": 1}],
    }
    one = open_collection("loc-one", create=True)
    got = one.ingest(f"locgov:{s.url}/item/2001620000/", fetcher=fetcher(tmp_path))
    assert got.found == 1 and one.item("loc:2001620000").metadata["title"] == "Map of Christiania", got.to_dict()


# -- 7. offline is not forbidden --------------------------------------------------------------------


def test_offline_stops_once_and_dns_failures_are_transient(
    server: HeritageServer, tmp_path: Path, tiny_clip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = server
    s.add_image("ok", picture(9, (300, 200)))
    real = socket.getaddrinfo
    asked: list[str] = []

    def resolver(host, *a, **kw):  # type: ignore[no-untyped-def]
        asked.append(host)
        if host.endswith(".example.org"):  # the resolver never answers: glibc gives up with EAI_AGAIN
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.setattr("vitrina.http._no_route", lambda: False)  # this machine is online; only the names fail
    listing = tmp_path / "offline.csv"
    listing.write_text(
        "id,url\n"
        + "".join(f"m{n},https://maps{n % 2}.example.org/iiif/m{n}/full/full/0/default.jpg\n" for n in range(6))
    )
    coll = open_collection("offline", create=True)
    report = coll.index(f"urls:{listing}", model=tiny_clip, fetcher=fetcher(tmp_path), workers=1)
    assert report.interrupted and report.message.startswith("Offline:") and not report.failed, report.to_dict()
    assert asked == ["maps0.example.org"]  # detected once: no lookup (and no 10 s timeout) per item
    assert coll.info()["by_status"] == {"pending": 6}

    # A name that does not exist is a transient failure, looked up once, retried by the next run.
    listing.write_text(
        "id,url\n"
        + "".join(f"g{n},http://gone.invalid/g{n}.jpg\n" for n in range(2))
        + f"ok,{s.url}/iiif/ok/full/full/0/default.jpg\n"
    )
    asked.clear()
    gone = open_collection("gone", create=True)
    first = gone.index(f"urls:{listing}", model=tiny_clip, fetcher=fetcher(tmp_path), workers=1)
    assert first.embedded == 1 and first.failed == {"fetch_failed": 2}, first.to_dict()
    assert asked.count("gone.invalid") == 1 and "gone.invalid" in first.failures[0][2]
    again = gone.index(model=tiny_clip, fetcher=fetcher(tmp_path))
    assert again.failed == {"fetch_failed": 2}  # tried again without --retry-failed
    # A query image URL (user-supplied, in the service) still gets the one uniform refusal: no
    # oracle of which host names resolve.
    from vitrina.errors import ImageError
    from vitrina.http import fetch_bytes

    with pytest.raises(ImageError) as refused:
        fetch_bytes("http://gone.invalid/q.jpg")
    assert refused.value.reason == "url_rejected" and "public hosts" in str(refused.value)


# -- 8. ALTO edge cases -----------------------------------------------------------------------------

ALTO = """<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v3#"><Description><MeasurementUnit>pixel</MeasurementUnit></Description>
<Layout><Page ID="p1" WIDTH="1000" HEIGHT="1400" PHYSICAL_IMG_NR="1"><PrintSpace HPOS="0" VPOS="0" WIDTH="1000" HEIGHT="1400">
 <TextBlock ID="tb_title" HPOS="100" VPOS="60" WIDTH="800" HEIGHT="40"><TextLine><String CONTENT="KAPITTEL"/><SP/><String CONTENT="III."/></TextLine></TextBlock>
 <ComposedBlock ID="cb_fig" TYPE="Illustration" HPOS="100" VPOS="150" WIDTH="800" HEIGHT="700">
  <Illustration ID="ill_main" HPOS="100" VPOS="150" WIDTH="800" HEIGHT="600"/>
  <TextBlock ID="tb_caption" HPOS="100" VPOS="760" WIDTH="800" HEIGHT="60"><TextLine><String CONTENT="Fig."/><SP/><String CONTENT="3."/><SP/><String CONTENT="Bergen"/><SP/><String CONTENT="havn."/></TextLine></TextBlock>
 </ComposedBlock>
 <Illustration ID="ill_inside" HPOS="300" VPOS="300" WIDTH="200" HEIGHT="150"/>
 <GraphicalElement ID="rule" HPOS="100" VPOS="880" WIDTH="800" HEIGHT="12"/>
 <Illustration ID="ill_edge" HPOS="850" VPOS="950" WIDTH="300" HEIGHT="300"/>
 <TextBlock ID="tb_body" HPOS="100" VPOS="1300" WIDTH="500" HEIGHT="40"><TextLine><String CONTENT="Byen"/><SP/><String CONTENT="ligger"/></TextLine></TextBlock>
</PrintSpace></Page></Layout></alto>"""


def test_alto_merges_contained_blocks_clips_boxes_and_puts_the_figure_caption_first(tmp_path: Path) -> None:
    from vitrina.sources.alto import AltoSource, nearby_text

    page = parse_alto("page.xml", ALTO.encode())
    assert [b.id for b in page.pictures] == [
        "cb_fig",
        "ill_edge",
    ]  # ill_main and ill_inside lie wholly inside; the rule is a rule
    assert nearby_text(page, page.pictures[0]).startswith("Fig. 3. Bergen havn.")
    folder = tmp_path / "alto"
    folder.mkdir()
    (folder / "p1.xml").write_text(ALTO)
    picture(5, (1000, 1400)).save(folder / "p1.jpg")
    items = {i.id: i for items, _ in AltoSource(str(folder), Fetcher(), min_size=1).pages() for i in items}
    assert sorted(items) == ["p1.xml#cb_fig", "p1.xml#ill_edge"]  # min-size 1 still leaves the rule out
    assert items["p1.xml#ill_edge"].image.endswith("#xywh=850,950,150,300")  # cut at the page edge, not shifted onto it


# -- 9. URL lists: rows that are not images ---------------------------------------------------------


def test_url_list_rows_that_are_not_images_are_flagged(server: HeritageServer, tmp_path: Path) -> None:
    s = server
    s.add_image("plate", picture(6, (300, 200)))
    s.faults["/reports/sheet"] = [(200, {"Content-Type": "application/pdf"}, b"%PDF-1.4")]
    listing = tmp_path / "list.csv"
    listing.write_text("id,url\n" f"plate,{s.url}/iiif/plate/full/full/0/default.jpg\n" f"rep,https://tile.loc.gov/storage-services/service/gmd/report.pdf\n"
                       f"sheet,{s.url}/reports/sheet\n")  # fmt: skip
    coll = open_collection("list", create=True)
    report = coll.ingest(f"urls:{listing}", check_type=True, fetcher=fetcher(tmp_path))
    assert report.found == 1 and report.skipped == {"pdf": 2}, report.to_dict()
    assert any("report.pdf is not an image" in p for p in report.problems) and any(
        "/reports/sheet is not an image" in p for p in report.problems
    )
    # An image URL answering with an HTML page fails naming the URL, not "<39 bytes>".
    from vitrina.errors import ImageError
    from vitrina.images import read_image

    s.faults["/login.jpg"] = [(200, {"Content-Type": "image/jpeg"}, b"<html><form>Please log in</form></html>")]
    with pytest.raises(ImageError, match=r"/login\.jpg: not a recognised image"):
        read_image(f"{s.url}/login.jpg", fetcher=fetcher(tmp_path))


def test_a_plain_list_of_urls_is_read_and_a_csv_without_a_url_column_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "urls.txt"
    plain.write_text("https://example.org/a.jpg\n\nhttps://example.org/b.jpg\nhttps://example.org/c.mp4\n")  # no header
    report = open_collection("plain", create=True).ingest(f"urls:{plain}")
    assert (report.found, report.skipped) == (2, {"video": 1}), report.to_dict()
    wrong = tmp_path / "list.csv"
    wrong.write_text("identifier,link\n1,https://example.org/a.jpg\n")
    from vitrina.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"list\.csv has no URL column \(its columns: identifier, link\).*url, file_url"
    ):
        open_collection("wrong", create=True).ingest(f"urls:{wrong}")


# -- The National Library of Norway's flow ----------------------------------------------------------


def test_nb_no_manifest_alto_and_region_crops_end_to_end(
    server: HeritageServer, tmp_path: Path, tiny_clip: str
) -> None:
    s = server
    urn = "URN:NBN:no-nb_digibok_2014020308011"
    art = picture(21, (800, 600))
    for n in (1, 2):
        scan = picture(20 + n, (2000, 2800))  # the scan is twice the size the OCR ran at (ALTO page 1000 x 1400)
        if n == 1:
            scan.paste(art, (200, 300))  # where cb_fig's box is, at twice the scale
        s.add_image(f"{urn}_{n:04d}", scan)
        s.docs[f"/catalog/v1/metadata/abc123/altos/{urn}_{n:04d}"] = ALTO.encode()
    s.docs[f"/catalog/v1/iiif/{urn}/manifest"] = {
        "@context": V2, "@id": f"{s.url}/catalog/v1/iiif/{urn}/manifest", "@type": "sc:Manifest",
        "label": [{"@value": "Bergen i billeder", "@language": "no"}], "metadata": [{"label": "Publisert", "value": "15. September 1859"}],
        "sequences": [{"@type": "sc:Sequence", "canvases": [
            # Page 1 links its ALTO with seeAlso; page 2 has none (the template finds it).
            v2_canvas(s.url, 1, f"{s.url}/iiif/{urn}_0001", 2000, 2800, seeAlso={"@id": f"{s.url}/catalog/v1/metadata/abc123/altos/{urn}_0001",
                                                                           "format": "application/xml+alto", "profile": "http://www.loc.gov/standards/alto/"}),
            v2_canvas(s.url, 2, f"{s.url}/iiif/{urn}_0002", 2000, 2800)]}]}  # fmt: skip
    manifest = f"iiif:{s.url}/catalog/v1/iiif/{urn}/manifest"
    auto = open_collection("nb-auto", create=True)
    report = auto.ingest(manifest, alto="auto", fetcher=fetcher(tmp_path))
    assert report.found == 2 and report.skipped == {"page without ALTO": 1}, report.to_dict()
    fig = auto.item(f"{s.url}/canvas/1#cb_fig")
    assert (
        fig.image == f"{s.url}/iiif/{urn}_0001/200,300,1600,1400/full/0/default.jpg"
    )  # ALTO x canvas / ALTO page size
    assert fig.context.startswith("Fig. 3. Bergen havn.") and fig.metadata["title"].startswith("Bergen i billeder")

    s.docs[f"/catalog/v1/metadata/abc123/altos/{urn}_0002"] = (
        b"<html>busy</html>"  # one bad ALTO page costs that page, not the book
    )
    broken = open_collection("nb-broken", create=True).ingest(
        manifest, alto=f"{s.url}/catalog/v1/metadata/abc123/altos/{urn}_{{page:04d}}", fetcher=fetcher(tmp_path / "b")
    )
    assert broken.found == 2 and broken.skipped == {"unreadable ALTO": 1}, broken.to_dict()
    s.docs[f"/catalog/v1/metadata/abc123/altos/{urn}_0002"] = ALTO.encode()
    coll = open_collection("nb", create=True)
    got = coll.ingest(
        manifest, alto=f"{s.url}/catalog/v1/metadata/abc123/altos/{urn}_{{page:04d}}", fetcher=fetcher(tmp_path)
    )
    assert got.found == 4 and not got.skipped, got.to_dict()
    index = coll.index(model=tiny_clip, fetcher=fetcher(tmp_path))
    assert index.embedded == 4 and not index.failed, index.to_dict()
    crops = [p for p in s.requests("/iiif/") if "/200,300,1600,1400/" in p]
    assert crops and all(p.endswith("/0/default.jpg") for p in crops)  # a region request, not the whole page
    art.save(tmp_path / "art.png")
    hit = coll.search(image=str(tmp_path / "art.png"), limit=1)[0]
    assert hit.id == f"{s.url}/canvas/1#cb_fig"
    assert json.loads(json.dumps(got.to_dict()))["found"] == 4


# -- 5. free-text dates ---------------------------------------------------------------------------------


def test_free_text_dates_get_a_year_and_filters_compare_the_year(tmp_path: Path) -> None:
    from vitrina.filters import Filter, matches, normal_values

    dates = {
        "a": "15. September 1859",
        "b": "ca. 1820",
        "c": "[1754?]",
        "d": "1750-1760",
        "e": "15.09.1859",
        "f": "March 3, 1701",
    }
    listing = tmp_path / "dated.csv"
    listing.write_text(
        "id,url,date\n" + "".join(f'{k},https://img.example.org/{k}.jpg,"{v}"\n' for k, v in dates.items())
    )
    coll = open_collection("dated", create=True)
    coll.ingest(f"urls:{listing}")
    got = {
        k: (coll.item(k).metadata["date"], coll.item(k).metadata["year"], coll.item(k).metadata.get("year_end"))
        for k in dates
    }
    assert got == {"a": ("15. September 1859", 1859, None), "b": ("ca. 1820", 1820, None), "c": ("[1754?]", 1754, None),
                   "d": ("1750-1760", 1750, 1760), "e": ("15.09.1859", 1859, None), "f": ("March 3, 1701", 1701, None)}  # fmt: skip
    after_1800 = {k for k, v in dates.items() if matches(normal_values(v), Filter.parse("date>=1800"))}
    assert after_1800 == {"a", "b", "e"}  # the day (15, 3) is not the year
    assert normal_values(dates["a"])[0].shown == "15. September 1859"  # shown as written
