"""Plain ASGI middleware (not BaseHTTPMiddleware, which hides a client's disconnect from the
routes): common headers, HEAD answered like GET, a body limit."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class CommonHeaders:
    """A request id (the client's X-Request-ID or a new one) on every response, and the
    security headers that fit its content (see ``present.security_headers``)."""

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.datastructures import Headers, MutableHeaders

        from .present import security_headers

        request_id = Headers(scope=scope).get("x-request-id", "")[:64] or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Request-ID", request_id)
                for key, value in security_headers(scope["path"], headers.get("content-type", "")).items():
                    headers.setdefault(key, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeadAsGet:
    """HEAD on a GET route answers as GET would, without the body (HTTP requires HEAD wherever
    GET is allowed; FastAPI routes list GET only)."""

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: dict) -> None:
            await send({**message, "body": b""} if message["type"] == "http.response.body" else message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes (413) after reading at most limit + 1,
    whether or not Content-Length is honest, and with chunked bodies too."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _send_413(send, self.limit)
            return
        seen = 0
        refused = False

        async def limited_receive() -> dict:
            # Past the limit: answer 413 ourselves and tell the app the client left, so whatever
            # it does next (FastAPI turns a broken body into a 400) never reaches the client.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    await _send_413(send, self.limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise


async def _send_413(send: Send, limit: int) -> None:
    request_id = uuid.uuid4().hex[:16]
    message = f"The request body is over {limit / 2**20:.0f} MB."
    body = json.dumps({"error": {"code": "payload_too_large", "message": message, "request_id": request_id}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-request-id", request_id.encode()),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
