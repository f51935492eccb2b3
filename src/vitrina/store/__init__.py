"""The embedded collection store: SQLite (WAL) for items and state, one vector file per space.

``Store`` is a thin façade over the parts, each in its own module:

- ``paths``   the collection's folder layout (``CollectionPaths``), collection names and home
- ``schema``  the DDL, the FTS setup and the numbered migrations (``MIGRATIONS``)
- ``items``   items, their normalised values, tags, hiding and pruning
- ``masks``   filters as masks over item rids (cached per connection), facets
- ``spaces``  spaces, vector files, appends, dead rows, compaction
- ``regions`` region rows of items (boxes with their own vectors, see vitrina.regions)
- ``views``   ``SpaceView``: the read-only, typed view of a space that search backends use
- ``text``    the keyword (FTS5) queries
- ``words``   words read from the images (OCR) and their boxes
- ``curation`` sets, labels and corrections of tags by people (``curated``: their filter values)
- ``disk``    the writer lock, a full disk named (``disk_full_as_error``)
- ``check``   consistency checks

Backends and the rest of vitrina use ``Store``'s public methods and ``SpaceView``; none reads
``store.db`` or the parts directly.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CollectionNotFound
from ..filters import Filter
from ..records import Item, ModelFingerprint
from ..vectors import VectorFile
from . import check as _check
from .curation import ANSWERS, Curation
from .disk import acquire_writer_lock, disk_full_as_error, free_bytes
from .items import HIDDEN, Items
from .masks import MASKS_KEPT, Masks, match_column
from .moves import MOVED_KEY, Moves
from .paths import NAME_RE, CollectionPaths, default_home, resolve_collection
from .regions import RegionBatch, RegionRow
from .schema import FTS_COLUMNS, MIGRATIONS, SCHEMA_VERSION, schema_version, upgrade
from .spaces import Space, Spaces
from .sql import transaction
from .text import Text, watch
from .views import SpaceSnapshot, SpaceView, VectorPoint
from .words import Words

__all__ = ["ANSWERS", "FTS_COLUMNS", "Curation", "MASKS_KEPT", "MIGRATIONS", "MOVED_KEY", "Moves", "NAME_RE", "SCHEMA_VERSION", "CollectionPaths", "RegionBatch", "RegionRow", "Space",
           "SpaceSnapshot", "SpaceView", "Store", "VectorPoint", "default_home", "disk_full_as_error", "free_bytes",
           "resolve_collection"]  # fmt: skip


class Store:
    """Low-level access to one collection folder. ``Collection`` is the friendly face."""

    HIDDEN = HIDDEN  # the tag that hides an item from results (``vitrina prune --hide``)

    def __init__(self, path: Path, *, create: bool = False, writer: bool = False):
        self.path = path
        self.name = path.name
        self.paths = CollectionPaths(path)
        if not self.paths.db.exists():
            if not create:
                raise CollectionNotFound(
                    f"No collection at {path}. Create it with: vitrina index FOLDER --collection {path.name}"
                )
            self.paths.spaces_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = acquire_writer_lock(self.paths, self.name) if writer else None
        self.db = sqlite3.connect(self.paths.db, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.create_function("vitrina_match", 3, match_column, deterministic=True)
        watch(self.db)  # queries stop when the thread's budget is spent (store/text.py)
        self._items = Items(self.db)
        self._masks = Masks(self.db)
        self._spaces = Spaces(self.db, self.paths, self.name)
        self._text = Text(self.db)
        self._words = Words(self.db)
        try:
            lock = None if self._lock_fd is not None else (lambda: acquire_writer_lock(self.paths, self.name))
            upgrade(self.db, self.paths.db, create or writer, lock)
        except BaseException:
            self.close()
            raise
        self.db.execute("PRAGMA foreign_keys=ON")
        if writer:
            self._spaces.remove_stray_files()

    # -- connection, state --------------------------------------------------------------------

    def schema_version(self) -> int:
        return schema_version(self.db)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with transaction(self.db) as db:
            yield db

    def data_version(self) -> int:
        """Changes whenever another connection commits (for caches of what this one reads)."""
        return self._masks.data_version()

    def close(self) -> None:
        self.close_vector_files()
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        with self.transaction():
            if value is None:
                self.db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                self.db.execute(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value)
                )

    def check(self) -> list[str]:
        """Consistency problems, empty when the store is sound (used by `vitrina info --check`)."""
        return _check.check(self.db, self._spaces)

    def curation(self) -> Curation:
        """Sets, labels and corrections (curation.py); write through a writer store."""
        return Curation(self.db)

    def moves(self) -> Moves:
        """Content hashes and moved files carried over to their new ids (moves.py)."""
        return Moves(self.db)

    def space_view(self, name: str) -> SpaceView:
        """A read-only view of space ``name`` for search backends (see views.py)."""
        return SpaceView(self._spaces, self._items, self._masks, name)

    # -- items (items.py) ---------------------------------------------------------------------

    def sync_items(self, items: Iterable[Item], moved_from: set[str] | None = None) -> dict[str, int]:
        return self._items.sync_items(items, moved_from)

    def remove_missing(self, source: str, keep: set[str]) -> int:
        return self._items.remove_missing(source, keep)

    def pending(self, space: str, *, retry_failed: bool = False) -> list[sqlite3.Row]:
        return self._items.pending(space, retry_failed=retry_failed)

    def get_items(self, ids: Sequence[str], *, tags: bool = False) -> dict[str, Item]:
        return self._items.get_items(ids, tags=tags)

    def fingerprints_of(self, ids: Sequence[str]) -> dict[str, str]:
        return self._items.fingerprints_of(ids)

    def ids_of_rids(self, rids: Sequence[int]) -> dict[int, str]:
        return self._items.ids_of_rids(rids)

    def rids_of(self, ids: Sequence[str]) -> dict[str, int]:
        return self._items.rids_of(ids)

    def item_rids(self) -> np.ndarray:
        return self._items.item_rids()

    def iter_items(self, *, status: str | None = None, exclude_status: str | None = None) -> Iterator[Item]:
        return self._items.iter_items(status=status, exclude_status=exclude_status)

    def item_count(self) -> int:
        return self._items.item_count()

    def count_items(self) -> dict[str, int]:
        return self._items.count_items()

    def failures(self) -> list[sqlite3.Row]:
        return self._items.failures()

    def set_tags(self, name: str, classifier: str, tags: Sequence[tuple[str, str, float]]) -> None:
        self._items.set_tags(name, classifier, tags)

    def tags_of(self, item_id: str) -> dict[str, dict[str, Any]]:
        return self._items.tags_of(item_id)

    def first_values(self, key: str) -> dict[str, str] | None:
        return self._items.first_values(key)

    def set_hidden(self, ids: Sequence[str], hidden: bool, reason: str = "") -> int:
        return self._items.set_hidden(ids, hidden, reason)

    def hidden_count(self) -> int:
        return self._items.hidden_count()

    def delete_items(self, ids: Sequence[str], reason: str) -> int:
        return self._items.delete_items(ids, reason)

    def pruned_count(self) -> int:
        return self._items.pruned_count()

    # -- filters (masks.py) -------------------------------------------------------------------

    def filter_mask(self, filters: Sequence[Filter]) -> np.ndarray:
        return self._masks.filter_mask(filters)

    def matching_rids(self, f: Filter) -> np.ndarray:
        return self._masks.matching_rids([f])

    def facets(self, keys: Sequence[str] | None = None, top: int = 50) -> dict[str, Any]:
        return self._masks.facets(keys, top)

    # -- keyword search (text.py) -------------------------------------------------------------

    def keyword_ranking(self, expression: str, weights: Sequence[float]) -> Iterator[list[tuple[int, float]]]:
        """(rid, BM25 score) of the items matching an FTS5 expression, best first, in chunks."""
        return self._text.ranked(expression, weights)

    def keyword_matching(self, expression: str, most: int) -> int:
        """How many items match an FTS5 expression, counted up to ``most``."""
        return self._text.matching(expression, most)

    def keyword_snippets(self, expression: str, rids: Sequence[int], words: int) -> dict[int, str]:
        return self._text.snippets(expression, rids, words)

    def keyword_prefix_terms(self, prefix: str, limit: int) -> list[str]:
        """The indexed words ``prefix*`` expands to, at most ``limit``."""
        return self._text.prefix_terms(prefix, limit)

    # -- words read from the images (words.py) ------------------------------------------------

    def ocr_pending(self, engine: str, *, retry_failed: bool = False, reread: bool = False) -> list[sqlite3.Row]:
        return self._words.pending(engine, retry_failed=retry_failed, reread=reread)

    def save_words(self, rid: int, fingerprint: str, engine: str, words: Sequence[Any], size: tuple[int, int]) -> None:
        self._words.save(rid, fingerprint, engine, words, size)

    def save_ocr_failure(self, rid: int, fingerprint: str, engine: str, reason: str, detail: str) -> None:
        self._words.save_failure(rid, fingerprint, engine, reason, detail)

    def words_of(self, rid: int, terms: Sequence[str] = (), prefixes: Sequence[str] = (), limit: int = 200) -> list[dict[str, Any]]:  # fmt: skip
        return self._words.words_of(rid, terms, prefixes, limit)

    def ocr_page(self, rid: int) -> dict[str, Any] | None:
        return self._words.page(rid)

    def ocr_counts(self) -> dict[str, int]:
        return self._words.counts()

    def ocr_failures(self, limit: int = 1000) -> list[sqlite3.Row]:
        return self._words.failures(limit)

    def ocr_as_read(self, rid: int, snippet: str) -> str | None:
        """A snippet of the item's OCR words with the words as read (words.py ``as_read``)."""
        return self._words.as_read(rid, snippet)

    def similar_terms(self, term: str) -> list[str]:
        """OCR vocabulary terms sharing trigrams with ``term`` (candidates for a misread match)."""
        return self._words.similar_terms(term)

    # -- spaces and vectors (spaces.py) -------------------------------------------------------

    def spaces(self) -> list[Space]:
        return self._spaces.spaces()

    def space(self, name: str | None = None) -> Space:
        return self._spaces.space(name)

    def ensure_space(self, name: str, fingerprint: ModelFingerprint) -> Space:
        return self._spaces.ensure_space(name, fingerprint)

    def pin_fingerprint(self, name: str, fingerprint: ModelFingerprint) -> bool:
        return self._spaces.pin_fingerprint(name, fingerprint)

    def drop_space(self, name: str) -> None:
        self._spaces.drop_space(name)

    def needs_compaction(self, space: Space) -> bool:
        return self._spaces.needs_compaction(space)

    def compact(self, name: str, *, force: bool = False) -> int:
        return self._spaces.compact(name, force=force)

    def vector_file(self, space: Space, writable: bool = False) -> VectorFile:
        return self._spaces.vector_file(space, writable)

    def close_vector_files(self) -> None:
        self._spaces.close_vector_files()

    def add_vectors(self, space_name: str, items: Sequence[tuple[str, str]], vectors: np.ndarray, failures: Sequence[tuple[str, str, str]] = (),
                    meta: dict[str, str] | None = None, regions: RegionBatch | None = None) -> None:  # fmt: skip
        self._spaces.add_vectors(space_name, items, vectors, failures, meta, regions)

    def live_vectors(self, space: str) -> tuple[list[str], np.ndarray]:
        return self._spaces.live_vectors(space)

    def vector_rids(self, space: str, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        return self._spaces.vector_rids(space, start)

    def dead_rows(self, space: str) -> np.ndarray:
        return self._spaces.dead_rows(space)

    def rows_of(self, space: str, ids: Sequence[str]) -> dict[str, int]:
        return self._spaces.rows_of(space, ids)

    # -- regions (regions.py) -----------------------------------------------------------------

    def pending_regions(self, space: str, cut: str, *, retry_failed: bool = False) -> list[sqlite3.Row]:
        return self._spaces.regions.pending(space, cut, retry_failed=retry_failed)

    def region_count(self, space: str) -> int:
        return self._spaces.regions.count(space)

    def most_regions_per_item(self, space: str) -> int:
        return self._spaces.regions.most_per_item(space)

    def items_with_regions(self, space: str) -> int:
        return self._spaces.regions.items_with_regions(space)

    def regions_of(self, space: str, rids: Sequence[int]) -> list[RegionRow]:
        return self._spaces.regions.of_items(space, rids)

    def drop_regions(self, space: str) -> None:
        with self.transaction():
            self._spaces.regions.drop(space)
