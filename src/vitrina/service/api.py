"""JSON routes. Every error is the envelope {"error": {"code", "message", "request_id"}}."""

from __future__ import annotations

import io
import math
import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from ..errors import ImageError
from ..files import write_atomic
from ..images import hold_decoded, read_image
from ..query import Hits
from .app import SearchParams, Service, ServiceError

router = APIRouter()
THUMB_SIZES = (128, 256, 512, 1024)


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str


class ErrorOut(BaseModel):
    error: ErrorBody


class HitOut(BaseModel):
    rank: int
    id: str
    score: float
    title: str
    thumbnail: str = Field(description="URL of a small image for a results grid")
    preview: str = Field(description="URL of a larger image")
    item: str = Field(description="URL of the item's JSON record")
    metadata: dict[str, Any]


class SearchOut(BaseModel):
    collection: str
    considered: int = Field(description="items that passed the filters")
    offset: int
    limit: int
    upload: str | None = Field(None, description="key of the uploaded image, reusable as ?upload=")
    hits: list[HitOut]


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 413, 415, 422, 503)}


def service_of(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


def iiif_sized(url: str, size: int) -> str | None:
    """A IIIF Image API URL asking for the same region at most ``size`` pixels on a side."""
    from ..iiif import sized

    return sized(url, size)


def media_urls(service: Service, item_id: str, image: str) -> tuple[str, str]:
    from urllib.parse import quote

    if image.startswith(("http://", "https://")):
        # Remote images are shown from their own server; a IIIF image server makes the sizes.
        return iiif_sized(image, 256) or image, iiif_sized(image, 1024) or image
    base = f"/api/thumbnails/{quote(item_id, safe='/')}"
    return f"{base}?size=256", f"{base}?size=1024"


def hits_out(service: Service, hits: Hits, params: SearchParams) -> SearchOut:
    from urllib.parse import quote

    out = []
    for hit in hits:
        thumb, preview = media_urls(service, hit.id, hit.image)
        out.append(HitOut(rank=hit.rank, id=hit.id, score=round(hit.score, 6), title=str(hit.metadata.get("title") or hit.id),
                          thumbnail=thumb, preview=preview, item=f"/api/items/{quote(hit.id, safe='/')}", metadata=hit.metadata))  # fmt: skip
    return SearchOut(collection=service.name, considered=hits.total_considered, offset=params.offset, limit=params.limit, upload=params.upload, hits=out)


def _finite(value: float | None, name: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ServiceError(422, "invalid_parameter", f"{name} must be a finite number.")
    return value


@router.get("/api/search", response_model=SearchOut, responses=ERRORS, tags=["search"])
def search(
    request: Request,
    q: Annotated[list[str], Query(description="Text terms; '2:ship' weights a term, '-0.5:colour' pushes it down")] = [],  # noqa: B006
    item: Annotated[list[str], Query(description="Ids of indexed items as image terms; '-1:ID' = less like this")] = [],  # noqa: B006
    image_url: Annotated[str | None, Query(max_length=2000, description="An http(s) image URL on a public host")] = None,
    upload: Annotated[str | None, Query(max_length=64, description="Key returned by POST /api/uploads")] = None,
    alpha: Annotated[float | None, Query(ge=0, le=1, description="0 = text only, 1 = image only")] = None,
    where: Annotated[list[str], Query(description="Filters like 'date>=1700', 'place=Boston', 'title~harbour'")] = [],  # noqa: B006
    min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 24,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
    space: Annotated[str | None, Query(max_length=100)] = None,
) -> SearchOut:
    """Search by text, by an indexed item, by an image URL or a previous upload — or several at once."""
    service = service_of(request)
    params = SearchParams(q=q, item=item, image_url=image_url, upload=upload, alpha=_finite(alpha, "alpha"), where=where,
                          min_score=_finite(min_score, "min_score"), limit=limit, offset=offset, space=space)  # fmt: skip
    return hits_out(service, service.search(params), params)


@router.post("/api/search", response_model=SearchOut, responses=ERRORS, tags=["search"])
def search_with_upload(
    request: Request,
    image: Annotated[UploadFile | None, File(description="A query image (JPEG, PNG, GIF, WebP, TIFF, BMP)")] = None,
    q: Annotated[list[str], Form()] = [],  # noqa: B006
    item: Annotated[list[str], Form()] = [],  # noqa: B006
    image_url: Annotated[str | None, Form(max_length=2000)] = None,
    alpha: Annotated[float | None, Form(ge=0, le=1)] = None,
    where: Annotated[list[str], Form()] = [],  # noqa: B006
    min_score: Annotated[float | None, Form(ge=-1, le=1)] = None,
    limit: Annotated[int, Form(ge=1, le=1000)] = 24,
    offset: Annotated[int, Form(ge=0, le=10_000)] = 0,
    space: Annotated[str | None, Form(max_length=100)] = None,
) -> SearchOut:
    """The same search with an uploaded image in the request (multipart/form-data)."""
    service = service_of(request)
    data = _read_upload(service, image) if image is not None else None
    params = SearchParams(q=q, item=item, image_url=image_url, alpha=_finite(alpha, "alpha"), where=where,
                          min_score=_finite(min_score, "min_score"), limit=limit, offset=offset, space=space)  # fmt: skip
    return hits_out(service, service.search(params, upload_bytes=data), params)


class UploadOut(BaseModel):
    upload: str
    space: str


@router.post("/api/uploads", response_model=UploadOut, responses=ERRORS, tags=["search"])
def upload_image(request: Request, image: Annotated[UploadFile, File()], space: Annotated[str | None, Form(max_length=100)] = None) -> UploadOut:
    """Embed an image once and get a key to search with (?upload=KEY), e.g. in a shareable URL.
    Only its embedding is kept, for a while; the image itself is never stored or served."""
    service = service_of(request)
    data = _read_upload(service, image)
    name = service.collection().space(space).name
    return UploadOut(upload=service.add_upload(data, name), space=name)


def _read_upload(service: Service, image: UploadFile) -> bytes:
    limit = service.config.max_upload_bytes
    data = image.file.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(413, "payload_too_large", f"The image is over {limit} bytes.")
    if not data:
        raise ServiceError(400, "invalid_query", "The uploaded image is empty.")
    return data


@router.get("/api/items/{item_id:path}", responses=ERRORS, tags=["items"])
def get_item(request: Request, item_id: Annotated[str, PathParam(max_length=2000)]) -> dict[str, Any]:
    """An item's record: metadata, context text, image links."""
    service = service_of(request)
    item = service.collection().items([item_id]).get(item_id)
    if item is None:
        raise ServiceError(404, "item_not_found", f"No item {item_id!r} in this collection.")
    thumb, preview = media_urls(service, item_id, item.image)
    metadata = item.metadata
    return {"id": item_id, "metadata": metadata, "context": item.context, "status": item.status, "thumbnail": thumb, "preview": preview,
            "links": {k: metadata[k] for k in ("url", "link", "catalogue", "manifest", "canvas") if isinstance(metadata.get(k), str)}}  # fmt: skip


_thumb_lock = threading.Lock()


@router.get("/api/thumbnails/{item_id:path}", responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}}, tags=["items"])
def thumbnail(request: Request, item_id: Annotated[str, PathParam(max_length=2000)], size: Annotated[int, Query(ge=16, le=2048)] = 256) -> Response:
    """A JPEG of the item's image, at most ``size`` pixels on its long side (cached)."""
    service = service_of(request)
    row = service.collection().items([item_id]).get(item_id)
    if row is None:
        raise ServiceError(404, "item_not_found", f"No item {item_id!r} in this collection.")
    if row.image.startswith(("http://", "https://")):
        return RedirectResponse(row.image, status_code=307)
    size = next((s for s in THUMB_SIZES if s >= size), THUMB_SIZES[-1])
    import hashlib

    key = hashlib.sha1(f"{item_id}\0{row.fingerprint}\0{size}".encode()).hexdigest()
    cache = service.path / "thumbs" / key[:2] / f"{key}.jpg"
    headers = {"Cache-Control": "public, max-age=86400"}
    if cache.exists():
        return Response(cache.read_bytes(), media_type="image/jpeg", headers=headers)
    with hold_decoded():  # the full-size image counts against the decode budget until shrunk
        try:
            image = read_image(row.image, min_side=size)
        except ImageError as e:
            raise ServiceError(404, "image_unavailable", f"The image of item {item_id!r} cannot be shown ({e.reason}).") from e
        image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    data = buf.getvalue()
    try:
        write_atomic(cache, data, durable=False)
    except OSError:
        pass  # a read-only collection folder: thumbnails are made on every request instead
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get("/api/info", responses=ERRORS, tags=["collection"])
def info(request: Request) -> dict[str, Any]:
    """The collection: item counts and embedding spaces."""
    service = service_of(request)
    data = service.collection().info()
    return {"name": data["name"], "items": data["items"], "by_status": data["by_status"],
            "spaces": [{k: s[k] for k in ("name", "model", "dim", "vectors")} for s in data["spaces"]]}  # fmt: skip


@router.get("/api/facets", responses=ERRORS, tags=["collection"])
def facets(request: Request) -> dict[str, Any]:
    """Metadata keys with their most common values (for filters) and numeric ranges (e.g. date)."""
    return service_of(request).collection().facets()


@router.get("/healthz", tags=["service"])
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorOut}}, tags=["service"])
def readyz(request: Request) -> Any:
    """The model is loaded and the collection open: queries can be served."""
    service = service_of(request)
    if not service.ready:
        raise ServiceError(503, "index_unavailable", "Still loading the model.", {"Retry-After": "5"})
    return {"status": "ready", "collection": service.name}


@router.post("/api/index", status_code=202, responses=ERRORS, tags=["write"])
async def start_index(request: Request) -> JSONResponse:
    """Embed every item that has no vector yet (needs the token). Runs in the background."""
    service = service_of(request)
    service.check_token(request)
    _index_state = service.index_state
    if _index_state.get("running"):
        raise ServiceError(409, "already_running", "An indexing run is already going on.")

    def work() -> None:
        from ..collection import Collection

        _index_state.update(running=True, started=time.time(), report=None, error=None)
        try:
            _index_state["report"] = Collection(service.path).index().to_dict()
        except Exception as e:  # reported through GET /api/index
            _index_state["error"] = str(e)
        finally:
            _index_state["running"] = False

    threading.Thread(target=work, daemon=True).start()
    return JSONResponse({"status": "started"}, status_code=202)


@router.get("/api/index", responses=ERRORS, tags=["write"])
async def index_status(request: Request) -> dict[str, Any]:
    """The state of the last indexing run started through the API (needs the token)."""
    service = service_of(request)
    service.check_token(request)
    return dict(service.index_state)
