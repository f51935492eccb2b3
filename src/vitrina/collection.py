"""``Collection``: the public face of one collection: index it, search it, describe it."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .embedding import DEFAULT_MODEL, Embedder, embed_images, get_embedder, normalise_spec
from .errors import QueryError, SpaceMismatch
from .http import Blocked, Fetcher
from .images import load_image
from .indexer import IndexReport, ProgressCallback, embed_pending
from .query import Hits, Query, Term, combine, top_k
from .records import Hit, ModelFingerprint
from .sources import open_source
from .store import Space, Store, resolve_collection


def open_collection(name_or_path: str | os.PathLike[str], *, create: bool = False, home: Path | None = None, embedder: Embedder | None = None) -> Collection:
    """Open a collection by name (under $VITRINA_HOME) or path. ``embedder`` overrides the model
    recorded in the collection (it must produce the same space)."""
    return Collection(resolve_collection(name_or_path, home), create=create, embedder=embedder)


def space_name_for(spec: str) -> str:
    """'hf:openai/clip-vit-base-patch32' -> 'clip-vit-base-patch32'; 'mini' -> 'mini'."""
    tail = spec.split(":", 1)[-1].rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-.")[:100] or "default"


class Collection:
    def __init__(self, path: Path, *, create: bool = False, embedder: Embedder | None = None):
        self.path = path
        self.name = path.name
        self._store = Store(path, create=create)
        self._embedder = embedder
        self._explicit_embedder = embedder is not None
        self._filter_cache: dict[tuple[Any, ...], np.ndarray] = {}

    def __repr__(self) -> str:
        return f"<Collection {self.name!r} at {self.path}>"

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- indexing -----------------------------------------------------------------------------

    def ingest(
        self,
        source: str,
        *,
        limit: int | None = None,
        images: str | None = None,
        min_size: int = 64,
        restart: bool = False,
        fetcher: Fetcher | None = None,
        on_page: ProgressCallback | None = None,
    ) -> IngestReport:
        """Add (or update) the items of ``source`` without embedding them (see ``index``).

        Harvests page by page and stores a cursor after each page, so an interrupted run (a
        kill, a 429 ban) resumes after the last stored page; ``restart`` starts from the top."""
        with _writer(self.path) as store, _fetcher(self.path, fetcher) as http:
            src = open_source(source, fetcher=http, limit=limit, images=images, min_size=min_size)
            report = IngestReport(collection=self.name, source=src.spec)
            cursor_key = f"cursor:{src.spec}"
            cursor = None if restart else store.get_meta(cursor_key)
            report.resumed = cursor is not None
            seen: set[str] = set()
            started = time.perf_counter()
            try:
                for items, next_cursor in src.pages(cursor):
                    counts = store.sync_items(items)
                    for key in ("new", "changed", "updated", "unchanged"):
                        setattr(report, key, getattr(report, key) + counts[key])
                    report.found += len(items)
                    report.pages += 1
                    seen.update(item.id for item in items)
                    store.set_meta(cursor_key, next_cursor)
                    if on_page:
                        on_page(report.found, 0)
            except Blocked as e:
                report.interrupted, report.message = True, str(e)
            report.requests = http.requests
            report.problems = list(getattr(src, "problems", []))[:50] + list(getattr(src, "skipped", []))[:50]
            if src.complete and not report.interrupted and not report.resumed:
                report.removed = store.remove_missing(src.spec, seen)
            report.seconds = time.perf_counter() - started
        return report

    def index(
        self,
        source: str | None = None,
        *,
        model: str | None = None,
        space: str | None = None,
        batch_size: int = 32,
        workers: int = 2,
        device: str | None = None,
        threads: int | None = None,
        retry_failed: bool = False,
        reembed: bool = False,
        max_pixels: int | None = None,
        max_decode_bytes: int | None = None,
        progress: ProgressCallback | None = None,
        on_scan: ProgressCallback | None = None,
        limit: int | None = None,
        fetcher: Fetcher | None = None,
    ) -> IndexReport:
        """Add ``source``'s items (a folder, URL list, IIIF manifest, loc.gov search or ALTO pages;
        see ``vitrina.sources``) and embed every item that lacks a current vector.

        Without ``model``, the collection's own model is used (or the default for a new one)."""
        spaces = {s.name: s for s in self._store.spaces()}
        if model is None and space in spaces:
            model = spaces[space].fingerprint.spec
        elif model is None and spaces and space is None:
            first = next(iter(spaces.values()))
            model, space = first.fingerprint.spec, first.name
        spec = normalise_spec(model or os.environ.get("VITRINA_MODEL") or DEFAULT_MODEL)
        space = space or space_name_for(spec)
        ingested = None
        if source is not None:
            ingested = self.ingest(source, limit=limit, fetcher=fetcher, on_page=on_scan)
        with _writer(self.path) as store, _fetcher(self.path, fetcher) as http:
            report = IndexReport(collection=self.name, space=space, model=spec)
            if ingested is not None:
                report.ingest = ingested.to_dict()
                if ingested.interrupted:
                    report.interrupted, report.message = True, ingested.message
                    return report
            embedder = self._embedder if self._embedder is not None and self._embedder.fingerprint.spec == spec else get_embedder(spec, device=device, threads=threads)
            if reembed and space in spaces:
                store.drop_space(space)
            store.ensure_space(space, embedder.fingerprint)
            try:
                embed_pending(store, embedder, space, report, batch_size=batch_size, workers=workers, retry_failed=retry_failed,
                              max_pixels=max_pixels, max_decode_bytes=max_decode_bytes, progress=progress, fetcher=http)  # fmt: skip
            except KeyboardInterrupt:
                report.interrupted = True
        self._store.close_vector_files()
        return report

    # -- searching ----------------------------------------------------------------------------

    def search(
        self,
        text: Sequence[str] | str = (),
        image: Sequence[str] | str = (),
        *,
        alpha: float | None = None,
        where: Sequence[str] = (),
        min_score: float | None = None,
        limit: int = 10,
        offset: int = 0,
        include_self: bool = False,
        space: str | None = None,
    ) -> Hits:
        """Search by text, by image (a path, URL or indexed item id), or both.

        ``text`` terms may carry weights: "2:ship", "-0.5:colour" (negative pushes down).
        ``alpha`` mixes text and image: 0 = text only, 1 = image only (default: plain sum).
        ``where``: filters like "date>=1700", "place=Boston", "title~harbour"."""
        query = Query.build(text, image, where=where, alpha=alpha, min_score=min_score, limit=limit, offset=offset, include_self=include_self)
        return self.run([query], space=space)[0]

    def run(self, queries: Sequence[Query], *, space: str | None = None) -> list[Hits]:
        """Run several queries in one pass over the vectors (one matrix product for all)."""
        if not queries:
            return []
        sp = self._store.space(space)
        built = [self._query_vector(q, sp) for q in queries]
        return self._search(sp, np.stack([b[0] for b in built]), queries, [b[1] for b in built])

    def search_vectors(self, vectors: np.ndarray, *, where: Sequence[str] = (), min_score: float | None = None, limit: int = 10, offset: int = 0, space: str | None = None) -> list[Hits]:
        """Search with ready-made query vectors, shape (n, dim) or (dim,): one ``Hits`` per row."""
        sp = self._store.space(space)
        matrix = np.atleast_2d(np.asarray(vectors, np.float32))
        if matrix.shape[1] != sp.fingerprint.dim or not np.isfinite(matrix).all() or not np.linalg.norm(matrix, axis=1).all():
            raise QueryError(f"Query vectors must be finite, non-zero and have {sp.fingerprint.dim} dimensions (space {sp.name!r}); got shape {matrix.shape}.")
        matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        query = Query.build("<vector>", where=where, min_score=min_score, limit=limit, offset=offset)
        return self._search(sp, matrix, [query] * len(matrix), [[] for _ in matrix])

    def _search(self, sp: Space, qmat: np.ndarray, queries: Sequence[Query], excluded: Sequence[list[int]]) -> list[Hits]:
        vectors = self._store.vector_file(sp).matrix(sp.rows)
        if len(queries) == 1:  # a matrix-vector product: the fastest path for one query
            scores_all = (vectors @ qmat[0])[:, None]
        else:
            scores_all = vectors @ qmat.T  # (rows, n_queries)
        dead = self._store.dead_rows(sp.name) if sp.rows > sp.live else None
        results = []
        for col, query in enumerate(queries):
            scores = scores_all[:, col]
            considered = sp.live
            if dead is not None or query.filters or excluded[col]:
                scores = scores.copy()
                if dead is not None:
                    scores[dead] = -np.inf
                if query.filters:
                    allowed = self._allowed_rows(sp, query)
                    keep = np.zeros(len(scores), bool)
                    keep[allowed] = True
                    scores[~keep] = -np.inf
                    considered = len(allowed)
                scores[excluded[col]] = -np.inf
            results.append(self._hits(sp, query, scores, considered))
        return results

    def _allowed_rows(self, sp: Space, query: Query) -> np.ndarray:
        """Rows passing the query's filters. Cached until the collection changes: filters run
        in SQLite over every item (~1 s per filter at 560k items), a repeated one (paging, facets) is free."""
        version = self._store.db.execute("PRAGMA data_version").fetchone()[0]
        key = (sp.name, sp.rows, version, query.filters)
        if key not in self._filter_cache:
            if len(self._filter_cache) >= 32:
                self._filter_cache.pop(next(iter(self._filter_cache)))
            self._filter_cache[key] = self._filter_rows(sp, query)
        return self._filter_cache[key]

    def _filter_rows(self, sp: Space, query: Query) -> np.ndarray:
        clauses, params = [], []
        for f in query.filters:
            sql, p = f.sql(with_tags=self._store.has_tags)
            clauses.append(sql)
            params += p
        return self._store.filtered_rows(sp.name, " AND ".join(clauses), params)

    def _hits(self, sp: Space, query: Query, scores: np.ndarray, considered: int) -> Hits:
        wanted = query.offset + query.limit
        order = top_k(scores, wanted)[query.offset :]
        order = [int(r) for r in order if np.isfinite(scores[r]) and (query.min_score is None or scores[r] >= query.min_score)]
        ids = self._store.ids_of_rows(sp.name, order)
        items = self._store.get_items(list(ids.values()))
        hits = []
        for rank, row in enumerate(order, start=query.offset + 1):
            item = items.get(ids.get(row, ""))
            if item is None:  # removed between the two reads
                continue
            hits.append(Hit(id=item["id"], score=float(scores[row]), image=item["image"], metadata=json.loads(item["metadata"]), rank=rank))
        return Hits(hits, total_considered=considered, query=query)

    def _query_vector(self, query: Query, sp: Space) -> tuple[np.ndarray, list[int]]:
        vectors, excluded = [], []
        for term in query.terms:
            if term.kind == "text":
                vectors.append(self.embedder_for(sp).embed_texts([term.value])[0])
            elif term.kind == "vector":
                vec = np.asarray(term.data, np.float32)
                if vec.shape != (sp.fingerprint.dim,):
                    raise QueryError(f"Vector term {term.value!r} has shape {vec.shape}; space {sp.name!r} needs ({sp.fingerprint.dim},).")
                vectors.append(vec)
            else:
                vec, row = self._image_vector(term, sp)
                vectors.append(vec)
                if row is not None and not query.include_self:
                    excluded.append(row)
        return combine(np.stack(vectors), query.terms, query.alpha), excluded

    def _image_vector(self, term: Term, sp: Space) -> tuple[np.ndarray, int | None]:
        """An image term: a file, a URL, or the id of an indexed item (its stored vector is reused)."""
        value = term.value
        source: str | bytes | None = None
        if value.startswith(("http://", "https://")):
            from .http import fetch_bytes

            source = fetch_bytes(value)
        elif os.path.isfile(os.path.expanduser(value)):
            source = os.path.expanduser(value)
        if source is not None:
            embedder = self.embedder_for(sp)
            # Decoded exactly as the indexer decodes, so a file and its indexed copy score 1.0.
            image = load_image(source, min_side=embedder.min_side)
            return embed_images(embedder, [image])[0], None
        rows = self._store.rows_of(sp.name, [value])
        if value in rows:
            row = rows[value]
            return np.array(self._store.vector_file(sp).matrix(sp.rows)[row]), row
        raise QueryError(f"Image {value!r} is not a file, an http(s) URL, or the id of an item in collection {self.name!r}.")

    def embedder_for(self, sp: Space) -> Embedder:
        """The model that made space ``sp``, loaded once per process. An embedder given to
        ``open_collection`` is used for every space, and refused where it does not fit."""
        if self._embedder is not None and (self._explicit_embedder or self._fits(self._embedder, sp)):
            embedder = self._embedder
        else:
            embedder = get_embedder(sp.fingerprint.spec)
            if self._embedder is None:
                self._embedder = embedder
        if not self._fits(embedder, sp):
            fp = embedder.fingerprint
            raise SpaceMismatch(
                f"Space {sp.name!r} of collection {self.name!r} was built with {sp.fingerprint.describe()}; "
                f"the query model is {fp.describe()}. Search with the same model, or index with this one into a new space (--space)."
            )
        return embedder

    @staticmethod
    def _fits(embedder: Embedder, sp: Space) -> bool:
        return (embedder.fingerprint.revision, embedder.fingerprint.dim) == (sp.fingerprint.revision, sp.fingerprint.dim)

    # -- describing ---------------------------------------------------------------------------

    def spaces(self) -> list[Space]:
        return self._store.spaces()

    def fingerprint(self, space: str | None = None) -> ModelFingerprint:
        return self._store.space(space).fingerprint

    def __len__(self) -> int:
        return sum(self._store.count_items().values())

    def info(self, check: bool = False) -> dict[str, Any]:
        by_status = self._store.count_items()
        failures = self._store.failures()
        reasons: dict[str, int] = {}
        for f in failures:
            reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        out: dict[str, Any] = {
            "name": self.name,
            "path": str(self.path),
            "items": sum(by_status.values()),
            "by_status": by_status,
            "failed_by_reason": reasons,
            "failures": [{"id": f["id"], "reason": f["reason"], "detail": f["detail"]} for f in failures[:20]],
            "spaces": [
                {"name": s.name, "model": s.fingerprint.spec, "revision": s.fingerprint.revision, "dim": s.fingerprint.dim,
                 "vectors": s.live, "dead_rows": s.rows - s.live, "preprocessing": s.fingerprint.preprocessing}
                for s in self._store.spaces()
            ],  # fmt: skip
            "disk_bytes": size,
        }
        if check:
            out["problems"] = self._store.check()
        return out

    def item(self, item_id: str) -> dict[str, Any]:
        row = self._store.get_items([item_id]).get(item_id)
        if row is None:
            raise QueryError(f"No item {item_id!r} in collection {self.name!r}.")
        out = {k: (json.loads(row[k]) if k == "metadata" else row[k]) for k in row.keys()}
        out["tags"] = self._store.tags_of(item_id)
        return out


class _writer:
    """The store opened for writing (holding the writer lock) for the length of a ``with``."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Store:
        self.store = Store(self.path, create=True, writer=True)
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()

@dataclass
class IngestReport:
    collection: str
    source: str
    found: int = 0
    new: int = 0
    changed: int = 0
    updated: int = 0  # metadata or context text changed, image unchanged: no re-embedding
    unchanged: int = 0
    removed: int = 0
    pages: int = 0
    requests: int = 0
    resumed: bool = False
    interrupted: bool = False
    message: str = ""
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "seconds": round(self.seconds, 3)}


class _fetcher:
    """The collection's HTTP client (cache in <collection>/cache/http), or the caller's."""

    def __init__(self, path: Path, given: Fetcher | None):
        self.path, self.given = path, given

    def __enter__(self) -> Fetcher:
        self.fetcher = self.given or Fetcher(cache_dir=self.path / "cache" / "http")
        return self.fetcher

    def __exit__(self, *exc: object) -> None:
        if self.given is None:
            self.fetcher.close()
