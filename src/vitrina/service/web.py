"""The web page: server-rendered HTML; a little vanilla JavaScript swaps in result fragments.

The query lives in the address (?q=…&like=…&upload=…), so every view can be shared, and the
page works without JavaScript (the form submits a GET)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from ..errors import VitrinaError
from .api import hits_out, media_urls, service_of
from .app import SearchParams, ServiceError

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["urlquote"] = lambda s: quote(str(s), safe="/")
router = APIRouter(include_in_schema=False)
PAGE = 24


def _params(q: str, like: list[str], unlike: list[str], upload: str | None, image_url: str | None, alpha: float | None,
            date_from: str | None, date_to: str | None, where: str, min_score: float | None, offset: int) -> SearchParams:  # fmt: skip
    filters = [w.strip() for w in where.splitlines() if w.strip()]
    if date_from:
        filters.append(f"date>={date_from}")
    if date_to:
        filters.append(f"date<={date_to}")
    items = [f"1:{i}" for i in like] + [f"-1:{i}" for i in unlike]
    return SearchParams(q=[q] if q.strip() else [], item=items, upload=upload or None, image_url=image_url or None, alpha=alpha,
                        where=filters, min_score=min_score, limit=PAGE, offset=offset)  # fmt: skip


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
        "q": qp.get("q", "")[:1000], "like": qp.getlist("like")[:20], "unlike": qp.getlist("unlike")[:20],
        "upload": qp.get("upload", "")[:64], "image_url": qp.get("image_url", "")[:2000],
        "alpha": number("alpha", 0, 1), "date_from": qp.get("from", "")[:12], "date_to": qp.get("to", "")[:12],
        "where": qp.get("where", "")[:2000], "min_score": number("min_score", -1, 1),
        "offset": int(number("offset", 0, 10_000) or 0),
    }  # fmt: skip


def _link(state: dict[str, Any], **changes: Any) -> str:
    merged = {**state, **changes}
    pairs: list[tuple[str, Any]] = []
    for key, name in (("q", "q"), ("upload", "upload"), ("image_url", "image_url"), ("alpha", "alpha"), ("date_from", "from"),
                      ("date_to", "to"), ("where", "where"), ("min_score", "min_score"), ("offset", "offset")):  # fmt: skip
        value = merged.get(key)
        if value not in (None, "", 0):
            pairs.append((name, value))
    pairs += [("like", i) for i in merged["like"]] + [("unlike", i) for i in merged["unlike"]]
    return "/?" + urlencode(pairs)


def _results(request: Request, state: dict[str, Any]) -> dict[str, Any]:
    service = service_of(request)
    has_query = any(state[k] for k in ("q", "like", "unlike", "upload", "image_url"))
    context: dict[str, Any] = {"state": state, "hits": [], "error": None, "has_query": has_query, "link": lambda **c: _link(state, **c)}
    if not has_query:
        return context
    params = _params(state["q"], state["like"], state["unlike"], state["upload"], state["image_url"], state["alpha"],
                     state["date_from"], state["date_to"], state["where"], state["min_score"], state["offset"])  # fmt: skip
    try:
        out = hits_out(service, service.search(params), params)
    except ServiceError as e:
        context["error"] = e.message
        return context
    except VitrinaError as e:
        context["error"] = "That image URL cannot be used: only http(s) URLs of public hosts." if getattr(e, "reason", "") == "url_rejected" else str(e)
        return context
    context.update(hits=out.hits, considered=out.considered, offset=state["offset"], page=PAGE,
                   more=state["offset"] + PAGE < out.considered and len(out.hits) == PAGE)  # fmt: skip
    return context


@router.get("/", response_class=HTMLResponse)
def page(request: Request) -> HTMLResponse:
    service = service_of(request)
    state = _state(request)
    context = _results(request, state)
    return templates.TemplateResponse(request, "index.html", {**context, "collection": service.name, "items": len(service.collection())})


@router.get("/fragments/results", response_class=HTMLResponse)
def results_fragment(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "_results.html", _results(request, _state(request)))


@router.get("/item/{item_id:path}", response_class=HTMLResponse)
def item_page(request: Request, item_id: str, back: Annotated[str, Query(max_length=4000)] = "/") -> HTMLResponse:
    service = service_of(request)
    item = service.collection().items([item_id]).get(item_id)
    if item is None:
        raise ServiceError(404, "item_not_found", f"No item {item_id!r} in this collection.")
    metadata = item.metadata
    _, preview = media_urls(service, item_id, item.image)
    links = {k: v for k, v in metadata.items() if isinstance(v, str) and v.startswith(("http://", "https://"))}
    back = back if back.startswith("/?") or back == "/" else "/"  # never an open redirect
    return templates.TemplateResponse(request, "item.html", {"collection": service.name, "id": item_id, "metadata": metadata, "context": item.context,
                                                              "preview": preview, "links": links, "back": back,
                                                              "similar": "/?" + urlencode([("like", item_id)])})  # fmt: skip
