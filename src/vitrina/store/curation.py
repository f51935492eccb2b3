"""What people say about items (schema.MIGRATION_9): named sets of items, labels (yes / no / skip
to a question) and corrections of machine tags. Sets and corrections feed the items' filter values
(``items.refresh_values``): ``set=NAME`` filters on a set, and a corrected tag filters on the
person's value. The checks on names and text are in ``vitrina.workbench``; this part only stores."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from ..faults import fault_point
from .items import refresh_values
from .sql import CHUNK, placeholders, transaction

__all__ = ["ANSWERS", "Curation"]

ANSWERS = ("yes", "no", "skip")


class Curation:
    """Sets, labels and corrections of one store connection (``Store.curation()``)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    # -- sets ---------------------------------------------------------------------------------

    def sets(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            """SELECT s.name, s.query, s.note, s.created_by, s.created_at, s.updated_at, count(i.item_id) AS items
               FROM sets s LEFT JOIN set_items i ON i.set_name = s.name GROUP BY s.name ORDER BY s.name"""
        ).fetchall()
        return [_set_row(r) for r in rows]

    def get_set(self, name: str) -> dict[str, Any] | None:
        row = self.db.execute(
            """SELECT s.name, s.query, s.note, s.created_by, s.created_at, s.updated_at,
                      (SELECT count(*) FROM set_items WHERE set_name = s.name) AS items
               FROM sets s WHERE s.name = ?""",
            (name,),
        ).fetchone()
        return _set_row(row) if row else None

    def set_members(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT item_id, score, added_by, added_at FROM set_items WHERE set_name = ? ORDER BY added_at, item_id"
        rows = self.db.execute(sql + (" LIMIT ?" if limit else ""), (name, limit) if limit else (name,))
        return [{"id": r[0], "score": r[1], "added_by": r[2], "added_at": r[3]} for r in rows]

    def add_to_set(self, name: str, members: Sequence[tuple[str, float | None]], who: str,
                   query: dict[str, Any] | None = None, note: str | None = None) -> int:  # fmt: skip
        """Add items (id, score) to set ``name`` (made when new; ``query`` and ``note`` replace the
        recorded ones when given). Returns how many were not in it yet."""
        now = time.time()
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO sets (name, query, note, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET updated_at = excluded.updated_at",
                (name, json.dumps(query or {}, ensure_ascii=False), note or "", who, now, now),
            )
            if query is not None:
                self.db.execute(
                    "UPDATE sets SET query = ? WHERE name = ?", (json.dumps(query, ensure_ascii=False), name)
                )
            if note is not None:
                self.db.execute("UPDATE sets SET note = ? WHERE name = ?", (note, name))
            before = self._count(name)
            self.db.executemany(
                "INSERT OR IGNORE INTO set_items (set_name, item_id, score, added_by, added_at) VALUES (?, ?, ?, ?, ?)",
                [(name, i, score, who, now) for i, score in members],
            )
            added = self._count(name) - before
            fault_point("before_set_commit")
            refresh_values(self.db, [i for i, _ in members])
        return added

    def remove_from_set(self, name: str, ids: Sequence[str] | None) -> int:
        """Take items out of set ``name``; ``ids`` None deletes the whole set. Returns items removed."""
        with transaction(self.db):
            if ids is None:
                ids = [r[0] for r in self.db.execute("SELECT item_id FROM set_items WHERE set_name = ?", (name,))]
                self.db.execute("DELETE FROM sets WHERE name = ?", (name,))  # set_items cascade
                gone = len(ids)
            else:
                gone = 0
                for k in range(0, len(ids), CHUNK):
                    chunk = list(ids[k : k + CHUNK])
                    gone += self.db.execute(
                        f"DELETE FROM set_items WHERE set_name = ? AND item_id IN ({placeholders(len(chunk))})",
                        [name, *chunk],
                    ).rowcount
            refresh_values(self.db, list(ids))
        return gone

    def rename_set(self, name: str, new_name: str) -> int:
        """Move set ``name`` and its items to ``new_name`` (which must not exist). Returns its items."""
        with transaction(self.db):
            ids = [r[0] for r in self.db.execute("SELECT item_id FROM set_items WHERE set_name = ?", (name,))]
            self.db.execute(
                "INSERT INTO sets (name, query, note, created_by, created_at, updated_at) "
                "SELECT ?, query, note, created_by, created_at, ? FROM sets WHERE name = ?",
                (new_name, time.time(), name),
            )
            self.db.execute("UPDATE set_items SET set_name = ? WHERE set_name = ?", (new_name, name))
            self.db.execute("DELETE FROM sets WHERE name = ?", (name,))
            refresh_values(self.db, ids)
        return len(ids)

    def _count(self, name: str) -> int:
        return int(self.db.execute("SELECT count(*) FROM set_items WHERE set_name = ?", (name,)).fetchone()[0])

    # -- labels -------------------------------------------------------------------------------

    def label(self, question: str, answers: Sequence[tuple[str, str]], who: str) -> None:
        """Record (item id, answer) for ``question``; a later answer replaces an earlier one."""
        now = time.time()
        with transaction(self.db):
            self.db.executemany(
                "INSERT INTO labels (question, item_id, answer, who, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(question, item_id) DO UPDATE SET answer = excluded.answer, who = excluded.who, at = excluded.at",
                [(question, i, a, who, now) for i, a in answers],
            )

    def unlabel(self, question: str, ids: Sequence[str]) -> int:
        with transaction(self.db):
            return sum(
                self.db.execute("DELETE FROM labels WHERE question = ? AND item_id = ?", (question, i)).rowcount
                for i in ids
            )

    def labels(self, question: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT item_id, answer, who, at FROM labels WHERE question = ? ORDER BY at, item_id", (question,)
        )
        return [{"id": r[0], "answer": r[1], "who": r[2], "at": r[3]} for r in rows]

    def questions(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            """SELECT question, sum(answer = 'yes'), sum(answer = 'no'), sum(answer = 'skip'), max(at)
               FROM labels GROUP BY question ORDER BY max(at) DESC"""
        )
        return [{"question": r[0], "yes": r[1], "no": r[2], "skip": r[3], "last": r[4]} for r in rows]

    # -- corrections of machine tags ----------------------------------------------------------

    def correct(self, name: str, values: Sequence[tuple[str, str | None]], who: str, source: str = "") -> None:
        """Set the person's value of tag ``name`` on items (id, value); value None removes the
        correction (the machine's value shows again)."""
        now = time.time()
        with transaction(self.db):
            for item_id, value in values:
                if value is None:
                    self.db.execute("DELETE FROM corrections WHERE item_id = ? AND name = ?", (item_id, name))
                else:
                    self.db.execute(
                        "INSERT OR REPLACE INTO corrections (item_id, name, value, source, who, at) VALUES (?, ?, ?, ?, ?, ?)",
                        (item_id, name, value, source, who, now),
                    )
            refresh_values(self.db, [i for i, _ in values])

    def replace_corrections(self, name: str, source: str, values: Sequence[tuple[str, str, str]]) -> None:
        """Make the corrections of tag ``name`` that came from ``source`` exactly (id, value, who)."""
        now = time.time()
        with transaction(self.db):
            before = [
                r[0]
                for r in self.db.execute(
                    "SELECT item_id FROM corrections WHERE name = ? AND source = ?", (name, source)
                )
            ]
            self.db.execute("DELETE FROM corrections WHERE name = ? AND source = ?", (name, source))
            self.db.executemany(
                "INSERT OR REPLACE INTO corrections (item_id, name, value, source, who, at) VALUES (?, ?, ?, ?, ?, ?)",
                [(i, name, v, source, who, now) for i, v, who in values],
            )
            refresh_values(self.db, sorted(set(before) | {i for i, _, _ in values}))

    def corrections(self, name: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT item_id, name, value, source, who, at FROM corrections"
        rows = self.db.execute(sql + " WHERE name = ? ORDER BY item_id" if name else sql + " ORDER BY name, item_id",
                               (name,) if name else ())  # fmt: skip
        return [{"id": r[0], "name": r[1], "value": r[2], "source": r[3], "who": r[4], "at": r[5]} for r in rows]

    def corrections_of(self, item_id: str) -> list[dict[str, Any]]:
        """One item's corrections (the primary key's first column: no scan of the table)."""
        rows = self.db.execute(
            "SELECT item_id, name, value, source, who, at FROM corrections WHERE item_id = ? ORDER BY name", (item_id,)
        )
        return [{"id": r[0], "name": r[1], "value": r[2], "source": r[3], "who": r[4], "at": r[5]} for r in rows]

    # -- corrections of OCR words (store/word_fixes.py) ----------------------------------------

    def fix_word(self, item_id: str, n: int, text: str | None, who: str) -> dict[str, Any] | None:
        """Word ``n`` of the item reads ``text`` (None: what the machine read); None: no such word."""
        from .word_fixes import fix_word

        return fix_word(self.db, item_id, n, text, who)

    def word_fixes(self, item_id: str) -> list[dict[str, Any]]:
        from .word_fixes import fixes_of

        return fixes_of(self.db, item_id)


def _set_row(r: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    try:
        query = json.loads(r[1])
    except ValueError:
        query = {}
    return {"name": r[0], "query": query, "note": r[2], "created_by": r[3], "created_at": r[4], "updated_at": r[5], "items": r[6]}  # fmt: skip
