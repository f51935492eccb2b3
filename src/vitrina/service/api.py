"""JSON routes. Every error is the envelope {"error": {"code", "message", "request_id"}}.

The routes are built for one ``ServiceConfig`` (hence no ``from __future__ import annotations``:
FastAPI must see the limits in the annotations) so that the OpenAPI schema states the limits the
server enforces (``limit`` ≤ max_limit, at most MAX_TERMS terms and MAX_FILTERS filters ...).
The search routes' parameters are generated from ``vitrina.options``: a search option declared
there for ``get``/``post`` is a parameter here, with its type, bounds, default and help."""

import asyncio
import inspect
import math
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import options
from ..options import GET, HTTP, POST, Option
from ..store.text import budget
from .core import SearchParams, Service, ServiceConfig, client_gone
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
    refuses the query's next model call and its database queries stop (ClientGone), so an
    abandoned query stops early; past ``work_deadline`` its database queries stop (503)."""
    gone = threading.Event()
    client_gone.set(gone)  # the worker thread runs in a copy of this context
    # ... and so does the budget: its database queries stop at the deadline or once the client is gone.
    with budget(service_of(request).config.work_deadline, gone):
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


def _search_parameter(o: Option, name: str, interface: str, config: ServiceConfig) -> inspect.Parameter:
    """One search option as a FastAPI query parameter (GET) or form field (POST)."""
    source: Any = Query if interface == GET else Form
    if o.type is bytes:  # the uploaded image itself
        annotation: Any = Annotated[UploadFile | None, File(description=o.help)]
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
    # Lengths are the transport's (and the server's) limits; bounds and choices are the option's.
    lengths = {
        "q": config.max_text_chars,
        "keywords": config.max_text_chars,
        "item": MAX_ID,
        "image_url": 2000,
        "upload": 64,
        "space": 100,
    }
    kind: Any = Literal[o.choices] if o.choices else o.type  # type: ignore[valid-type]
    kind = list[kind] if o.multiple else kind | None if o.optional else kind
    kw: dict[str, Any] = {"description": o.help}
    if name in o.deprecated:
        kw.update(deprecated=True, description=f"Deprecated: the old name of {o.http_name}. {o.help}")
    lo, hi = o.bounds_for(interface)
    if o.name == "limit":
        hi = config.max_limit
    if lo is not None:
        kw["ge"] = lo
    if hi is not None:
        kw["le"] = hi
    if o.multiple:  # per-list caps go in the schema; the service enforces them (with a 400 that names the limit)
        extra: dict[str, Any] = {"maxItems": o.max_items} if o.max_items else {}
        if o.http_name in lengths:
            extra["items"] = {"type": "string", "maxLength": lengths[o.http_name]}
        kw["json_schema_extra"] = extra
    elif o.http_name in lengths:
        kw["max_length"] = lengths[o.http_name]
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=o.default_for(interface), annotation=Annotated[kind, source(**kw)]
    )


def search_signature(config: ServiceConfig, interface: str) -> inspect.Signature:
    """The signature of a search route: the request, the response (for warning headers), then
    every option declared for ``interface`` under its HTTP name and its deprecated names."""
    fixed = [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=t)
        for n, t in (("request", Request), ("response", Response))
    ]
    fields = [_search_parameter(o, name, interface, config) for o in options.for_interface(interface)
              for name in (o.http_name, *(d for d in o.deprecated if not d.startswith("-")))]  # fmt: skip
    return inspect.Signature([*fixed, *fields], return_annotation=SearchOut)


def search_params(fields: dict[str, Any], response: Response) -> SearchParams:
    """The request's search options; an old name still works, and the answer says it is deprecated."""
    fields = dict(fields)
    for o in options.for_interface(GET):
        for old in (d for d in o.deprecated if not d.startswith("-")):
            value = fields.pop(old, None)
            if value is not None:
                response.headers["Deprecation"] = "true"
                response.headers["Warning"] = f'299 - "{old} is deprecated; use {o.http_name}"'
                if fields.get(o.http_name) is None:
                    fields[o.http_name] = value
        if o.type is float:
            _finite(fields.get(o.http_name), o.http_name)
    return SearchParams(**{o.http_name: fields[o.http_name] for o in options.OPTIONS if HTTP <= o.interfaces})


def build_router(config: ServiceConfig) -> APIRouter:
    router = APIRouter()
    search_errors = errors(400, 404, 413, 415, 422, 503)

    async def search_route(request: Request, response: Response, **fields: Any) -> SearchOut:
        """Search by text, by an indexed item, by an image URL or a previous upload — or several at once."""
        service = service_of(request)
        params = search_params(fields, response)
        return await _watched(request, lambda: hits_out(service.name, service.search(params), params))

    async def search_with_upload_route(request: Request, response: Response, **fields: Any) -> SearchOut:
        """The same search with an uploaded image in the request (multipart/form-data)."""
        _form_only(request)
        service = service_of(request)
        image = fields.pop(options.option("image_file").http_name)
        params = search_params(fields, response)

        def work() -> SearchOut:
            data = _read_upload(service, image) if image is not None else None
            return hits_out(service.name, service.search(params, upload_bytes=data), params)

        return await _watched(request, work)

    search_route.__signature__ = search_signature(config, GET)  # type: ignore[attr-defined]
    search_with_upload_route.__signature__ = search_signature(config, POST)  # type: ignore[attr-defined]
    router.get("/api/search", response_model=SearchOut, responses=search_errors, tags=["search"])(search_route)
    router.post("/api/search", response_model=SearchOut, responses=search_errors, tags=["search"])(
        search_with_upload_route
    )

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
        coll = service.collection()
        item = coll.items([item_id]).get(item_id)
        if item is None:
            moved = coll.moved_to(item_id)
            if moved:  # a citation of an old id says where the picture went
                raise ServiceError(404, "item_moved", f"Item {item_id!r} was moved; it is now {moved!r}.")
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

    @router.get("/api/regions", response_class=Response, responses=thumb_responses, tags=["items"])
    def region_route(
        request: Request,
        id: Annotated[str, Query(min_length=1, max_length=MAX_ID)],  # noqa: A002
        xywh: Annotated[str, Query(pattern=r"^\d{1,6},\d{1,6},\d{1,6},\d{1,6}$")],
        size: Annotated[int, Query(ge=16, le=1024)] = 256,
    ) -> Response:
        """A JPEG of a part of the item's image (a hit's region), at most ``size`` pixels on its long side."""
        from .regions_view import region_jpeg

        return region_jpeg(service_of(request), id, xywh, size)

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
