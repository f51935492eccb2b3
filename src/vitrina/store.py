"""The embedded collection store: SQLite (WAL) for items and state, one vector file per space.

    <collection>/
      collection.sqlite     items, spaces, which vector row belongs to which item
      spaces/<space>.f32    vectors (see vectors.py)
      writer.lock           held (flock) by the one process allowed to write

Write order for a batch of vectors: rows written to the vector file and fsynced, then one SQLite
transaction maps them to items and raises the space's committed row count. A kill between the two
leaves unreferenced rows past the count, which the next append overwrites. Re-embedding an item
appends a new row and records the old one as dead; dead rows are masked at search time.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CollectionNotFound, SpaceMismatch, StoreCorrupt, StoreLocked
from .records import Item, ModelFingerprint
from .vectors import VectorFile

SCHEMA_VERSION = 1
SCHEMA = """
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
        raise CollectionNotFound(f"{text!r} is not a valid collection name: use letters, digits, '.', '_' and '-', or give a path.")
    return (home or default_home()) / text


@dataclass(frozen=True)
class Space:
    name: str
    fingerprint: ModelFingerprint
    rows: int  # committed rows
    live: int  # rows that belong to an item


class Store:
    """Low-level access to one collection folder. ``Collection`` is the friendly face."""

    def __init__(self, path: Path, *, create: bool = False, writer: bool = False):
        self.path = path
        self.name = path.name
        db = path / "collection.sqlite"
        if not db.exists():
            if not create:
                raise CollectionNotFound(f"No collection at {path}. Create it with: vitrina index FOLDER --collection {path.name}")
            (path / "spaces").mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        if writer:
            self._acquire_writer_lock()
        self.db = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.create_function("vitrina_match", 3, _match, deterministic=True)
        if writer or create:
            with self.transaction():
                for statement in _statements(SCHEMA):
                    self.db.execute(statement)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        version = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if version and int(version[0]) > SCHEMA_VERSION:
            raise StoreCorrupt(f"{db} was written by a newer vitrina (schema {version[0]}, this one reads <= {SCHEMA_VERSION}); upgrade vitrina.")
        self._vector_files: dict[str, VectorFile] = {}
        self.has_tags = self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='tags'").fetchone() is not None

    # -- locking and transactions -------------------------------------------------------------

    def _acquire_writer_lock(self) -> None:
        lock_path = self.path / "writer.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreLocked(f"Collection {self.name!r} is being written by {holder}; wait for it to finish, or stop it and run again.") from None
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

    def close_vector_files(self) -> None:
        """Forget mapped vector files (after a writer replaced or grew them)."""
        for vf in self._vector_files.values():
            vf.close()
        self._vector_files.clear()

    def close(self) -> None:
        for vf in self._vector_files.values():
            vf.close()
        self._vector_files.clear()
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
                self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    # -- items --------------------------------------------------------------------------------

    def sync_items(self, items: Iterable[Item]) -> dict[str, int]:
        """Upsert items. One whose fingerprint changed goes back to pending (to be re-embedded);
        one whose metadata or context text changed is updated in place and keeps its vector."""
        counts = {"new": 0, "changed": 0, "updated": 0, "unchanged": 0}
        seen: set[str] = set()
        now = time.time()
        batch: list[Item] = []

        def flush() -> None:
            with self.transaction():
                for item in batch:
                    metadata = json.dumps(item.metadata, ensure_ascii=False)
                    row = self.db.execute("SELECT fingerprint, metadata, context FROM items WHERE id=?", (item.id,)).fetchone()
                    if row is not None and row[0] == item.fingerprint:
                        if (row[1], row[2]) == (metadata, item.context):
                            counts["unchanged"] += 1
                        else:
                            counts["updated"] += 1
                            self.db.execute("UPDATE items SET metadata=?, context=?, updated_at=? WHERE id=?", (metadata, item.context, now, item.id))
                        continue
                    counts["new" if row is None else "changed"] += 1
                    self.db.execute(
                        """INSERT INTO items (id, source, image, metadata, context, fingerprint, status, updated_at)
                           VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)
                           ON CONFLICT(id) DO UPDATE SET source=excluded.source, image=excluded.image,
                             metadata=excluded.metadata, context=excluded.context, fingerprint=excluded.fingerprint,
                             status='pending', reason=NULL, detail=NULL, updated_at=excluded.updated_at""",
                        (item.id, item.source, item.image, metadata, item.context, item.fingerprint, now),
                    )
            batch.clear()

        for item in items:
            if item.id in seen:
                continue  # the same id twice in one source: first wins
            seen.add(item.id)
            batch.append(item)
            if len(batch) >= 1000:
                flush()
        flush()
        return counts

    def remove_missing(self, source: str, keep: set[str]) -> int:
        """Delete the items of ``source`` whose ids are not in ``keep`` (it no longer lists them)."""
        gone = [r[0] for r in self.db.execute("SELECT id FROM items WHERE source=?", (source,)) if r[0] not in keep]
        with self.transaction():
            for i in range(0, len(gone), 500):
                chunk = gone[i : i + 500]
                self.db.execute(f"DELETE FROM items WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        return len(gone)

    def pending(self, space: str, *, retry_failed: bool = False) -> list[sqlite3.Row]:
        """Items with no vector in ``space`` for their current fingerprint, in a stable order."""
        failed = "" if retry_failed else "AND i.status != 'failed'"
        return self.db.execute(
            f"""SELECT i.id, i.image, i.fingerprint FROM items i
                LEFT JOIN vectors v ON v.item_id = i.id AND v.space = ?
                WHERE (v.item_id IS NULL OR v.fingerprint != i.fingerprint) {failed}
                ORDER BY i.id""",
            (space,),
        ).fetchall()

    def get_items(self, ids: Sequence[str]) -> dict[str, sqlite3.Row]:
        out: dict[str, sqlite3.Row] = {}
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            for row in self.db.execute(f"SELECT * FROM items WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                out[row["id"]] = row
        return out

    def count_items(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("SELECT status, count(*) FROM items GROUP BY status")}

    def failures(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT id, image, reason, detail FROM items WHERE status='failed' ORDER BY id").fetchall()

    # -- spaces and vectors -------------------------------------------------------------------

    def spaces(self) -> list[Space]:
        rows = self.db.execute(
            # Every committed row is either mapped to an item or dead, so live = rows - dead:
            # counting the (small) dead_rows table is cheap; counting vectors is not.
            """SELECT s.name, s.fingerprint, s.rows, s.rows - (SELECT count(*) FROM dead_rows d WHERE d.space = s.name) AS live
               FROM spaces s ORDER BY s.created_at"""
        ).fetchall()
        return [Space(r["name"], ModelFingerprint.from_json(r["fingerprint"]), r["rows"], r["live"]) for r in rows]

    def space(self, name: str | None = None) -> Space:
        spaces = self.spaces()
        if not spaces:
            raise CollectionNotFound(f"Collection {self.name!r} has no embeddings yet. Run: vitrina index FOLDER --collection {self.name}")
        if name is None:
            return spaces[0]
        for space in spaces:
            if space.name == name:
                return space
        names = ", ".join(s.name for s in spaces)
        raise SpaceMismatch(f"Collection {self.name!r} has no space {name!r}; it has: {names}.")

    def ensure_space(self, name: str, fingerprint: ModelFingerprint) -> Space:
        """Create the space for this model, or check that the existing one is the same model."""
        existing = {s.name: s for s in self.spaces()}
        if name in existing:
            old = existing[name].fingerprint
            if (old.revision, old.dim, old.preprocessing) != (fingerprint.revision, fingerprint.dim, fingerprint.preprocessing):
                raise SpaceMismatch(
                    f"Space {name!r} of collection {self.name!r} was built with {old.describe()}; this run uses "
                    f"{fingerprint.describe()}. Index into a new space with --space NAME, or re-embed with --reembed."
                )
            return existing[name]
        path = self._space_file(name)
        VectorFile.create(path, fingerprint)
        with self.transaction():
            self.db.execute("INSERT INTO spaces (name, fingerprint, dim, rows, created_at) VALUES (?, ?, ?, 0, ?)", (name, fingerprint.to_json(), fingerprint.dim, time.time()))
        return self.space(name)

    def drop_space(self, name: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM vectors WHERE space=?", (name,))
            self.db.execute("DELETE FROM dead_rows WHERE space=?", (name,))
            self.db.execute("DELETE FROM spaces WHERE name=?", (name,))
        vf = self._vector_files.pop(name, None)
        if vf:
            vf.close()
        self._space_file(name).unlink(missing_ok=True)

    def _space_file(self, name: str) -> Path:
        return self.path / "spaces" / f"{name}.f32"

    def vector_file(self, space: Space, writable: bool = False) -> VectorFile:
        vf = self._vector_files.get(space.name)
        if vf is None or (writable and not vf.writable):
            vf = VectorFile.open(self._space_file(space.name), writable=writable, committed_rows=space.rows)
            self._vector_files[space.name] = vf
        return vf

    def add_vectors(self, space_name: str, items: Sequence[tuple[str, str]], vectors: np.ndarray, failures: Sequence[tuple[str, str, str]] = ()) -> None:
        """Append vectors for ``items`` ((id, fingerprint) pairs) and record ``failures``
        ((id, reason, detail)) in one durable step: vectors first, then the commit."""
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
            for offset, (item_id, fingerprint) in enumerate(items):
                self.db.execute(
                    """INSERT INTO vectors (space, item_id, row, fingerprint) VALUES (?, ?, ?, ?)
                       ON CONFLICT(space, item_id) DO UPDATE SET row=excluded.row, fingerprint=excluded.fingerprint""",
                    (space_name, item_id, start + offset, fingerprint),
                )
                self.db.execute("UPDATE items SET status='ok', reason=NULL, detail=NULL, updated_at=? WHERE id=?", (now, item_id))
            for item_id, reason, detail in failures:
                self.db.execute("UPDATE items SET status='failed', reason=?, detail=?, updated_at=? WHERE id=?", (reason, detail, now, item_id))
            self.db.execute("UPDATE spaces SET rows = rows + ? WHERE name = ?", (len(items), space_name))
            _fault_point("before_commit")
        _fault_point("after_commit")

    def live_vectors(self, space: str) -> tuple[list[str], np.ndarray]:
        """(item ids, their rows) of every live vector in ``space``, in row order."""
        rows = self.db.execute("SELECT item_id, row FROM vectors WHERE space=? ORDER BY row", (space,)).fetchall()
        return [r[0] for r in rows], np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))

    def set_tags(self, name: str, classifier: str, tags: Sequence[tuple[str, str, float]]) -> None:
        """Replace tag ``name`` on the given items: (item id, value, score)."""
        with self.transaction():
            self.db.execute("DELETE FROM tags WHERE name=?", (name,))
            self.db.executemany("INSERT INTO tags (item_id, name, value, score, classifier) VALUES (?, ?, ?, ?, ?)", [(i, name, v, float(sc), classifier) for i, v, sc in tags])

    def tags_of(self, item_id: str) -> dict[str, dict[str, Any]]:
        if not self.has_tags:
            return {}
        return {r[0]: {"value": r[1], "score": r[2], "classifier": r[3]} for r in self.db.execute("SELECT name, value, score, classifier FROM tags WHERE item_id=?", (item_id,))}

    def dead_rows(self, space: str) -> np.ndarray:
        return np.fromiter((r[0] for r in self.db.execute("SELECT row FROM dead_rows WHERE space=?", (space,))), dtype=np.int64)

    def rows_of(self, space: str, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            for r in self.db.execute(f"SELECT item_id, row FROM vectors WHERE space=? AND item_id IN ({','.join('?' * len(chunk))})", [space, *chunk]):
                out[r[0]] = r[1]
        return out

    def ids_of_rows(self, space: str, rows: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        for i in range(0, len(rows), 500):
            chunk = [int(r) for r in rows[i : i + 500]]
            for r in self.db.execute(f"SELECT row, item_id FROM vectors WHERE space=? AND row IN ({','.join('?' * len(chunk))})", [space, *chunk]):
                out[r[0]] = r[1]
        return out

    def filtered_rows(self, space: str, where_sql: str, params: Sequence[Any]) -> np.ndarray:
        sql = f"SELECT v.row FROM vectors v JOIN items i ON i.id = v.item_id WHERE v.space = ? AND ({where_sql})"
        return np.fromiter((r[0] for r in self.db.execute(sql, [space, *params])), dtype=np.int64)

    def check(self) -> list[str]:
        """Consistency problems, empty when the store is sound (used by `vitrina info --check`)."""
        problems = []
        if self.db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            problems.append("SQLite integrity_check failed")
        for space in self.spaces():
            bad = self.db.execute("SELECT count(*) FROM vectors WHERE space=? AND row >= ?", (space.name, space.rows)).fetchone()[0]
            if bad:
                problems.append(f"space {space.name}: {bad} items point past the committed rows")
            mapped = self.db.execute("SELECT count(*) FROM vectors WHERE space=?", (space.name,)).fetchone()[0]
            if mapped != space.live:
                problems.append(f"space {space.name}: {mapped} mapped vectors but {space.live} live rows")
            try:
                self.vector_file(space)
            except StoreCorrupt as e:
                problems.append(str(e))
        return problems


def _statements(script: str) -> list[str]:
    """Split the schema into statements (triggers contain ';' inside BEGIN ... END)."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined.endswith(";") and (not joined.upper().startswith("CREATE TRIGGER") or joined.upper().endswith("END;")):
            out.append(joined)
            buf = []
    return out


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _match(value: Any, op: str, operand: str) -> int:
    """SQL function behind --where: compares one metadata value (lists match if any element does)."""
    if isinstance(value, str) and value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            hits = [_match(v if not isinstance(v, (dict, list)) else json.dumps(v), op, operand) for v in parsed]
            return int(all(hits)) if op == "!=" else int(any(hits))
    if value is None:
        return int(op == "!=")
    text = str(value)
    if op == "~":
        return int(operand.casefold() in text.casefold())
    if op in ("=", "!="):
        equal = text.casefold() == operand.casefold() or _numbers_equal(text, operand)
        return int(equal == (op == "="))
    # ordering: compare the leading number ("1750-03-01" -> 1750) when the operand is a number
    want = _NUMBER.fullmatch(operand.strip())
    if want:
        got = _NUMBER.search(text)
        if not got:
            return 0
        a, b = float(got.group()), float(operand)
    else:
        a, b = text.casefold(), operand.casefold()  # type: ignore[assignment]
    return int({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])


def _numbers_equal(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False


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
