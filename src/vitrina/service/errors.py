"""One error envelope, ``{"error": {"code", "message", "request_id"}}``, for every failure, and
the mapping of every library error to its 4xx/503 with a text meant for a person using the page
or the API (never CLI advice or raw byte counts). Only a bug answers 500, with
``Connection: close`` so that a client does not reuse a connection in an unknown state."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    Blocked,
    CollectionNotFound,
    ImageError,
    ModalityError,
    ModelError,
    NoEmbeddings,
    NoSuchSpace,
    QueryError,
    SourceError,
    SpaceMismatch,
    StoreError,
    VitrinaError,
    WorkCancelled,
    WorkTimeout,
)

log = logging.getLogger("vitrina.service")


class ServiceError(Exception):
    """An error with a stable code and HTTP status, rendered as the JSON error envelope."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Overloaded(ServiceError):
    def __init__(self, message: str = "The server is busy; try again in a moment.") -> None:
        super().__init__(503, "overloaded", message, {"Retry-After": "1"})


class ClientGone(ServiceError):
    """The client closed the connection: the rest of its query is not computed."""

    def __init__(self) -> None:
        super().__init__(499, "client_closed_request", "The client closed the connection.")


UNREADABLE = "The image could not be read: send a JPEG, PNG, GIF, WebP, TIFF or BMP file."
FETCH_FAILED = "The image URL could not be downloaded (no answer in time, an error, or not an image); try another URL."


def _image_error(reason: str, max_bytes: int, max_pixels: int) -> ServiceError:
    if reason == "url_rejected":
        return ServiceError(
            400,
            "image_url_rejected",
            "Image URL rejected: only http(s) URLs of public hosts can be fetched (the server's administrator can "
            "allow private and loopback addresses with `vitrina serve --allow-private-urls` or VITRINA_ALLOW_PRIVATE_URLS=1).",
        )
    if reason in ("too_large", "over_budget"):  # bytes, pixels, or the memory decoding would take
        return ServiceError(
            413,
            "payload_too_large",
            f"The image is too large: at most {max_bytes / 2**20:.0f} MB and {max_pixels / 1e6:.0f} megapixels.",
        )
    if reason in ("busy", "too_many_fetches", "overloaded"):  # a bound on concurrent URL fetches
        return ServiceError(
            503, "overloaded", "Too many image URLs are being fetched; try again in a moment.", {"Retry-After": "1"}
        )
    if reason in ("fetch_failed", "not_found", "forbidden", "bad_json"):
        return ServiceError(422, "image_url_fetch_failed", FETCH_FAILED)
    return ServiceError(415, "unsupported_media_type", UNREADABLE)


def classify(exc: BaseException, request: Request | None = None) -> ServiceError | None:
    """The 4xx/503 for an error, or None for a bug (500)."""
    import httpx

    if isinstance(exc, ServiceError):
        return exc
    config = getattr(getattr(getattr(request, "app", None), "state", None), "service", None)
    max_bytes, max_pixels = (
        (config.config.max_upload_bytes, config.config.max_upload_pixels) if config else (10 * 2**20, 50_000_000)
    )
    if isinstance(exc, ImageError):
        return _image_error(exc.reason, max_bytes, max_pixels)
    if isinstance(exc, (httpx.InvalidURL, httpx.HTTPError, UnicodeError)):  # e.g. a redirect to data: or mailto:
        return ServiceError(422, "image_url_fetch_failed", FETCH_FAILED)
    if isinstance(exc, WorkCancelled):
        return ClientGone()
    if isinstance(exc, WorkTimeout):
        return ServiceError(503, "query_timeout", str(exc), {"Retry-After": "1"})
    if isinstance(exc, (QueryError, ModalityError, SourceError)):
        return ServiceError(400, "invalid_query", str(exc))
    if isinstance(exc, NoSuchSpace):
        return ServiceError(
            400, "invalid_space", "No embedding space of that name in this collection; see /api/info for its spaces."
        )
    if isinstance(exc, SpaceMismatch):
        return ServiceError(
            400, "invalid_space", "That space was built with another model than the one this server runs."
        )
    if isinstance(exc, (CollectionNotFound, NoEmbeddings)):
        return ServiceError(503, "index_unavailable", "The collection has no embeddings yet.", {"Retry-After": "30"})
    if isinstance(exc, (StoreError, ModelError, Blocked)):
        return ServiceError(
            503,
            "unavailable",
            "The collection or the model is not available right now; try again later.",
            {"Retry-After": "30"},
        )
    if isinstance(exc, VitrinaError):
        return ServiceError(400, "invalid_query", str(exc))
    return None


def request_id_of(request: Request) -> str:
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex[:16]


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    from .present import wants_page

    request_id = request_id_of(request)
    headers = {**(headers or {}), "X-Request-ID": request_id}
    if status >= 500 and status != 503:
        headers["Connection"] = "close"
    if wants_page(request):
        from .present import error_page

        return error_page(request, status, message, headers)
    return JSONResponse(
        {"error": {"code": code, "message": message, "request_id": request_id}}, status_code=status, headers=headers
    )


def allowed_methods(request: Request) -> str:
    """The methods the routes at the request's path answer, HEAD wherever GET is (middleware's
    HeadAsGet), as the CORS preflight allows them: "GET, HEAD, POST" for /api/search."""
    from starlette.routing import Match

    methods: set[str] = set()

    def visit(routes: Any) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)  # FastAPI's included routers (no prefixes here)
            if inner is not None:
                visit(inner.routes)
            elif getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
                methods.update(route.methods)  # PARTIAL: the path matches, the method does not

    visit(request.app.router.routes)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    async def known(request: Request, exc: Exception) -> Response:
        err = classify(exc, request)
        if err is None:
            log.exception("unexpected error", exc_info=exc)
            return error_response(request, 500, "internal", "Something went wrong on the server.")
        return error_response(request, err.status, err.code, err.message, err.headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in exc.errors()[:5]
        )
        return error_response(request, 422, "invalid_parameter", problems or "Invalid request.")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            400: "bad_request",
            415: "unsupported_media_type",
        }
        message = {404: "Nothing here.", 405: "That method is not allowed here."}.get(exc.status_code, str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only the first route's (GET and POST /api/search)
            headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
        return error_response(request, exc.status_code, codes.get(exc.status_code, "http_error"), message, headers)

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    import httpx

    for kind in (ServiceError, VitrinaError, httpx.InvalidURL, httpx.HTTPError, UnicodeError):
        app.add_exception_handler(kind, known)
    app.add_exception_handler(Exception, known)  # bugs: handled in the outermost middleware
