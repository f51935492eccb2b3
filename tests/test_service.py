"""The HTTP API, in-process: every query mode, one error shape, limits and safety."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import vitrina
from tests.test_http import Handler, Hostile, hostile, server  # noqa: F401  (loopback image servers: fixtures)
from vitrina import open_collection
from vitrina.service import create_app


@pytest.fixture
def coll_name(scans: Path, tiny_clip: str) -> str:
    from vitrina import Item

    coll = open_collection("svc", create=True)
    coll.index(str(scans), model=tiny_clip)
    for i, date in enumerate(["1690", "1750", "1820"]):  # a few dated items for filters and facets
        path = next((scans / "generated").glob(f"img000{i}.*"))
        coll.add_items(
            [
                Item(
                    id=f"dated/{i}",
                    image=str(path),
                    fingerprint="1",
                    source="extra",
                    metadata={"title": f"Dated {i}", "date": date, "place": "Boston" if i else "Oslo"},
                )
            ]
        )
    coll.index()
    return "svc"


@pytest.fixture
def client(coll_name: str) -> TestClient:
    with TestClient(create_app(coll_name, token="s3cret"), raise_server_exceptions=False) as c:
        yield c


def jpeg_bytes(path: Path) -> bytes:
    return path.read_bytes()


def assert_error(response, status: int, *codes: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] in codes
    assert body["error"]["message"] and body["error"]["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text


def test_text_item_and_weighted_searches(client: TestClient) -> None:
    r = client.get("/api/search", params={"q": "old map", "limit": 5})
    assert r.status_code == 200
    body = r.json()
    assert len(body["hits"]) == 5 and body["considered"] == 17
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5]
    assert body["hits"][0]["thumbnail"].startswith("/api/thumbnails?id=")
    by_item = client.get("/api/search", params={"item": "manuscript-page.jpg", "limit": 3}).json()
    assert "manuscript-page.jpg" not in [h["id"] for h in by_item["hits"]]
    pushed = client.get(
        "/api/search", params=[("q", "old map"), ("item", f"-1:{body['hits'][0]['id']}"), ("limit", 17)]
    ).json()
    assert [h["id"] for h in pushed["hits"]][:1] != [body["hits"][0]["id"]]
    page2 = client.get("/api/search", params={"q": "old map", "limit": 2, "offset": 2}).json()
    assert [h["id"] for h in page2["hits"]] == [h["id"] for h in body["hits"][2:4]]


def test_upload_and_alpha(client: TestClient, scans: Path) -> None:
    data = jpeg_bytes(scans / "book-page-poulpes.jpg")
    r = client.post("/api/search", files={"image": ("page.jpg", data, "image/jpeg")}, data={"limit": "3"})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["hits"][0]["id"] == "book-page-poulpes.jpg" and first["hits"][0]["score"] > 0.999
    key = client.post("/api/uploads", files={"image": ("page.jpg", data, "image/jpeg")}).json()["upload"]
    assert first["upload"] and key != first["upload"]  # random tokens: they say nothing about the image
    text_only = client.get("/api/search", params={"q": "old map", "limit": 17}).json()["hits"]
    at0 = client.get("/api/search", params={"q": "old map", "upload": key, "alpha": 0, "limit": 17}).json()["hits"]
    at1 = client.get("/api/search", params={"q": "old map", "upload": key, "alpha": 1, "limit": 3}).json()["hits"]
    assert [h["id"] for h in at0] == [h["id"] for h in text_only]
    assert at1[0]["id"] == "book-page-poulpes.jpg"
    assert_error(client.get("/api/search", params={"upload": "0" * 24}), 404, "upload_expired")


def test_filters_items_thumbnails_facets_info(client: TestClient) -> None:
    r = client.get("/api/search", params=[("q", "map"), ("where", "date>=1700"), ("where", "place=boston")]).json()
    assert sorted(h["id"] for h in r["hits"]) == ["dated/1", "dated/2"] and r["considered"] == 2
    item = client.get("/api/items/dated/1").json()
    assert item["metadata"]["date"] == "1750" and item["thumbnail"] == "/api/thumbnails?id=dated%2F1&size=256"
    thumb = client.get(item["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    assert client.get(item["thumbnail"]).content == thumb.content  # served from the cache
    facets = client.get("/api/facets").json()
    assert facets["date"]["min"] == 1690 and facets["date"]["max"] == 1820
    assert {v["value"] for v in facets["place"]["values"]} == {"Boston", "Oslo"}
    info = client.get("/api/info").json()
    assert info["items"] == 17 and info["spaces"][0]["vectors"] == 17 and "path" not in info
    assert client.get("/healthz").json() == {"status": "ok"} and client.get("/readyz").status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/api/search"]


def test_errors_share_one_shape(client: TestClient) -> None:
    assert_error(client.get("/api/search"), 400, "invalid_query")
    assert_error(client.get("/api/search", params={"q": "x" * 1001}), 400, "invalid_query")
    assert_error(client.get("/api/search", params={"q": "a", "limit": 0}), 422, "invalid_parameter")
    assert_error(client.get("/api/search", params={"q": "a", "limit": 10**9}), 422, "invalid_parameter")
    assert_error(client.get("/api/search", params={"q": "a", "alpha": "nan"}), 422, "invalid_parameter")
    assert_error(client.get("/api/search", params={"q": "a", "where": "date between"}), 400, "invalid_query")
    assert_error(client.get("/api/search", params={"item": "no/such/item"}), 404, "item_not_found")
    assert_error(client.get("/api/items/../../etc/passwd"), 404, "item_not_found", "not_found")
    assert_error(client.get("/api/thumbnails/%2e%2e/%2e%2e/etc/passwd"), 404, "item_not_found")
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.delete("/api/search"), 405, "method_not_allowed")


def test_upload_limits_and_sniffing(coll_name: str, scans: Path, tmp_path: Path) -> None:
    with TestClient(
        create_app(coll_name, max_upload_bytes=200_000, max_upload_pixels=1_000_000), raise_server_exceptions=False
    ) as client:
        limits = (
            client.app.state.service.collection().limits
        )  # one set of limits, on the Collection, for uploads and URLs
        assert (limits.max_bytes, limits.max_pixels, limits.allow_private, limits.timeout) == (
            200_000,
            1_000_000,
            False,
            10.0,
        )
        big = jpeg_bytes(scans / "book-page-poulpes.jpg")  # 296 KB
        assert_error(
            client.post("/api/uploads", files={"image": ("big.jpg", big, "image/jpeg")}), 413, "payload_too_large"
        )

        def chunks():  # a well-formed multipart body, chunked, with no Content-Length
            yield b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
            for _ in range(8):
                yield b"\xff" * 50_000
            yield b"\r\n--x--\r\n"

        r = client.post("/api/uploads", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert_error(r, 413, "payload_too_large")
        assert_error(
            client.post("/api/uploads", files={"image": ("x.jpg", b"<html>not an image</html>", "image/jpeg")}),
            415,
            "unsupported_media_type",
        )
        svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
        assert_error(
            client.post("/api/uploads", files={"image": ("x.svg", svg, "image/svg+xml")}), 415, "unsupported_media_type"
        )
        buf = io.BytesIO()
        Image.new("L", (2000, 2000)).save(buf, "PNG")  # 4 MP, tiny file, over the pixel limit
        assert_error(
            client.post("/api/uploads", files={"image": ("bomb.png", buf.getvalue(), "image/png")}),
            413,
            "payload_too_large",
        )


def test_image_urls_cannot_reach_private_addresses(client: TestClient, server: str) -> None:  # noqa: F811
    for url in (
        f"{server}/page.jpg",
        "http://169.254.169.254/latest/",
        "file:///etc/passwd",
        f"http://[::ffff:127.0.0.1]:{server.rsplit(':', 1)[1]}/page.jpg",
    ):
        r = client.get("/api/search", params={"image_url": url})
        assert_error(r, 400, "image_url_rejected")
        assert "127.0.0.1" not in r.json()["error"]["message"]  # no address echoed
    assert Handler.requests == []


def test_trusted_deployment_may_fetch_local_urls(coll_name: str, server: str) -> None:  # noqa: F811
    with TestClient(create_app(coll_name, allow_private_urls=True)) as client:
        hits = client.get("/api/search", params={"image_url": f"{server}/page.jpg", "limit": 1}).json()["hits"]
    assert hits[0]["id"] == "manuscript-page.jpg"


def test_write_endpoints_need_the_token(client: TestClient, coll_name: str) -> None:
    assert_error(client.post("/api/index"), 401, "unauthorized")
    assert_error(client.post("/api/index", headers={"X-Vitrina-Token": "wrong"}), 403, "forbidden")
    r = client.post("/api/index", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 202
    for _ in range(100):
        status = client.get("/api/index", headers={"X-Vitrina-Token": "s3cret"}).json()
        if not status["running"] and status.get("report"):
            break
        time.sleep(0.05)
    assert status["report"]["embedded"] == 0 and status["error"] is None
    with TestClient(create_app(coll_name), raise_server_exceptions=False) as read_only:
        assert_error(read_only.post("/api/index", headers={"X-Vitrina-Token": "anything"}), 403, "writes_disabled")


def test_cors_is_off_unless_configured(client: TestClient, coll_name: str) -> None:
    r = client.get("/api/info", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    with TestClient(create_app(coll_name, cors_origins=["https://library.example"])) as c:
        ok = c.get("/api/info", headers={"Origin": "https://library.example"})
        assert ok.headers["access-control-allow-origin"] == "https://library.example"
        assert (
            "access-control-allow-origin" not in c.get("/api/info", headers={"Origin": "https://evil.example"}).headers
        )


def test_a_saturated_model_answers_503_not_a_pile_up(coll_name: str) -> None:
    app = create_app(coll_name, model_slots=1, model_queue=1)
    with TestClient(app, raise_server_exceptions=False) as client:
        service = app.state.service
        inner = service.embedder.inner
        release = threading.Event()
        original = inner.embed_texts

        def slow(texts):  # type: ignore[no-untyped-def]
            release.wait(10)
            return original(texts)

        inner.embed_texts = slow
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(client.get("/api/search", params={"q": "map"}).status_code))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        # One runs (held in the model), one waits in the queue, two are turned away: wait for
        # those two answers rather than a fixed time (a loaded machine starts threads late).
        deadline = time.monotonic() + 30
        while len(results) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        release.set()
        for t in threads:
            t.join(20)
        assert sorted(results).count(200) == 2 and sorted(results).count(503) == 2, results
        r = client.get("/api/search", params={"q": "map"})
        assert r.status_code == 200
        inner.embed_texts = original


def test_the_page_renders_results_without_javascript(client: TestClient) -> None:
    page = client.get("/", params={"q": "old map", "from": "1700"})
    assert page.status_code == 200 and 'class="hit"' in page.text
    assert page.text.count('class="hit"') == 2  # only dated items pass the date filter
    scripted = client.get("/", params={"q": "<script>alert(1)</script>"})
    assert "<script>alert(1)</script>" not in scripted.text and "&lt;script&gt;" in scripted.text
    item = client.get("/item/dated/1", params={"back": "https://evil.example/"})
    assert item.status_code == 200 and "https://evil.example" not in item.text and "1750" in item.text


def test_remote_iiif_images_get_iiif_sized_thumbnails() -> None:
    from vitrina.service.present import iiif_sized

    full = "https://tile.loc.gov/image-services/iiif/service:gmd:gmd3:g3200:ct000001/full/pct:100/0/default.jpg"
    assert (
        iiif_sized(full, 256)
        == "https://tile.loc.gov/image-services/iiif/service:gmd:gmd3:g3200:ct000001/full/!256,256/0/default.jpg"
    )
    region = "https://iiif.example.org/iiif/3/page1/120,80,600,400/max/0/default.jpg"
    assert iiif_sized(region, 1024) == "https://iiif.example.org/iiif/3/page1/120,80,600,400/!1024,1024/0/default.jpg"
    assert iiif_sized("https://example.org/images/map.jpg", 256) is None


def test_a_slow_image_url_fails_within_the_deadline_and_odd_redirects_are_400(coll_name: str, hostile: str) -> None:  # noqa: F811
    with TestClient(
        create_app(coll_name, allow_private_urls=True, image_url_timeout=1.0), raise_server_exceptions=False
    ) as client:
        for path in ("/drip", "/drip-headers", "/stall"):
            start = time.monotonic()
            r = client.get("/api/search", params={"image_url": f"{hostile}{path}"})
            assert_error(r, 422, "image_url_fetch_failed")
            assert time.monotonic() - start < 4.0, path
        for path in Hostile.REDIRECTS:  # data:, mailto:, file:, javascript:, malformed: refused, never a 500
            assert_error(client.get("/api/search", params={"image_url": f"{hostile}{path}"}), 400, "image_url_rejected")


def test_image_url_fetches_are_bounded_and_health_still_answers(coll_name: str, hostile: str, server: str) -> None:  # noqa: F811
    app = create_app(coll_name, allow_private_urls=True, image_url_timeout=8.0, max_url_fetches=2)
    with TestClient(app, raise_server_exceptions=False) as client:
        stalled: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: stalled.append(
                    client.get("/api/search", params={"image_url": f"{hostile}/stall"}).status_code
                )
            )
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for _ in range(100):
            if Hostile.requests.count("/stall") == 2:
                break
            time.sleep(0.05)
        r = client.get("/api/search", params={"image_url": f"{hostile}/stall"})
        assert_error(r, 503, "overloaded")
        assert r.headers["retry-after"] == "1" and Hostile.requests.count("/stall") == 2  # refused without fetching
        start = time.monotonic()
        assert (
            client.get("/healthz").status_code == 200
            and client.get("/api/search", params={"q": "map"}).status_code == 200
        )
        assert time.monotonic() - start < 5.0  # not behind the stalled fetches
        Hostile.stop.set()  # the stalled hosts hang up
        for t in threads:
            t.join(10)
        assert stalled == [422, 422]
        assert (
            client.get("/api/search", params={"image_url": f"{server}/page.jpg"}).status_code == 200
        )  # the slots came back


def test_shutdown_is_not_held_by_a_slow_image_url(coll_name: str, hostile: str) -> None:  # noqa: F811
    import httpx
    import uvicorn

    live = uvicorn.Server(
        uvicorn.Config(create_app(coll_name, allow_private_urls=True, image_url_timeout=1.5), log_level="warning")
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=live.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):
        if live.started:
            break
        time.sleep(0.05)
    answers: list[int] = []
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/search"
    asking = threading.Thread(
        target=lambda: answers.append(httpx.get(url, params={"image_url": f"{hostile}/drip"}, timeout=30).status_code)
    )
    asking.start()
    for _ in range(200):
        if "/drip" in Hostile.requests:
            break
        time.sleep(0.05)
    start = time.monotonic()
    live.should_exit = True  # what uvicorn's SIGTERM handler does
    thread.join(10)
    assert (
        not thread.is_alive() and time.monotonic() - start < 5.0
    )  # the 1.5 s fetch deadline, plus a little (the drip lasts 8 s)
    asking.join(5)
    assert answers == [422]  # the request in flight still got its answer
    sock.close()


def test_a_500_tells_the_client_the_connection_closes(coll_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(coll_name)
    with TestClient(app, raise_server_exceptions=False) as client:
        monkeypatch.setattr(app.state.service, "search", lambda *a, **k: 1 / 0)
        r = client.get("/api/search", params={"q": "map"})
        assert_error(r, 500, "internal")
        assert (
            r.headers["connection"] == "close"
        )  # uvicorn drops the connection after it: a keep-alive client must know


def test_the_openapi_schema_is_the_contract(coll_name: str) -> None:
    from vitrina.filters import MAX_FILTERS
    from vitrina.query import MAX_TERMS
    from vitrina.service.core import MAX_OFFSET

    app = create_app(coll_name, max_limit=50, max_text_chars=300)
    config, schema = app.state.service.config, app.openapi()
    paths = schema["paths"]
    get_params = {p["name"]: p["schema"] for p in paths["/api/search"]["get"]["parameters"]}
    form_ref = paths["/api/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit(
        "/", 1
    )[-1]
    form = schema["components"]["schemas"][form_ref]["properties"]
    for fields in (get_params, form):
        assert fields["limit"]["maximum"] == config.max_limit and fields["limit"]["minimum"] == 1
        assert fields["offset"]["maximum"] == MAX_OFFSET
        assert (
            fields["q"]["maxItems"] == fields["item"]["maxItems"] == MAX_TERMS
            and fields["where"]["maxItems"] == MAX_FILTERS
        )
        assert fields["q"]["items"]["maxLength"] == config.max_text_chars
        assert "upload" in fields  # the POST form takes an earlier upload too
    assert "409" in paths["/api/index"]["post"]["responses"] and "307" in paths["/api/thumbnails"]["get"]["responses"]
    assert "415" in paths["/api/search"]["post"]["responses"]
    from vitrina import Collection

    library = set(dir(Collection)) | set(vitrina.__all__)
    assert not [
        r.endpoint.__name__ for r in app.routes if getattr(r, "endpoint", None) and r.endpoint.__name__ in library
    ]
    with TestClient(app, raise_server_exceptions=False) as client:  # and the server enforces exactly that
        assert client.get("/api/search", params={"q": "map", "limit": config.max_limit}).status_code == 200
        assert_error(
            client.get("/api/search", params={"q": "map", "limit": config.max_limit + 1}), 422, "invalid_parameter"
        )
        assert_error(client.get("/api/search", params={"q": "m" * 301}), 400, "invalid_query")
        assert_error(
            client.post("/api/search", data={"q": "map", "limit": str(config.max_limit + 1)}), 422, "invalid_parameter"
        )


def test_route_modules_do_not_import_create_app() -> None:
    import ast

    import vitrina.service as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        if path.name in ("app.py", "__init__.py"):
            continue
        imported = {node.module for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)}
        assert "app" not in imported and "vitrina.service.app" not in imported, path.name


@pytest.fixture
def redirector() -> Iterator[str]:
    """A loopback server whose /N redirects to a hostile Location (data:, mailto:, a broken URL)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("Location", HOSTILE_LOCATIONS[int(self.path.strip("/"))])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


HOSTILE_LOCATIONS = [
    "data:image/png;base64,AAAA",
    "mailto:someone@example.org",
    "http://[::1",
    "http://exa mple.org/x.jpg",
    "http://\udcff.example/",
    "//",
]


def test_no_input_gives_a_500(coll_name: str, redirector: str) -> None:
    from vitrina import Item

    with open_collection(coll_name).writer() as coll:  # a value that looks like deeply nested JSON
        coll.add_items(
            [
                Item(
                    id="deep",
                    image="missing.jpg",
                    fingerprint="1",
                    source="extra",
                    metadata={"deep": "[" * 5000, "date": "[" * 5000},
                )
            ]
        )
    with TestClient(create_app(coll_name, allow_private_urls=True), raise_server_exceptions=False) as client:
        for where in ("deep=x", "deep>3", "date>=1700", "deep~[[["):
            r = client.get("/api/search", params={"q": "map", "where": where})
            assert r.status_code == 200, (where, r.text)
        for n in range(len(HOSTILE_LOCATIONS)):
            r = client.get("/api/search", params={"image_url": f"{redirector}/{n}"})
            assert 400 <= r.status_code < 500, (HOSTILE_LOCATIONS[n], r.text)
            assert_error(r, r.status_code, "image_url_rejected", "image_url_fetch_failed")


def test_a_bug_answers_500_in_the_envelope_and_closes_the_connection(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app.state.service, "search", broken)
    r = client.get("/api/search", params={"q": "map"})
    assert_error(r, 500, "internal")
    assert r.headers["connection"] == "close" and "a bug" not in r.text
    page = client.get("/", params={"q": "map"})
    assert page.status_code == 500 and page.headers["content-type"].startswith("text/html") and "a bug" not in page.text
    assert page.headers["connection"] == "close"


def test_terms_items_and_filters_are_capped_with_a_400_naming_the_limit(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded: list[str] = []
    inner = client.app.state.service.embedder.inner
    original = inner.embed_texts
    monkeypatch.setattr(inner, "embed_texts", lambda texts: embedded.extend(texts) or original(texts))
    for params in (
        [("q", f"map {n}") for n in range(33)],
        [("item", "manuscript-page.jpg")] * 33,
        [("q", "map")] * 20 + [("item", "manuscript-page.jpg")] * 13,
    ):
        r = client.get("/api/search", params=params)
        assert_error(r, 400, "too_many_terms")
        assert "at most 32" in r.json()["error"]["message"]
    r = client.get("/api/search", params=[("q", "map")] + [("where", f"date>={n}") for n in range(33)])
    assert_error(r, 400, "too_many_filters")
    assert "at most 32" in r.json()["error"]["message"]
    assert embedded == []  # refused before the model ran
    assert client.get("/api/search", params=[("q", "map")] * 32).status_code == 200
    assert client.post("/api/search", data={"q": [f"m{n}" for n in range(33)]}).status_code == 400


def test_ready_only_after_both_towers_ran(coll_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitrina.service.core import GatedEmbedder

    calls: list[str] = []
    app = create_app(coll_name)
    service = app.state.service
    original = service.collection().embedder_for

    def spy(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        inner = original(*args, **kwargs)
        for name in ("embed_texts", "embed_pixels"):
            method = getattr(inner, name)
            monkeypatch.setattr(inner, name, lambda x, _m=method, _n=name: calls.append(_n) or _m(x))
        return inner

    monkeypatch.setattr(service.collection(), "embedder_for", spy)
    assert not service.ready
    service.start()
    assert service.ready and sorted(set(calls)) == ["embed_pixels", "embed_texts"]
    assert isinstance(service.embedder, GatedEmbedder)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200


def test_api_docs_work_offline(client: TestClient) -> None:
    import re

    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith(("/", "data:")) for s in sources), sources  # nothing from a CDN
        assert "fonts.googleapis" not in page.text
        for s in sources:
            if s.startswith("/static/"):
                assert client.get(s).status_code == 200 and len(client.get(s).content) > 1000, s


def test_odd_item_ids_have_working_links_and_links_are_only_http(coll_name: str) -> None:
    from vitrina import Item

    scans = Path(open_collection(coll_name).items(["manuscript-page.jpg"])["manuscript-page.jpg"].image).parent
    odd = ["a/../b", "./dot", "..", "line\nbreak", "q?x=1&y#z", "100% sure+plus"]
    metadata = {
        "title": "odd",
        "url": "javascript:alert(1)",
        "link": "data:text/html,<b>x</b>",
        "catalogue": "https://library.example/rec/1",
        "manifest": " JAVASCRIPT:x",
    }
    with open_collection(coll_name).writer() as coll:
        coll.add_items(
            [
                Item(id=i, image=str(scans / "manuscript-page.jpg"), fingerprint="1", source="extra", metadata=metadata)
                for i in odd
            ]
        )
    open_collection(coll_name).index()
    with TestClient(create_app(coll_name), raise_server_exceptions=False) as client:
        hits = {h["id"]: h for h in client.get("/api/search", params={"q": "odd", "limit": 50}).json()["hits"]}
        for item_id in odd:
            record = client.get(hits[item_id]["item"])
            assert record.status_code == 200 and record.json()["id"] == item_id, item_id
            assert record.json()["links"] == {"catalogue": "https://library.example/rec/1"}  # no javascript:/data:
            assert client.get(hits[item_id]["thumbnail"]).headers["content-type"] == "image/jpeg"
        page = client.get("/", params={"q": "odd"}).text
        import html
        import re

        for href in re.findall(r'<a class="thumb" href="([^"]+)"', page):
            item_page = client.get(html.unescape(href))
            assert item_page.status_code == 200
            assert all(
                link.startswith(("/", "#", "https://"))
                for link in re.findall(r'<a [^>]*href="([^"]*)"', item_page.text)
            )


def test_http_details(client: TestClient, coll_name: str, scans: Path) -> None:
    r = client.post("/api/index", headers={"Authorization": "bearer s3cret"})  # the scheme is case-insensitive
    assert r.status_code in (202, 409), r.text
    assert_error(client.post("/api/search", json={"q": "map"}), 415, "unsupported_media_type")  # not silently ignored
    for path in ("/api/search?q=map", "/api/info", "/healthz", "/", "/docs"):
        head = client.head(path)
        assert head.status_code == 200 and head.content == b"", path
    assert_error(client.delete("/api/info"), 405, "method_not_allowed")
    assert "GET" in client.delete("/api/info").headers["allow"]
    with TestClient(
        create_app(coll_name, cors_origins=["https://library.example"], max_upload_bytes=100_000),
        raise_server_exceptions=False,
    ) as c:
        big = c.post(
            "/api/uploads",
            files={"image": ("p.jpg", b"x" * 300_000, "image/jpeg")},
            headers={"Origin": "https://library.example"},
        )
        assert_error(big, 413, "payload_too_large")
        assert big.headers["access-control-allow-origin"] == "https://library.example"  # a browser can read the 413
        assert "bytes" not in big.json()["error"]["message"]


def test_pages_answer_errors_as_pages(client: TestClient) -> None:
    missing = client.get("/item", params={"id": "no/such"})
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "<html" in missing.text and "no such item" in missing.text.lower()
    other = client.get("/no/such/page", headers={"Accept": "text/html"})
    assert other.status_code == 404 and "<html" in other.text
    assert client.get("/nope").headers["content-type"].startswith("application/json")  # API clients keep JSON
    bomb = io.BytesIO()
    Image.new("L", (8000, 8000)).save(bomb, "PNG")  # over the pixel limit
    key = client.post("/api/uploads", files={"image": ("b.png", bomb.getvalue(), "image/png")})
    for text in (key.json()["error"]["message"], client.get("/", params={"q": "map", "where": "date between"}).text):
        assert "--" not in text and "bytes" not in text
    page = client.get("/fragments/results", params={"upload": "expired"})
    assert page.status_code == 200 and "expire" in page.text and "{" not in page.text
    page = client.get("/", params={"image_url": "file:///etc/passwd"})
    assert page.status_code == 200 and "public hosts" in page.text


def test_search_stops_when_the_client_has_gone(coll_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    app = create_app(coll_name)
    app.state.service.start()
    inner = app.state.service.embedder.inner
    original, calls = inner.embed_texts, []

    def slow(texts):  # type: ignore[no-untyped-def]
        calls.append(texts)
        time.sleep(0.3)
        return original(texts)

    monkeypatch.setattr(inner, "embed_texts", slow)
    query = "&".join(f"q=map+{n}" for n in range(30)).encode()
    scope = {"type": "http", "method": "GET", "path": "/api/search", "raw_path": b"/api/search", "query_string": query, "headers": [],
             "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1), "root_path": "", "app": app}  # fmt: skip
    messages = iter([{"type": "http.request", "body": b"", "more_body": False}])
    started = time.monotonic()

    async def receive() -> dict:
        message = next(messages, None)
        if message is None and time.monotonic() - started > 0.5:  # the client leaves half a second in
            return {"type": "http.disconnect"}
        if message is None:
            await asyncio.sleep(3600)  # nothing yet (a poll cancels this wait)
        return message or {}

    async def send(message: dict) -> None:
        pass

    asyncio.run(app(scope, receive, send))
    assert len(calls) < 10, len(calls)
