"""The embedded collection store: SQLite (WAL) for items and state, one vector file per space.

    <collection>/
      collection.sqlite     items, spaces, which vector row belongs to which item
      spaces/<space>.<n>.f32  vectors (see vectors.py); a re-embed or a compaction writes a new
                            file and switches the space to it in one transaction
      writer.lock           held (flock) by the one process allowed to write

Write order for a batch of vectors: rows written to the vector file and fsynced, then one SQLite
transaction maps them to items and raises the space's committed row count. A kill between the two
leaves unreferenced rows past the count, which the next append overwrites. Re-embedding an item
appends a new row and records the old one as dead; dead rows are masked at search time, and
reclaimed by ``compact`` (see there) once they are a large share of the file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CollectionNotFound, DiskFull, NoEmbeddings, NoSuchSpace, SpaceMismatch, StoreCorrupt, StoreLocked
from .files import fsync_dir
from .filters import COLUMNS, Filter, matches, normal_values
from .records import Item, ModelFingerprint
from .vectors import VectorFile

SCHEMA_VERSION = 6
MASKS_KEPT = 4  # filter masks cached per connection (a bool per item each: 10 MB at 10M items)
# Version 1, as the first release wrote it; later versions are the numbered migrations below.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    image       TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    context     TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL DEFAULT 'pending',  -- pending | ok | failed (for this fingerprint)
    reason      TEXT,
    detail      TEXT,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_source ON items(source);
CREATE TABLE IF NOT EXISTS spaces (
    name        TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    rows        INTEGER NOT NULL DEFAULT 0,  -- committed rows of the vector file
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    space       TEXT NOT NULL REFERENCES spaces(name) ON DELETE CASCADE,
    item_id     TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    row         INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,  -- the item fingerprint this vector was computed from
    PRIMARY KEY (space, item_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS vectors_row ON vectors(space, row);
CREATE TABLE IF NOT EXISTS tags (
    item_id     TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,  -- e.g. "page_kind": usable in filters like any metadata key
    value       TEXT NOT NULL,
    score       REAL,
    classifier  TEXT NOT NULL,  -- what produced it, e.g. "probe:page_kind@mini"
    PRIMARY KEY (item_id, name)
);
CREATE INDEX IF NOT EXISTS tags_name ON tags(name, value);
CREATE TABLE IF NOT EXISTS dead_rows (space TEXT NOT NULL, row INTEGER NOT NULL, PRIMARY KEY (space, row));
CREATE TRIGGER IF NOT EXISTS vectors_dead_on_delete AFTER DELETE ON vectors BEGIN
    INSERT OR IGNORE INTO dead_rows VALUES (old.space, old.row);
END;
CREATE TRIGGER IF NOT EXISTS vectors_dead_on_update AFTER UPDATE OF row ON vectors WHEN old.row != new.row BEGIN
    INSERT OR IGNORE INTO dead_rows VALUES (old.space, old.row);
END;
"""

MIGRATION_2 = """
CREATE TABLE items_v2 (
    rid         INTEGER PRIMARY KEY,  -- a compact key for filters and vector rows
    id          TEXT NOT NULL UNIQUE,
    source      TEXT NOT NULL,
    image       TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    context     TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL DEFAULT 'pending',
    reason      TEXT,
    detail      TEXT,
    updated_at  REAL NOT NULL
);
INSERT INTO items_v2 (rid, id, source, image, metadata, context, fingerprint, status, reason, detail, updated_at)
    SELECT rowid, id, source, image, metadata, context, fingerprint, status, reason, detail, updated_at FROM items;
DROP TABLE items;
ALTER TABLE items_v2 RENAME TO items;
CREATE INDEX items_source ON items(source);
CREATE INDEX items_status ON items(status);
ALTER TABLE vectors ADD COLUMN rid INTEGER;
UPDATE vectors SET rid = (SELECT rid FROM items WHERE items.id = vectors.item_id);
CREATE INDEX vectors_space_row_rid ON vectors(space, row, rid);
CREATE TABLE item_values (
    rid   INTEGER NOT NULL REFERENCES items(rid) ON DELETE CASCADE,
    key   TEXT NOT NULL,
    text  TEXT NOT NULL,  -- casefolded
    num   REAL,           -- first number in the text, for ordering
    val   REAL,           -- the whole text as a number, for equality
    shown TEXT            -- the text as written, where casefolding changed it (facet menus)
);
CREATE INDEX item_values_text ON item_values(key, text, rid);
CREATE INDEX item_values_num ON item_values(key, num, rid) WHERE num IS NOT NULL;
CREATE INDEX item_values_val ON item_values(key, val, rid) WHERE val IS NOT NULL;
CREATE INDEX item_values_rid ON item_values(rid);
-- multi: some item has several values of the key (then its filters cannot be merged into one range)
CREATE TABLE value_keys (key TEXT PRIMARY KEY, multi INTEGER NOT NULL DEFAULT 0);
"""

# A failed item answers no query: its vectors (from an earlier, good version of the file) go, and
# the trigger records their rows as dead. Collections written before this rule are cleaned here.
MIGRATION_3 = """
DELETE FROM vectors WHERE item_id IN (SELECT id FROM items WHERE status = 'failed');
"""

# Each space names its vector file, so a compaction can write a new one beside the old and switch
# to it in a transaction (NULL: the file of schema <= 3, spaces/<name>.f32).
MIGRATION_4 = """
ALTER TABLE spaces ADD COLUMN file TEXT;
"""

# Keyword search (fulltext.py): an FTS5 table keyed by item rid, kept in step with items by
# triggers, so every path that writes items (ingest, add_items, removal) updates it. Diacritics are
# folded ("Ålesund" = "alesund"), two- and three-letter prefixes indexed for "berg*". Columns:
# title; caption (caption, description); subjects (subjects, subject, keywords); notes (notes,
# note); context (OCR / ALTO text around the picture). Control characters 2 and 3 are the snippet
# markers and are removed from the indexed text. ``pruned``: ids deleted by ``vitrina prune
# --delete``, which a later ingest does not bring back.
FTS_COLUMNS = {  # column -> metadata keys whose values it holds (context: the item's context text)
    "title": ("title",),
    "caption": ("caption", "description"),
    "subjects": ("subjects", "subject", "keywords"),
    "notes": ("notes", "note"),
}


def _fts_values(row: str) -> str:
    """SQL for the FTS row of the item ``row`` ('new.' in a trigger, '' in a SELECT)."""

    def clean(sql: str) -> str:
        return f"replace(replace({sql}, char(2), ''), char(3), '')"

    fields = [f"{row}rid"]
    for keys in FTS_COLUMNS.values():
        parts = " || ' ' || ".join(f"coalesce(json_extract({row}metadata, '$.{k}'), '')" for k in keys)
        fields.append(f"CASE WHEN json_valid({row}metadata) THEN {clean(parts)} ELSE '' END")
    fields.append(clean(f"{row}context"))
    return ", ".join(fields)


MIGRATION_5 = f"""
CREATE VIRTUAL TABLE item_text USING fts5(title, caption, subjects, notes, context, tokenize='unicode61 remove_diacritics 2', prefix='2 3');
CREATE TRIGGER item_text_insert AFTER INSERT ON items BEGIN
    INSERT INTO item_text (rowid, title, caption, subjects, notes, context) VALUES ({_fts_values("new.")});
END;
CREATE TRIGGER item_text_update AFTER UPDATE OF metadata, context ON items BEGIN
    DELETE FROM item_text WHERE rowid = old.rid;
    INSERT INTO item_text (rowid, title, caption, subjects, notes, context) VALUES ({_fts_values("new.")});
END;
CREATE TRIGGER item_text_delete AFTER DELETE ON items BEGIN
    DELETE FROM item_text WHERE rowid = old.rid;
END;
INSERT INTO item_text (rowid, title, caption, subjects, notes, context)
    SELECT {_fts_values("")} FROM items;
CREATE TABLE pruned (id TEXT PRIMARY KEY, at REAL NOT NULL, reason TEXT NOT NULL);
"""

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def default_home() -> Path:
    """Where named collections live: $VITRINA_HOME, else $XDG_DATA_HOME/vitrina, else ~/.local/share/vitrina."""
    if os.environ.get("VITRINA_HOME"):
        return Path(os.environ["VITRINA_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "vitrina"


def resolve_collection(name_or_path: str | os.PathLike[str], home: Path | None = None) -> Path:
    """A bare name ('maps') lives under the home folder; anything with a slash is a path."""
    text = os.fspath(name_or_path)
    if os.sep in text or "/" in text or text.startswith("."):
        return Path(text).expanduser().resolve()
    if not NAME_RE.match(text):
        raise CollectionNotFound(
            f"{text!r} is not a valid collection name: use letters, digits, '.', '_' and '-', or give a path."
        )
    return (home or default_home()) / text


@dataclass(frozen=True)
class Space:
    name: str
    fingerprint: ModelFingerprint
    rows: int  # committed rows
    live: int  # rows that belong to an item
    file: str = ""  # its vector file in spaces/: a new name for every re-embed or compaction
    created_at: float = 0.0

    @property
    def generation(self) -> str:
        """Changes whenever the rows were renumbered into a new file: readers must re-map."""
        return self.file


def _in(n: int) -> str:
    return ",".join("?" * n)


def _ints(text: str | None) -> np.ndarray:
    """SQLite's group_concat of integers -> an int64 array (parsed in C, not row by row)."""
    if not text:
        return np.zeros(0, np.int64)
    return np.fromstring(text, dtype=np.int64, sep=",")


class Store:
    """Low-level access to one collection folder. ``Collection`` is the friendly face."""

    def __init__(self, path: Path, *, create: bool = False, writer: bool = False):
        self.path = path
        self.name = path.name
        db = path / "collection.sqlite"
        if not db.exists():
            if not create:
                raise CollectionNotFound(
                    f"No collection at {path}. Create it with: vitrina index FOLDER --collection {path.name}"
                )
            (path / "spaces").mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        if writer:
            self._acquire_writer_lock()
        self.db = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.create_function("vitrina_match", 3, _match_column, deterministic=True)
        self._vector_files: dict[str, VectorFile] = {}
        self._masks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        try:
            self._upgrade(db, create or writer)
        except BaseException:
            self.close()
            raise
        self.db.execute("PRAGMA foreign_keys=ON")
        if writer:
            self._remove_stray_files()

    # -- schema and migrations ----------------------------------------------------------------

    def schema_version(self) -> int:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:  # an empty database: no meta table yet
            return 0
        return int(row[0]) if row else 0

    def _upgrade(self, db: Path, may_create: bool) -> None:
        """Bring the database to ``SCHEMA_VERSION``, one numbered migration at a time, each in one
        transaction (a kill leaves the previous version). Readers upgrade too, under the writer lock."""
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreCorrupt(
                f"{db} was written by a newer vitrina (schema {version}, this one reads <= {SCHEMA_VERSION}); upgrade vitrina."
            )
        if version == SCHEMA_VERSION:
            return
        if version == 0 and not may_create:
            raise StoreCorrupt(f"{db} is not a vitrina collection (no schema); remove it or point at the right folder.")
        took_lock = self._lock_fd is None
        if took_lock:
            self._acquire_writer_lock()
        try:
            version = self.schema_version()  # another process may have upgraded it meanwhile
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](self)
        finally:
            if took_lock and self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _migrate(self, target: int, statements: Sequence[str], then: Any = None) -> None:
        self.db.execute("PRAGMA foreign_keys=OFF")  # table rebuilds; checked before the commit
        with self.transaction():
            for statement in statements:
                self.db.execute(statement)
            if then is not None:
                then()
            _fault_point("before_migration_commit")
            bad = self.db.execute("PRAGMA foreign_key_check").fetchall()
            if bad:
                raise StoreCorrupt(
                    f"Upgrading {self.path} to schema {target} found {len(bad)} broken references; nothing was changed."
                )
            self.db.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(target),),
            )

    def _migration_1(self) -> None:
        self._migrate(1, _statements(SCHEMA_V1))

    def _migration_2(self) -> None:
        """Items get an integer key (``rid``) and every metadata value a normalised, indexed row in
        ``item_values`` (see filters.py), so a filter is an index lookup instead of a Python call per item."""
        self._migrate(2, _statements(MIGRATION_2), then=lambda: self._refresh_values(None))

    def _migration_3(self) -> None:
        self._migrate(3, _statements(MIGRATION_3))

    def _migration_4(self) -> None:
        self._migrate(4, _statements(MIGRATION_4))

    def _migration_5(self) -> None:
        """Keyword search: the FTS5 table over item text (built here for existing items), its
        triggers, and the ids pruned for good."""
        self._migrate(5, _statements(MIGRATION_5))

    def _migration_6(self) -> None:
        """Normal values are recomputed: a day-month-year date ("15. September 1859") now orders
        by its year, not its day (filters.normal_value)."""
        self._migrate(6, [], then=lambda: self._refresh_values(None))

    # -- locking and transactions -------------------------------------------------------------

    def _acquire_writer_lock(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / "writer.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreLocked(
                f"Collection {self.name!r} is being written by {holder}; wait for it to finish, or stop it and run again."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._lock_fd = fd  # flock dies with the process, so a killed writer leaves no stale lock

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    def data_version(self) -> int:
        """Changes whenever another connection commits (for caches of what this one reads)."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def close_vector_files(self) -> None:
        """Forget mapped vector files (after a writer replaced or grew them)."""
        for vf in self._vector_files.values():
            vf.close()
        self._vector_files.clear()

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

    # -- items --------------------------------------------------------------------------------

    def sync_items(self, items: Iterable[Item], moved_from: set[str] | None = None) -> dict[str, int]:
        """Upsert items. One whose fingerprint changed goes back to pending (to be re-embedded);
        one whose metadata, context, source or image location changed is updated in place and
        keeps its vector (a moved folder: same relative path, same size and mtime). The sources
        items were taken over from are added to ``moved_from``."""
        counts = {"new": 0, "changed": 0, "updated": 0, "moved": 0, "unchanged": 0}
        seen: set[str] = set()
        now = time.time()
        batch: list[Item] = []

        def flush() -> None:
            touched = []
            with self.transaction():
                for item in batch:
                    metadata = json.dumps(item.metadata, ensure_ascii=False)
                    row = self.db.execute(
                        "SELECT fingerprint, metadata, context, source, image FROM items WHERE id=?", (item.id,)
                    ).fetchone()
                    if row is not None and row[3] != item.source and moved_from is not None:
                        moved_from.add(row[3])
                    if row is not None and row[0] == item.fingerprint:
                        if (row[1], row[2], row[3], row[4]) == (metadata, item.context, item.source, item.image):
                            counts["unchanged"] += 1
                        else:
                            counts["moved" if (row[3], row[4]) != (item.source, item.image) else "updated"] += 1
                            touched.append(item.id)
                            self.db.execute("UPDATE items SET source=?, image=?, metadata=?, context=?, updated_at=? WHERE id=?",
                                            (item.source, item.image, metadata, item.context, now, item.id))  # fmt: skip
                        continue
                    counts["new" if row is None else "changed"] += 1
                    touched.append(item.id)
                    self.db.execute(
                        """INSERT INTO items (id, source, image, metadata, context, fingerprint, status, updated_at)
                           VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)
                           ON CONFLICT(id) DO UPDATE SET source=excluded.source, image=excluded.image,
                             metadata=excluded.metadata, context=excluded.context, fingerprint=excluded.fingerprint,
                             status='pending', reason=NULL, detail=NULL, updated_at=excluded.updated_at""",
                        (item.id, item.source, item.image, metadata, item.context, item.fingerprint, now),
                    )
                self._refresh_values(touched)
            batch.clear()

        pruned = {
            r[0] for r in self.db.execute("SELECT id FROM pruned")
        }  # deleted by `vitrina prune --delete`: not brought back
        for item in items:
            if item.id in seen or item.id in pruned:
                continue  # the same id twice in one source: first wins
            seen.add(item.id)
            batch.append(item)
            if len(batch) >= 1000:
                flush()
        flush()
        return counts

    def _refresh_values(self, ids: Sequence[str] | None) -> None:
        """Recompute ``item_values`` for these items (all when None), inside the caller's
        transaction: each metadata key's normal values, a classifier tag replacing its key's."""
        if ids is None:
            self.db.execute("DELETE FROM item_values")
            cursor = self.db.execute("SELECT rid, id, metadata FROM items")
            while chunk := cursor.fetchmany(2000):
                self._insert_values(chunk)
            return
        for i in range(0, len(ids), 500):
            part = list(ids[i : i + 500])
            rows = self.db.execute(
                f"SELECT rid, id, metadata FROM items WHERE id IN ({_in(len(part))})", part
            ).fetchall()
            self.db.execute(f"DELETE FROM item_values WHERE rid IN ({_in(len(rows))})", [r[0] for r in rows])
            self._insert_values(rows)

    def _insert_values(self, rows: Sequence[Any]) -> None:
        tags: dict[str, dict[str, str]] = {}
        ids = [r[1] for r in rows]
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            for item_id, name, value in self.db.execute(
                f"SELECT item_id, name, value FROM tags WHERE item_id IN ({_in(len(part))})", part
            ):
                tags.setdefault(item_id, {})[name] = value
        out = []
        multi: dict[str, int] = {}
        for rid, item_id, metadata in rows:
            try:
                values = json.loads(metadata)
            except ValueError:
                values = {}
            if not isinstance(values, dict):
                values = {}
            values.update(tags.get(item_id, {}))
            for key, value in values.items():
                normal = normal_values(value)
                multi[key] = max(multi.get(key, 0), int(len(normal) > 1))
                out += [(rid, key, v.text, v.num, v.val, v.shown if v.shown != v.text else None) for v in normal]
        self.db.executemany("INSERT INTO item_values (rid, key, text, num, val, shown) VALUES (?, ?, ?, ?, ?, ?)", out)
        # Never reset to 0 (a removed multi-valued item may leave it set): it only costs speed.
        self.db.executemany(
            "INSERT INTO value_keys VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET multi = max(multi, excluded.multi)",
            multi.items(),
        )

    def remove_missing(self, source: str, keep: set[str]) -> int:
        """Delete the items of ``source`` whose ids are not in ``keep`` (it no longer lists them)."""
        gone = [r[0] for r in self.db.execute("SELECT id FROM items WHERE source=?", (source,)) if r[0] not in keep]
        with self.transaction():
            for i in range(0, len(gone), 500):
                chunk = gone[i : i + 500]
                self.db.execute(f"DELETE FROM items WHERE id IN ({_in(len(chunk))})", chunk)
        return len(gone)

    def pending(self, space: str, *, retry_failed: bool = False) -> list[sqlite3.Row]:
        """Items with no vector in ``space`` for their current fingerprint, in a stable order."""
        # Network failures and decoder crashes are transient: retried by every run; others only when asked.
        failed = "" if retry_failed else "AND (i.status != 'failed' OR i.reason IN ('fetch_failed', 'decoder_crashed'))"
        return self.db.execute(
            f"""SELECT i.id, i.image, i.fingerprint FROM items i
                LEFT JOIN vectors v ON v.item_id = i.id AND v.space = ?
                WHERE (v.item_id IS NULL OR v.fingerprint != i.fingerprint) {failed}
                ORDER BY i.id""",
            (space,),
        ).fetchall()

    def get_items(self, ids: Sequence[str], *, tags: bool = False) -> dict[str, Item]:
        """Items by id (those that exist), as ``Item`` records; ``tags`` adds classifier tags."""
        out: dict[str, Item] = {}
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            for row in self.db.execute(f"SELECT * FROM items WHERE id IN ({_in(len(chunk))})", chunk):
                out[row["id"]] = _item(row, self.tags_of(row["id"]) if tags else {})
        return out

    def fingerprints_of(self, ids: Sequence[str]) -> dict[str, str]:
        """Item fingerprints by id (those that exist): what a vector is recorded against."""
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            out.update(
                self.db.execute(f"SELECT id, fingerprint FROM items WHERE id IN ({_in(len(chunk))})", chunk).fetchall()
            )
        return out

    def ids_of_rids(self, rids: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        for i in range(0, len(rids), 500):
            chunk = [int(r) for r in rids[i : i + 500]]
            out.update(self.db.execute(f"SELECT rid, id FROM items WHERE rid IN ({_in(len(chunk))})", chunk).fetchall())
        return out

    def iter_items(self, *, status: str | None = None, exclude_status: str | None = None) -> Iterator[Item]:
        """Every item in id order, streamed (a collection of millions never sits in memory)."""
        sql, params = "SELECT * FROM items", []
        if status is not None:
            sql, params = sql + " WHERE status = ?", [status]
        elif exclude_status is not None:
            sql, params = sql + " WHERE status != ?", [exclude_status]
        cursor = self.db.execute(sql + " ORDER BY id", params)
        while chunk := cursor.fetchmany(1000):
            yield from (_item(row, {}) for row in chunk)

    def item_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM items").fetchone()[0])

    def count_items(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("SELECT status, count(*) FROM items GROUP BY status")}

    def failures(self) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT id, image, reason, detail FROM items WHERE status='failed' ORDER BY id"
        ).fetchall()

    # -- filters ------------------------------------------------------------------------------

    def filter_mask(self, filters: Sequence[Filter]) -> np.ndarray:
        """A boolean array indexed by item ``rid``: which items pass every filter. It has one spare
        slot at the end, always False, so that ``mask[-1]`` (a dead vector row) never passes.

        Each filter is one indexed SQL lookup; filters on a key that no item has several values
        of are ANDed into one lookup ("date>=1700 AND date<1800" is one range scan).

        The last few masks are kept (read-only) while nothing changed: paging, or new queries under
        the same filters, cost no lookups (~100 ms for 10M items). "Nothing changed" is this
        connection's own writes (``total_changes``) and other connections' commits (``data_version``)."""
        key = (tuple((f.key, f.op, f.value) for f in filters), self.db.total_changes, self.data_version())
        cached = self._masks.get(key)
        if cached is not None:
            self._masks.move_to_end(key)
            return cached
        mask = self._filter_mask(filters)
        mask.flags.writeable = False
        self._masks[key] = mask
        while len(self._masks) > MASKS_KEPT:
            self._masks.popitem(last=False)
        return mask

    def _filter_mask(self, filters: Sequence[Filter]) -> np.ndarray:
        size = int(self.db.execute("SELECT coalesce(max(rid), 0) FROM items").fetchone()[0]) + 2
        mask = np.ones(size, bool)
        single = {r[0] for r in self.db.execute("SELECT key FROM value_keys WHERE multi = 0")}
        groups: dict[str, list[Filter]] = {}
        for f in filters:
            if f.op != "!=" and f.key in single and f.key not in COLUMNS:
                groups.setdefault(f.key, []).append(f)
            else:
                groups.setdefault(f"\0{len(groups)}", []).append(f)
        for group in groups.values():
            passing = np.zeros(size, bool)
            passing[self._matching_rids(group, size)] = True
            mask &= ~passing if group[0].op == "!=" else passing
        mask[-1] = False
        return mask

    def _matching_rids(self, group: Sequence[Filter], size: int) -> np.ndarray:
        """Items with a value satisfying every filter of ``group`` (one filter, or several on one
        single-valued key); for != : items with a value equal to the operand (the caller negates)."""
        f = group[0]
        if f.key in COLUMNS:  # rare: a Python test per item (these columns are not in item_values)
            sql = f"SELECT group_concat(rid) FROM items WHERE vitrina_match({f.key}, ?, ?)"
            rids = _ints(self.db.execute(sql, ("=" if f.op == "!=" else f.op, f.value)).fetchone()[0])
        else:
            conditions, params = [], []
            for g in group:
                sql, p = _condition(g)
                conditions.append(sql)
                params += p
            query = f"SELECT group_concat(rid) FROM item_values WHERE key = ? AND {' AND '.join(conditions)}"
            rids = _ints(self.db.execute(query, (f.key, *params)).fetchone()[0])
        return rids[rids < size - 1]  # an item added since ``size`` was read waits for the next query

    def facets(self, keys: Sequence[str] | None = None, top: int = 50) -> dict[str, Any]:
        """Metadata keys with their most common values and numeric ranges (e.g. date), from the
        normalised values: {key: {"distinct", "values": [{"value", "count"}], "min", "max"}}."""
        where, params = "", []
        if keys:
            where, params = f"WHERE key IN ({_in(len(keys))})", list(keys)
        stats = self.db.execute(
            f"SELECT key, count(DISTINCT text), count(num), count(*), min(num), max(num) FROM item_values {where} GROUP BY key ORDER BY key",
            params,
        ).fetchall()
        out: dict[str, Any] = {}
        for key, distinct, numbers, total, low, high in stats:
            entry: dict[str, Any] = {"distinct": distinct}
            if numbers >= 0.8 * total:
                entry["min"], entry["max"] = low, high
            if distinct <= top:
                rows = self.db.execute(
                    "SELECT coalesce(max(shown), text), count(DISTINCT rid) AS n FROM item_values WHERE key = ? GROUP BY text ORDER BY n DESC, text",
                    (key,),
                )
                entry["values"] = [{"value": text, "count": n} for text, n in rows]
            out[key] = entry
        return out

    # -- spaces and vectors -------------------------------------------------------------------

    def spaces(self) -> list[Space]:
        rows = self.db.execute(
            # Every committed row is either mapped to an item or dead, so live = rows - dead:
            # counting the (small) dead_rows table is cheap; counting vectors is not.
            """SELECT s.name, s.fingerprint, s.rows, s.rows - (SELECT count(*) FROM dead_rows d WHERE d.space = s.name) AS live,
                      coalesce(s.file, s.name || '.f32') AS file, s.created_at
               FROM spaces s ORDER BY s.created_at"""
        ).fetchall()
        return [
            Space(
                r["name"],
                ModelFingerprint.from_json(r["fingerprint"]),
                r["rows"],
                r["live"],
                r["file"],
                r["created_at"],
            )
            for r in rows
        ]

    def space(self, name: str | None = None) -> Space:
        spaces = self.spaces()
        if not spaces:
            raise NoEmbeddings(f"Collection {self.name!r} has no embeddings yet. Run: vitrina index {self.path}")
        if name is None:
            return spaces[0]
        for space in spaces:
            if space.name == name:
                return space
        names = ", ".join(s.name for s in spaces)
        raise NoSuchSpace(f"Collection {self.name!r} has no space {name!r}; it has: {names}.")

    def ensure_space(self, name: str, fingerprint: ModelFingerprint) -> Space:
        """Create the space for this model, or check that the existing one is the same model."""
        existing = {s.name: s for s in self.spaces()}
        if name in existing:
            old = existing[name].fingerprint
            if not old.compatible(fingerprint):
                raise SpaceMismatch(
                    f"Space {name!r} of collection {self.name!r} was built with {old.describe()}; this run uses "
                    f"{fingerprint.describe()}. Index into a new space with --space NAME, or re-embed with --reembed."
                )
            return existing[name]
        file = _new_file_name(name)
        VectorFile.create(self.path / "spaces" / file, fingerprint).close()
        with self.transaction():
            self.db.execute(
                "INSERT INTO spaces (name, fingerprint, dim, rows, created_at, file) VALUES (?, ?, ?, 0, ?, ?)",
                (name, fingerprint.to_json(), fingerprint.dim, time.time(), file),
            )
        return self.space(name)

    def pin_fingerprint(self, name: str, fingerprint: ModelFingerprint) -> bool:
        """Replace a provisional fingerprint (imported vectors) by the loaded model's, once."""
        with self.transaction():
            row = self.db.execute("SELECT fingerprint FROM spaces WHERE name=?", (name,)).fetchone()
            if row is None or not ModelFingerprint.from_json(row[0]).provisional or fingerprint.provisional:
                return False
            self.db.execute("UPDATE spaces SET fingerprint=? WHERE name=?", (fingerprint.to_json(), name))
        return True

    def drop_space(self, name: str) -> None:
        path = self._space_file(self.space(name))
        with self.transaction():
            self.db.execute("DELETE FROM vectors WHERE space=?", (name,))
            self.db.execute("DELETE FROM dead_rows WHERE space=?", (name,))
            self.db.execute("DELETE FROM spaces WHERE name=?", (name,))
        vf = self._vector_files.pop(name, None)
        if vf:
            vf.close()
        path.unlink(missing_ok=True)

    def _space_file(self, space: Space) -> Path:
        return self.path / "spaces" / space.file

    def _remove_stray_files(self) -> None:
        """Vector files no space refers to: left by a kill during a compaction or a re-embed (before
        its commit: the new file; after it: the old one). Only a writer may do this."""
        known = {s.file for s in self.spaces()}
        for path in (self.path / "spaces").glob("*.f32"):
            if path.name not in known:
                path.unlink(missing_ok=True)
        for path in (self.path / "spaces").glob(".*.tmp"):  # write_atomic's, of a killed VectorFile.create
            path.unlink(missing_ok=True)

    def needs_compaction(self, space: Space) -> bool:
        """Dead rows past a quarter of the file (and more than a thousand: small files are cheap)."""
        dead = space.rows - space.live
        return dead > 1000 and dead > space.rows / 4

    def compact(self, name: str, *, force: bool = False) -> int:
        """Rewrite the live vectors of space ``name`` into a new file without dead rows; returns the
        rows reclaimed. Crash-safe like every write: the new file is written and fsynced, then one
        transaction renumbers the rows and switches the space to it, then the old file is deleted.
        A kill before the commit leaves the old state (and a stray new file); after it, the new state
        (and a stray old file); a writer removes strays on open. Readers see the new file name
        (the space's generation) and re-map."""
        space = self.space(name)
        dead = space.rows - space.live
        if dead == 0 or not (force or self.needs_compaction(space)):
            return 0
        ids, rows = self.live_vectors(name)
        old = self.vector_file(space)
        file = _new_file_name(name)
        new = VectorFile.create(self.path / "spaces" / file, space.fingerprint)
        try:
            matrix = old.matrix(space.rows)
            step = max(1, (64 << 20) // old.row_bytes)  # 64 MB at a time
            for start in range(0, len(rows), step):
                new.write_rows(start, matrix[rows[start : start + step]])
        finally:
            new.close()
        fsync_dir(self.path / "spaces")
        _fault_point("compact_written")
        with self.transaction():
            # Ascending order: each new row number is <= the old one and not held by a later row,
            # so (space, row) stays unique at every step.
            self.db.executemany(
                "UPDATE vectors SET row=? WHERE space=? AND item_id=?", ((n, name, i) for n, i in enumerate(ids))
            )
            self.db.execute("DELETE FROM dead_rows WHERE space=?", (name,))
            self.db.execute("UPDATE spaces SET rows=?, file=? WHERE name=?", (len(ids), file, name))
            _fault_point("compact_before_commit")
        _fault_point("compact_committed")
        vf = self._vector_files.pop(name, None)
        if vf:
            vf.close()
        self._space_file(space).unlink(missing_ok=True)
        return dead

    def vector_file(self, space: Space, writable: bool = False) -> VectorFile:
        """The space's vector file, mapped once; re-opened when the space was re-created (a
        re-embed replaces the file: a reader must not keep scoring against the old one)."""
        vf = self._vector_files.get(space.name)
        if vf is not None and (vf.generation != space.generation or not vf.is_current()):
            vf.close()
            vf = None
        if vf is None or (writable and not vf.writable):
            vf = VectorFile.open(self._space_file(space), writable=writable, committed_rows=space.rows)
            if (
                vf.fingerprint is None
                or not vf.fingerprint.compatible(space.fingerprint)
                or vf.dim != space.fingerprint.dim
            ):
                vf.close()
                made_by = vf.fingerprint.describe() if vf.fingerprint else "an unknown model"
                raise StoreCorrupt(
                    f"{vf.path} holds vectors of {made_by} but the collection records {space.fingerprint.describe()} for space "
                    f"{space.name!r}: the file was replaced or copied from elsewhere. Rebuild this space with `vitrina index {self.path} --reembed`."
                )
            vf.generation = space.generation
            self._vector_files[space.name] = vf
        return vf

    def add_vectors(self, space_name: str, items: Sequence[tuple[str, str]], vectors: np.ndarray, failures: Sequence[tuple[str, str, str]] = (),
                    meta: dict[str, str] | None = None) -> None:  # fmt: skip
        """Append vectors for ``items`` ((id, fingerprint) pairs) and record ``failures``
        ((id, reason, detail)) in one durable step: vectors first, then the commit. ``meta``
        keys (an importer's checkpoint) are written in the same transaction."""
        space = self.space(space_name)
        if len(items) != len(vectors):
            raise ValueError("one vector per item")
        vf = self.vector_file(space, writable=True)
        start = space.rows
        if len(items):
            vf.write_rows(start, vectors)
        _fault_point("after_vector_write")
        with self.transaction():
            now = time.time()
            self.db.executemany(
                """INSERT INTO vectors (space, item_id, row, fingerprint, rid) VALUES (?, ?, ?, ?, (SELECT rid FROM items WHERE id = ?))
                   ON CONFLICT(space, item_id) DO UPDATE SET row=excluded.row, fingerprint=excluded.fingerprint, rid=excluded.rid""",
                [
                    (space_name, item_id, start + offset, fingerprint, item_id)
                    for offset, (item_id, fingerprint) in enumerate(items)
                ],
            )
            self.db.executemany(
                "UPDATE items SET status='ok', reason=NULL, detail=NULL, updated_at=? WHERE id=?",
                [(now, item_id) for item_id, _ in items],
            )
            for item_id, reason, detail in failures:
                self.db.execute(
                    "UPDATE items SET status='failed', reason=?, detail=?, updated_at=? WHERE id=?",
                    (reason, detail, now, item_id),
                )
                # Its old vector (of the file before it was replaced) must not answer for it, in any space.
                self.db.execute("DELETE FROM vectors WHERE item_id=?", (item_id,))
            self.db.execute("UPDATE spaces SET rows = rows + ? WHERE name = ?", (len(items), space_name))
            for key, value in (meta or {}).items():
                self.db.execute(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value)
                )
            _fault_point("before_commit")
        _fault_point("after_commit")

    def live_vectors(self, space: str) -> tuple[list[str], np.ndarray]:
        """(item ids, their rows) of every live vector in ``space``, in row order."""
        rows = self.db.execute("SELECT item_id, row FROM vectors WHERE space=? ORDER BY row", (space,)).fetchall()
        return [r[0] for r in rows], np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))

    def vector_rids(self, space: str, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(rows, item rids) of the live vectors from row ``start`` on, in no particular order."""
        # Two aggregates of one scan see the rows in the same order.
        rows, rids = self.db.execute(
            "SELECT group_concat(row), group_concat(rid) FROM vectors WHERE space = ? AND row >= ?", (space, start)
        ).fetchone()
        return _ints(rows), _ints(rids)

    def set_tags(self, name: str, classifier: str, tags: Sequence[tuple[str, str, float]]) -> None:
        """Replace tag ``name`` on the given items: (item id, value, score)."""
        with self.transaction():
            before = [r[0] for r in self.db.execute("SELECT item_id FROM tags WHERE name=?", (name,))]
            self.db.execute("DELETE FROM tags WHERE name=?", (name,))
            self.db.executemany(
                "INSERT INTO tags (item_id, name, value, score, classifier) VALUES (?, ?, ?, ?, ?)",
                [(i, name, v, float(sc), classifier) for i, v, sc in tags],
            )
            self._refresh_values(sorted(set(before) | {t[0] for t in tags}))

    HIDDEN = "hidden"  # the tag that hides an item from results (``vitrina prune --hide``)

    def set_hidden(self, ids: Sequence[str], hidden: bool, reason: str = "") -> int:
        """Hide (a ``hidden`` tag, a filter like any other) or show these items again; returns how
        many changed."""
        changed = 0
        with self.transaction():
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                if hidden:
                    cur = self.db.executemany("INSERT OR IGNORE INTO tags (item_id, name, value, score, classifier) SELECT id, ?, 'true', 1.0, ? FROM items WHERE id = ?",
                                              [(self.HIDDEN, f"prune:{reason}", i) for i in chunk])  # fmt: skip
                else:
                    cur = self.db.execute(
                        f"DELETE FROM tags WHERE name = ? AND item_id IN ({_in(len(chunk))})", [self.HIDDEN, *chunk]
                    )
                changed += max(cur.rowcount, 0)
                self._refresh_values(chunk)
        return changed

    def hidden_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM tags WHERE name = ?", (self.HIDDEN,)).fetchone()[0])

    def delete_items(self, ids: Sequence[str], reason: str) -> int:
        """Delete items for good (their vectors become dead rows; the FTS rows go by trigger) and
        remember their ids, so that a later ingest does not bring them back."""
        now = time.time()
        gone = 0
        with self.transaction():
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                gone += self.db.execute(f"DELETE FROM items WHERE id IN ({_in(len(chunk))})", chunk).rowcount
                self.db.executemany("INSERT OR REPLACE INTO pruned VALUES (?, ?, ?)", [(i, now, reason) for i in chunk])
        return gone

    def pruned_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM pruned").fetchone()[0])

    def tags_of(self, item_id: str) -> dict[str, dict[str, Any]]:
        return {
            r[0]: {"value": r[1], "score": r[2], "classifier": r[3]}
            for r in self.db.execute("SELECT name, value, score, classifier FROM tags WHERE item_id=?", (item_id,))
        }

    def dead_rows(self, space: str) -> np.ndarray:
        return _ints(self.db.execute("SELECT group_concat(row) FROM dead_rows WHERE space=?", (space,)).fetchone()[0])

    def rids_of(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            out.update(self.db.execute(f"SELECT id, rid FROM items WHERE id IN ({_in(len(chunk))})", chunk).fetchall())
        return out

    def rows_of(self, space: str, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            out.update(
                self.db.execute(
                    f"SELECT item_id, row FROM vectors WHERE space=? AND item_id IN ({_in(len(chunk))})",
                    [space, *chunk],
                ).fetchall()
            )
        return out

    def check(self) -> list[str]:
        """Consistency problems, empty when the store is sound (used by `vitrina info --check`)."""
        problems = []
        if self.db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            problems.append("SQLite integrity_check failed")
        for space in self.spaces():
            bad = self.db.execute(
                "SELECT count(*) FROM vectors WHERE space=? AND row >= ?", (space.name, space.rows)
            ).fetchone()[0]
            if bad:
                problems.append(f"space {space.name}: {bad} items point past the committed rows")
            mapped = self.db.execute("SELECT count(*) FROM vectors WHERE space=?", (space.name,)).fetchone()[0]
            if mapped != space.live:
                problems.append(f"space {space.name}: {mapped} mapped vectors but {space.live} live rows")
            try:
                vf = self.vector_file(space)
            except StoreCorrupt as e:
                problems.append(str(e))
                continue
            bad_rows = self._bad_vectors(space, vf)
            if bad_rows:
                problems.append(
                    f"space {space.name}: {len(bad_rows)} live vectors are zero or not finite (rows {', '.join(map(str, bad_rows[:5]))})"
                )
        failed = self.db.execute(
            "SELECT count(DISTINCT v.item_id) FROM vectors v JOIN items i ON i.id = v.item_id WHERE i.status = 'failed'"
        ).fetchone()[0]
        if failed:
            problems.append(f"{failed} failed items still have a vector")
        return problems

    def _bad_vectors(self, space: Space, vf: VectorFile, chunk: int = 1 << 16) -> list[int]:
        """Live rows that are all zero or hold NaN/inf: a full scan of the mapped file, in chunks
        (a few seconds per million 512-d rows), so no sampling is needed."""
        matrix = vf.matrix(space.rows)
        dead = np.zeros(space.rows, bool)
        dead[self.dead_rows(space.name)] = True
        bad: list[int] = []
        for start in range(0, space.rows, chunk):
            part = np.asarray(matrix[start : start + chunk])
            norms = np.einsum("ij,ij->i", part, part)
            wrong = ~np.isfinite(norms) | (norms == 0)
            bad += (np.flatnonzero(wrong & ~dead[start : start + chunk]) + start).tolist()
        return bad


@contextmanager
def disk_full_as_error(path: Path, name: str) -> Iterator[None]:
    """Turn a full disk, at whatever stage it strikes (SQLite's "database or disk is full" or its
    "disk I/O error", ENOSPC from a vector file or the cache), into one ``DiskFull`` that names the
    collection's disk and the space to free. Every write is crash-safe, so a re-run resumes."""
    try:
        yield
    except DiskFull:
        raise
    except (OSError, sqlite3.Error) as e:
        free, needed = _free_bytes(path), _needed(path)
        if isinstance(e, OSError):
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        else:  # "disk I/O error" is also what SQLite says when its WAL cannot grow: trust it only on a nearly full disk
            text = str(e)
            full = "database or disk is full" in text or (
                "disk I/O error" in text and free is not None and free < needed
            )
        if not full:
            raise
        shown = "unknown" if free is None else _size(free)
        raise DiskFull(
            f"The disk holding collection {name!r} ({path}, on {_mount_point(path)}) is full: {shown} free. Free at least "
            f"{_size(needed)} there (or move the collection to a larger disk), then run the same command again: it carries on "
            f"where it stopped, nothing written so far is lost. ({type(e).__name__}: {e})"
        ) from e


def _needed(path: Path) -> int:
    """Room a run wants: SQLite's WAL and checkpoint may briefly hold about half the database
    again, plus some batches of vectors and the download cache's next files."""
    try:
        used = sum(p.stat().st_size for p in path.glob("collection.sqlite*"))
    except OSError:
        used = 0
    return max(16 << 20, used // 2)


def _free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def _mount_point(path: Path) -> Path:
    path = path if path.exists() else next((p for p in path.parents if p.exists()), path)
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def _new_file_name(space: str) -> str:
    return f"{space}.{time.time_ns():x}.f32"


def _condition(f: Filter) -> tuple[str, list[Any]]:
    """SQL over ``item_values`` for one value satisfying ``f`` (for != : equal to its operand)."""
    operand = f.value.casefold()
    if f.op in ("=", "!="):
        if f.operand_val is not None:
            return "(text = ? OR val = ?)", [operand, f.operand_val]
        return "text = ?", [operand]
    if f.op == "~":
        return "instr(text, ?) > 0", [operand]
    if f.operand_number is not None:
        return f"num {f.op} ?", [f.operand_number]
    return f"text {f.op} ?", [operand]


def _item(row: sqlite3.Row, tags: dict[str, dict[str, Any]]) -> Item:
    return Item(id=row["id"], image=row["image"], metadata=json.loads(row["metadata"]), context=row["context"], fingerprint=row["fingerprint"],
                source=row["source"], status=row["status"], reason=row["reason"], detail=row["detail"], tags=tags)  # fmt: skip


MIGRATIONS = {
    1: Store._migration_1,
    2: Store._migration_2,
    3: Store._migration_3,
    4: Store._migration_4,
    5: Store._migration_5,
    6: Store._migration_6,
}


def _statements(script: str) -> list[str]:
    """Split the schema into statements (triggers contain ';' inside BEGIN ... END)."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined.endswith(";") and (
            not joined.upper().startswith("CREATE TRIGGER") or joined.upper().endswith("END;")
        ):
            out.append(joined)
            buf = []
    return out


def _match_column(value: Any, op: str, operand: str) -> int:
    """SQL function for filters on item columns (id, source, image, context): filters.py semantics."""
    return int(matches(normal_values(value), Filter("column", op, operand)))


_FAULTS: dict[str, int] = {}


def _fault_point(name: str) -> None:
    """Crash-test hook: VITRINA_FAULT=after_vector_write:3 kills the process (as SIGKILL would)
    the third time this point is reached. Costs one dict lookup when unset."""
    spec = os.environ.get("VITRINA_FAULT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point == name:
        _FAULTS[name] = _FAULTS.get(name, 0) + 1
        if _FAULTS[name] >= int(nth or 1):
            os._exit(137)


def _fault_once(name: str) -> None:
    """Crash-test hook for many processes: VITRINA_FAULT=NAME:/path/arm kills the process that
    reaches point NAME while the file ``arm`` exists, deleting it first, so exactly one dies."""
    point, _, arm = os.environ.get("VITRINA_FAULT", "").partition(":")
    if point == name and arm:
        try:
            os.unlink(arm)
        except FileNotFoundError:
            return
        os._exit(137)
