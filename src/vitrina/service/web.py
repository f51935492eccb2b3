"""The web page: server-rendered HTML; a little vanilla JavaScript swaps in result fragments.
Also the API docs pages (/docs, /redoc), from assets shipped in the package.

The query lives in the address (?q=…&like=…&upload=…), so every view can be shared, and the
page works without JavaScript (the form submits a GET)."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..store.text import budget
from .api import MAX_ID, service_of
from .core import SearchParams
from .errors import ServiceError, classify
from .present import hits_out, is_web_link, media_urls, templates

router = APIRouter(include_in_schema=False)
PAGE = 24
MAX_REFINE = 20  # more/less-like items kept from the address

XYWH = re.compile(r"^\d{1,6},\d{1,6},\d{1,6},\d{1,6}$")


def _item_href(item_id: str, region: Any = None) -> str:
    """The item page's address; with a hit's region, the viewer outlines it and zooms to it."""
    pairs = [("id", item_id)] + ([("xywh", f"{region.x},{region.y},{region.w},{region.h}")] if region else [])
    return "/item?" + urlencode(pairs)


templates.env.filters["item_href"] = _item_href


def _params(state: dict[str, Any]) -> SearchParams:
    filters = [w.strip() for w in state["where"].splitlines() if w.strip()]
    if state["date_from"]:
        filters.append(f"date>={state['date_from']}")
    if state["date_to"]:
        filters.append(f"date<={state['date_to']}")
    items = [f"1:{i}" for i in state["like"]] + [f"-1:{i}" for i in state["unlike"]]
    return SearchParams(q=[state["q"]] if state["q"].strip() else [], item=items, upload=state["upload"] or None, image_url=state["image_url"] or None,
                        alpha=state["alpha"], where=filters, min_score=state["min_score"], limit=PAGE, offset=state["offset"],
                        keywords=state["kw"], keyword_weight=state["keyword_weight"])  # fmt: skip


def _state(request: Request) -> dict[str, Any]:
    """The page's query, from the address, as the template and the links need it."""
    qp = request.query_params

    def number(name: str, lo: float, hi: float) -> float | None:
        try:
            value = float(qp.get(name, ""))
        except ValueError:
            return None
        return value if lo <= value <= hi else None

    return {
        "q": qp.get("q", "")[:1000], "like": qp.getlist("like")[:MAX_REFINE], "unlike": qp.getlist("unlike")[:MAX_REFINE],
        "upload": qp.get("upload", "")[:64], "image_url": qp.get("image_url", "")[:2000],
        "alpha": number("alpha", 0, 1), "date_from": qp.get("from", "")[:12], "date_to": qp.get("to", "")[:12],
        "where": qp.get("where", "")[:2000], "min_score": number("min_score", -1, 1),
        "offset": int(number("offset", 0, 10_000) or 0),
        "kw": qp.get("kw", "")[:1000],
        # text_weight: the old name, still read from addresses shared before the rename
        "keyword_weight": number("keyword_weight", 0, 1) if "keyword_weight" in qp else number("text_weight", 0, 1),
    }  # fmt: skip


def _link(state: dict[str, Any], **changes: Any) -> str:
    merged = {**state, **changes}
    pairs: list[tuple[str, Any]] = []
    for key, name in (("q", "q"), ("upload", "upload"), ("image_url", "image_url"), ("alpha", "alpha"), ("date_from", "from"),
                      ("date_to", "to"), ("where", "where"), ("min_score", "min_score"), ("offset", "offset"), ("kw", "kw"), ("keyword_weight", "keyword_weight")):  # fmt: skip
        value = merged.get(key)
        if value not in (None, "", 0):
            pairs.append((name, value))
    pairs += [("like", i) for i in merged["like"]] + [("unlike", i) for i in merged["unlike"]]
    return "/?" + urlencode(pairs)


def _details(likes: list[str]) -> list[dict[str, str]]:
    """The details of items in the query (``ID#xywh=…``, from a box drawn on the viewer), to show."""
    out = []
    for term in likes:
        item_id, _, xywh = term.partition("#xywh=")
        if XYWH.match(xywh):
            out.append({"id": item_id, "href": "/item?" + urlencode({"id": item_id, "xywh": xywh}),
                        "image": "/api/regions?" + urlencode({"id": item_id, "xywh": xywh, "size": 256})})  # fmt: skip
    return out


def _results(request: Request, state: dict[str, Any]) -> dict[str, Any]:
    service = service_of(request)
    has_query = any(state[k] for k in ("q", "like", "unlike", "upload", "image_url", "kw"))
    context: dict[str, Any] = {
        "state": state,
        "hits": [],
        "error": None,
        "has_query": has_query,
        "link": lambda **c: _link(state, **c),
        "details": [],
    }
    if not has_query:
        return context
    params = _params(state)
    try:
        with budget(service.config.work_deadline):  # the page's queries stop as the API's do
            out = hits_out(service.name, service.search(params), params)
    except Exception as e:
        err = classify(e, request)
        if err is None:
            raise
        context["error"] = err.message
        return context
    context["details"] = _details(state["like"])
    context.update(hits=out.hits, considered=out.considered, offset=state["offset"], page=PAGE,
                   more=state["offset"] + PAGE < out.considered and len(out.hits) == PAGE)  # fmt: skip
    return context


@router.get("/", response_class=HTMLResponse)
def page_route(request: Request) -> HTMLResponse:
    service = service_of(request)
    state = _state(request)
    context = _results(request, state)
    return templates.TemplateResponse(
        request, "index.html", {**context, "collection": service.name, "items": len(service.collection())}
    )


@router.get("/fragments/results", response_class=HTMLResponse)
def results_fragment_route(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "_results.html", _results(request, _state(request)))


def _item_page(request: Request, item_id: str, back: str, xywh: str = "") -> Response:
    service = service_of(request)
    item = service.collection().items([item_id]).get(item_id)
    if item is None:
        moved = service.collection().moved_to(item_id)
        if moved:  # a bookmarked or cited page of a moved file: where the picture is now
            query = {"id": moved, **({"back": back} if back != "/" else {}), **({"xywh": xywh} if xywh else {})}
            return RedirectResponse("/item?" + urlencode(query), status_code=301)
        raise ServiceError(404, "item_not_found", "There is no such item in this collection.")
    metadata = item.metadata
    _, preview = media_urls(item_id, item.image)
    back = same_site(back)
    from ..iiif_out import target_of, viewer_url
    from .tiles import viewer_source

    target = target_of(metadata, item.image)
    ocr = _ocr_outlines(service.collection(), item_id, back)
    box = [int(v) for v in xywh.split(",")] if XYWH.match(xywh) else None
    return templates.TemplateResponse(request, "item.html", {"deepzoom": viewer_source(item_id, item.image, preview), "box": box, "ocr": ocr,
                                                              "collection": service.name, "id": item_id, "metadata": metadata, "context": item.context,
                                                              "preview": preview, "back": back, "back_label": _back_label(back), "similar": "/?" + urlencode([("like", item_id)]),
                                                              "iiif": target, "viewer": viewer_url(target) if target else None})  # fmt: skip


SAME_SITE = re.compile(r"/(?![/\\])[^\\\x00-\x1f\x7f]*")


def same_site(back: str) -> str:
    """``back`` when it is a path of this site ("/?q=…", "/map?colour=date"), else "/": never a
    link elsewhere ("//host", "/\\host", "https://…") nor one with control characters."""
    return back if SAME_SITE.fullmatch(back) else "/"


def _back_label(back: str) -> str:
    path = back.split("?")[0].split("#")[0]
    return {"/": "Back to results", "/map": "Back to the map"}.get(path, "Back")


def _ocr_outlines(collection: Any, item_id: str, back: str) -> dict[str, Any] | None:
    """The words read from the item's image that the keywords of the results page (``back``)
    matched, for the outlines drawn on the image (static/ocr.js): {width, height, words}."""
    from urllib.parse import parse_qs, urlsplit

    keywords = parse_qs(urlsplit(back).query).get("kw", [""])[0]
    return collection.matched_words(item_id, keywords) if keywords.strip() else None


@router.get("/item", response_class=HTMLResponse)
def item_page_route(
    request: Request,
    id: Annotated[str, Query(max_length=MAX_ID)],  # noqa: A002
    back: Annotated[str, Query(max_length=4000)] = "/",
    xywh: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    return _item_page(request, id, back, xywh)


@router.get("/item/{item_id:path}", response_class=HTMLResponse)
def item_page_by_path_route(
    request: Request, item_id: str, back: Annotated[str, Query(max_length=4000)] = "/"
) -> Response:
    return _item_page(request, item_id, back)


templates.env.tests["web_link"] = is_web_link


@router.get("/docs", response_class=HTMLResponse)
def swagger_route(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} · API", swagger_js_url="/static/vendor/swagger-ui-bundle.js",
                               swagger_css_url="/static/vendor/swagger-ui.css", swagger_favicon_url="data:,")  # fmt: skip


@router.get("/redoc", response_class=HTMLResponse)
def redoc_route(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} · API", redoc_js_url="/static/vendor/redoc.standalone.js",
                          redoc_favicon_url="data:,", with_google_fonts=False)  # fmt: skip
