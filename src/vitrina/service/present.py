"""Presentation: the response models, links to items and images, hits as JSON, the templates
and error pages. Item ids go in query parameters (``?id=``), never in paths, so ids with ``/``,
``.``/``..`` segments or newlines survive browsers' path normalisation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from ..query import Hits

if TYPE_CHECKING:
    from .core import SearchParams

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
LINK_KEYS = ("url", "link", "catalogue", "manifest", "canvas")
# Paths answered with HTML (errors there are pages too); elsewhere only when a browser asks.
PAGE_PATHS = ("/", "/item", "/fragments/")


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str


class ErrorOut(BaseModel):
    error: ErrorBody


class SnippetPart(BaseModel):
    text: str
    match: bool = Field(description="a word of the keywords (shown highlighted)")


class RegionOut(BaseModel):
    x: int
    y: int
    w: int
    h: int
    score: float = Field(description="the score of this region's own vector")
    target: str = Field(
        description="the region as a W3C media fragment of the IIIF canvas (or of the item id): ...#xywh=x,y,w,h"
    )
    image: str = Field(description="URL of a small image of just this region (IIIF Image API, or this server)")


class WordBox(BaseModel):
    text: str = Field(description="the word as the OCR engine read it")
    box: list[float] = Field(description="x, y, width, height in the source image's pixels")
    confidence: float
    engine: str
    quad: list[float] | None = Field(None, description="the four corners (x0, y0, ..., x3, y3) of text at an angle")


class HitOut(BaseModel):
    rank: int
    id: str
    score: float
    title: str
    thumbnail: str = Field(description="URL of a small image for a results grid")
    preview: str = Field(description="URL of a larger image")
    item: str = Field(description="URL of the item's JSON record")
    metadata: dict[str, Any]
    snippet: list[SnippetPart] | None = Field(
        None, description="keyword searches: the best-matching passage of the item's text, in parts"
    )
    iiif: dict[str, Any] | None = Field(
        None, description="manifest, canvas and region (xywh, or null) when the item is a canvas of a IIIF manifest"
    )
    region: RegionOut | None = Field(
        None,
        description="where on the item the match is (x, y, w, h in the item's source pixels), when a region of it ranked it",
    )
    words: list[WordBox] | None = Field(
        None, description="keyword searches: the matched words read from the image (OCR), with their boxes"
    )


class SearchOut(BaseModel):
    collection: str
    considered: int = Field(description="items that passed the filters")
    offset: int
    limit: int
    upload: str | None = Field(
        None, description="token of the uploaded image, reusable as ?upload= while the server runs (image links expire)"
    )
    hits: list[HitOut]
    keyword_capped: bool = Field(
        False, description="the keyword ranking was over a bounded set of the matching items (a very broad query)"
    )


class UploadOut(BaseModel):
    upload: str = Field(
        description="a random token; search with ?upload=TOKEN. It expires after a restart or many later uploads."
    )
    space: str


class ItemOut(BaseModel):
    id: str
    metadata: dict[str, Any]
    context: str | None
    status: str
    thumbnail: str
    preview: str
    links: dict[str, str] = Field(description="http(s) links only")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorOut} for code in codes}


def is_web_link(value: object) -> bool:
    """Only http(s) links are shown or linked: never javascript:, data: or other schemes."""
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def iiif_sized(url: str, size: int) -> str | None:
    """A IIIF Image API URL asking for the same region at most ``size`` pixels on a side."""
    from ..iiif import sized

    return sized(url, size)


def item_url(item_id: str, base: str = "/api/items") -> str:
    return f"{base}?{urlencode({'id': item_id})}"


def media_urls(item_id: str, image: str) -> tuple[str, str]:
    if image.startswith(("http://", "https://")):
        # Remote images are shown from their own server; a IIIF image server makes the sizes.
        return iiif_sized(image, 256) or image, iiif_sized(image, 1024) or image
    base = item_url(item_id, "/api/thumbnails")
    return f"{base}&size=256", f"{base}&size=1024"


def region_out(item_id: str, image: str, iiif: dict[str, Any] | None, region: Any) -> RegionOut | None:
    """A hit's region: its box, its IIIF target (canvas#xywh=) and a URL of an image of it."""
    if region is None:
        return None
    from ..iiif import IMAGE_URL

    xywh = f"{region.x},{region.y},{region.w},{region.h}"
    target = f"{iiif['canvas'] if iiif else item_id}#xywh={xywh}"
    m = IMAGE_URL.match(image) if image.startswith(("http://", "https://")) else None
    if m:
        url = f"{m.group(1)}/{xywh}/!256,256/0/default.jpg"
    else:
        url = f"/api/regions?{urlencode({'id': item_id, 'xywh': xywh, 'size': 256})}"
    return RegionOut(
        x=region.x, y=region.y, w=region.w, h=region.h, score=round(region.score, 6), target=target, image=url
    )


def hits_out(collection: str, hits: Hits, params: SearchParams) -> SearchOut:
    from ..iiif_out import target_of

    out = []
    for hit in hits:
        thumb, preview = media_urls(hit.id, hit.image)
        iiif = target_of(hit.metadata, hit.image)
        out.append(HitOut(rank=hit.rank, id=hit.id, score=round(hit.score, 6), title=str(hit.metadata.get("title") or hit.id),
                          thumbnail=thumb, preview=preview, item=item_url(hit.id), metadata=hit.metadata, iiif=iiif,
                          snippet=[SnippetPart(text=t, match=m) for t, m in hit.snippet] or None,
                          region=region_out(hit.id, hit.image, iiif, hit.region),
                          words=[WordBox(**w) for w in hit.words] or None))  # fmt: skip
    return SearchOut(
        collection=collection,
        considered=hits.total_considered,
        offset=params.offset,
        limit=params.limit,
        upload=params.upload,
        hits=out,
        keyword_capped=getattr(hits, "keyword_capped", False),
    )


def item_out(item_id: str, item: Any) -> ItemOut:
    thumb, preview = media_urls(item_id, item.image)
    links = {k: item.metadata[k] for k in LINK_KEYS if is_web_link(item.metadata.get(k))}
    return ItemOut(
        id=item_id,
        metadata=item.metadata,
        context=item.context,
        status=item.status,
        thumbnail=thumb,
        preview=preview,
        links=links,
    )


def wants_page(request: Request) -> bool:
    path = request.url.path
    if path in ("/", "/item") or path.startswith(("/item/", "/fragments/")):
        return True
    api = path.startswith(("/api/", "/static/", "/healthz", "/readyz", "/openapi.json"))
    return not api and "text/html" in request.headers.get("accept", "")


def error_page(request: Request, status: int, message: str, headers: dict[str, str]) -> Response:
    """An error as a page (or, for the script's result fragments, as a fragment)."""
    name = "_error.html" if request.url.path.startswith("/fragments/") else "error.html"
    service = getattr(request.app.state, "service", None)
    title = {404: "Not found", 413: "Too large", 503: "Busy or unavailable"}.get(
        status, "Something went wrong" if status >= 500 else "That did not work"
    )
    context = {
        "status": status,
        "title": title,
        "message": message,
        "collection": service.name if service else "vitrina",
    }
    return templates.TemplateResponse(request, name, context, status_code=status, headers=headers)


# Pages load only this site's scripts and styles; result images may come from any IIIF server.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https: http:; connect-src 'self'; "
            "form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'")  # fmt: skip
# Swagger UI and ReDoc pages start with an inline script and ReDoc runs a blob: worker.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data: https: http:; "
            "worker-src 'self' blob:; connect-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'")  # fmt: skip


# The item page's viewer also reads a IIIF image's info.json from its image server, and adds one
# <style> of its own (OpenSeadragon 6.1.1's touch-screen focus rule: allowed by its hash only).
OSD_STYLE = "'sha256-9xTiqzfwFaL2SGb1rmr8gysEwVVjIvqWAgmZgqFqpEE='"
ITEM_CSP = PAGE_CSP.replace("connect-src 'self'", "connect-src 'self' https: http:").replace(
    "style-src 'self'", f"style-src 'self' {OSD_STYLE}"
)


def security_headers(path: str, content_type: str) -> dict[str, str]:
    headers = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
    if content_type.startswith("text/html"):
        item = path == "/item" or path.startswith("/item/")
        headers["Content-Security-Policy"] = DOCS_CSP if path in ("/docs", "/redoc") else ITEM_CSP if item else PAGE_CSP
        headers["X-Frame-Options"] = "DENY"
    return headers
