"""``Collection``: the public face of one collection: index it, search it, describe it.

It orchestrates: sources fill the store, the indexer embeds, a query becomes vectors here and
is ranked by the space's search index (``vitrina.index``), and matches become ``Hit``s. Nothing
outside ``store`` and ``index`` knows about vector rows or SQL.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .embedding import Embedder, embed_images, get_embedder, resolve_model, space_name_for
from .errors import QueryError, SpaceMismatch, StoreLocked
from .filters import Filter
from .http import Blocked, Fetcher
from .images import hold_decoded, load_image
from .index import SearchIndex, open_index
from .indexer import IndexReport, ProgressCallback, embed_pending
from .query import Hits, Query, combine
from .records import Hit, Item, ModelFingerprint
from .sources import open_source, source_gone
from .store import Space, Store, disk_full_as_error, resolve_collection

log = logging.getLogger("vitrina.index")

__all__ = ["Collection", "ImageLimits", "IngestReport", "open_collection", "space_name_for"]


@dataclass(frozen=True)
class ImageLimits:
    """Limits on a query image (a file, URL or upload): the same on every path into a search."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int | None = None  # None: the decoder's own caps (images.MAX_PIXELS)
    allow_private: bool | None = None  # URLs of private/loopback hosts; None: $VITRINA_ALLOW_PRIVATE_URLS
    timeout: float = 10.0  # seconds for a whole URL download


def open_collection(
    name_or_path: str | os.PathLike[str],
    *,
    create: bool = False,
    home: Path | None = None,
    embedder: Embedder | None = None,
    limits: ImageLimits | None = None,
    index: str = "auto",
) -> Collection:
    """Open a collection by name (under $VITRINA_HOME) or path. ``embedder`` overrides the model
    recorded in the collection (it must produce the same space). ``index``: ``auto`` (the
    approximate index where one is built and fresh, else exact) or ``exact``."""
    return Collection(
        resolve_collection(name_or_path, home), create=create, embedder=embedder, limits=limits, index=index
    )


class Collection:
    def __init__(
        self,
        path: Path,
        *,
        create: bool = False,
        embedder: Embedder | None = None,
        limits: ImageLimits | None = None,
        index: str = "auto",
    ):
        self.path = path
        self.index_kind = index
        self.name = path.name
        self.limits = limits or ImageLimits()
        with disk_full_as_error(path, self.name):  # creating (or upgrading) it writes
            self._store = Store(path, create=create)
        self._embedder = embedder
        self._explicit_embedder = embedder is not None
        self._indexes: dict[str, SearchIndex] = {}
        self._writing: Store | None = None
        self._facets: tuple[int, dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"<Collection {self.name!r} at {self.path}>"

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def use_embedder(self, embedder: Embedder) -> None:
        """Answer every query with ``embedder`` (the service passes one whose model calls are gated)."""
        self._embedder, self._explicit_embedder = embedder, True

    # -- writing ------------------------------------------------------------------------------

    @contextmanager
    def writer(self) -> Iterator[Collection]:
        """Hold the collection's writer lock for several writes (add_items, import_vectors,
        set_tags); each of them otherwise takes and releases it on its own."""
        if self._writing is not None:
            yield self
            return
        with disk_full_as_error(self.path, self.name):
            store = Store(self.path, create=True, writer=True)
            self._writing = store
            try:
                yield self
            finally:
                self._writing = None
                store.close()

    @contextmanager
    def _write(self) -> Iterator[Store]:
        if self._writing is not None:
            yield self._writing
        else:
            with self.writer():
                assert self._writing is not None
                yield self._writing

    def add_items(self, items: Sequence[Item] | Iterator[Item]) -> dict[str, int]:
        """Add or update items (without embedding them): counts of new, changed, updated, unchanged."""
        with self._write() as store:
            return store.sync_items(items)

    def import_vectors(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        *,
        fingerprint: ModelFingerprint,
        space: str | None = None,
        batch: int = 50_000,
        on_bad: str | Callable[[int, str, str], None] = "raise",
        checkpoint: tuple[str, str] | None = None,
    ) -> Space:
        """Store ready-made vectors (from another tool, or a benchmark) for existing items, into
        ``space`` (created for ``fingerprint``, or checked to be the same model). Rows are
        normalised; non-finite or zero rows are refused with their index.

        ``on_bad="raise"`` (the default) stops at the first bad row (non-finite, zero, or an id
        that is not an item): rows of earlier batches stay stored. A callable ``on_bad(index,
        id, reason)`` is told about each bad row instead, which is skipped, and the rest are
        stored. ``checkpoint=(key, value)`` is written to the collection's state (see
        ``state``) in the transaction that commits the last batch: a resumable importer's cursor."""
        if on_bad != "raise" and not callable(on_bad):
            raise ValueError("on_bad is 'raise' or a callable(index, id, reason)")
        matrix = np.asarray(vectors, np.float32)
        if matrix.ndim != 2 or matrix.shape != (len(ids), fingerprint.dim):
            raise QueryError(f"Expected {len(ids)} vectors of {fingerprint.dim} dimensions, got shape {matrix.shape}.")
        name = space or space_name_for(fingerprint.spec)
        with self._write() as store:
            store.ensure_space(name, fingerprint)
            known = store.fingerprints_of(list(ids))
            missing = [i for i in ids if i not in known]
            if missing and on_bad == "raise":
                raise QueryError(
                    f"{len(missing)} ids are not items of collection {self.name!r} (first: {missing[0]!r}); add_items first."
                )
            meta = dict([checkpoint]) if checkpoint else None
            if not len(ids) and meta:
                store.add_vectors(name, [], np.zeros((0, fingerprint.dim), np.float32), meta=meta)
            for start in range(0, len(ids), batch):
                chunk = matrix[start : start + batch]
                chunk_ids = ids[start : start + batch]
                with np.errstate(over="ignore", invalid="ignore"):
                    norms = np.linalg.norm(chunk, axis=1)
                bad = np.flatnonzero(~np.isfinite(norms) | (norms < 1e-12))
                if len(bad) and on_bad == "raise":
                    raise QueryError(
                        f"Vector {start + int(bad[0])} (id {ids[start + int(bad[0])]!r}) is not finite or is zero; nothing after row {start} was stored."
                    )
                keep = np.ones(len(chunk), bool)
                keep[bad] = False
                if callable(on_bad):
                    for b in bad:
                        on_bad(
                            start + int(b),
                            chunk_ids[int(b)],
                            "zero vector" if np.isfinite(norms[b]) else "not finite (NaN or infinity)",
                        )
                    for n, i in enumerate(chunk_ids):
                        if keep[n] and i not in known:
                            keep[n] = False
                            on_bad(start + n, i, "not an item of the collection")
                rows = np.flatnonzero(keep).tolist()
                last = start + batch >= len(ids)
                store.add_vectors(name, [(chunk_ids[r], known[chunk_ids[r]]) for r in rows], chunk[rows] / norms[rows, None],
                                  meta=meta if last else None)  # fmt: skip
            store.compact(name)  # only if dead rows have piled up
            return store.space(name)

    def compact(self, space: str | None = None) -> int:
        """Rewrite the space's vector file without its dead rows (see ``Store.compact``); returns
        the rows reclaimed. Searches running meanwhile, here or in other processes, stay correct."""
        name = self.space(space).name
        with self._write() as store:
            return store.compact(name, force=True)

    def iter_vectors(self, space: str | None = None, *, chunk: int = 50_000) -> Iterator[tuple[list[str], np.ndarray]]:
        """(ids, vectors) of every item embedded in ``space``, in row order, ``chunk`` rows at a
        time (an export of millions never holds them all in memory)."""
        sp = self.space(space)
        ids, rows = self._store.live_vectors(sp.name)
        matrix = self._store.vector_file(sp).matrix(sp.rows)
        for start in range(0, len(ids), chunk):
            yield ids[start : start + chunk], np.asarray(matrix[rows[start : start + chunk]], np.float32)

    def state(self, key: str) -> str | None:
        """A small persistent value of the collection (an importer's or enricher's cursor)."""
        return self._store.get_meta(key)

    def set_state(self, key: str, value: str | None) -> None:
        with self._write() as store:
            store.set_meta(key, value)

    def set_tags(self, name: str, classifier: str, tags: Sequence[tuple[str, str, float]]) -> None:
        """Replace the tag ``name`` (e.g. a classifier's label) on items: (id, value, score).
        Tags are filterable like metadata: ``where=["name=value"]``."""
        with self._write() as store:
            store.set_tags(name, classifier, tags)

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
        **source_options: Any,
    ) -> IngestReport:
        """Add (or update) the items of ``source`` without embedding them (see ``index``).

        Harvests page by page and stores a cursor after each page, so an interrupted run (a
        kill, a 429 ban) resumes after the last stored page; ``restart`` starts from the top.
        ``source_options`` go to the source: ``lang`` (IIIF, loc.gov), ``alto`` (IIIF: "auto" or
        an ALTO URL template), ``check_type`` (URL lists: ask each URL's content type)."""
        with _writer(self.path) as store, _fetcher(self.path, fetcher) as http:
            src = open_source(source, fetcher=http, limit=limit, images=images, min_size=min_size, **source_options)
            report = IngestReport(collection=self.name, source=src.spec)
            cursor_key = f"cursor:{src.spec}"
            cursor = None if restart else store.get_meta(cursor_key)
            report.resumed = cursor is not None
            seen: set[str] = set()
            moved_from: set[str] = set()
            started = time.perf_counter()
            try:
                for items, next_cursor in src.pages(cursor):
                    counts = store.sync_items(items, moved_from)
                    for key in ("new", "changed", "updated", "moved", "unchanged"):
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
            report.skipped = dict(sorted(getattr(src, "skip_counts", {}).items()))
            if src.complete and not report.interrupted and not report.resumed:
                report.removed = store.remove_missing(src.spec, seen)
                # A source whose items this one took over and which is itself gone was moved here
                # (`mv b1 b2`): what it held and this one does not list was deleted meanwhile.
                for old in moved_from - {src.spec}:
                    if source_gone(old):
                        report.removed += store.remove_missing(old, seen)
            report.seconds = time.perf_counter() - started
        return report

    def index(
        self,
        source: str | None = None,
        *,
        model: str | None = None,
        space: str | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        decode: str = "auto",
        device: str | None = None,
        threads: int | None = None,
        retry_failed: bool = False,
        reembed: bool = False,
        compact: bool = False,
        max_pixels: int | None = None,
        max_decode_bytes: int | None = None,
        progress: ProgressCallback | None = None,
        on_scan: ProgressCallback | None = None,
        limit: int | None = None,
        fetcher: Fetcher | None = None,
    ) -> IndexReport:
        """Add ``source``'s items (a folder, URL list, IIIF manifest, loc.gov search or ALTO pages;
        see ``vitrina.sources``) and embed every item that lacks a current vector.

        Without ``model``, the collection's own model is used (or the default for a new one).
        ``batch_size``, ``workers`` (decoders) and ``decode`` ("threads", "processes" or "auto")
        default to what suits ``device``; see ``vitrina.reader``.
        Dead rows (of re-embedded or removed items) are reclaimed when they pass a quarter of the
        vector file, or always with ``compact``."""
        spec, space = self.model_and_space(model, space)
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
            embedder = (
                self._embedder
                if self._embedder is not None and self._embedder.fingerprint.spec == spec
                else get_embedder(spec, device=device, threads=threads)
            )
            if reembed and space in {s.name for s in store.spaces()}:
                store.drop_space(space)
            store.ensure_space(space, embedder.fingerprint)
            try:
                embed_pending(store, embedder, space, report, batch_size=batch_size, workers=workers, decode=decode, retry_failed=retry_failed,
                              max_pixels=max_pixels, max_decode_bytes=max_decode_bytes, progress=progress, fetcher=http)  # fmt: skip
            except KeyboardInterrupt:
                report.interrupted = True
            if not report.interrupted:
                store.compact(space, force=compact)
        self._store.close_vector_files()
        self._indexes.clear()
        return report

    def model_and_space(self, model: str | None, space: str | None) -> tuple[str, str]:
        """The model spec and space an indexing run writes: the given ones, else the space's own
        model, else the collection's first space, else the default model and its space name."""
        spaces = {s.name: s for s in self._store.spaces()}
        if model is None and space in spaces:
            model = spaces[space].fingerprint.spec
        elif model is None and spaces and space is None:
            first = next(iter(spaces.values()))
            model, space = first.fingerprint.spec, first.name
        spec = resolve_model(model)
        return spec, space or space_name_for(spec)

    def build_ann(self, space: str | None = None, *, structure: str | None = None, codes: str | None = None, nlist: int | None = None,
                  rebuild: bool = False, threads: int | None = None, queries: np.ndarray | None = None, caption_queries: int = 0,
                  progress: ProgressCallback | None = None) -> Any:  # fmt: skip
        """Build (or bring up to date) the approximate index of a space: a derived file beside
        its vectors (see ``vitrina.index.ann``). Searches use it once it is written; a kill
        meanwhile leaves the previous index, or exact search. ``caption_queries``: embed up to
        this many of the items' captions (or titles) with the space's model and measure recall on
        them too — real text queries, which sit across the modality gap from the images."""
        from .index.ann import AnnParams, build_ann

        params = None
        if structure or codes or nlist:
            defaults = AnnParams()
            params = AnnParams(
                structure=structure or defaults.structure, codes=codes or defaults.codes, nlist=nlist or 0
            )
        sp = self.space(space)
        label = "given"
        if queries is None and caption_queries > 0 and "text" in sp.fingerprint.modalities:
            texts = self._caption_sample(caption_queries)
            try:
                embedder = self.embedder_for(sp) if texts else None
            except Exception as e:  # a measurement extra: no model here (offline, no cache) must not stop the build
                log.warning("recall on captions not measured: the model of space %s did not load (%s)", sp.name, e)
                embedder = None
            if embedder is not None:
                queries = np.concatenate([embedder.embed_texts(texts[i : i + 64]) for i in range(0, len(texts), 64)])
                label = "captions"
        return build_ann(
            self._store,
            sp.name,
            params,
            rebuild=rebuild,
            threads=threads,
            queries=queries,
            queries_label=label,
            progress=progress,
        )

    def _caption_sample(self, n: int) -> list[str]:
        """Up to ``n`` distinct captions (else titles) of indexed items, spread over the collection
        by a hash of the id, so the sample is the same on every build."""
        import zlib

        picked: list[tuple[int, str]] = []
        for item in self._store.iter_items(status="ok"):
            text = item.metadata.get("caption") or item.metadata.get("title")
            if isinstance(text, str) and text.strip():
                picked.append((zlib.crc32(item.id.encode()), text.strip()[:300]))
                if len(picked) > 4 * n:  # keep memory bounded on millions of items
                    picked = sorted(picked)[:n]
        return list(dict.fromkeys(t for _, t in sorted(picked)))[:n]

    # -- searching ----------------------------------------------------------------------------

    def search(
        self,
        text: Sequence[str] | str = (),
        image: Sequence[str] | str = (),
        *,
        alpha: float | None = None,
        where: Sequence[str | Filter] = (),
        min_score: float | None = None,
        limit: int = 10,
        offset: int = 0,
        include_self: bool = False,
        space: str | None = None,
        keywords: str = "",
        keyword_weight: float | None = None,
        fusion: str = "weighted",
        include_hidden: bool = False,
    ) -> Hits:
        """Search by text, by image (a path, URL or indexed item id), by keywords, or a mix.

        ``text`` terms may carry weights: "2:ship", "-0.5:colour" (negative pushes down).
        ``alpha`` mixes text and image: 0 = text only, 1 = image only (default: plain sum).
        ``where``: filters like "date>=1700", "place=Boston", "title~harbour".
        ``keywords``: words ranked by BM25 over titles, captions, subjects, notes and context
        text; alone, or fused with the CLIP ranking (``keyword_weight`` is the keyword side's
        share, default 0.4 when keywords are given; a weight without keywords reuses the text
        terms as keywords; ``fusion`` "weighted" (the default) or "rrf", see ``vitrina.index.keyword``).
        Items hidden by ``prune --hide`` are left out unless ``include_hidden``."""
        query = Query.build(text, image, where=where, alpha=alpha, min_score=min_score, limit=limit, offset=offset, include_self=include_self,
                            keywords=keywords, keyword_weight=keyword_weight, fusion=fusion, include_hidden=include_hidden)  # fmt: skip
        return self.run([query], space=space)[0]

    def run(self, queries: Sequence[Query], *, space: str | None = None) -> list[Hits]:
        """Run several queries; those with the same filters and paging share one pass over the vectors."""
        if not queries:
            return []
        results: list[Hits | None] = [None] * len(queries)
        with_vectors = [n for n, q in enumerate(queries) if q.mode != "keyword"]
        for n, q in enumerate(queries):
            if q.mode == "keyword":
                results[n] = self._keyword_only(q)
        if with_vectors:
            sp = self.space(space)
            built = [self._query_vector(queries[n], sp) for n in with_vectors]
            ranked = self._rank(
                sp, np.stack([b[0] for b in built]), [queries[n] for n in with_vectors], [b[1] for b in built]
            )
            for n, hits in zip(with_vectors, ranked):
                results[n] = hits
        return [r for r in results if r is not None]

    def _visible(self, q: Query) -> tuple[Filter, ...]:
        """The query's filters, plus one leaving out hidden items (unless it asks for them)."""
        if q.include_hidden or not self._store.hidden_count():
            return q.filters
        return (*q.filters, Filter(self._store.HIDDEN, "!=", "true"))

    def _keyword_only(self, q: Query) -> Hits:
        from .index.keyword import KeywordIndex

        kw = KeywordIndex(self._store)
        m = kw.search(q.keyword_text, filters=self._visible(q), limit=q.limit, offset=q.offset, min_score=q.min_score)
        return self._hits(m, q, kw.snippets(q.keyword_text, m.ids))

    def _hits(self, m: Any, q: Query, snippets: dict[str, list[tuple[str, bool]]]) -> Hits:
        items = self._store.get_items(m.ids)
        hits = [Hit(id=i, score=s, image=items[i].image, metadata=items[i].metadata, rank=q.offset + k, snippet=tuple(snippets.get(i, ())))
                for k, (i, s) in enumerate(zip(m.ids, m.scores), start=1) if i in items]  # fmt: skip
        return Hits(hits, total_considered=m.considered, query=q)

    def search_vectors(
        self,
        vectors: np.ndarray,
        *,
        where: Sequence[str | Filter] = (),
        min_score: float | None = None,
        limit: int = 10,
        offset: int = 0,
        space: str | None = None,
    ) -> list[Hits]:
        """Search with ready-made query vectors, shape (n, dim) or (dim,): one ``Hits`` per row."""
        sp = self.space(space)
        matrix = np.atleast_2d(np.asarray(vectors, np.float32))
        if (
            matrix.shape[1] != sp.fingerprint.dim
            or not np.isfinite(matrix).all()
            or not np.linalg.norm(matrix, axis=1).all()
        ):
            raise QueryError(
                f"Query vectors must be finite, non-zero and have {sp.fingerprint.dim} dimensions (space {sp.name!r}); got shape {matrix.shape}."
            )
        matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        query = Query.build("<vector>", where=where, min_score=min_score, limit=limit, offset=offset)
        return self._rank(sp, matrix, [query] * len(matrix), [set() for _ in matrix])

    def index_for(self, space: str | None = None) -> SearchIndex:
        """The search index of a space (see ``vitrina.index``)."""
        name = self.space(space).name
        if name not in self._indexes:
            self._indexes[name] = open_index(self._store, name, self.index_kind)
        return self._indexes[name]

    def _rank(self, sp: Space, qmat: np.ndarray, queries: Sequence[Query], excluded: Sequence[set[str]]) -> list[Hits]:
        index = self.index_for(sp.name)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for n, q in enumerate(queries):  # one pass over the vectors per distinct filter and page
            fused = q.mode == "fused"
            groups.setdefault((self._visible(q), q.limit, q.offset, q.min_score, fused), []).append(n)
        results: list[Hits | None] = [None] * len(queries)
        for (filters, limit, offset, min_score, fused), members in groups.items():
            if fused:  # the CLIP side's top DEPTH, through whichever index serves the space
                for n, fused_hits in self._fused(sp, index, qmat, queries, excluded, members, filters):
                    results[n] = fused_hits
                continue
            found = index.search(
                qmat[members],
                filters=filters,
                exclude=[excluded[n] for n in members],
                limit=limit,
                offset=offset,
                min_score=min_score,
            )
            items = self._store.get_items(sorted({i for m in found for i in m.ids}))
            for n, m in zip(members, found):
                hits = [Hit(id=i, score=s, image=items[i].image, metadata=items[i].metadata, rank=offset + k)
                        for k, (i, s) in enumerate(zip(m.ids, m.scores), start=1) if i in items]  # fmt: skip
                results[n] = Hits(hits, total_considered=m.considered, query=queries[n])
        return [r for r in results if r is not None]

    def _fused(self, sp: Space, index: SearchIndex, qmat: np.ndarray, queries: Sequence[Query], excluded: Sequence[set[str]], members: list[int],
               filters: tuple[Filter, ...]) -> list[tuple[int, Hits]]:  # fmt: skip
        """CLIP and keyword rankings of the same allowed items (passing the filters, with a vector
        in the space, not excluded), fused, then paged (see ``vitrina.index.keyword``)."""
        from .index.keyword import DEPTH, KeywordIndex, fused_page

        kw = KeywordIndex(self._store)
        clip = index.search(qmat[members], filters=filters, exclude=[excluded[n] for n in members], limit=DEPTH)
        # Only items with a vector in the space take part (usually all: then no list is built).
        with_vector = None if sp.live == self._store.item_count() else self._store.vector_rids(sp.name)[1]
        out = []
        for n, c in zip(members, clip):
            q = queries[n]
            words = kw.ranking(q.keyword_text, filters=filters, exclude=excluded[n], depth=DEPTH, only_rids=with_vector)
            m = fused_page(c, words, q.weight, q.fusion, limit=q.limit, offset=q.offset, min_score=q.min_score)
            out.append((n, self._hits(m, q, kw.snippets(q.keyword_text, m.ids))))
        return out

    def _query_vector(self, query: Query, sp: Space) -> tuple[np.ndarray, set[str]]:
        vectors, excluded = [], set()
        for term in query.terms:
            if term.kind == "text":
                vectors.append(self.embedder_for(sp).embed_texts([term.value])[0])
            elif term.kind == "vector":
                vec = np.asarray(term.data, np.float32)
                if vec.shape != (sp.fingerprint.dim,):
                    raise QueryError(
                        f"Vector term {term.value!r} has shape {vec.shape}; space {sp.name!r} needs ({sp.fingerprint.dim},)."
                    )
                vectors.append(vec)
            else:
                vec, item_id = self._image_term(term.value, sp)
                vectors.append(vec)
                if item_id is not None and not query.include_self:
                    excluded.add(item_id)
        return combine(np.stack(vectors), query.terms, query.alpha), excluded

    def _image_term(self, value: str, sp: Space) -> tuple[np.ndarray, str | None]:
        """An image term: an http(s) URL, a file, or the id of an indexed item (its stored vector
        is reused, and the item itself is left out of the hits)."""
        # A file on disk, then an indexed item (ids are often URLs: IIIF canvases), then a URL to fetch.
        if os.path.isfile(os.path.expanduser(value)):
            return self.image_vector(value, space=sp.name), None
        stored = self.index_for(sp.name).vectors([value])
        if value in stored:
            return stored[value], value
        if value.startswith(("http://", "https://")):
            return self.image_vector(value, space=sp.name), None
        raise QueryError(
            f"Image {value!r} is not a file, an http(s) URL, or the id of an item in collection {self.name!r}."
        )

    def image_vector(self, image: str | bytes, *, space: str | None = None) -> np.ndarray:
        """Embed a query image — a file path, an http(s) URL or the bytes of an upload — within
        ``self.limits`` (bytes, pixels, private addresses, download time)."""
        sp = self.space(space)
        limits = self.limits
        source: str | bytes
        if isinstance(image, bytes):
            if len(image) > limits.max_bytes:
                from .errors import ImageError

                raise ImageError(
                    "too_large", f"The image is {len(image)} bytes; at most {limits.max_bytes} are accepted."
                )
            source = image
        elif image.startswith(("http://", "https://")):
            from .http import fetch_bytes

            source = fetch_bytes(
                image, max_bytes=limits.max_bytes, timeout=limits.timeout, allow_private=limits.allow_private
            )
        else:
            source = os.path.expanduser(image)
        embedder = self.embedder_for(sp)
        # Decoded exactly as the indexer decodes, so a file and its indexed copy score 1.0; the
        # decoded image counts against the process's decode budget until it is embedded.
        with hold_decoded():
            decoded = load_image(source, min_side=embedder.min_side, max_pixels=limits.max_pixels)
            return embed_images(embedder, [decoded])[0]

    def embedder_for(self, sp: Space | str | None = None) -> Embedder:
        """The model that made space ``sp``, loaded once per process. An embedder given to
        ``open_collection`` is used for every space, and refused where it does not fit."""
        if not isinstance(sp, Space):
            sp = self.space(sp)
        if self._embedder is not None and (
            self._explicit_embedder or self._embedder.fingerprint.compatible(sp.fingerprint)
        ):
            embedder = self._embedder
        else:
            embedder = get_embedder(sp.fingerprint.spec)
            if self._embedder is None:
                self._embedder = embedder
        if not embedder.fingerprint.compatible(sp.fingerprint):
            fp = embedder.fingerprint
            raise SpaceMismatch(
                f"Space {sp.name!r} of collection {self.name!r} was built with {sp.fingerprint.describe()}; "
                f"the query model is {fp.describe()}. Search with the same model, or index with this one into a new space (--space)."
            )
        if sp.fingerprint.provisional and not embedder.fingerprint.provisional:
            self._pin(sp, embedder.fingerprint)
        return embedder

    def _pin(self, sp: Space, fingerprint: ModelFingerprint) -> None:
        """Imported vectors declared a model that was not loaded then: now that it is (same spec,
        same dimension), record its real fingerprint, so a later different revision is refused.
        Skipped (and tried again next time) while another process holds the writer lock."""
        try:
            with self._write() as store:
                store.pin_fingerprint(sp.name, fingerprint)
        except (StoreLocked, OSError, sqlite3.Error):
            pass

    # -- pruning ------------------------------------------------------------------------------

    def prune(self, where: Sequence[str | Filter], *, action: str = "hide") -> dict[str, Any]:
        """Hide the items passing ``where`` from results (``hide``, reversible with ``unhide``), or
        delete them with their vectors (``delete``: the vector files are compacted, and a later
        ingest does not bring them back). E.g. ``where=["kind=blank"]`` after ``classify --tag kind``."""
        from .filters import parse_filters

        if action not in ("hide", "unhide", "delete"):
            raise QueryError(f"Unknown prune action {action!r}; use hide, unhide or delete.")
        filters = parse_filters(where)
        if not filters and action != "unhide":
            raise QueryError(
                "Pruning needs at least one --where filter (e.g. --where 'kind=blank'); it never prunes a whole collection."
            )
        if action == "unhide":
            filters = (*filters, Filter(self._store.HIDDEN, "=", "true"))
        rids = np.flatnonzero(self._store.filter_mask(filters)[:-1])
        ids = sorted(self._store.ids_of_rids(rids.tolist()).values())
        reason = " ".join(str(f) for f in filters)
        out: dict[str, Any] = {"action": action, "matched": len(ids)}
        with self._write() as store:
            if action == "delete":
                before = self._disk_bytes()
                out["deleted"] = store.delete_items(ids, reason)
                for sp in store.spaces():
                    store.compact(sp.name, force=True)
                saved = max(0, before - self._disk_bytes())
                total = int(store.get_meta("pruned_bytes_saved") or 0) + saved
                store.set_meta("pruned_bytes_saved", str(total))
                out["bytes_saved"] = saved
            else:
                out["changed"] = store.set_hidden(ids, action == "hide", reason)
        self._facets = None
        return out

    def _disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    # -- describing ---------------------------------------------------------------------------

    def spaces(self) -> list[Space]:
        return self._store.spaces()

    def space(self, name: str | None = None) -> Space:
        """A space by name (default: the first); NoEmbeddings / NoSuchSpace when there is none."""
        return self._store.space(name)

    def fingerprint(self, space: str | None = None) -> ModelFingerprint:
        return self.space(space).fingerprint

    def vectors(self, space: str | None = None) -> tuple[list[str], np.ndarray]:
        """(ids, vectors) of every item embedded in ``space``, the vectors as one float32 array."""
        return self.index_for(space).matrix()

    def _index_info(self, space: str) -> dict[str, Any]:
        from .index.ann import AnnIndex

        described = AnnIndex(self._store, space).describe()
        return {"index": described["kind"], **({"ann": described["ann"]} if "ann" in described else {})}

    def __len__(self) -> int:
        return sum(self._store.count_items().values())

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and bool(self._store.get_items([item_id]))

    def item(self, item_id: str) -> Item:
        """One item with its status and classifier tags; QueryError if there is none."""
        found = self._store.get_items([item_id], tags=True).get(item_id)
        if found is None:
            raise QueryError(f"No item {item_id!r} in collection {self.name!r}.")
        return found

    def items(self, ids: Sequence[str]) -> dict[str, Item]:
        """Items by id (missing ids are left out)."""
        return self._store.get_items(list(ids))

    def iter_items(self, *, status: str | None = None, exclude_status: str | None = None) -> Iterator[Item]:
        """Every item in id order, streamed; ``status`` 'ok', 'failed' or 'pending' narrows it."""
        return self._store.iter_items(status=status, exclude_status=exclude_status)

    def facets(self) -> dict[str, Any]:
        """Metadata keys (and tags) with their most common values and numeric ranges, for filter
        menus; recomputed only when the collection changed."""
        version = self._store.data_version()
        if self._facets is None or self._facets[0] != version:
            self._facets = (version, self._store.facets())
        return self._facets[1]

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
                {
                    "name": s.name,
                    "model": s.fingerprint.spec,
                    "revision": s.fingerprint.revision,
                    "dim": s.fingerprint.dim,
                    "vectors": s.live,
                    "dead_rows": s.rows - s.live,
                    "preprocessing": s.fingerprint.preprocessing,
                    **self._index_info(s.name),
                }
                for s in self._store.spaces()
            ],  # fmt: skip
            "pruned": {
                "hidden": self._store.hidden_count(),
                "deleted": self._store.pruned_count(),
                "bytes_saved": int(self._store.get_meta("pruned_bytes_saved") or 0),
            },
            "schema_version": self._store.schema_version(),
            "disk_bytes": size,
        }
        if check:
            out["problems"] = self._store.check()
        return out

    # --- runs driven by the CLI (cli helper) ---

    def sync(
        self, target: str, *, space: str | None = None, shards: int | None = None, replicas: int | None = None
    ) -> Any:
        """Copy ``space``'s vectors and metadata (default: the first space) to the Qdrant collection
        ``target`` (``qdrant+http://HOST:PORT/NAME`` or ``qdrant:PATH#NAME``), incrementally;
        ``shards`` and ``replicas`` apply when it is created. Returns a ``vitrina.index.qdrant.SyncReport``."""
        from .index.qdrant import sync

        return sync(self._store, self.space(space).name, target, shards=shards, replicas=replicas)


class _writer:
    """The store opened for writing (holding the writer lock) for the length of a ``with``."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Store:
        self.disk = disk_full_as_error(self.path, self.path.name)
        self.disk.__enter__()
        try:
            self.store = Store(self.path, create=True, writer=True)
        except BaseException as e:
            self.disk.__exit__(type(e), e, e.__traceback__)
            raise
        return self.store

    def __exit__(self, *exc: Any) -> None:
        self.store.close()
        self.disk.__exit__(*exc)  # raises DiskFull in place of a full disk's raw error


@dataclass
class IngestReport:
    collection: str
    source: str
    found: int = 0
    new: int = 0
    changed: int = 0
    updated: int = 0  # metadata or context text changed, image unchanged: no re-embedding
    moved: int = 0  # same content, now listed by this source or at a new location: no re-embedding
    unchanged: int = 0
    removed: int = 0
    pages: int = 0
    requests: int = 0
    resumed: bool = False
    interrupted: bool = False
    message: str = ""
    problems: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # what the source did not ingest, by kind or reason
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
