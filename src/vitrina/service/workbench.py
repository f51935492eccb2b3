"""JSON routes of the curator's workbench (vitrina.workbench; docs/workbench.md).

Reading sets is open like searching; everything else needs the server's token (header
``X-Vitrina-Token`` or ``Authorization: Bearer``), and every write takes a JSON body
(``application/json``): a cross-site form can send neither the header nor that type without a
CORS preflight, and no cookie ever authorises anything, so a page elsewhere cannot write here.
Set names, questions, answers, ids and "who" are untrusted text: the workbench checks them
(bounded, no control characters, set names a filter can name) and the page escapes them.

No ``from __future__ import annotations``: FastAPI reads the models in the annotations."""

import json
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ..workbench.names import MAX_ID, MAX_IDS, MAX_NOTE, MAX_QUESTION, MAX_SET_NAME, MAX_WHO
from .core import Service
from .errors import ServiceError
from .present import errors, templates

__all__ = ["router"]

MAX_BODY = 4 * 2**20  # a JSON body: 100,000 ids of 40 characters fit
# the library's bounds (workbench/names.py), declared in the API's schema too
NAME = Annotated[str, Field(min_length=1, max_length=MAX_SET_NAME)]
ID = Annotated[str, Field(min_length=1, max_length=MAX_ID)]
WHO = Annotated[str | None, Field(default=None, max_length=MAX_WHO)]
QUESTION = Annotated[str, Field(min_length=1, max_length=MAX_QUESTION)]

router = APIRouter(tags=["workbench"])


class SetAdd(BaseModel):
    ids: list[ID] = Field(default_factory=list, max_length=MAX_IDS)
    where: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=20)
    scores: dict[str, float] | None = None
    query: dict[str, Any] | None = None
    note: Annotated[str | None, Field(default=None, max_length=MAX_NOTE)] = None
    who: WHO = None


class SetRemove(BaseModel):
    ids: list[ID] | None = Field(default=None, max_length=MAX_IDS)  # None: delete the whole set


class LabelIn(BaseModel):
    question: QUESTION
    ids: list[ID] = Field(min_length=1, max_length=MAX_IDS)
    answer: Literal["yes", "no", "skip"]
    who: WHO = None


class TrainIn(BaseModel):
    question: QUESTION
    tag: Annotated[str | None, Field(default=None, max_length=64)] = None


class CorrectionIn(BaseModel):
    tag: Annotated[str, Field(min_length=1, max_length=64)]
    id: ID
    value: Annotated[str | None, Field(max_length=200)] = None  # None: the machine's value again
    who: WHO = None


def _service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


async def _body(request: Request, model: type[BaseModel]) -> Any:
    """The token first, then a JSON body of at most MAX_BODY bytes, read into ``model``."""
    service = _service(request)
    service.check_token(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ServiceError(
            415, "unsupported_media_type", "Workbench writes take a JSON body (Content-Type: application/json)."
        )
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ServiceError(
            413, "payload_too_large", f"The body is over {MAX_BODY // 2**20} MB; send fewer ids at a time."
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": str(e)}
        where = ".".join(str(p) for p in first["loc"])
        raise ServiceError(
            422, "invalid_parameter", f"Bad body{' at ' + where if where else ''}: {first['msg']}"
        ) from None


def _who(who: str | None, request: Request | None = None) -> str:
    """Who did it: the name of a named token (service/identity.py) wins over what the body says."""
    named = getattr(request.state, "who", None) if request is not None else None
    return named or who or "web"


@router.get("/api/sets", responses=errors(400))
def list_sets(request: Request) -> list[dict[str, Any]]:
    """Every set: name, items, the query that made it, who and when."""
    return _service(request).collection().workbench.sets()  # type: ignore[no-any-return]


@router.get("/api/sets/{name}", responses=errors(400, 404))
def show_set(request: Request, name: str, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
    """One set with its members (id, score, who added it, when)."""
    return _service(request).collection().workbench.show(name, limit)  # type: ignore[no-any-return]


@router.post("/api/sets/{name}/items", responses=errors(400, 401, 403, 413, 415, 422), tags=["write"])
async def add_to_set(request: Request, name: str) -> dict[str, Any]:
    """Add items to a set (made when new): ``ids`` and/or the items passing ``where`` filters."""
    body = await _body(request, SetAdd)
    wb = _service(request).collection().workbench
    return await run_in_threadpool(lambda: wb.add(name, body.ids, where=body.where, scores=body.scores, query=body.query, note=body.note,
                                                  who=_who(body.who, request)))  # fmt: skip


@router.post("/api/sets/{name}/remove", responses=errors(400, 401, 403, 413, 415, 422), tags=["write"])
async def remove_from_set(request: Request, name: str) -> dict[str, Any]:
    """Take ``ids`` out of the set; without ``ids``, delete the set."""
    body = await _body(request, SetRemove)
    wb = _service(request).collection().workbench
    return await run_in_threadpool(lambda: wb.remove(name, body.ids))


@router.get("/api/sets/{name}/similar", responses=errors(400, 404))
def similar_to_set(request: Request, name: str, negative: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[dict[str, Any]]:  # fmt: skip
    """Items like the set's and unlike the ``negative`` set's, in neither set."""
    return _service(request).collection().workbench.similar(name, negative=negative, limit=limit).to_list()  # type: ignore[no-any-return]


_MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/json", "iiif-collection": "application/ld+json",
          "iiif-manifest": "application/ld+json", "pairs": "application/x-ndjson"}  # fmt: skip


@router.get("/api/sets/{name}/export", responses=errors(400, 404), response_class=PlainTextResponse)
def export_set(request: Request, name: str,
               format: Literal["csv", "json", "iiif-collection", "iiif-manifest", "pairs"] = "json") -> Response:  # fmt: skip
    """The set as CSV, JSON (with the query and model fingerprint), a IIIF Collection or Manifest,
    or caption pairs for ``vitrina finetune``."""
    base = str(request.base_url).rstrip("/")
    text = _service(request).collection().workbench.export(name, format, base=base)
    suffix = {"csv": "csv", "pairs": "jsonl"}.get(format, "json")
    filename = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80] or "set"
    return Response(text, media_type=_MEDIA[format],
                    headers={"content-disposition": f'attachment; filename="{filename}.{format}.{suffix}"'})  # fmt: skip


@router.post("/api/labels", responses=errors(400, 401, 403, 413, 415, 422), tags=["write"])
async def add_labels(request: Request) -> dict[str, Any]:
    """Answer a question (yes / no / skip) for items; a later answer replaces an earlier one."""
    body = await _body(request, LabelIn)
    wb = _service(request).collection().workbench
    return await run_in_threadpool(lambda: wb.label(body.question, body.ids, body.answer, who=_who(body.who, request)))


@router.get("/api/labels", responses=errors(400, 401, 403))
def get_labels(
    request: Request, question: Annotated[str, Query(min_length=1, max_length=MAX_QUESTION)]
) -> dict[str, Any]:
    """A question's labels (who answered what, when), its counts and learning curve (needs the token)."""
    service = _service(request)
    who = service.check_token(request)  # a named token's person (serve --tokens); None for the single token
    wb = service.collection().workbench
    return {"question": question, "labels": wb.labels(question), "counts": wb.counts(question), "curve": wb.curve(question),
            "questions": wb.questions(), "signed_in_as": who}  # fmt: skip


@router.post("/api/train", responses=errors(400, 401, 403, 413, 415, 422), tags=["write"])
async def train(request: Request) -> dict[str, Any]:
    """Train the question's probe on its labels and tag every item; F1 with its interval."""
    body = await _body(request, TrainIn)
    wb = _service(request).collection().workbench
    report = await run_in_threadpool(lambda: wb.train(body.question, tag=body.tag))
    return json.loads(json.dumps(report, default=str))  # type: ignore[no-any-return]


@router.get("/api/review", responses=errors(400, 401, 403))
def review(request: Request, question: Annotated[str, Query(min_length=1, max_length=MAX_QUESTION)],
           limit: Annotated[int, Query(ge=1, le=500)] = 20,
           order: Literal["mixed", "uncertain", "random", "yes", "no"] = "mixed") -> list[dict[str, Any]]:  # fmt: skip
    """The unlabelled items to label next: the probe's least sure, a quarter drawn at random
    (``mixed``; each item's ``pick`` says which) (needs the token)."""
    service = _service(request)
    service.check_token(request)
    return service.collection().workbench.review(question, limit=limit, order=order)  # type: ignore[no-any-return]


@router.post("/api/corrections", responses=errors(400, 401, 403, 413, 415, 422), tags=["write"])
async def correct(request: Request) -> dict[str, Any]:
    """A person's value of a machine tag on an item (``value`` null: the machine's again)."""
    body = await _body(request, CorrectionIn)
    wb = _service(request).collection().workbench
    return await run_in_threadpool(lambda: wb.correct(body.tag, body.id, body.value, who=_who(body.who, request)))


class SetRename(BaseModel):
    to: NAME


class SetToCollection(BaseModel):
    collection: Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    who: WHO = None


class DuplicateVerdict(BaseModel):
    id: ID
    verdict: Literal["same", "different", "machine"]
    ids: list[ID] | None = Field(default=None, max_length=1000)
    who: WHO = None


@router.post("/api/sets/{name}/rename", responses=errors(400, 401, 403, 413, 415, 422), tags=["write"])
async def rename_set(request: Request, name: str) -> dict[str, Any]:
    """Give the set a new name (``to``); ``--where set=NEW`` finds its items from then on."""
    body = await _body(request, SetRename)
    wb = _service(request).collection().workbench
    return await run_in_threadpool(lambda: wb.rename(name, body.to))  # type: ignore[no-any-return]


@router.post("/api/sets/{name}/collection", responses=errors(400, 401, 403, 413, 415, 422), tags=["write"])
async def set_to_collection(request: Request, name: str) -> dict[str, Any]:
    """Export the set as a new collection that reuses the vectors, named ``collection``, in the
    folder beside the served one (a name, never a path); refused when that folder is not empty."""
    body = await _body(request, SetToCollection)
    coll = _service(request).collection()
    target = coll.path.parent / body.collection
    out = await run_in_threadpool(lambda: coll.workbench.to_collection(name, target, who=_who(body.who, request)))
    return {**out, "collection": body.collection}


@router.get("/api/duplicates/review", responses=errors(400, 404, 422))
def duplicate_review(request: Request, id: Annotated[str, Query(min_length=1, max_length=1000)]) -> dict[str, Any]:  # noqa: A002
    """The item's duplicate group as shown: people's verdicts over the machine's grouping."""
    return _service(request).collection().workbench.duplicates(id)  # type: ignore[no-any-return]


@router.post("/api/duplicates/review", responses=errors(400, 401, 403, 413, 415, 422), tags=["write"])
async def review_duplicates(request: Request) -> dict[str, Any]:
    """``same``: the item and ``ids`` (default: its group) are duplicates; ``different``: ``ids``
    (default: the item) are in no group; ``machine``: the machine's grouping again."""
    body = await _body(request, DuplicateVerdict)
    wb = _service(request).collection().workbench
    return await run_in_threadpool(
        lambda: wb.review_duplicates(body.id, body.verdict, body.ids, who=_who(body.who, request))
    )  # type: ignore[no-any-return]


class WordFix(BaseModel):
    id: ID
    n: Annotated[int, Field(ge=0, le=1_000_000)]
    text: Annotated[str | None, Field(max_length=200)] = None  # None: what the OCR read again
    who: WHO = None


@router.get("/api/words", responses=errors(400, 422))
def item_words(request: Request, id: Annotated[str, Query(min_length=1, max_length=1000)]) -> dict[str, Any]:  # noqa: A002
    """The words read from the item's image (n, text, box) and people's corrections of them."""
    return _service(request).collection().workbench.words(id)  # type: ignore[no-any-return]


@router.post("/api/words", responses=errors(400, 401, 403, 413, 415, 422), tags=["write"])
async def fix_word(request: Request) -> dict[str, Any]:
    """Correct word ``n`` of an item (``text`` null: what the OCR read); wins on the page and in
    keyword search, and survives a new OCR run."""
    body = await _body(request, WordFix)
    wb = _service(request).collection().workbench
    return await run_in_threadpool(lambda: wb.fix_word(body.id, body.n, body.text, who=_who(body.who, request)))  # type: ignore[no-any-return]


# -- the page (templates/workbench.html, static/workbench.js; docs/workbench.md) ----------------

MAX_CARDS = 200


@router.get("/workbench", response_class=HTMLResponse, include_in_schema=False)
def workbench_page(request: Request) -> HTMLResponse:
    """The curator's workbench: a question, a grid to label by keyboard, train, review, sets, export."""
    service = _service(request)
    coll = service.collection()
    return templates.TemplateResponse(request, "workbench.html", {"collection": service.name, "items": len(coll), "writable": service.writable(),
                                                                   "sets": coll.workbench.sets(), "formats": EXPORTS})  # fmt: skip


EXPORTS = [("csv", "CSV"), ("json", "JSON"), ("iiif-collection", "IIIF Collection"), ("iiif-manifest", "IIIF Manifest"),
           ("pairs", "Caption pairs")]  # fmt: skip


@router.get("/fragments/sets", response_class=HTMLResponse, include_in_schema=False)
def sets_fragment(request: Request) -> HTMLResponse:
    """The list of sets with their export links, as the workbench page shows it."""
    sets = _service(request).collection().workbench.sets()
    return templates.TemplateResponse(request, "_wb_sets.html", {"sets": sets, "formats": EXPORTS})


@router.get("/api/workbench/items", responses=errors(400, 422))
def workbench_items(request: Request, id: Annotated[list[str] | None, Query(max_length=MAX_CARDS)] = None,  # noqa: A002
                    where: Annotated[list[str] | None, Query(max_length=20)] = None,
                    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
                    limit: Annotated[int, Query(ge=1, le=MAX_CARDS)] = 48) -> dict[str, Any]:  # fmt: skip
    """Cards for the workbench grid (id, title, thumbnail): the given ``id``s in their order, or a
    page of the items passing the ``where`` filters (all items without), in id order."""
    from ..workbench.export import title_of

    coll = _service(request).collection()
    if id:
        ids, total = [i[:1000] for i in id], len(id)
    else:
        every = coll.ids_where([w[:500] for w in where or []])
        ids, total = every[offset : offset + limit], len(every)
    items = coll.items(ids)
    cards = [{"id": i, "title": title_of(items[i].metadata, i), "thumbnail": "/api/thumbnails?" + urlencode({"id": i, "size": 256})}
             for i in ids if i in items]  # fmt: skip
    return {"total": total, "offset": 0 if id else offset, "items": cards}


def item_tags(request: Request, item_id: str) -> list[dict[str, Any]]:
    """The item's classifier tags with people's corrections over them, for the item page
    (templates/_item_tags.html): name, value shown, the machine's value and score, who corrected."""
    from ..duplicates import TAG as DUPLICATE_OF
    from ..store import Store

    coll = _service(request).collection()
    found = coll.tagged_items([item_id]).get(item_id)
    bookkeeping = (Store.HIDDEN, DUPLICATE_OF)  # shown elsewhere on the page, or not at all
    machine = {k: v for k, v in (found.tags if found else {}).items() if k not in bookkeeping}
    fixes = {c["name"]: c for c in coll.workbench.corrections(item_id=item_id) if c["name"] not in bookkeeping}
    out = []
    for name in sorted(set(machine) | set(fixes)):
        tag, fix = machine.get(name, {}), fixes.get(name)
        score = tag.get("score")
        out.append({"name": name, "value": fix["value"] if fix else tag.get("value"), "machine": tag.get("value"),
                    "score": round(float(score), 3) if score is not None else None, "corrected": fix is not None,
                    "who": fix["who"] if fix else None, "source": fix["source"] if fix else None,
                    "classifier": tag.get("classifier")})  # fmt: skip
    return out


templates.env.globals["workbench_item_tags"] = item_tags


def item_duplicates(request: Request, item_id: str) -> dict[str, Any]:
    """The item's duplicate group with people's verdicts, for the item page (_item_duplicates.html)."""
    return _service(request).collection().workbench.duplicates(item_id)  # type: ignore[no-any-return]


templates.env.globals["workbench_duplicates"] = item_duplicates


def page_words(request: Request, item_id: str) -> dict[str, Any]:
    """The words read from the item's image with people's corrections, for the item page (_item_words.html)."""
    return _service(request).collection().workbench.words(item_id, limit=1000)  # type: ignore[no-any-return]


templates.env.globals["workbench_words"] = page_words
