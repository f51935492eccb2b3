"""What the routes share: the configuration, the search parameters, and ``Service`` (the
collection, the gated model, uploaded-image embeddings). Routes build nothing of their own:
``Service.search`` checks the request against the server's limits and makes one library call
(``Query.build``: item ids are ``item`` terms, an upload's embedding a ``vector`` term); images go
through ``Collection.image_vector``."""

from __future__ import annotations

import contextvars
import hashlib
import io
import secrets
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request

from ..collection import Collection, ImageLimits, open_collection
from ..diskcache import cache_put
from ..embedding import Embedder, embed_images
from ..errors import ConfigError, ImageError, ModalityError, ModelError
from ..filters import MAX_FILTERS, parse_filters
from ..images import hold_decoded, read_image
from ..options import MAX_OFFSET, MAX_TERMS
from ..query import Hits, ItemNotFound, Query
from ..store import CollectionPaths
from .errors import ClientGone, Overloaded, ServiceError

URL_DEADLINE = 10.0  # seconds for a whole image-URL download (the docs promise 10 s)
THUMB_SIZES = (128, 256, 512, 1024)


@dataclass
class ServiceConfig:
    collection: str | Path
    token: str | None = None  # write endpoints are refused without it
    named_tokens: dict[str, str] = field(default_factory=dict)  # token -> who (service/identity.py)
    cors_origins: Sequence[str] = ()
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_pixels: int = 50_000_000
    max_limit: int = 200
    max_text_chars: int = 1000
    model_slots: int = 1  # queries embedding at once
    model_queue: int = 16  # queries waiting for the model before 503
    allow_private_urls: bool = False
    image_url_timeout: float = URL_DEADLINE  # seconds for a whole image-URL fetch, redirects included
    max_url_fetches: int = 4  # image URLs fetched at once; each holds a worker thread, more get 503
    title: str = ""
    index: str = "auto"  # "auto" (the approximate index when fresh), "exact", or a Qdrant target from `vitrina sync`
    work_deadline: float = 5.0  # seconds of database work for one search or map colouring (store/text.py, budget)
    image_cache_bytes: int | None = None  # thumbnails and tiles kept, each; None: 1 GiB or 1/4 of the free disk

    def image_limits(self) -> ImageLimits:
        """The one set of limits for every query image (upload or URL), set on the Collection."""
        return ImageLimits(
            max_bytes=self.max_upload_bytes,
            max_pixels=self.max_upload_pixels,
            allow_private=self.allow_private_urls,
            timeout=self.image_url_timeout,
        )


# Set by a route while its client is connected; the model gate checks it before each model call,
# so a query whose client has gone stops at the next term instead of holding the model.
client_gone: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("client_gone", default=None)


class ModelGate:
    """At most ``slots`` embeddings at once and ``queue`` waiting; more waiters are refused."""

    def __init__(self, slots: int, queue: int):
        self._slots = threading.Semaphore(max(1, slots))
        self._queue = queue
        self._waiting = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        gone = client_gone.get()
        if gone is not None and gone.is_set():
            raise ClientGone()
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
    """Embeddings of uploaded images under random tokens, so a query with one can be shared as a
    URL while the server runs. A token says nothing about the image (a content hash would let
    anyone test whether an image was uploaded). The image bytes are never kept or served back."""

    def __init__(self, size: int = 512):
        self._items: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def put(self, space: str, vector: np.ndarray) -> str:
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._items[token] = (space, vector)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return token

    def get(self, token: str, space: str) -> np.ndarray | None:
        with self._lock:
            found = self._items.get(token)
        return found[1] if found is not None and found[0] == space else None


@dataclass
class SearchParams:
    """Everything a search request can say (GET query string or form fields): the options of
    ``vitrina.options`` that apply over HTTP (tests/test_options.py keeps them in step)."""

    q: list[str] = field(default_factory=list)  # text terms, "2:ship", "-0.5:colour"
    item: list[str] = field(default_factory=list)  # indexed item ids as image terms, "-1:id" for less like this
    image_url: str | None = None
    upload: str | None = None  # token from POST /api/uploads
    alpha: float | None = None
    where: list[str] = field(default_factory=list)
    min_score: float | None = None
    limit: int = 24
    offset: int = 0
    space: str | None = None
    keywords: str = ""  # words ranked by BM25 over the item text, alone or fused with the rest
    keyword_weight: float | None = None  # the keyword side's share in a fusion (formerly text_weight)
    fusion: str = "weighted"


class Service:
    """State shared by the routes: config, the collection (one handle per thread), the model."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.limits = config.image_limits()
        self.gate = ModelGate(config.model_slots, config.model_queue)
        self.url_slots = threading.BoundedSemaphore(max(1, config.max_url_fetches))
        self.uploads = Uploads()
        self._local = threading.local()
        self.ready = False
        self.index_state: dict[str, Any] = {"running": False}
        self.embedder: GatedEmbedder | None = None
        self.model_problem = ""  # why the model did not load at start, if it did not
        first = open_collection(
            config.collection, limits=self.limits, index=config.index
        )  # fails early if it does not exist
        self.path = first.path
        self.name = first.name
        self._local.collection = first

    def start(self) -> None:
        """Load the model and run it once per tower, so the first query is not the slow one;
        /readyz answers 200 only afterwards."""
        if self.ready:
            return
        coll = self.collection()
        spaces = coll.spaces()
        if spaces:
            try:
                inner = coll.embedder_for(spaces[0])
            except (ModelError, ConfigError) as e:
                # Serve what needs no model (item and keyword searches, pages, thumbnails, info);
                # a query that needs it answers 503 "unavailable" and tries to load it again.
                self.model_problem = str(e)
                print(f"vitrina serve: the model cannot load, serving what needs none: {e}", file=sys.stderr)
            else:
                self.embedder = inner if isinstance(inner, GatedEmbedder) else GatedEmbedder(inner, self.gate)
                coll.use_embedder(self.embedder)
                _warm_up(self.embedder.inner)
        self.ready = True

    def collection(self) -> Collection:
        coll = getattr(self._local, "collection", None)
        if coll is None:
            coll = self._local.collection = Collection(
                self.path, embedder=self.embedder, limits=self.limits, index=self.config.index
            )
        return coll

    def search(self, p: SearchParams, upload_bytes: bytes | None = None) -> Hits:
        """The server's limits checked (before any model call or look-up), then one library call."""
        texts = [t for t in p.q if t.strip()]
        items = [i for i in p.item if i.strip()]
        wheres = [w for w in p.where if w.strip()]
        self._check(p, texts, items, wheres, upload_bytes is not None)
        filters = parse_filters(wheres)  # a malformed filter is refused before the model runs
        coll = self.collection()
        space = coll.space(p.space).name
        if upload_bytes is not None:
            p.upload = self.add_upload(upload_bytes, space)
        vectors = []
        if p.upload:
            vector = self.uploads.get(p.upload, space)
            if vector is None:
                raise ServiceError(
                    404,
                    "upload_expired",
                    "That uploaded image is no longer on the server (image links expire); upload it again.",
                )
            vectors.append(("upload", vector))
        query = Query.build(texts, [p.image_url] if p.image_url else [], item=items, vectors=vectors, where=filters, alpha=p.alpha,
                            min_score=p.min_score, limit=p.limit, offset=p.offset, keywords=p.keywords, keyword_weight=p.keyword_weight,
                            fusion=p.fusion)  # fmt: skip
        try:
            if not p.image_url:
                return coll.run([query], space=space)[0]
            # Refused at once when full: slow image hosts must not take every worker thread (and /healthz).
            if not self.url_slots.acquire(blocking=False):
                raise Overloaded("Too many image URLs are being fetched; try again in a moment.")
            try:
                return coll.run([query], space=space)[0]
            finally:
                self.url_slots.release()
        except ItemNotFound as e:
            if e.moved_to:
                raise ServiceError(404, "item_moved", f"Item {e.item_id!r} was moved; it is now {e.moved_to!r}.") from e
            raise ServiceError(404, "item_not_found", f"No item {e.item_id!r} in this collection.") from e

    def _check(self, p: SearchParams, texts: list[str], items: list[str], wheres: list[str], uploaded: bool) -> None:
        """The server's own limits, each with its HTTP status and error code."""
        c = self.config
        if not 1 <= p.limit <= c.max_limit:
            raise ServiceError(422, "invalid_parameter", f"limit must be between 1 and {c.max_limit}.")
        if not 0 <= p.offset <= MAX_OFFSET:
            raise ServiceError(422, "invalid_parameter", f"offset must be between 0 and {MAX_OFFSET}.")
        # Counted before anything is embedded or looked up: each term is a model call or a decode.
        count = len(texts) + len(items) + bool(p.image_url) + bool(p.upload or uploaded)
        if count > MAX_TERMS:
            raise ServiceError(
                400, "too_many_terms", f"{count} query terms (q, item, image); at most {MAX_TERMS} are allowed."
            )
        if len(wheres) > MAX_FILTERS:
            raise ServiceError(
                400, "too_many_filters", f"{len(wheres)} filters (where); at most {MAX_FILTERS} are allowed."
            )
        for text in texts:
            if len(text) > c.max_text_chars or "\x00" in text:
                raise ServiceError(
                    400, "invalid_query", f"A text term is longer than {c.max_text_chars} characters or has a NUL byte."
                )
        if len(p.keywords) > c.max_text_chars or "\x00" in p.keywords:
            raise ServiceError(
                400, "invalid_query", f"The keywords are longer than {c.max_text_chars} characters or have a NUL byte."
            )
        # Only http(s): anything else would be read by the library as a local file path.
        if p.image_url and not p.image_url.startswith(("http://", "https://")):
            raise ServiceError(
                400, "image_url_rejected", "Image URL rejected: only http(s) URLs of public hosts can be fetched."
            )
        if not (texts or items or p.image_url or p.upload or uploaded or p.keywords.strip()):
            raise ServiceError(
                400,
                "invalid_query",
                "An empty query: give text (q), keywords, an image (upload, image_url) or an item.",
            )

    def add_upload(self, data: bytes, space: str) -> str:
        return self.uploads.put(space, self.collection().image_vector(data, space=space))

    def thumbnail(self, item_id: str, size: int) -> bytes | str:
        """A JPEG of an item's image, long side at most ``size`` (one of THUMB_SIZES, cached in
        the collection folder), or the URL of a remote image, which is shown from its server."""
        item = self.collection().items([item_id]).get(item_id)
        if item is None:
            raise ServiceError(404, "item_not_found", f"No item {item_id!r} in this collection.")
        if item.image.startswith(("http://", "https://")):
            return item.image
        size = next((s for s in THUMB_SIZES if s >= size), THUMB_SIZES[-1])
        key = hashlib.sha1(f"{item_id}\0{item.fingerprint}\0{size}".encode()).hexdigest()
        cache = CollectionPaths(self.path).thumbs_dir / key[:2] / f"{key}.jpg"
        try:
            return cache.read_bytes()
        except FileNotFoundError:
            pass  # not made yet, or just dropped by the cache's cap: make it
        with hold_decoded():  # the full-size image counts against the decode budget until shrunk
            try:
                image = read_image(item.image, min_side=size)
            except ImageError as e:
                raise ServiceError(404, "image_unavailable", f"The image of item {item_id!r} cannot be shown.") from e
            image.thumbnail((size, size))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=85)
        # capped, oldest first; a read-only folder: thumbnails are made on every request instead
        cache_put(CollectionPaths(self.path).thumbs_dir, cache, buf.getvalue(), self.config.image_cache_bytes)
        return buf.getvalue()

    def writable(self) -> bool:
        """Whether any token (the single one, or a named one) allows writes."""
        return bool(self.config.token or self.config.named_tokens)

    def check_token(self, request: Request) -> str | None:
        """Refuse a request without a valid token; returns who a named token belongs to (None
        for the single ``--token``), also kept as ``request.state.who``."""
        expected = self.config.token
        if not expected and not self.config.named_tokens:
            raise ServiceError(
                403, "writes_disabled", "This server is read-only; start it with --token to allow writes."
            )
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        given = request.headers.get("x-vitrina-token") or (
            credentials.strip() if scheme.lower() == "bearer" else ""
        )  # the scheme is case-insensitive (RFC 9110)
        if not given:
            raise ServiceError(
                401,
                "unauthorized",
                "This endpoint needs the server's token (header X-Vitrina-Token or Authorization: Bearer).",
            )
        who = None
        for token, name in self.config.named_tokens.items():  # compare with every one: no early exit to time
            if secrets.compare_digest(given.encode(), token.encode()):
                who = name
        if who is None and not (expected and secrets.compare_digest(given.encode(), expected.encode())):
            raise ServiceError(403, "forbidden", "Wrong token.")
        request.state.who = who
        return who


def _warm_up(embedder: Embedder) -> None:
    from PIL import Image

    side = max(32, embedder.min_side or 32)
    embed_images(embedder, [Image.new("RGB", (side, side), (128, 128, 128))])
    try:
        embedder.embed_texts(["a picture"])
    except ModalityError:
        pass  # an image-only model has no text tower
