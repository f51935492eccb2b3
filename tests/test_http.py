"""Image URLs: fetched over real HTTP on loopback, and refused when they point at private addresses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vitrina import ImageError, open_collection
from vitrina.http import fetch_bytes

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
