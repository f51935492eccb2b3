"""Image URLs: fetched over real HTTP on loopback, refused when they point at private addresses, and
cut off when a host drips, stalls or redirects to what is not http(s)."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vitrina import ImageError, http, open_collection
from vitrina.http import Fetcher, fetch_bytes

IMAGE = (Path(__file__).parent / "data" / "images" / "manuscript-page.jpg").read_bytes()


class Handler(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        Handler.requests.append(self.path)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/page.jpg")
            self.end_headers()
            return
        if self.path != "/page.jpg":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()
        self.wfile.write(IMAGE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class Hostile(BaseHTTPRequestHandler):
    """Hosts that hold a client: a body or headers a byte per 0.2 s, a stall; and redirects away from http(s)."""

    protocol_version = "HTTP/1.1"
    requests: list[str] = []
    stop = threading.Event()  # set at teardown: every drip and stall ends
    REDIRECTS = {"/to-data": "data:image/png;base64,AAAA", "/to-mailto": "mailto:curator@example.org", "/to-file": "file:///etc/passwd",
                 "/to-javascript": "javascript:alert(1)", "/to-bad": "http://[::1"}  # fmt: skip
    BODY = (
        b"\xff" * 40
    )  # 8 s of dripping: long enough to outlast every deadline below, short enough not to hang a failing test

    def do_GET(self) -> None:  # noqa: N802
        Hostile.requests.append(self.path)
        try:
            if self.path in self.REDIRECTS:
                self.send_response(302)
                self.send_header("Location", self.REDIRECTS[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/drip-headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                self.drip(b"X-Padding: " + self.BODY + b"\r\nContent-Length: 0\r\n\r\n")
            elif self.path in ("/drip", "/stall"):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(self.BODY)))
                self.end_headers()
                self.drip(self.BODY) if self.path == "/drip" else self.stop.wait(8)
                self.close_connection = True
            else:
                self.send_error(404)
        except OSError:
            self.close_connection = True  # the client gave up, as it should

    def drip(self, data: bytes) -> None:
        for i in range(len(data)):
            if self.stop.wait(0.2):
                return
            self.wfile.write(data[i : i + 1])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[str]:
    Hostile.requests = []
    Hostile.stop.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    Hostile.stop.set()
    httpd.shutdown()
    httpd.server_close()


def test_private_and_odd_urls_are_refused_without_a_connection(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    vectors = [f"{server}/page.jpg", f"http://127.1:{port}/page.jpg", f"http://2130706433:{port}/page.jpg", f"http://0x7f000001:{port}/page.jpg",
               f"http://localhost:{port}/page.jpg", f"http://[::1]:{port}/page.jpg", f"http://[::ffff:127.0.0.1]:{port}/page.jpg",
               f"http://user@127.0.0.1:{port}/page.jpg", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/x.jpg", "http://100.64.0.1/x.jpg",
               "file:///etc/passwd", "ftp://127.0.0.1/x.jpg", "data:image/png;base64,AAAA"]  # fmt: skip
    for url in vectors:
        with pytest.raises(ImageError) as info:
            fetch_bytes(url)
        assert info.value.reason == "url_rejected", url
        assert "public hosts" in str(info.value)  # one message for every reason: no reachability oracle
    assert Handler.requests == []  # the loopback canary was never reached


def test_allowed_fetches_follow_redirects_and_cap_the_size(server: str) -> None:
    assert fetch_bytes(f"{server}/redirect", allow_private=True) == IMAGE
    with pytest.raises(ImageError) as info:
        fetch_bytes(f"{server}/page.jpg", allow_private=True, max_bytes=1000)
    assert info.value.reason == "too_large"
    with pytest.raises(ImageError, match="404"):
        fetch_bytes(f"{server}/missing.jpg", allow_private=True)


def test_search_by_image_url(server: str, scans: Path, tiny_clip: str, monkeypatch: pytest.MonkeyPatch) -> None:
    coll = open_collection("urls", create=True)
    coll.index(str(scans), model=tiny_clip)
    monkeypatch.setenv("VITRINA_ALLOW_PRIVATE_URLS", "1")  # a trusted local deployment
    hits = coll.search(image=f"{server}/page.jpg", limit=1)
    assert hits[0].id == "manuscript-page.jpg" and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_a_drip_or_a_stall_is_cut_at_the_deadline(hostile: str) -> None:
    for path in ("/drip", "/drip-headers", "/stall"):
        start = time.monotonic()
        with pytest.raises(ImageError) as info:
            fetch_bytes(
                f"{hostile}{path}", allow_private=True, timeout=1.0
            )  # a per-read timeout alone never fires on a drip
        took = time.monotonic() - start
        assert info.value.reason == "fetch_failed" and 0.9 < took < 3.5, (path, took)  # the drip would take 8 s
        assert f"{hostile}{path}" in str(info.value) and "1 s deadline" in str(info.value)
    # The ingest client: a stalled read ends at the deadline, not at the longer read timeout, and is not retried.
    fetcher = Fetcher(allow_private=True, requests_per_second=0, timeout=30.0, deadline=1.0, retries=3, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(ImageError, match="1 s deadline") as info:
        fetcher.get_bytes(f"{hostile}/stall")
    assert info.value.reason == "fetch_failed" and time.monotonic() - start < 3.5
    assert Hostile.requests.count("/stall") == 2  # one from fetch_bytes above, one here


def test_redirects_away_from_http_are_refused_like_any_other_url(hostile: str) -> None:
    for path in Hostile.REDIRECTS:
        for get in (
            lambda url: fetch_bytes(url, allow_private=True),
            Fetcher(allow_private=True, requests_per_second=0, retries=2).get_bytes,
        ):
            with pytest.raises(ImageError) as info:
                get(f"{hostile}{path}")
            assert info.value.reason == "url_rejected", path
    assert len(Hostile.requests) == 2 * len(Hostile.REDIRECTS)  # refusals are not retried


def test_refused_urls_cost_no_client_and_fetches_share_one(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    contexts: list[ssl.SSLContext] = []  # a client's costly part (60-125 ms of CPU each)

    def counted(*args: object, **kwargs: object) -> ssl.SSLContext:
        contexts.append(make_context(*args, **kwargs))
        return contexts[-1]

    make_context = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", counted)
    monkeypatch.setattr(http, "_transport", None, raising=False)  # as in a fresh process
    for url in ("file:///x", "mailto:a@b.c", "http://10.0.0.5/x.jpg", f"{server}/page.jpg"):
        with pytest.raises(ImageError, match="public hosts"):
            fetch_bytes(url)
    assert contexts == []  # the URL is checked before any client exists
    assert fetch_bytes(f"{server}/page.jpg", allow_private=True) == IMAGE
    assert fetch_bytes(f"{server}/redirect", allow_private=True) == IMAGE
    assert Fetcher(allow_private=True, requests_per_second=0).get_bytes(f"{server}/page.jpg") == IMAGE
    assert len(contexts) == 1
    http._transport.close()  # type: ignore[union-attr]


def test_every_fetcher_paces_loc_gov_and_a_mirror_is_treated_alike() -> None:
    from vitrina.http import Fetcher

    with Fetcher(requests_per_second=0, host_rates={"example.org": 4.0}) as f:  # a resumed run: no loc.gov source read
        assert f.interval("tile.loc.gov") == 2.0 and f.interval("www.loc.gov") == 1.0 and f.interval("loc.gov") == 1.0
        assert f.interval("example.org") == 0.25 and f.interval("127.0.0.1") == 0.0
        f.like_loc_gov("127.0.0.1")
        assert f.interval("127.0.0.1") == 1.0 and "127.0.0.1" in f.stop_on_429
