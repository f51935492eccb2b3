"""People's corrections of words read from an image (OCR; schema.MIGRATION_10 ``word_fixes``).

A correction is kept by item id and the word's box, with what the machine read: it is written
over the word in ``words`` (so the page, the IIIF annotations and the outlines of matched words
show it) and in ``ocr_pages.text`` (so keyword search finds the corrected word, and no longer the
misread one); a new OCR run of the item applies it again to the word whose box overlaps the kept
one most (intersection over union at least ``MATCH``): ``Words.save`` calls ``apply``."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ..ocr.fold import fold_words
from .sql import transaction

__all__ = ["MATCH", "apply", "fix_word", "fixes_of", "overlap", "unfix_word"]

MATCH = 0.5  # intersection over union of a new word's box and a kept correction's


def _has_table(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='word_fixes'").fetchone() is not None


def overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def fixes_of(db: sqlite3.Connection, item_id: str) -> list[dict[str, Any]]:
    if not _has_table(db):
        return []
    rows = db.execute("SELECT x, y, w, h, was, text, who, at FROM word_fixes WHERE item_id=? ORDER BY y, x", (item_id,))
    return [
        {"box": [x, y, w, h], "was": was, "text": text, "who": who, "at": at} for x, y, w, h, was, text, who, at in rows
    ]


def apply(db: sqlite3.Connection, rid: int, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``Words.save``'s rows (rid, n, text, folded, x, y, w, h, ...) with people's corrections of
    item ``rid`` written over the words whose boxes match theirs."""
    if not rows or not _has_table(db):
        return rows
    found = db.execute("SELECT id FROM items WHERE rid=?", (rid,)).fetchone()
    fixes = fixes_of(db, found[0]) if found else []
    if not fixes:
        return rows
    out = list(rows)
    for fix in fixes:
        box = tuple(fix["box"])
        best, score = None, MATCH
        for k, r in enumerate(out):
            s = overlap(box, (r[4], r[5], r[6], r[7]))  # type: ignore[arg-type]
            if s >= score:
                best, score = k, s
        if best is not None:
            r = out[best]
            # folded as Words.save folds: a correction to punctuation leaves nothing to search for
            out[best] = (r[0], r[1], fix["text"], " ".join(fold_words(fix["text"])), *r[4:])
    return out


def _refresh_text(db: sqlite3.Connection, rid: int) -> None:
    """``ocr_pages.text`` from the words as they stand (the FTS column follows by trigger)."""
    text = " ".join(r[0] for r in db.execute("SELECT folded FROM words WHERE rid=? ORDER BY n", (rid,)))
    db.execute("UPDATE ocr_pages SET text=? WHERE rid=?", (text, rid))
    for term in set(text.split()):
        if len(term) >= 4 and db.execute("INSERT OR IGNORE INTO ocr_vocab VALUES (?)", (term,)).rowcount:
            db.execute("INSERT INTO ocr_terms (term) VALUES (?)", (term,))


def fix_word(db: sqlite3.Connection, item_id: str, n: int, text: str | None, who: str) -> dict[str, Any] | None:
    """Correct the item's ``n``-th stored word (reading order, from 0, as ``words_of`` lists them) to ``text`` (None: back to what the machine
    read). Returns the word as it now stands; None when the item has no such word."""
    found = db.execute("SELECT rid FROM items WHERE id=?", (item_id,)).fetchone()
    if found is None:
        return None
    rid = found[0]
    with transaction(db):
        found = db.execute(
            "SELECT text, folded, x, y, w, h, n FROM words WHERE rid=? ORDER BY n LIMIT 1 OFFSET ?", (rid, n)
        ).fetchone()
        if found is None:
            return None
        word, stored_n = found[:6], found[6]
        box = tuple(word[2:6])
        kept = [f for f in fixes_of(db, item_id) if overlap(tuple(f["box"]), box) >= MATCH]  # type: ignore[arg-type]
        was = kept[0]["was"] if kept else word[0]
        for f in kept:
            db.execute("DELETE FROM word_fixes WHERE item_id=? AND x=? AND y=? AND w=? AND h=?", (item_id, *f["box"]))
        new = was if text is None else text
        if text is not None and text != was:
            db.execute(
                "INSERT INTO word_fixes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (item_id, *box, was, text, who, time.time()),
            )
        folded = " ".join(fold_words(new))  # as Words.save folds; "" when it reads as no word at all
        db.execute("UPDATE words SET text=?, folded=? WHERE rid=? AND n=?", (new, folded, rid, stored_n))
        _refresh_text(db, rid)
    return {"id": item_id, "n": n, "text": new, "was": was, "corrected": new != was}


def unfix_word(db: sqlite3.Connection, item_id: str, n: int) -> dict[str, Any] | None:
    return fix_word(db, item_id, n, None, "")
