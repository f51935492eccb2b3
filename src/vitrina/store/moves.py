"""Moved files, recognised by their content: the store side of ``vitrina.moves``.

An item whose file disappeared (``departures``) and a file listed for the first time with the
same content hash (``arrivals``: never embedded) are one picture that was moved or renamed.
``carry_over`` gives the old item the new id, location and metadata in one transaction: it keeps
its rid, so its vectors (every space), regions, OCR words and FTS row stay as they are, and the
rows keyed by the id (vectors, tags, sets, labels, corrections) are re-keyed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence

from ..faults import fault_point
from .items import refresh_values
from .sql import CHUNK, placeholders, transaction

__all__ = ["MOVED_KEY", "Moves"]

MOVED_KEY = "moved_items"  # meta: how many items have been carried over to a new id, ever

# Rows a person made about an item (set_items, labels, corrections; word_fixes, schema 10) are keyed by its id (schema 9).
# Where the new id has rows of its own (a file of that name labelled long ago), the moved item's win.


class Moves:
    """Content hashes and carrying items over to their new ids (``Store.moves()``)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def unhashed(self, ids: Sequence[str]) -> list[tuple[str, str]]:
        """(id, image) of these items with no content hash yet: new, changed, or stored before
        schema 11. Unchanged files keep their hash and are not read again."""
        out: list[tuple[str, str]] = []
        for i in range(0, len(ids), CHUNK):
            chunk = list(ids[i : i + CHUNK])
            out += self.db.execute(
                f"SELECT id, image FROM items WHERE content_hash IS NULL AND id IN ({placeholders(len(chunk))})", chunk
            ).fetchall()
        return [(r[0], r[1]) for r in out]

    def set_hashes(self, hashes: Iterable[tuple[str, str]]) -> None:
        """Record (id, content hash) pairs."""
        with transaction(self.db):
            self.db.executemany("UPDATE items SET content_hash = ? WHERE id = ?", [(h, i) for i, h in hashes])

    def departures(self, sources: Iterable[str], listed: set[str]) -> dict[str, list[str]]:
        """Hash -> ids (sorted) of the hashed items of ``sources`` that this run did not list."""
        out: dict[str, list[str]] = {}
        for source in sources:
            for item_id, h in self.db.execute(
                "SELECT id, content_hash FROM items WHERE source = ? AND content_hash IS NOT NULL", (source,)
            ):
                if item_id not in listed:
                    out.setdefault(h, []).append(item_id)
        return {h: sorted(ids) for h, ids in out.items()}

    def arrivals(self, hashes: Sequence[str], listed: set[str]) -> dict[str, list[str]]:
        """Hash -> ids (sorted) of items listed this run with one of ``hashes`` that have never been
        embedded (no vector in any space): a new file, or one a killed run added but did not embed.
        A file already embedded is a true duplicate of the departed one and stays its own item."""
        out: dict[str, list[str]] = {}
        for i in range(0, len(hashes), CHUNK):
            chunk = list(hashes[i : i + CHUNK])
            for item_id, h in self.db.execute(
                f"""SELECT id, content_hash FROM items i WHERE content_hash IN ({placeholders(len(chunk))})
                    AND NOT EXISTS (SELECT 1 FROM spaces s CROSS JOIN vectors v ON v.space = s.name AND v.item_id = i.id)""",
                chunk,
            ):
                if item_id in listed:
                    out.setdefault(h, []).append(item_id)
        return {h: sorted(ids) for h, ids in out.items()}

    def carry_over(self, pairs: Sequence[tuple[str, str]]) -> int:
        """Carry each (old id, new id) over in one transaction: the new id's fresh row goes, the old
        item takes its id, source, location, metadata and fingerprint, and everything of the old
        item follows. A kill leaves all pairs before or all after. Returns the pairs carried."""
        done = 0
        with transaction(self.db):
            self.db.execute("PRAGMA defer_foreign_keys = ON")  # ids re-keyed below, checked at commit
            questions = [r[0] for r in self.db.execute("SELECT DISTINCT question FROM labels")]
            now = time.time()
            for old, new in pairs:
                if self._carry(old, new, questions):
                    done += 1
                    # the old id leads to the new one (and ids that led to the old one follow)
                    self.db.execute("DELETE FROM moved_ids WHERE old_id = ?", (new,))  # a real item again
                    self.db.execute("UPDATE moved_ids SET new_id = ? WHERE new_id = ?", (new, old))
                    self.db.execute("INSERT OR REPLACE INTO moved_ids VALUES (?, ?, ?)", (old, new, now))
                fault_point("mid_move")
            refresh_values(self.db, [new for _, new in pairs])
            self._rename_in_lists(dict(pairs))
            # Counted, so what keeps item ids outside the database (the map file) knows it is stale.
            self.db.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + ?",
                (MOVED_KEY, str(done), done),
            )
        return done

    def moved_to(self, ids: Sequence[str]) -> dict[str, str]:
        """The ids these old ids of moved items have now (ids that were never moved are left out)."""
        out: dict[str, str] = {}
        for i in range(0, len(ids), CHUNK):
            chunk = list(ids[i : i + CHUNK])
            out.update(
                self.db.execute(
                    f"SELECT old_id, new_id FROM moved_ids WHERE old_id IN ({placeholders(len(chunk))}) "
                    "AND NOT EXISTS (SELECT 1 FROM items WHERE id = old_id)",  # a name taken again is that item's
                    chunk,
                ).fetchall()
            )
        return out

    def _rename_in_lists(self, renamed: dict[str, str]) -> None:
        """Item ids kept as JSON lists in ``meta`` (the workbench's memory of its random review
        picks, ``workbench.random.TAG``) follow the move too, so a moved pick still counts."""
        rows = self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'workbench.random.%'").fetchall()
        for key, value in rows:
            try:
                ids = json.loads(value)
            except ValueError:
                continue
            if isinstance(ids, list) and any(i in renamed for i in ids):
                self.db.execute(
                    "UPDATE meta SET value = ? WHERE key = ?", (json.dumps([renamed.get(i, i) for i in ids]), key)
                )

    def _carry(self, old: str, new: str, questions: list[str]) -> bool:
        """One pair; every statement an index lookup (by space, by question: their keys lead)."""
        db = self.db
        was = db.execute("SELECT rid, fingerprint FROM items WHERE id = ?", (old,)).fetchone()
        row = db.execute(
            "SELECT source, image, metadata, context, fingerprint, content_hash FROM items WHERE id = ?", (new,)
        ).fetchone()
        if was is None or row is None:
            return False
        rid, old_fp = was
        new_fp = row[4]
        db.execute("DELETE FROM items WHERE id = ?", (new,))  # never embedded: nothing of it is lost
        db.execute(
            """UPDATE items SET id = ?, source = ?, image = ?, metadata = ?, context = ?, fingerprint = ?,
               content_hash = ?, updated_at = ? WHERE rid = ?""",
            (new, *row, time.time(), rid),
        )
        # Vectors computed from the old fingerprint are the new one's (same bytes; a copy has a new mtime).
        db.execute(
            "UPDATE vectors SET item_id = ?, fingerprint = CASE WHEN fingerprint = ? THEN ? ELSE fingerprint END "
            "WHERE space IN (SELECT name FROM spaces) AND item_id = ?",
            (new, old_fp, new_fp, old),
        )
        db.execute("UPDATE tags SET item_id = ? WHERE item_id = ?", (new, old))
        for table in ("set_items", "corrections", "word_fixes"):
            db.execute(f"UPDATE OR REPLACE {table} SET item_id = ? WHERE item_id = ?", (new, old))
        for i in range(0, len(questions), CHUNK):
            part = questions[i : i + CHUNK]
            db.execute(f"UPDATE OR REPLACE labels SET item_id = ? WHERE question IN ({placeholders(len(part))}) AND item_id = ?",
                       (new, *part, old))  # fmt: skip
        db.execute("UPDATE ocr_pages SET fingerprint = ? WHERE rid = ? AND fingerprint = ?", (new_fp, rid, old_fp))
        db.execute(
            "UPDATE region_sets SET cut = ? || substr(cut, ?) WHERE space IN (SELECT name FROM spaces) AND rid = ? "
            "AND substr(cut, 1, ?) = ?",
            (new_fp, len(old_fp) + 1, rid, len(old_fp) + 1, old_fp + "|"),
        )
        return True
