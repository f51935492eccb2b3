"""``create_app``: wiring, limits, the error envelope, and the search both API and page use."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..collection import Collection, open_collection
from ..embedding import Embedder, embed_images
from ..errors import (
    CollectionNotFound,
    ImageError,
    ModalityError,
    NoEmbeddings,
    NoSuchSpace,
    QueryError,
    SpaceMismatch,
    VitrinaError,
)
from ..images import hold_decoded, load_image
from ..query import Filter, Hits, Query, Term, parse_term

log = logging.getLogger("vitrina.service")


@dataclass
class ServiceConfig:
    collection: str | Path
    token: str | None = None  # write endpoints are refused without it
    cors_origins: Sequence[str] = ()
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_pixels: int = 50_000_000
    max_limit: int = 200
    max_text_chars: int = 1000
    model_slots: int = 1  # queries embedding at once
    model_queue: int = 16  # queries waiting for the model before 503
    allow_private_urls: bool = False
    image_url_timeout: float = 10.0  # seconds for a whole image-URL fetch, redirects included
    max_url_fetches: int = 4  # image URLs fetched at once; each holds a worker thread, more get 503
    title: str = ""


class ServiceError(Exception):
    """An error with a stable code and HTTP status, rendered as the JSON error envelope."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Overloaded(ServiceError):
    def __init__(self) -> None:
        super().__init__(503, "overloaded", "The model is busy; try again in a moment.", {"Retry-After": "1"})


class ModelGate:
    """At most ``slots`` embeddings at once and ``queue`` waiting; more waiters are refused."""

    def __init__(self, slots: int, queue: int):
        self._slots = threading.Semaphore(max(1, slots))
        self._queue = queue
        self._waiting = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            if self._waiting >= self._queue:
                raise Overloaded()
            self._waiting += 1
        try:
            self._slots.acquire()
        finally:
            with self._lock:
                self._waiting -= 1

    def __exit__(self, *exc: object) -> None:
        self._slots.release()


class GatedEmbedder:
    """An embedder whose model calls pass through the gate (preprocessing does not)."""

    def __init__(self, inner: Embedder, gate: ModelGate):
        self.inner, self.gate = inner, gate
        self.fingerprint, self.min_side = inner.fingerprint, inner.min_side

    def preprocess(self, image: Any) -> np.ndarray:
        return self.inner.preprocess(image)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        with self.gate:
            return self.inner.embed_pixels(pixels)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        with self.gate:
            return self.inner.embed_texts(texts)


class Uploads:
    """Embeddings of uploaded images, by content hash, so a query with one can be shared as a URL
    while the server runs. The image bytes themselves are never kept or served back."""

    def __init__(self, size: int = 512):
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def put(self, key: str, vector: np.ndarray) -> None:
        with self._lock:
            self._items[key] = vector
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            return self._items.get(key)


@dataclass
class SearchParams:
    """Everything a search request can say (GET query string, form fields or JSON)."""

    q: list[str] = field(default_factory=list)  # text terms, "2:ship", "-0.5:colour"
    item: list[str] = field(default_factory=list)  # indexed item ids as image terms, "-1:id" for less like this
    image_url: str | None = None
    upload: str | None = None  # key from POST /api/uploads
    alpha: float | None = None
    where: list[str] = field(default_factory=list)
    min_score: float | None = None
    limit: int = 24
    offset: int = 0
    space: str | None = None


class Service:
    """State shared by the routes: config, the collection (one handle per thread), the model."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.gate = ModelGate(config.model_slots, config.model_queue)
        self.url_slots = threading.BoundedSemaphore(max(1, config.max_url_fetches))
        self.uploads = Uploads()
        self._local = threading.local()
        self.ready = False
        self.index_state: dict[str, Any] = {"running": False}
        self.embedder: GatedEmbedder | None = None
        first = open_collection(config.collection)  # fails early if it does not exist
        self.path = first.path
        self.name = first.name
        self._local.collection = first

    def start(self) -> None:
        """Load the model once (it may take a while); /readyz answers 200 afterwards."""
        if self.ready:
            return
        coll = self.collection()
        space = coll.spaces()[0] if coll.spaces() else None
        if space is not None:
            inner = coll.embedder_for(space)
            self.embedder = inner if isinstance(inner, GatedEmbedder) else GatedEmbedder(inner, self.gate)
            coll.use_embedder(self.embedder)
        self.ready = True

    def collection(self) -> Collection:
        coll = getattr(self._local, "collection", None)
        if coll is None:
            coll = self._local.collection = Collection(self.path, embedder=self.embedder)
        return coll

    # -- searching ----------------------------------------------------------------------------

    def search(self, p: SearchParams, upload_bytes: bytes | None = None) -> Hits:
        c = self.config
        if not 1 <= p.limit <= c.max_limit:
            raise ServiceError(422, "invalid_parameter", f"limit must be between 1 and {c.max_limit}.")
        if not 0 <= p.offset <= 10_000:
            raise ServiceError(422, "invalid_parameter", "offset must be between 0 and 10000.")
        terms: list[Term] = []
        for text in p.q:
            if not text.strip():
                continue
            if len(text) > c.max_text_chars or "\x00" in text:
                raise ServiceError(400, "invalid_query", f"A text term is longer than {c.max_text_chars} characters or has a NUL byte.")
            terms.append(parse_term(text, "text"))
        terms += [parse_term(i, "image") for i in p.item if i.strip()]
        coll = self.collection()
        space = coll.space(p.space)
        if p.image_url:
            terms.append(Term("image_url", 1.0, "vector", self._url_vector(p.image_url, space.name)))
        if upload_bytes is not None:
            p.upload = self.add_upload(upload_bytes, space.name)
        if p.upload:
            vector = self.uploads.get(f"{space.name}:{p.upload}")
            if vector is None:
                raise ServiceError(404, "upload_expired", "That uploaded image is no longer on the server; upload it again.")
            terms.append(Term("upload", 1.0, "vector", vector))
        if not terms:
            raise ServiceError(400, "invalid_query", "An empty query: give text (q), an image (upload, image_url) or an item.")
        for term in terms:
            if term.kind == "image" and not coll.index_for(space.name).vectors([term.value]):
                raise ServiceError(404, "item_not_found", f"No item {term.value!r} in this collection.")
        filters = tuple(Filter.parse(w) for w in p.where if w.strip())
        query = Query(terms=tuple(terms), alpha=p.alpha, filters=filters, min_score=p.min_score, limit=p.limit, offset=p.offset)
        return coll.run([query], space=space.name)[0]

    def add_upload(self, data: bytes, space: str) -> str:
        if len(data) > self.config.max_upload_bytes:
            raise ServiceError(413, "payload_too_large", f"The upload is over {self.config.max_upload_bytes} bytes.")
        key = hashlib.sha256(data).hexdigest()[:24]
        if self.uploads.get(f"{space}:{key}") is None:
            self.uploads.put(f"{space}:{key}", self._image_vector(data, space, self.config.max_upload_pixels))
        return key

    def _url_vector(self, url: str, space: str) -> np.ndarray:
        from ..http import fetch_bytes

        # Refused at once when full: slow hosts must not take every worker thread (and /healthz).
        if not self.url_slots.acquire(blocking=False):
            raise ServiceError(503, "overloaded", "Too many image URLs are being fetched; try again in a moment.", {"Retry-After": "1"})
        try:
            data = fetch_bytes(url, max_bytes=self.config.max_upload_bytes, timeout=self.config.image_url_timeout, allow_private=self.config.allow_private_urls)
        finally:
            self.url_slots.release()
        return self._image_vector(data, space, self.config.max_upload_pixels)

    def _image_vector(self, data: bytes, space: str, max_pixels: int) -> np.ndarray:
        coll = self.collection()
        embedder = coll.embedder_for(space)
        with hold_decoded():  # the decoded image counts against the process's decode budget until embedded
            image = load_image(data, min_side=embedder.min_side, max_pixels=max_pixels)
            return embed_images(embedder, [image])[0]

    def check_token(self, request: Request) -> None:
        expected = self.config.token
        if not expected:
            raise ServiceError(403, "writes_disabled", "This server is read-only; start it with --token to allow writes.")
        given = request.headers.get("x-vitrina-token") or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not given:
            raise ServiceError(401, "unauthorized", "This endpoint needs the server's token (header X-Vitrina-Token or Authorization: Bearer).")
        if not secrets.compare_digest(given.encode(), expected.encode()):
            raise ServiceError(403, "forbidden", "Wrong token.")


_IMAGE_ERRORS = {
    "url_rejected": (400, "image_url_rejected"),
    "fetch_failed": (422, "image_url_fetch_failed"),
    "too_large": (413, "payload_too_large"),
    "over_budget": (413, "payload_too_large"),
}


def error_response(request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex[:16]
    if status == 500:  # Starlette re-raises after the handler and uvicorn then drops the connection: say so
        headers = {**(headers or {}), "Connection": "close"}
    return JSONResponse({"error": {"code": code, "message": message, "request_id": request_id}}, status_code=status, headers={**(headers or {}), "X-Request-ID": request_id})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(VitrinaError)
    async def vitrina_error(request: Request, exc: VitrinaError) -> JSONResponse:
        if isinstance(exc, ImageError):
            status, code = _IMAGE_ERRORS.get(exc.reason, (415, "unsupported_media_type"))
            message = str(exc) if exc.reason != "url_rejected" else "Image URL rejected: only http(s) URLs of public hosts can be fetched."
            if exc.reason not in _IMAGE_ERRORS:
                message = f"The image could not be used ({exc.reason}): send a JPEG, PNG, GIF, WebP, TIFF or BMP file."
            return error_response(request, status, code, message)
        if isinstance(exc, (QueryError, ModalityError)):
            return error_response(request, 400, "invalid_query", str(exc))
        if isinstance(exc, (SpaceMismatch, NoSuchSpace)):
            return error_response(request, 400, "invalid_space", str(exc))
        if isinstance(exc, (CollectionNotFound, NoEmbeddings)):
            return error_response(request, 503, "index_unavailable", "The collection has no embeddings yet.", {"Retry-After": "30"})
        log.exception("vitrina error")
        return error_response(request, 500, "internal", "Something went wrong on the server.")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in exc.errors()[:5])
        return error_response(request, 422, "invalid_parameter", problems or "Invalid request.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}
        return error_response(request, exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(request, 500, "internal", "Something went wrong on the server.")


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes (413) after reading at most limit + 1,
    whether or not Content-Length is honest, and with chunked bodies too."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
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


async def _send_413(send: Callable[[dict], Awaitable[None]], limit: int) -> None:
    import json

    request_id = uuid.uuid4().hex[:16]
    body = json.dumps({"error": {"code": "payload_too_large", "message": f"The request body is over {limit} bytes.", "request_id": request_id}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close"), (b"x-request-id", request_id.encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(collection: str | Path | ServiceConfig, **options: Any) -> FastAPI:
    """The JSON API and web page for one collection. ``options`` are ``ServiceConfig`` fields."""
    from contextlib import asynccontextmanager

    from starlette.concurrency import run_in_threadpool

    config = collection if isinstance(collection, ServiceConfig) else ServiceConfig(collection=collection, **options)
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        await run_in_threadpool(service.start)
        yield

    app = FastAPI(
        title=config.title or f"vitrina: {service.name}",
        version=__version__,
        description="Search a digitised image collection by text, by image, or both. Errors are `{\"error\": {\"code\", \"message\", \"request_id\"}}`.",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.middleware("http")
    async def request_id(request: Request, call_next):  # type: ignore[no-untyped-def]
        request.state.request_id = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex[:16]
        response = await call_next(request)
        response.headers.setdefault("X-Request-ID", request.state.request_id)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    _install_error_handlers(app)
    from fastapi.staticfiles import StaticFiles

    from . import api, web

    app.include_router(api.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_credentials=False, allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(BodyLimit, limit=config.max_upload_bytes + 64 * 1024)  # room for multipart framing
    return app
