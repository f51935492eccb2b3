"""Exploring the whole collection: the map (data and page), an item's duplicates, IIIF out.

Kept apart from ``api`` and ``web`` so that the search page and these views change independently.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from ..errors import QueryError
from ..filters import MAX_OPERAND
from .api import MAX_ID, service_of
from .core import SearchParams
from .errors import ServiceError
from .present import errors, templates

router = APIRouter()
MAX_MANIFEST_HITS = 100
MAX_TITLE_IDS = 200  # ids per /api/titles request
MAX_TITLE_CHARS = 200


@router.get(
    "/api/map",
    response_class=Response,
    responses={**errors(400, 404, 409), 200: {"content": {"application/octet-stream": {}}}},
    tags=["explore"],
)
def map_data_route(request: Request, space: Annotated[str | None, Query(max_length=100)] = None) -> Response:
    """The 2-D map of a space (built by `vitrina map`): a 4096-byte header (magic line, then the
    JSON stamp), then uint16 x,y per point, then the item ids, newline-separated."""
    coll = service_of(request).collection()
    try:
        data, stamp = _load_map(coll, space)
    except QueryError as e:
        code = 409 if "stale" in str(e) else 404
        raise ServiceError(code, "map_stale" if code == 409 else "no_map", str(e)) from None
    etag = f'"{stamp["checksum"]}-{int(stamp["built_at"])}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(data, media_type="application/octet-stream", headers={"ETag": etag, "Cache-Control": "no-cache"})


@router.get("/api/map/colours", responses=errors(400, 404, 409, 422, 503), tags=["explore"])
def map_colours_route(
    request: Request,
    key: Annotated[str, Query(min_length=1, max_length=200)],
    space: Annotated[str | None, Query(max_length=100)] = None,
) -> dict[str, Any]:
    """Each map point's value of a metadata key or tag, as a code into the 10 most common values
    (10 = another value, -1 = none), in the order of the map's ids."""
    from ..layout import read_map

    coll = service_of(request).collection()
    try:
        _load_map(coll, space)
    except QueryError as e:
        raise ServiceError(409 if "stale" in str(e) else 404, "no_map", str(e)) from None
    from ..layout import map_path

    # One query per key (over the normalised values), cached per map file and collection version.
    # Only keys some item has are computed (and cached): any other string is a 404 at no cost.
    path = map_path(coll, coll.space(space).name)
    st = path.stat()
    cache_key = (str(path), st.st_mtime_ns, coll.data_stamp(), key)
    with _COLOURS_LOCK:
        cached = _COLOURS.get(cache_key)
    if cached is None:
        cached = _bounded_colours(coll, key, read_map(path).ids, service_of(request).config.work_deadline)
        if cached is None:
            raise ServiceError(
                404, "no_such_key", f"No item has a metadata key or tag {key!r}; see /api/facets for the keys."
            )
        with _COLOURS_LOCK:
            while len(_COLOURS) >= 8:
                _COLOURS.pop(next(iter(_COLOURS)))
            _COLOURS[cache_key] = cached
    return cached


def _bounded_colours(coll: Any, key: str, ids: list[str], seconds: float) -> dict[str, Any] | None:
    """``map_colours`` whose queries stop after ``seconds`` (the search deadline): a 503 then."""
    import sqlite3

    from ..layout import map_colours
    from ..store.text import budget, stopped

    with budget(seconds):
        try:
            return map_colours(coll, key, ids)
        except sqlite3.OperationalError as e:
            if (err := stopped(e, "Colouring the map")) is None:
                raise
            raise ServiceError(503, "query_timeout", str(err), {"Retry-After": "1"}) from None


_COLOURS: dict[tuple[Any, ...], dict[str, Any]] = {}
_COLOURS_LOCK = threading.Lock()


def _load_map(coll: Any, space: str | None) -> tuple[bytes, dict[str, Any]]:
    from ..layout import load_map

    return load_map(coll, space)


@router.get("/api/titles", responses=errors(400, 422), tags=["explore"])
def item_titles_route(request: Request, id: Annotated[list[str], Query()]) -> dict[str, Any]:  # noqa: A002
    """Short readable titles of up to ``MAX_TITLE_IDS`` items (repeat ``id``): the item's title,
    else its file name; for lists of ids such as the Map view's selection. Unknown ids are listed
    in ``missing``."""
    if len(id) > MAX_TITLE_IDS:
        raise ServiceError(400, "too_many_ids", f"{len(id)} ids; ask for at most {MAX_TITLE_IDS} at a time.")
    if any(not i or len(i) > MAX_ID for i in id):
        raise ServiceError(400, "invalid_query", f"An id is empty or over {MAX_ID} characters.")
    found = service_of(request).collection().items(list(dict.fromkeys(id)))
    return {
        "titles": {i: short_title(item.metadata, i) for i, item in found.items()},
        "missing": [i for i in dict.fromkeys(id) if i not in found],
    }


def short_title(metadata: dict[str, Any], item_id: str) -> str:
    """The item's title (the first of several), else the last part of its id (a file name), at
    most ``MAX_TITLE_CHARS`` characters."""
    title = metadata.get("title")
    if isinstance(title, list):
        title = title[0] if title else None
    text = " ".join(str(title).split()) if title not in (None, "") else ""
    if not text:
        text = item_id.rstrip("/").rsplit("/", 1)[-1] or item_id
    return text if len(text) <= MAX_TITLE_CHARS else text[: MAX_TITLE_CHARS - 1] + "…"


@router.get("/api/duplicates", responses=errors(404, 422), tags=["explore"])
def duplicates_route(request: Request, id: Annotated[str, Query(min_length=1, max_length=MAX_ID)]) -> dict[str, Any]:  # noqa: A002
    """The other members of the item's near-duplicate group (from the last `vitrina duplicates`)."""
    from ..duplicates import TAG, duplicates_of

    coll = service_of(request).collection()
    if id not in coll:
        raise ServiceError(404, "item_not_found", f"No item {id!r} in this collection.")
    group = coll.item(id).tags.get(TAG)
    return {"id": id, "group": group["value"] if group else None, "duplicates": duplicates_of(coll, id)}


@router.get("/api/iiif/search", responses=errors(400, 404, 422, 503), tags=["iiif"])
def iiif_search_route(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="What the images show")],
    manifest: Annotated[
        str, Query(min_length=8, max_length=MAX_OPERAND, description="Search within the canvases of this manifest")
    ],
    limit: Annotated[int, Query(ge=1, le=MAX_MANIFEST_HITS)] = 20,
) -> Response:
    """Hits within one IIIF manifest as a Content Search 2.0-style AnnotationPage: one
    `highlighting` annotation per hit, targeting `canvas#xywh=…` `partOf` the manifest."""
    from ..iiif_out import annotation_page, target_of

    if not manifest.lower().startswith(("http://", "https://")):
        raise ServiceError(
            422, "invalid_parameter", "manifest must be the http(s) URL of a IIIF manifest in this collection."
        )
    service = service_of(request)
    hits = service.search(SearchParams(q=[q], where=[f"manifest={manifest}"], limit=limit))
    page_id = str(request.url.replace(query=urlencode({"q": q, "manifest": manifest, "limit": limit})))
    found: list[dict[str, Any]] = [
        {
            "id": h.id,
            "score": h.score,
            "title": str(h.metadata.get("title") or h.id),
            "target": target_of(h.metadata, h.image),
        }
        for h in hits
    ]
    # Filters match case-insensitively; a IIIF client needs this manifest's canvases only.
    found = [h for h in found if h["target"] and h["target"]["manifest"] == manifest]
    import json

    return Response(
        json.dumps(annotation_page(page_id, found)),
        media_type='application/ld+json;profile="http://iiif.io/api/search/2/context.json"',
    )


@router.get("/map", response_class=HTMLResponse, include_in_schema=False)
def map_page_route(request: Request) -> HTMLResponse:
    service = service_of(request)
    q = request.query_params.get("q", "")[:1000]
    keys = [
        k for k, entry in service.collection().facets().items() if "values" in entry
    ]  # few distinct values: colourable
    return templates.TemplateResponse(
        request,
        "map.html",
        {"collection": service.name, "q": q, "colour": request.query_params.get("colour", "")[:200], "keys": keys},
    )


# -- the words read from an item's image, for IIIF viewers (vitrina.iiif_out) ---------------------

IIIF_JSON = 'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"'


def _words_of_item(request: Request, item_id: str) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """The item, its words ({width, height, words}, boxes in its own pixels at full resolution)
    and the ids of its manifest, canvas and words page on this server."""
    coll = service_of(request).collection()
    item = coll.items([item_id]).get(item_id)
    if item is None:
        raise ServiceError(404, "item_not_found", f"No item {item_id!r} in this collection.")
    read = coll.matched_words(item_id)
    if read is None:
        raise ServiceError(404, "not_read", f"The words of item {item_id!r} have not been read: run `vitrina ocr`.")
    base = str(request.base_url).rstrip("/") + "/api/iiif/"
    query = urlencode({"id": item_id})
    ids = {part: f"{base}{part}?{query}" for part in ("manifest", "canvas", "words")}
    return item, read, ids


def _item_manifest(request: Request, item_id: str) -> dict[str, Any]:
    from ..iiif import sized
    from ..iiif_out import item_manifest

    item, read, ids = _words_of_item(request, item_id)
    size = (int(read["width"]), int(read["height"]))
    if item.image.startswith(("http://", "https://")):
        url = sized(item.image, 2048) or item.image
    else:
        url = f"{str(request.base_url).rstrip('/')}/api/thumbnails?{urlencode({'id': item_id, 'size': 2048})}"
    image = {"id": url, "format": "image/jpeg", "width": size[0], "height": size[1]}
    label = str(item.metadata.get("title") or item_id)
    return item_manifest(ids["manifest"], ids["canvas"], label, size, image, ids["words"])


def _ld(document: dict[str, Any]) -> Response:
    import json

    return Response(json.dumps(document, ensure_ascii=False), media_type=IIIF_JSON,
                    headers={"Access-Control-Allow-Origin": "*"})  # fmt: skip


@router.get("/api/iiif/manifest", responses=errors(404, 422), tags=["iiif"])
def iiif_manifest_route(request: Request, id: Annotated[str, Query(min_length=1, max_length=MAX_ID)]) -> Response:  # noqa: A002
    """A IIIF Presentation 3 Manifest of one item whose words have been read (`vitrina ocr`): one
    Canvas in the item's pixels, its `annotations` linking the words page (`/api/iiif/words`)."""
    return _ld(_item_manifest(request, id))


@router.get("/api/iiif/canvas", responses=errors(404, 422), tags=["iiif"])
def iiif_canvas_route(request: Request, id: Annotated[str, Query(min_length=1, max_length=MAX_ID)]) -> Response:  # noqa: A002
    """The Canvas of `/api/iiif/manifest`, on its own."""
    from ..iiif_out import PRESENTATION_CONTEXT

    return _ld({"@context": PRESENTATION_CONTEXT, **_item_manifest(request, id)["items"][0]})


@router.get("/api/iiif/words", responses=errors(404, 422), tags=["iiif"])
def iiif_words_route(request: Request, id: Annotated[str, Query(min_length=1, max_length=MAX_ID)]) -> Response:  # noqa: A002
    """The words read from the item's image as a IIIF AnnotationPage: one `supplementing`
    annotation per word, a `TextualBody` on `canvas#xywh=` (the canvas of `/api/iiif/manifest`)."""
    from ..iiif_out import words_page

    _, read, ids = _words_of_item(request, id)
    return _ld(words_page(ids["words"], ids["canvas"], read["words"]))
