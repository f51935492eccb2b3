"""``Collection``: the public face of one collection: index it, search it, describe it.

Its methods are thin: sources fill the store (``vitrina.ingest``), the indexer embeds
(``vitrina.indexer``), queries are answered by ``vitrina.search.Searcher`` (given the store, the
index chooser ``index_for``, ``embedder_for`` and ``image_vector``), and pruning and approximate
indexes are ``vitrina.upkeep``. The search options are declared in ``vitrina.options``. Nothing
outside ``store`` and ``index`` knows about vector rows or SQL.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import ingest as _ingest
from . import upkeep
from .collection_view import CollectionView
from .embedding import Embedder, get_embedder, space_name_for
from .errors import SpaceMismatch, StoreLocked
from .filters import Filter
from .http import Fetcher
from .indexer import IndexReport, ProgressCallback, index_space
from .ingest import IngestReport
from .ingest import collection_fetcher as _fetcher
from .ingest import writing_store as _writer
from .query import Hits, Query
from .records import Item, ModelFingerprint
from .search import ImageLimits, Searcher, query_image_vector
from .store import Curation, Space, Store, disk_full_as_error, resolve_collection

if TYPE_CHECKING:
    from .index.qdrant import SyncReport

__all__ = ["Collection", "ImageLimits", "IngestReport", "open_collection", "space_name_for"]


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


@contextmanager
def _curation_of(writing: AbstractContextManager[Store]) -> Iterator[Curation]:
    """The workbench's part of the store, under the writer lock ``writing`` holds."""
    with writing as store:
        yield store.curation()


class Collection(CollectionView):
    """One collection: what ``CollectionView`` reads, plus writing (through one writer lock),
    ingesting, indexing and searching. Open it with ``open_collection``."""

    def __init__(
        self,
        path: Path,
        *,
        create: bool = False,
        embedder: Embedder | None = None,
        limits: ImageLimits | None = None,
        index: str = "auto",
    ):
        super().__init__(path, create=create, index=index)
        self.limits = limits or ImageLimits()
        self._embedder = embedder
        self._explicit_embedder = embedder is not None
        self._writing: Store | None = None

    def _searcher(self) -> Searcher:
        # Made per call, not kept: a Searcher kept by the collection would form a reference cycle
        # (its collaborators are the collection's methods), so a dropped collection would hold its
        # SQLite connection, mapped files and a Qdrant folder lock until the cyclic GC ran.
        return Searcher(self._store, name=self.name, space=self.space, index_for=self.index_for,
                        embedder_for=self.embedder_for, image_vector=lambda image, sp: self.image_vector(image, space=sp.name))  # fmt: skip

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

    def curating(self) -> AbstractContextManager[Curation]:  # sets, labels, corrections (vitrina.workbench)
        return _curation_of(self._write())

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
        ``space`` (created for ``fingerprint``, or checked to be the same model); bad rows stop
        the import or go to ``on_bad``, see ``vitrina.ingest.import_vectors``."""
        with self._write() as store:
            return _ingest.import_vectors(store, self.name, space or space_name_for(fingerprint.spec), ids, vectors, fingerprint=fingerprint,
                                          batch=batch, on_bad=on_bad, checkpoint=checkpoint)  # fmt: skip

    def compact(self, space: str | None = None) -> int:
        """Rewrite the space's vector file without its dead rows (see ``Store.compact``); returns
        the rows reclaimed. Searches running meanwhile, here or in other processes, stay correct."""
        name = self.space(space).name
        with self._write() as store:
            return store.compact(name, force=True)

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
        return _ingest.ingest(self.path, source, limit=limit, images=images, min_size=min_size, restart=restart, fetcher=fetcher,
                              on_page=on_page, **source_options)  # fmt: skip

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
        regions: str | None = None,
    ) -> IndexReport:
        """Add ``source``'s items (a folder, URL list, IIIF manifest, loc.gov search or ALTO pages;
        see ``vitrina.sources``) and embed every item that lacks a current vector.

        Without ``model``, the collection's own model is used (or the default for a new one).
        ``batch_size``, ``workers`` (decoders) and ``decode`` ("threads", "processes" or "auto")
        default to what suits ``device``; see ``vitrina.reader``.
        Dead rows (of re-embedded or removed items) are reclaimed when they pass a quarter of the
        vector file, or always with ``compact``. ``regions`` ("auto", "grid" or "off"; None:
        as last time) also embeds boxes of large images, see ``vitrina.regions``."""
        spec, space = self.model_and_space(model, space)
        ingested = None if source is None else self.ingest(source, limit=limit, fetcher=fetcher, on_page=on_scan)
        mine = self._embedder if self._embedder is not None and self._embedder.fingerprint.spec == spec else None
        with _writer(self.path) as store, _fetcher(self.path, fetcher) as http:
            report = index_space(store, self.name, space, spec, ingested=ingested, embedder=mine, device=device,
                                 threads=threads, reembed=reembed, compact=compact, batch_size=batch_size, workers=workers,
                                 decode=decode, retry_failed=retry_failed, max_pixels=max_pixels,
                                 max_decode_bytes=max_decode_bytes, progress=progress, fetcher=http, regions=regions)  # fmt: skip
        self._store.close_vector_files()
        self._drop_indexes()
        return report

    def build_ann(self, space: str | None = None, *, structure: str | None = None, codes: str | None = None, nlist: int | None = None,
                  rebuild: bool = False, threads: int | None = None, queries: np.ndarray | None = None, caption_queries: int = 0,
                  progress: ProgressCallback | None = None, target_recall: float | None = 0.98, max_latency_ms: float | None = None) -> Any:  # fmt: skip
        """Build (or bring up to date) the approximate index of a space: a derived file beside
        its vectors (see ``vitrina.index.ann``); a kill meanwhile leaves the previous index, or
        exact search. ``caption_queries``: embed up to this many captions (or titles) as real text
        queries to measure (and tune) recall on. ``target_recall``: tune the search settings to it,
        or search exactly where the index cannot beat a scan (None: fixed settings; see upkeep)."""
        return upkeep.build_ann(self._store, self.space(space), self.embedder_for, structure=structure, codes=codes, nlist=nlist, rebuild=rebuild,
                                threads=threads, queries=queries, caption_queries=caption_queries, progress=progress,
                                target_recall=target_recall, max_latency_ms=max_latency_ms)  # fmt: skip

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
        Items hidden by ``prune --hide`` are left out unless ``include_hidden``. The options,
        their bounds and their spellings elsewhere (CLI, HTTP) are declared in ``vitrina.options``."""
        query = Query.build(text, image, where=where, alpha=alpha, min_score=min_score, limit=limit, offset=offset, include_self=include_self,
                            keywords=keywords, keyword_weight=keyword_weight, fusion=fusion, include_hidden=include_hidden)  # fmt: skip
        return self.run([query], space=space)[0]

    def run(self, queries: Sequence[Query], *, space: str | None = None) -> list[Hits]:
        """Run several queries; those with the same filters and paging share one pass over the vectors."""
        return self._searcher().run(queries, space=space)

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
        return self._searcher().search_vectors(
            vectors, where=where, min_score=min_score, limit=limit, offset=offset, space=space
        )

    def image_vector(self, image: str | bytes, *, space: str | None = None) -> np.ndarray:
        """Embed a query image — a file path, an http(s) URL or the bytes of an upload — within
        ``self.limits`` (bytes, pixels, private addresses, download time)."""
        sp = self.space(space)
        return query_image_vector(image, self.embedder_for(sp), self.limits)

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
        out = upkeep.prune(self._store, self.path, where, action, self._write)
        self._facets = None
        return out

    # --- runs driven by the CLI (cli helper) ---

    def sync(
        self, target: str, *, space: str | None = None, shards: int | None = None, replicas: int | None = None
    ) -> SyncReport:
        """Copy ``space``'s vectors and metadata (default: the first space) to the Qdrant collection
        ``target`` (``qdrant+http://HOST:PORT/NAME``, ``qdrant+edge:///FOLDER#NAME`` or ``qdrant:PATH#NAME``), incrementally;
        ``shards`` and ``replicas`` apply when it is created. What was copied, as a ``SyncReport``."""
        from .index.qdrant import sync

        return sync(self._store, self.space(space).name, target, shards=shards, replicas=replicas)

    def record_failures(
        self, space: str, fingerprint: ModelFingerprint, failures: Sequence[tuple[str, str, str]]
    ) -> None:
        """Mark items failed in ``space`` ((id, reason, detail)), creating the space if needed;
        idempotent, so safe to redo after a kill."""
        with self._write() as store:
            store.ensure_space(space, fingerprint)
            store.add_vectors(space, [], np.zeros((0, fingerprint.dim), np.float32), failures)
