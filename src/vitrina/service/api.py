"""JSON routes. Every error is the envelope {"error": {"code", "message", "request_id"}}.

The routes are built for one ``ServiceConfig`` (hence no ``from __future__ import annotations``:
FastAPI must see the limits in the annotations) so that the OpenAPI schema states the limits the
server enforces (``limit`` ≤ max_limit, at most MAX_TERMS terms and MAX_FILTERS filters ...)."""

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..filters import MAX_FILTERS
from ..query import MAX_TERMS
from .core import MAX_OFFSET, SearchParams, Service, ServiceConfig, client_gone
from .errors import ServiceError
from .present import ErrorOut, ItemOut, SearchOut, UploadOut, errors, hits_out, item_out

MAX_ID = 2000
T = TypeVar("T")


def service_of(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


def _finite(value: float | None, name: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ServiceError(422, "invalid_parameter", f"{name} must be a finite number.")
    return value


async def _watched(request: Request, work: Callable[[], T]) -> T:
    """Run ``work`` in a worker thread; if the client disconnects meanwhile, the model gate
    refuses the query's next model call (ClientGone), so an abandoned query stops early."""
    gone = threading.Event()
    client_gone.set(gone)  # the worker thread runs in a copy of this context
    task = asyncio.ensure_future(run_in_threadpool(work))
    while not task.done():
        await asyncio.wait({task}, timeout=0.2)
        if not task.done() and await request.is_disconnected():
            gone.set()
    return task.result()


def _form_only(request: Request) -> None:
    """POST bodies are form fields; a JSON body would otherwise be silently ignored."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("", "multipart/form-data", "application/x-www-form-urlencoded"):
        raise ServiceError(
            415,
            "unsupported_media_type",
            "Send the fields as multipart/form-data (or a GET query string), not as JSON.",
        )


def build_router(config: ServiceConfig) -> APIRouter:
    router = APIRouter()
    search_errors = errors(400, 404, 413, 415, 422, 503)
    # Per-list caps go in the schema; the service enforces them (with a 400 that names the limit).
    terms = {"maxItems": MAX_TERMS, "items": {"type": "string", "maxLength": config.max_text_chars}}
    items = {"maxItems": MAX_TERMS, "items": {"type": "string", "maxLength": MAX_ID}}
    filters = {"maxItems": MAX_FILTERS}
    Q = f"Text terms; '2:ship' weights a term, '-0.5:colour' pushes it down. At most {MAX_TERMS} terms in all (q, item, image)."  # noqa: N806
    I = "Ids of indexed items as image terms; '-1:ID' = less like this"  # noqa: E741, N806
    K = "Words ranked by BM25 over title, caption, subjects, notes and context text; alone, or fused with the other terms"  # noqa: N806
    TW = "The keyword side's share in the fusion (default 0.4 with keywords; without them, the q terms are reused as keywords)"  # noqa: N806
    W = f"Filters like 'date>=1700', 'place=Boston', 'title~harbour'; at most {MAX_FILTERS}"  # noqa: N806

    @router.get("/api/search", response_model=SearchOut, responses=search_errors, tags=["search"])
    async def search_route(
        request: Request,
        q: Annotated[list[str], Query(description=Q, json_schema_extra=terms)] = [],  # noqa: B006
        item: Annotated[list[str], Query(description=I, json_schema_extra=items)] = [],  # noqa: B006
        image_url: Annotated[
            str | None, Query(max_length=2000, description="An http(s) image URL on a public host")
        ] = None,
        upload: Annotated[str | None, Query(max_length=64, description="Token returned by POST /api/uploads")] = None,
        alpha: Annotated[float | None, Query(ge=0, le=1, description="0 = text only, 1 = image only")] = None,
        where: Annotated[list[str], Query(description=W, json_schema_extra=filters)] = [],  # noqa: B006
        min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
        limit: Annotated[int, Query(ge=1, le=config.max_limit)] = 24,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        space: Annotated[str | None, Query(max_length=100)] = None,
        keywords: Annotated[str, Query(max_length=config.max_text_chars, description=K)] = "",
        text_weight: Annotated[float | None, Query(ge=0, le=1, description=TW)] = None,
        fusion: Annotated[
            Literal["weighted", "rrf"], Query(description="How CLIP and keyword rankings are fused")
        ] = "weighted",
    ) -> SearchOut:
        """Search by text, by an indexed item, by an image URL or a previous upload — or several at once."""
        service = service_of(request)
        params = SearchParams(q=q, item=item, image_url=image_url, upload=upload, alpha=_finite(alpha, "alpha"), where=where,
                              min_score=_finite(min_score, "min_score"), limit=limit, offset=offset, space=space,
                              keywords=keywords, text_weight=_finite(text_weight, "text_weight"), fusion=fusion)  # fmt: skip
        return await _watched(request, lambda: hits_out(service.name, service.search(params), params))

    @router.post("/api/search", response_model=SearchOut, responses=search_errors, tags=["search"])
    async def search_with_upload_route(
        request: Request,
        image: Annotated[UploadFile | None, File(description="A query image (JPEG, PNG, GIF, WebP, TIFF, BMP)")] = None,
        q: Annotated[list[str], Form(description=Q, json_schema_extra=terms)] = [],  # noqa: B006
        item: Annotated[list[str], Form(description=I, json_schema_extra=items)] = [],  # noqa: B006
        image_url: Annotated[str | None, Form(max_length=2000)] = None,
        upload: Annotated[str | None, Form(max_length=64, description="Token returned by POST /api/uploads")] = None,
        alpha: Annotated[float | None, Form(ge=0, le=1)] = None,
        where: Annotated[list[str], Form(description=W, json_schema_extra=filters)] = [],  # noqa: B006
        min_score: Annotated[float | None, Form(ge=-1, le=1)] = None,
        limit: Annotated[int, Form(ge=1, le=config.max_limit)] = 24,
        offset: Annotated[int, Form(ge=0, le=MAX_OFFSET)] = 0,
        space: Annotated[str | None, Form(max_length=100)] = None,
        keywords: Annotated[str, Form(max_length=config.max_text_chars, description=K)] = "",
        text_weight: Annotated[float | None, Form(ge=0, le=1, description=TW)] = None,
        fusion: Annotated[Literal["weighted", "rrf"], Form()] = "weighted",
    ) -> SearchOut:
        """The same search with an uploaded image in the request (multipart/form-data)."""
        _form_only(request)
        service = service_of(request)
        params = SearchParams(q=q, item=item, image_url=image_url, upload=upload, alpha=_finite(alpha, "alpha"), where=where,
                              min_score=_finite(min_score, "min_score"), limit=limit, offset=offset, space=space,
                              keywords=keywords, text_weight=_finite(text_weight, "text_weight"), fusion=fusion)  # fmt: skip

        def work() -> SearchOut:
            data = _read_upload(service, image) if image is not None else None
            return hits_out(service.name, service.search(params, upload_bytes=data), params)

        return await _watched(request, work)

    @router.post("/api/uploads", response_model=UploadOut, responses=errors(400, 413, 415, 422, 503), tags=["search"])
    def upload_image_route(
        request: Request,
        image: Annotated[UploadFile, File()],
        space: Annotated[str | None, Form(max_length=100)] = None,
    ) -> UploadOut:
        """Embed an image once and get a token to search with (?upload=TOKEN), e.g. in a shareable
        URL. Only its embedding is kept, for a while (a restart or many later uploads expire it);
        the image itself is never stored or served."""
        _form_only(request)
        service = service_of(request)
        data = _read_upload(service, image)
        name = service.collection().space(space).name
        return UploadOut(upload=service.add_upload(data, name), space=name)

    def _item(request: Request, item_id: str) -> ItemOut:
        service = service_of(request)
        item = service.collection().items([item_id]).get(item_id)
        if item is None:
            raise ServiceError(404, "item_not_found", f"No item {item_id!r} in this collection.")
        return item_out(item_id, item)

    @router.get("/api/items", response_model=ItemOut, responses=errors(404, 422), tags=["items"])
    def get_item_route(request: Request, id: Annotated[str, Query(min_length=1, max_length=MAX_ID)]) -> ItemOut:  # noqa: A002
        """An item's record: metadata, context text, image links (http(s) links only)."""
        return _item(request, id)

    @router.get(
        "/api/items/{item_id:path}", response_model=ItemOut, responses=errors(404, 422), tags=["items"], deprecated=True
    )
    def get_item_by_path_route(request: Request, item_id: Annotated[str, PathParam(max_length=MAX_ID)]) -> ItemOut:
        """The same, with the id in the path (ids with '.', '..' or newlines cannot be reached: use ?id=)."""
        return _item(request, item_id)

    thumb_responses = {
        **errors(404, 422),
        200: {"content": {"image/jpeg": {}}},
        307: {"description": "a remote image: redirect to its own server"},
    }

    def _thumbnail(request: Request, item_id: str, size: int) -> Response:
        found = service_of(request).thumbnail(item_id, size)
        if isinstance(found, str):
            return RedirectResponse(found, status_code=307)
        return Response(found, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})

    @router.get("/api/thumbnails", response_class=Response, responses=thumb_responses, tags=["items"])
    def thumbnail_route(
        request: Request,
        id: Annotated[str, Query(min_length=1, max_length=MAX_ID)],
        size: Annotated[int, Query(ge=16, le=2048)] = 256,
    ) -> Response:  # noqa: A002
        """A JPEG of the item's image, at most ``size`` pixels on its long side (cached)."""
        return _thumbnail(request, id, size)

    @router.get(
        "/api/thumbnails/{item_id:path}",
        response_class=Response,
        responses=thumb_responses,
        tags=["items"],
        deprecated=True,
    )
    def thumbnail_by_path_route(
        request: Request,
        item_id: Annotated[str, PathParam(max_length=MAX_ID)],
        size: Annotated[int, Query(ge=16, le=2048)] = 256,
    ) -> Response:
        """The same, with the id in the path."""
        return _thumbnail(request, item_id, size)

    @router.get("/api/info", responses=errors(503), tags=["collection"])
    def get_info_route(request: Request) -> dict[str, Any]:
        """The collection: item counts and embedding spaces."""
        data = service_of(request).collection().info()
        return {"name": data["name"], "items": data["items"], "by_status": data["by_status"],
                "spaces": [{k: s[k] for k in ("name", "model", "dim", "vectors")} for s in data["spaces"]]}  # fmt: skip

    @router.get("/api/facets", responses=errors(503), tags=["collection"])
    def get_facets_route(request: Request) -> dict[str, Any]:
        """Metadata keys with their most common values (for filters) and numeric ranges (e.g. date)."""
        return service_of(request).collection().facets()

    @router.get("/healthz", tags=["service"])
    def healthz_route() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @router.get("/readyz", responses={503: {"model": ErrorOut}}, tags=["service"])
    def readyz_route(request: Request) -> dict[str, str]:
        """The model is loaded and has run once on text and on an image: queries can be served."""
        service = service_of(request)
        if not service.ready:
            raise ServiceError(503, "index_unavailable", "Still loading the model.", {"Retry-After": "5"})
        return {"status": "ready", "collection": service.name}

    @router.post(
        "/api/index",
        status_code=202,
        responses={**errors(401, 403), 409: {"model": ErrorOut, "description": "a run is going on"}},
        tags=["write"],
    )
    def start_index_route(request: Request) -> JSONResponse:
        """Embed every item that has no vector yet (needs the token). Runs in the background."""
        service = service_of(request)
        service.check_token(request)
        state = service.index_state
        if state.get("running"):
            raise ServiceError(409, "already_running", "An indexing run is already going on.")
        state.update(running=True, started=time.time(), report=None, error=None)

        def work() -> None:
            from ..collection import Collection

            try:
                state["report"] = Collection(service.path).index().to_dict()
            except Exception as e:  # reported through GET /api/index
                state["error"] = str(e)
            finally:
                state["running"] = False

        threading.Thread(target=work, daemon=True).start()
        return JSONResponse({"status": "started"}, status_code=202)

    @router.get("/api/index", responses=errors(401, 403), tags=["write"])
    def index_status_route(request: Request) -> dict[str, Any]:
        """The state of the last indexing run started through the API (needs the token)."""
        service = service_of(request)
        service.check_token(request)
        return dict(service.index_state)

    return router


def _read_upload(service: Service, image: UploadFile) -> bytes:
    limit = service.config.max_upload_bytes
    data = image.file.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(413, "payload_too_large", f"The image is over {limit / 2**20:.0f} MB.")
    if not data:
        raise ServiceError(400, "invalid_query", "The uploaded image is empty.")
    return data
