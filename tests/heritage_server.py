"""A real HTTP server on loopback that plays a IIIF image server, manifests, a loc.gov-shaped
JSON API (written from the documented response format) and misbehaving hosts."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image


def picture(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


class HeritageServer:
    """Images: name -> (PIL image, info.json extras). Everything it was asked is in ``log``."""

    def __init__(self) -> None:
        self.images: dict[str, tuple[Image.Image, dict[str, Any]]] = {}
        self.docs: dict[str, Any] = {}  # path -> JSON document
        self.faults: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}  # path -> responses to give first
        self.log: list[tuple[float, str]] = []
        self.slow: set[str] = set()
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HeritageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_image(self, name: str, image: Image.Image, level: int = 2, version: int = 2, **extras: Any) -> str:
        self.images[name] = (image, {"level": level, "version": version, **extras})
        return f"{self.url}/iiif/{name}"

    def requests(self, pattern: str = "") -> list[str]:
        return [p for _, p in self.log if pattern in p]

    def _info(self, name: str) -> dict[str, Any]:
        image, o = self.images[name]
        base = f"{self.url}/iiif/{name}"
        if o["version"] == 3:
            info = {"@context": "http://iiif.io/api/image/3/context.json", "id": base, "type": "ImageService3", "protocol": "http://iiif.io/api/image",
                    "profile": f"level{o['level']}", "width": image.width, "height": image.height}  # fmt: skip
            info.update({k: o[k] for k in ("maxWidth", "maxArea", "sizes") if k in o})
        else:
            profile: list[Any] = [f"http://iiif.io/api/image/2/level{o['level']}.json"]
            limits = {k: o[k] for k in ("maxWidth", "maxArea") if k in o}
            if limits:
                profile.append(limits)
            info = {"@context": "http://iiif.io/api/image/2/context.json", "@id": base, "protocol": "http://iiif.io/api/image", "profile": profile,
                    "width": image.width, "height": image.height}  # fmt: skip
            if "sizes" in o:
                info["sizes"] = o["sizes"]
        return info

    def _render(self, name: str, region: str, size: str) -> bytes:
        image, o = self.images[name]
        if region != "full":
            x, y, w, h = (int(v) for v in region.split(","))
            image = image.crop((x, y, x + w, y + h))
        if size not in ("full", "max"):
            m = re.fullmatch(r"(!?)(\d*),(\d*)", size)
            assert m, size
            bang, w, h = m.group(1), m.group(2), m.group(3)
            if bang:
                image = image.copy()
                image.thumbnail((int(w), int(h)))
            elif w and h:
                image = image.resize((int(w), int(h)))
            elif w:
                image = image.resize((int(w), max(1, round(image.height * int(w) / image.width))))
            else:
                image = image.resize((max(1, round(image.width * int(h) / image.height)), int(h)))
        if "maxWidth" in o and image.width > o["maxWidth"]:
            raise ValueError("over maxWidth")
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "JPEG", quality=90)
        return buf.getvalue()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def send(
                self,
                status: int,
                body: bytes,
                content_type: str = "application/json",
                headers: dict[str, str] | None = None,
                length: int | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802
                server.log.append((time.monotonic(), self.path))
                parts = urlsplit(self.path)
                path = parts.path
                if path in server.slow:
                    time.sleep(3)
                queued = server.faults.get(path)
                if queued:
                    status, headers, body = queued.pop(0)
                    if status == -1:  # a truncated body: promise more than we send
                        self.send(200, body, "image/jpeg", length=len(body) * 2)
                        self.close_connection = True
                        return
                    self.send(status, body, headers.pop("Content-Type", "text/html"), headers)
                    return
                m = re.fullmatch(r"/iiif/([^/]+)/info.json", path)
                if m and m.group(1) in server.images:
                    self.send(200, json.dumps(server._info(m.group(1))).encode())
                    return
                m = re.fullmatch(r"/iiif/([^/]+)/([^/]+)/([^/]+)/0/default.jpg", path)
                if m and m.group(1) in server.images:
                    try:
                        self.send(200, server._render(m.group(1), m.group(2), m.group(3)), "image/jpeg")
                    except ValueError as e:
                        self.send(400, str(e).encode(), "text/plain")
                    return
                if path in server.docs:
                    doc = server.docs[path]
                    if callable(doc):
                        doc = doc(parse_qs(parts.query))
                    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                    self.send(200, body)
                    return
                self.send(404, b"<html>not found</html>", "text/html")

        return Handler
