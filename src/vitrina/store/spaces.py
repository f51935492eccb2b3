"""Spaces: one vector file each, which row belongs to which item, dead rows and compaction.

Write order for a batch of vectors: rows written to the vector file and fsynced, then one SQLite
transaction maps them to items and raises the space's committed row count. A kill between the two
leaves unreferenced rows past the count, which the next append overwrites. Re-embedding an item
appends a new row and records the old one as dead; dead rows are masked at search time, and
reclaimed by ``compact`` (see there) once they are a large share of the file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import NoEmbeddings, NoSuchSpace, SpaceMismatch, StoreCorrupt
from ..faults import fault_point
from ..files import fsync_dir
from ..records import ModelFingerprint
from ..vectors import VectorFile
from .paths import CollectionPaths
from .regions import RegionBatch, Regions
from .sql import CHUNK, ints, placeholders, transaction

__all__ = ["Space", "Spaces"]


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


class Spaces:
    """The spaces of one store connection, their vector files mapped once (``Store`` delegates)."""

    def __init__(self, db: sqlite3.Connection, paths: CollectionPaths, name: str):
        self.db, self.paths, self.name = db, paths, name
        self._files: dict[str, VectorFile] = {}
        self.regions = Regions(db)

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
            raise NoEmbeddings(f"Collection {self.name!r} has no embeddings yet. Run: vitrina index {self.paths.root}")
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
        VectorFile.create(self.paths.vector_file(file), fingerprint).close()
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO spaces (name, fingerprint, dim, rows, created_at, file) VALUES (?, ?, ?, 0, ?, ?)",
                (name, fingerprint.to_json(), fingerprint.dim, time.time(), file),
            )
        return self.space(name)

    def pin_fingerprint(self, name: str, fingerprint: ModelFingerprint) -> bool:
        """Replace a provisional fingerprint (imported vectors) by the loaded model's, once."""
        with transaction(self.db):
            row = self.db.execute("SELECT fingerprint FROM spaces WHERE name=?", (name,)).fetchone()
            if row is None or not ModelFingerprint.from_json(row[0]).provisional or fingerprint.provisional:
                return False
            self.db.execute("UPDATE spaces SET fingerprint=? WHERE name=?", (fingerprint.to_json(), name))
        return True

    def drop_space(self, name: str) -> None:
        path = self.space_file(self.space(name))
        with transaction(self.db):
            self.db.execute("DELETE FROM vectors WHERE space=?", (name,))
            self.db.execute("DELETE FROM dead_rows WHERE space=?", (name,))
            self.db.execute("DELETE FROM spaces WHERE name=?", (name,))
        self._forget(name)
        path.unlink(missing_ok=True)

    def space_file(self, space: Space) -> Path:
        return self.paths.vector_file(space.file)

    def remove_stray_files(self) -> None:
        """Vector files no space refers to: left by a kill during a compaction or a re-embed (before
        its commit: the new file; after it: the old one). Only a writer may do this."""
        known = {s.file for s in self.spaces()}
        for path in self.paths.spaces_dir.glob("*.f32"):
            if path.name not in known:
                path.unlink(missing_ok=True)
        for path in self.paths.spaces_dir.glob(".*.tmp"):  # write_atomic's, of a killed VectorFile.create
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
        ids, item_rows = self.live_vectors(name)
        region_rows = np.sort(self.regions.rows(name)[0])
        rows = np.sort(np.concatenate([item_rows, region_rows]))  # regions keep their place among the rows
        new_of = {int(o): n for n, o in enumerate(rows.tolist())}
        old = self.vector_file(space)
        file = _new_file_name(name)
        new = VectorFile.create(self.paths.vector_file(file), space.fingerprint)
        try:
            matrix = old.matrix(space.rows)
            step = max(1, (64 << 20) // old.row_bytes)  # 64 MB at a time
            for start in range(0, len(rows), step):
                new.write_rows(start, matrix[rows[start : start + step]])
        finally:
            new.close()
        fsync_dir(self.paths.spaces_dir)
        fault_point("compact_written")
        with transaction(self.db):
            # Ascending order: each new row number is <= the old one and not held by a later row,
            # so (space, row) stays unique at every step.
            self.db.executemany(
                "UPDATE vectors SET row=? WHERE space=? AND item_id=?",
                ((new_of[int(r)], name, i) for r, i in zip(item_rows.tolist(), ids)),
            )
            self.regions.renumber(name, [(new_of[int(r)], int(r)) for r in region_rows.tolist()])
            self.db.execute("DELETE FROM dead_rows WHERE space=?", (name,))
            self.db.execute("UPDATE spaces SET rows=?, file=? WHERE name=?", (len(rows), file, name))
            fault_point("compact_before_commit")
        fault_point("compact_committed")
        self._forget(name)
        self.space_file(space).unlink(missing_ok=True)
        return dead

    def vector_file(self, space: Space, writable: bool = False) -> VectorFile:
        """The space's vector file, mapped once; re-opened when the space was re-created (a
        re-embed replaces the file: a reader must not keep scoring against the old one)."""
        vf = self._files.get(space.name)
        if vf is not None and (vf.generation != space.generation or not vf.is_current()):
            vf.close()
            vf = None
        if vf is None or (writable and not vf.writable):
            vf = VectorFile.open(self.space_file(space), writable=writable, committed_rows=space.rows)
            if (
                vf.fingerprint is None
                or not vf.fingerprint.compatible(space.fingerprint)
                or vf.dim != space.fingerprint.dim
            ):
                vf.close()
                made_by = vf.fingerprint.describe() if vf.fingerprint else "an unknown model"
                raise StoreCorrupt(
                    f"{vf.path} holds vectors of {made_by} but the collection records {space.fingerprint.describe()} for space "
                    f"{space.name!r}: the file was replaced or copied from elsewhere. Rebuild this space with `vitrina index {self.paths.root} --reembed`."
                )
            vf.generation = space.generation
            self._files[space.name] = vf
        return vf

    def _forget(self, name: str) -> None:
        vf = self._files.pop(name, None)
        if vf:
            vf.close()

    def close_vector_files(self) -> None:
        """Forget mapped vector files (after a writer replaced or grew them)."""
        for vf in self._files.values():
            vf.close()
        self._files.clear()

    def add_vectors(self, space_name: str, items: Sequence[tuple[str, str]], vectors: np.ndarray, failures: Sequence[tuple[str, str, str]] = (),
                    meta: dict[str, str] | None = None, regions: RegionBatch | None = None) -> None:  # fmt: skip
        """Append vectors for ``items`` ((id, fingerprint) pairs) and record ``failures``
        ((id, reason, detail)) in one durable step: vectors first, then the commit. ``meta``
        keys (an importer's checkpoint) are written in the same transaction; so are ``regions``
        (their vectors follow the items' in the file, and replace the regions of their items)."""
        space = self.space(space_name)
        if len(items) != len(vectors):
            raise ValueError("one vector per item")
        vf = self.vector_file(space, writable=True)
        start = space.rows
        if len(items):
            vf.write_rows(start, vectors)
        cut = len(regions.owners) if regions is not None else 0
        if regions is not None and cut:
            vf.write_rows(start + len(items), regions.vectors)
        fault_point("after_vector_write")
        with transaction(self.db):
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
                self.regions.forget_item(item_id)
            if regions is not None:
                self.regions.write(space_name, start + len(items), regions)
            self.db.execute("UPDATE spaces SET rows = rows + ? WHERE name = ?", (len(items) + cut, space_name))
            for key, value in (meta or {}).items():
                self.db.execute(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value)
                )
            fault_point("before_commit")
        fault_point("after_commit")

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
        return ints(rows), ints(rids)

    def dead_rows(self, space: str) -> np.ndarray:
        return ints(self.db.execute("SELECT group_concat(row) FROM dead_rows WHERE space=?", (space,)).fetchone()[0])

    def rows_of(self, space: str, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(0, len(ids), CHUNK):
            chunk = list(ids[i : i + CHUNK])
            out.update(
                self.db.execute(
                    f"SELECT item_id, row FROM vectors WHERE space=? AND item_id IN ({placeholders(len(chunk))})",
                    [space, *chunk],
                ).fetchall()
            )
        return out


def _new_file_name(space: str) -> str:
    return f"{space}.{time.time_ns():x}.f32"
