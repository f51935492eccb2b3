"""Items: their rows, their normalised values (for filters and facets), tags, hiding and pruning."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..filters import normal_values
from ..records import Item
from .curated import curated_values
from .sql import CHUNK, ints, placeholders, transaction

__all__ = ["HIDDEN", "MAX_ID_CHARS", "Items", "id_problem", "refresh_values"]

HIDDEN = "hidden"  # the tag that hides an item from results (``vitrina prune --hide``)
MAX_ID_CHARS = 2000  # what the service accepts in ?id=


def id_problem(item_id: str) -> str | None:
    """Why ``item_id`` cannot be an item's id (None: it can). Ids travel in URLs, map files, CSV
    and JSON lines, and terminals: a control character (a newline, a tab, NUL, ...) in one is a
    source error, refused at import rather than stored."""
    if not item_id:
        return "the id is empty (null); give every row an id"
    if len(item_id) > MAX_ID_CHARS:
        return f"the id is {len(item_id):,} characters long, over {MAX_ID_CHARS:,}"
    for ch in item_id:
        if ord(ch) < 32 or 127 <= ord(ch) < 160 or ch in "\u2028\u2029":
            return f"the id holds a control character (U+{ord(ch):04X}); remove it from the source"
    return None


class Items:
    """The items of one store connection (``Store`` delegates to it)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

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
            with transaction(self.db):
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
                             status='pending', reason=NULL, detail=NULL, updated_at=excluded.updated_at,
                             content_hash=NULL""",
                        (item.id, item.source, item.image, metadata, item.context, item.fingerprint, now),
                    )
                refresh_values(self.db, touched)
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

    def remove_missing(self, source: str, keep: set[str]) -> int:
        """Delete the items of ``source`` whose ids are not in ``keep`` (it no longer lists them)."""
        gone = [r[0] for r in self.db.execute("SELECT id FROM items WHERE source=?", (source,)) if r[0] not in keep]
        with transaction(self.db):
            for i in range(0, len(gone), CHUNK):
                chunk = gone[i : i + CHUNK]
                self.db.execute(f"DELETE FROM items WHERE id IN ({placeholders(len(chunk))})", chunk)
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

    def _by_id(self, sql: str, ids: Sequence[Any], *extra: Any) -> Iterator[Any]:
        """Rows of ``sql`` (with one ``{}`` for the IN list) for ``ids``, a chunk at a time."""
        for i in range(0, len(ids), CHUNK):
            chunk = list(ids[i : i + CHUNK])
            yield from self.db.execute(sql.format(placeholders(len(chunk))), [*extra, *chunk])

    def get_items(self, ids: Sequence[str], *, tags: bool = False) -> dict[str, Item]:
        """Items by id (those that exist), as ``Item`` records; ``tags`` adds classifier tags."""
        return {
            row["id"]: _item(row, self.tags_of(row["id"]) if tags else {})
            for row in self._by_id("SELECT * FROM items WHERE id IN ({})", ids)
        }

    def fingerprints_of(self, ids: Sequence[str]) -> dict[str, str]:
        """Item fingerprints by id (those that exist): what a vector is recorded against."""
        return dict(self._by_id("SELECT id, fingerprint FROM items WHERE id IN ({})", ids))

    def ids_of_rids(self, rids: Sequence[int]) -> dict[int, str]:
        return dict(self._by_id("SELECT rid, id FROM items WHERE rid IN ({})", [int(r) for r in rids]))

    def rids_of(self, ids: Sequence[str]) -> dict[str, int]:
        return dict(self._by_id("SELECT id, rid FROM items WHERE id IN ({})", ids))

    def item_rids(self) -> np.ndarray:
        """The rid of every item, in no particular order."""
        return ints(self.db.execute("SELECT group_concat(rid) FROM items").fetchone()[0])

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

    # -- tags, hiding, pruning ----------------------------------------------------------------

    def set_tags(self, name: str, classifier: str, tags: Sequence[tuple[str, str, float]]) -> None:
        """Replace tag ``name`` on the given items: (item id, value, score)."""
        with transaction(self.db):
            before = [r[0] for r in self.db.execute("SELECT item_id FROM tags WHERE name=?", (name,))]
            self.db.execute("DELETE FROM tags WHERE name=?", (name,))
            self.db.executemany(
                "INSERT INTO tags (item_id, name, value, score, classifier) VALUES (?, ?, ?, ?, ?)",
                [(i, name, v, float(sc), classifier) for i, v, sc in tags],
            )
            refresh_values(self.db, sorted(set(before) | {t[0] for t in tags}))

    def first_values(self, key: str) -> dict[str, str] | None:
        """Each item's first value of metadata key or tag ``key``, as written (what facets show),
        by item id, in one query over ``item_values``; None when no item has the key."""
        if self.db.execute("SELECT 1 FROM value_keys WHERE key = ?", (key,)).fetchone() is None:
            return None
        rows = self.db.execute(
            "SELECT i.id, COALESCE(v.shown, v.text), MIN(v.rowid) FROM item_values v JOIN items i ON i.rid = v.rid "
            "WHERE v.key = ? GROUP BY v.rid",
            (key,),
        )
        return {item_id: value for item_id, value, _ in rows}

    def tags_of(self, item_id: str) -> dict[str, dict[str, Any]]:
        return {
            r[0]: {"value": r[1], "score": r[2], "classifier": r[3]}
            for r in self.db.execute("SELECT name, value, score, classifier FROM tags WHERE item_id=?", (item_id,))
        }

    def set_hidden(self, ids: Sequence[str], hidden: bool, reason: str = "") -> int:
        """Hide (a ``hidden`` tag, a filter like any other) or show these items again; returns how
        many changed."""
        changed = 0
        with transaction(self.db):
            for i in range(0, len(ids), CHUNK):
                chunk = list(ids[i : i + CHUNK])
                if hidden:
                    cur = self.db.executemany("INSERT OR IGNORE INTO tags (item_id, name, value, score, classifier) SELECT id, ?, 'true', 1.0, ? FROM items WHERE id = ?",
                                              [(HIDDEN, f"prune:{reason}", i) for i in chunk])  # fmt: skip
                else:
                    cur = self.db.execute(
                        f"DELETE FROM tags WHERE name = ? AND item_id IN ({placeholders(len(chunk))})", [HIDDEN, *chunk]
                    )
                changed += max(cur.rowcount, 0)
                refresh_values(self.db, chunk)
        return changed

    def hidden_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM tags WHERE name = ?", (HIDDEN,)).fetchone()[0])

    def delete_items(self, ids: Sequence[str], reason: str) -> int:
        """Delete items for good (their vectors become dead rows; the FTS rows go by trigger) and
        remember their ids, so that a later ingest does not bring them back."""
        now = time.time()
        gone = 0
        with transaction(self.db):
            for i in range(0, len(ids), CHUNK):
                chunk = list(ids[i : i + CHUNK])
                gone += self.db.execute(f"DELETE FROM items WHERE id IN ({placeholders(len(chunk))})", chunk).rowcount
                self.db.executemany("INSERT OR REPLACE INTO pruned VALUES (?, ?, ?)", [(i, now, reason) for i in chunk])
        return gone

    def pruned_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM pruned").fetchone()[0])


def refresh_values(db: sqlite3.Connection, ids: Sequence[str] | None) -> None:
    """Recompute ``item_values`` for these items (all when None), inside the caller's
    transaction: each metadata key's normal values, a classifier tag replacing its key's."""
    if ids is None:
        db.execute("DELETE FROM item_values")
        cursor = db.execute("SELECT rid, id, metadata FROM items")
        while chunk := cursor.fetchmany(2000):
            _insert_values(db, chunk)
        return
    for i in range(0, len(ids), CHUNK):
        part = list(ids[i : i + CHUNK])
        rows = db.execute(
            f"SELECT rid, id, metadata FROM items WHERE id IN ({placeholders(len(part))})", part
        ).fetchall()
        db.execute(f"DELETE FROM item_values WHERE rid IN ({placeholders(len(rows))})", [r[0] for r in rows])
        _insert_values(db, rows)


def _insert_values(db: sqlite3.Connection, rows: Sequence[Any]) -> None:
    tags: dict[str, dict[str, str]] = {}
    ids = [r[1] for r in rows]
    for i in range(0, len(ids), CHUNK):
        part = ids[i : i + CHUNK]
        for item_id, name, value in db.execute(
            f"SELECT item_id, name, value FROM tags WHERE item_id IN ({placeholders(len(part))})", part
        ):
            tags.setdefault(item_id, {})[name] = value
    curated = curated_values(db, ids)  # sets and people's corrections of tags win over the machine's
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
        values.update(curated.get(item_id, {}))
        for key, value in values.items():
            normal = normal_values(value)
            multi[key] = max(multi.get(key, 0), int(len(normal) > 1))
            out += [(rid, key, v.text, v.num, v.val, v.shown if v.shown != v.text else None) for v in normal]
    db.executemany("INSERT INTO item_values (rid, key, text, num, val, shown) VALUES (?, ?, ?, ?, ?, ?)", out)
    # Never reset to 0 (a removed multi-valued item may leave it set): it only costs speed.
    db.executemany(
        "INSERT INTO value_keys VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET multi = max(multi, excluded.multi)",
        multi.items(),
    )


def _item(row: sqlite3.Row, tags: dict[str, dict[str, Any]]) -> Item:
    return Item(id=row["id"], image=row["image"], metadata=json.loads(row["metadata"]), context=row["context"], fingerprint=row["fingerprint"],
                source=row["source"], status=row["status"], reason=row["reason"], detail=row["detail"], tags=tags)  # fmt: skip
