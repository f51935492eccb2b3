"""The FTS5 table over item text (schema.MIGRATION_5), asked through two public calls so that
keyword search (index/keyword.py) writes no SQL of its own."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

from .sql import placeholders

__all__ = ["Text"]


class Text:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def ranked(self, expression: str, weights: Sequence[float], chunk: int = 2000) -> Iterator[list[tuple[int, float]]]:
        """(rid, BM25 score, higher is better) of every item matching the FTS5 ``expression``,
        best first (ties by rid), in chunks: the caller stops reading when it has enough."""
        columns = ", ".join(str(float(w)) for w in weights)
        cursor = self.db.execute(
            f"SELECT rowid, -bm25(item_text, {columns}) AS s FROM item_text WHERE item_text MATCH ? ORDER BY s DESC, rowid",
            (expression,),
        )
        while rows := cursor.fetchmany(chunk):
            yield [(int(rid), float(score)) for rid, score in rows]

    def snippets(self, expression: str, rids: Sequence[int], words: int) -> dict[int, str]:
        """The best-matching passage of each item's text by rid, matches between the control
        characters 2 and 3 (never in the indexed text), '…' where it was cut."""
        if not rids:
            return {}
        sql = (f"SELECT rowid, snippet(item_text, -1, char(2), char(3), '…', ?) FROM item_text "
               f"WHERE item_text MATCH ? AND rowid IN ({placeholders(len(rids))})")  # fmt: skip
        return {int(rid): text or "" for rid, text in self.db.execute(sql, (words, expression, *rids))}
