"""Words read from item images (OCR, ``vitrina.ocr``): which items are still to read, the words
and boxes of each, its failures, and the vocabulary the misread-tolerant match looks in. The FTS
column follows ``ocr_pages.text`` by triggers (schema.MIGRATION_8)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from ..faults import fault_point
from ..ocr.fold import fold_words
from .sql import transaction
from .word_fixes import apply as apply_word_fixes

__all__ = ["Words"]

MAX_WORDS_SCANNED = 20_000  # words of one item looked through for the matched ones
MAX_TERM_CANDIDATES = 200  # vocabulary terms sharing trigrams with a query word, checked for distance


class Words:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def pending(self, engine: str, *, retry_failed: bool = False, reread: bool = False) -> list[sqlite3.Row]:
        """Items (rid, id, image, fingerprint) whose image has not been read by ``engine`` in its
        current version; failed ones only with ``retry_failed``."""
        if reread:
            return self.db.execute("SELECT rid, id, image, fingerprint FROM items ORDER BY rid").fetchall()
        failed = "" if retry_failed else "AND NOT coalesce(o.status = 'failed' AND o.fingerprint = i.fingerprint, 0)"
        return self.db.execute(
            f"""SELECT i.rid, i.id, i.image, i.fingerprint FROM items i LEFT JOIN ocr_pages o ON o.rid = i.rid
                WHERE (o.rid IS NULL OR o.fingerprint != i.fingerprint OR o.engine != ? OR o.status = 'failed') {failed}
                ORDER BY i.rid""",
            (engine,),
        ).fetchall()

    def save(self, rid: int, fingerprint: str, engine: str, words: Sequence[Any], size: tuple[int, int]) -> None:
        """The words read from item ``rid`` (``ocr.Word``s), replacing what it had, in one transaction."""
        rows = []
        for n, w in enumerate(words):
            folded = " ".join(fold_words(w.text))
            if folded:
                quad = json.dumps([round(v, 1) for v in w.quad]) if w.quad is not None else None
                rows.append((rid, n, w.text, folded, w.x, w.y, w.w, w.h, quad, w.confidence, w.engine))
        rows = apply_word_fixes(self.db, rid, rows)  # people's corrections win over a new reading
        text = " ".join(r[3] for r in rows)
        with transaction(self.db):
            self.db.execute("DELETE FROM words WHERE rid=?", (rid,))
            self.db.executemany("INSERT INTO words VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._upsert(rid, fingerprint, engine, "ok", None, None, size, len(rows), text)
            for term in {t for r in rows for t in r[3].split()}:
                if len(term) >= 4 and self.db.execute("INSERT OR IGNORE INTO ocr_vocab VALUES (?)", (term,)).rowcount:
                    self.db.execute("INSERT INTO ocr_terms (term) VALUES (?)", (term,))
            fault_point("ocr_before_commit")
        fault_point("ocr_after_commit")

    def save_failure(self, rid: int, fingerprint: str, engine: str, reason: str, detail: str) -> None:
        """Item ``rid`` could not be read: the reason, kept with any words of an earlier version."""
        with transaction(self.db):
            row = self.db.execute("SELECT words, text, width, height FROM ocr_pages WHERE rid=?", (rid,)).fetchone()
            words, text, width, height = row if row else (0, "", None, None)
            self._upsert(rid, fingerprint, engine, "failed", reason, detail[:2000], (width, height), words, text)

    def _upsert(self, rid: int, fingerprint: str, engine: str, status: str, reason: str | None, detail: str | None,
                size: tuple[Any, Any], words: int, text: str) -> None:  # fmt: skip
        self.db.execute(
            """INSERT INTO ocr_pages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(rid) DO UPDATE SET
               fingerprint=excluded.fingerprint, engine=excluded.engine, status=excluded.status, reason=excluded.reason,
               detail=excluded.detail, width=excluded.width, height=excluded.height, words=excluded.words,
               text=excluded.text, updated_at=excluded.updated_at""",
            (rid, fingerprint, engine, status, reason, detail, size[0], size[1], words, text, time.time()),
        )

    def words_of(self, rid: int, terms: Sequence[str] = (), prefixes: Sequence[str] = (), limit: int = 200) -> list[dict[str, Any]]:  # fmt: skip
        """The words of item ``rid`` whose folded form holds one of ``terms`` or a word starting
        with one of ``prefixes`` (all its words when both are empty), in reading order."""
        wanted, starts = set(terms), tuple(prefixes)
        out: list[dict[str, Any]] = []
        rows = self.db.execute(
            "SELECT text, folded, x, y, w, h, quad, confidence, engine FROM words WHERE rid=? ORDER BY n LIMIT ?",
            (rid, MAX_WORDS_SCANNED),
        )
        for text, folded, x, y, w, h, quad, conf, engine in rows:
            tokens = folded.split()
            if (wanted or starts) and not (wanted.intersection(tokens) or any(t.startswith(starts) for t in tokens)):
                continue
            d: dict[str, Any] = {"text": text, "box": [round(x, 1), round(y, 1), round(w, 1), round(h, 1)],
                                 "confidence": round(conf, 4), "engine": engine}  # fmt: skip
            if quad:
                d["quad"] = json.loads(quad)
            out.append(d)
            if len(out) >= limit:
                break
        return out

    def page(self, rid: int) -> dict[str, Any] | None:
        """How item ``rid`` was read: engine, status, reason, image size, word count."""
        row = self.db.execute(
            "SELECT engine, status, reason, detail, width, height, words FROM ocr_pages WHERE rid=?", (rid,)
        ).fetchone()
        if row is None:
            return None
        return dict(zip(("engine", "status", "reason", "detail", "width", "height", "words"), row))

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "failed": 0, "words": 0}
        for status, n, words in self.db.execute("SELECT status, count(*), sum(words) FROM ocr_pages GROUP BY status"):
            out[status] = n
            if status == "ok":
                out["words"] = int(words or 0)
        return out

    def failures(self, limit: int = 1000) -> list[sqlite3.Row]:
        return self.db.execute(
            """SELECT i.id, o.reason, o.detail FROM ocr_pages o JOIN items i ON i.rid = o.rid
               WHERE o.status = 'failed' ORDER BY i.id LIMIT ?""",
            (limit,),
        ).fetchall()

    def as_read(self, rid: int, snippet: str, mark_open: str = "\x02", mark_close: str = "\x03") -> str | None:
        """A snippet of item ``rid``'s FTS text (matches between the marks, '…' where it was cut)
        with the folded OCR words it shows put back as they were read ("Tromsø", not "tromso"),
        a word marked when one of its folded tokens is; None when the snippet is not of its OCR
        words (it came from the metadata or the ALTO context)."""
        cut_start, body = snippet.startswith("…"), snippet.removeprefix("…")
        cut_end, body = body.endswith("…"), body.removesuffix("…")
        pieces = body.split()
        tokens = [p.replace(mark_open, "").replace(mark_close, "") for p in pieces]
        if not tokens:
            return None
        row = self.db.execute("SELECT text FROM ocr_pages WHERE rid=? AND status='ok'", (rid,)).fetchone()
        if row is None or " ".join(tokens) not in row[0]:
            return None
        owners: list[int] = []  # the word each folded token of the page belongs to
        texts: list[str] = []
        rows = self.db.execute(
            "SELECT text, folded FROM words WHERE rid=? ORDER BY n LIMIT ?", (rid, MAX_WORDS_SCANNED)
        )
        for text, folded in rows:
            owners += [len(texts)] * len(folded.split())
            texts.append(text)
        page = row[0].split()
        for start in range(len(page) - len(tokens) + 1):
            if page[start : start + len(tokens)] == tokens and start + len(tokens) <= len(owners):
                break
        else:
            return None
        out: list[str] = []
        marked = {owners[start + k] for k, p in enumerate(pieces) if mark_open in p}
        for n in range(owners[start], owners[start + len(tokens) - 1] + 1):
            out.append(f"{mark_open}{texts[n]}{mark_close}" if n in marked else texts[n])
        return ("…" if cut_start else "") + " ".join(out) + ("…" if cut_end else "")

    def similar_terms(self, term: str, limit: int = MAX_TERM_CANDIDATES) -> list[str]:
        """Vocabulary terms sharing trigrams with ``term`` (folded, >= 4 letters), most shared first."""
        grams = {term[i : i + 3] for i in range(len(term) - 2)}
        if not grams:
            return []
        expression = " OR ".join('"' + g.replace('"', '""') + '"' for g in sorted(grams))
        rows = self.db.execute(
            "SELECT term FROM ocr_terms WHERE ocr_terms MATCH ? ORDER BY bm25(ocr_terms) LIMIT ?", (expression, limit)
        )
        return [r[0] for r in rows]
