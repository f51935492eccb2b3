"""Getting things into a collection without embedding them: a source's items, harvested page by
page with a resumable cursor (``ingest``), and ready-made vectors from another tool
(``import_vectors``). ``Collection.ingest`` and ``Collection.import_vectors`` are their faces."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import QueryError
from .http import Blocked, Fetcher
from .indexer import ProgressCallback
from .moves import carry_over_moves, hash_files
from .records import ModelFingerprint
from .sources import open_source, source_gone
from .store import CollectionPaths, Space, Store, disk_full_as_error

__all__ = ["IngestReport", "collection_fetcher", "import_vectors", "ingest", "writing_store"]

HASH_PART = 1000  # items synced and hashed between two progress updates


@dataclass
class IngestReport:
    collection: str
    source: str
    found: int = 0
    new: int = 0
    changed: int = 0
    updated: int = 0  # metadata or context text changed, image unchanged: no re-embedding
    moved: int = 0  # same content, now listed by this source or at a new location: no re-embedding
    moved_by_content: int = 0  # of ``moved``: files moved or renamed (a new id), recognised by their content hash
    hashed: int = 0  # local files whose content hash was computed (new, changed, or stored before hashing)
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
        return {**asdict(self), "seconds": round(self.seconds, 3)}


class writing_store:  # noqa: N801 (used as a function: ``with writing_store(path) as store``)
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


class collection_fetcher:  # noqa: N801 (used as a function)
    """The collection's HTTP client (cache in <collection>/cache/http), or the caller's."""

    def __init__(self, path: Path, given: Fetcher | None):
        self.path, self.given = path, given

    def __enter__(self) -> Fetcher:
        self.fetcher = self.given or Fetcher(cache_dir=CollectionPaths(self.path).http_cache)
        return self.fetcher

    def __exit__(self, *exc: object) -> None:
        if self.given is None:
            self.fetcher.close()


def ingest(
    path: Path,
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
    """Add (or update) the items of ``source`` to the collection at ``path``; see ``Collection.ingest``."""
    with writing_store(path) as store, collection_fetcher(path, fetcher) as http:
        src = open_source(source, fetcher=http, limit=limit, images=images, min_size=min_size, **source_options)
        report = IngestReport(collection=path.name, source=src.spec)
        cursor_key = f"cursor:{src.spec}"
        cursor = None if restart else store.get_meta(cursor_key)
        report.resumed = cursor is not None
        seen: set[str] = set()
        moved_from: set[str] = set()
        started = time.perf_counter()
        try:
            for items, next_cursor in src.pages(cursor):
                # In parts, so the count moves while new files are hashed (a folder is one page).
                in_page: set[str] = set()  # the same id twice in a page: the first wins, as in sync_items
                for start in range(0, len(items), HASH_PART):
                    part = []
                    for item in items[start : start + HASH_PART]:
                        if item.id not in in_page:
                            in_page.add(item.id)
                            part.append(item)
                    counts = store.sync_items(part, moved_from)
                    for key in ("new", "changed", "updated", "moved", "unchanged"):
                        setattr(report, key, getattr(report, key) + counts[key])
                    report.hashed += hash_files(store, [item.id for item in part])
                    report.found += min(HASH_PART, len(items) - start)
                    if on_page:
                        on_page(report.found, 0)
                report.pages += 1
                seen.update(item.id for item in items)
                store.set_meta(cursor_key, next_cursor)
        except Blocked as e:
            report.interrupted, report.message = True, str(e)
        report.requests = http.requests
        report.problems = list(getattr(src, "problems", []))[:50] + list(getattr(src, "skipped", []))[:50]
        report.skipped = dict(sorted(getattr(src, "skip_counts", {}).items()))
        if src.complete and not report.interrupted and not report.resumed:
            # A source whose items this one took over and which is itself gone was moved here
            # (`mv b1 b2`): what it held and this one does not list was deleted meanwhile.
            gone_sources = [old for old in sorted(moved_from - {src.spec}) if source_gone(old)]
            # Before removing what is not listed: a file that is only elsewhere keeps its item (moves.py).
            carried = carry_over_moves(store, [src.spec, *gone_sources], seen)
            report.moved += carried
            report.moved_by_content = carried
            report.new = max(0, report.new - carried)
            report.removed = store.remove_missing(src.spec, seen)
            for old in gone_sources:
                report.removed += store.remove_missing(old, seen)
        report.seconds = time.perf_counter() - started
    return report


def import_vectors(
    store: Store,
    collection: str,
    name: str,
    ids: Sequence[str],
    vectors: np.ndarray,
    *,
    fingerprint: ModelFingerprint,
    batch: int = 50_000,
    on_bad: str | Callable[[int, str, str], None] = "raise",
    checkpoint: tuple[str, str] | None = None,
) -> Space:
    """Store ready-made vectors for existing items in space ``name`` of a store opened for writing
    (created for ``fingerprint``, or checked to be the same model). Rows are normalised.

    ``on_bad="raise"`` (the default) stops at the first bad row (non-finite, zero, or an id that
    is not an item): rows of earlier batches stay stored. A callable ``on_bad(index, id,
    reason)`` is told about each bad row instead, which is skipped, and the rest are stored.
    ``checkpoint=(key, value)`` is written to the collection's state (``Collection.state``) in
    the transaction that commits the last batch: a resumable importer's cursor."""
    if on_bad != "raise" and not callable(on_bad):
        raise ValueError("on_bad is 'raise' or a callable(index, id, reason)")
    matrix = np.asarray(vectors, np.float32)
    if matrix.ndim != 2 or matrix.shape != (len(ids), fingerprint.dim):
        raise QueryError(f"Expected {len(ids)} vectors of {fingerprint.dim} dimensions, got shape {matrix.shape}.")
    store.ensure_space(name, fingerprint)
    known = store.fingerprints_of(list(ids))
    missing = [i for i in ids if i not in known]
    if missing and on_bad == "raise":
        raise QueryError(
            f"{len(missing)} ids are not items of collection {collection!r} (first: {missing[0]!r}); add_items first."
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
