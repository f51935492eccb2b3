"""The FTS5 table over item text (schema.MIGRATION_5), asked through public calls so that
keyword search (index/keyword.py) writes no SQL of its own.

Bounded work (issue 28, item 3): every query on a store connection runs under the caller's
``budget`` when one is set (a deadline and a cancel event, checked by an SQLite progress handler
every ``STEPS`` virtual-machine steps, see ``watch``); the keyword queries here also under
``KEYWORD_DEADLINE`` when none is. A stopped query raises ``WorkTimeout`` or ``WorkCancelled``."""

from __future__ import annotations

import contextvars
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from ..errors import WorkCancelled, WorkTimeout
from .sql import placeholders

__all__ = ["KEYWORD_DEADLINE", "Budget", "Text", "budget", "stopped", "watch"]

KEYWORD_DEADLINE = 10.0  # seconds for one keyword query when the caller set no budget
STEPS = 2000  # SQLite VM steps between two looks at the budget (a few microseconds of work)
T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    deadline: float  # time.monotonic() after which queries stop
    cancelled: threading.Event | None = None  # set: stop now (the client went away)
    seconds: float = 0.0  # as given, for messages

    def why(self) -> str | None:
        """'cancelled', 'timeout', or None while the work may go on."""
        if self.cancelled is not None and self.cancelled.is_set():
            return "cancelled"
        return "timeout" if time.monotonic() > self.deadline else None


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("vitrina_query_budget", default=None)


@contextmanager
def budget(seconds: float | None = None, cancelled: threading.Event | None = None) -> Iterator[Budget]:
    """Every store query of this thread (and of the threads started from this context) stops
    ``seconds`` from now, or once ``cancelled`` is set; an enclosing budget's earlier deadline
    and its cancel event still hold."""
    outer = _BUDGET.get()
    deadline = time.monotonic() + seconds if seconds is not None else float("inf")
    given = seconds if seconds is not None else (outer.seconds if outer else 0.0)
    if outer is not None:
        if outer.deadline <= deadline:
            deadline, given = outer.deadline, outer.seconds
        cancelled = cancelled or outer.cancelled
    b = Budget(deadline, cancelled, given)
    token = _BUDGET.set(b)
    try:
        yield b
    finally:
        _BUDGET.reset(token)


def watch(db: sqlite3.Connection) -> None:
    """Install the progress handler that stops ``db``'s queries when the running thread's budget
    is spent (a no-op check when there is none)."""

    def check() -> int:
        b = _BUDGET.get()
        return 0 if b is None or b.why() is None else 1

    db.set_progress_handler(check, STEPS)


def stopped(exc: BaseException, what: str = "The query") -> WorkTimeout | WorkCancelled | None:
    """The error to raise for ``exc`` when it is SQLite's "interrupted" caused by the budget,
    else None."""
    b = _BUDGET.get()
    if not isinstance(exc, sqlite3.OperationalError) or "interrupt" not in str(exc) or b is None:
        return None
    if b.why() == "cancelled":
        return WorkCancelled(f"{what} was stopped: its caller went away.")
    return WorkTimeout(
        f"{what} took longer than {b.seconds:g} s and was stopped: use fewer or longer words (a prefix of "
        f"4 or more letters before the *), add a filter, or try again in a moment."
    )


def bounded(what: str, work: Callable[[], T], seconds: float | None = None) -> T:
    """``work()`` under a budget of ``seconds`` (or the enclosing one, or ``KEYWORD_DEADLINE``),
    an interruption by that budget raised as WorkTimeout / WorkCancelled naming ``what``."""
    if seconds is None and _BUDGET.get() is None:
        seconds = KEYWORD_DEADLINE
    with budget(seconds):
        try:
            return work()
        except sqlite3.OperationalError as e:
            err = stopped(e, what)
            if err is None:
                raise
            raise err from None


class Text:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def ranked(self, expression: str, weights: Sequence[float], chunk: int = 2000) -> Iterator[list[tuple[int, float]]]:
        """(rid, BM25 score, higher is better) of every item matching the FTS5 ``expression``,
        best first (ties by rid), in chunks: the caller stops reading when it has enough. The
        query (the sort is done before the first chunk) runs under the budget."""
        columns = ", ".join(str(float(w)) for w in weights)
        sql = f"SELECT rowid, -bm25(item_text, {columns}) AS s FROM item_text WHERE item_text MATCH ? ORDER BY s DESC, rowid"
        cursor = bounded("The keyword search", lambda: self.db.execute(sql, (expression,)))
        while rows := bounded("The keyword search", lambda: cursor.fetchmany(chunk)):
            yield [(int(rid), float(score)) for rid, score in rows]

    def matching(self, expression: str, most: int) -> int:
        """How many items match the FTS5 ``expression``, counted up to ``most`` (rowids only: no
        positions are read, and the work stops at ``most``)."""
        sql = "SELECT count(*) FROM (SELECT rowid FROM item_text WHERE item_text MATCH ? LIMIT ?)"
        return int(bounded("The keyword search", lambda: self.db.execute(sql, (expression, int(most))).fetchone()[0]))

    def snippets(self, expression: str, rids: Sequence[int], words: int) -> dict[int, str]:
        """The best-matching passage of each item's text by rid, matches between the control
        characters 2 and 3 (never in the indexed text), '…' where it was cut."""
        if not rids:
            return {}
        sql = (f"SELECT rowid, snippet(item_text, -1, char(2), char(3), '…', ?) FROM item_text "
               f"WHERE item_text MATCH ? AND rowid IN ({placeholders(len(rids))})")  # fmt: skip
        found = bounded("The keyword search", lambda: self.db.execute(sql, (words, expression, *rids)).fetchall())
        return {int(rid): text or "" for rid, text in found}

    def prefix_terms(self, prefix: str, limit: int) -> list[str]:
        """The indexed words starting with ``prefix`` (as the tokenizer stored them: lower case,
        diacritics removed), in order, at most ``limit``: what ``prefix*`` expands to."""
        if not prefix:
            return []
        self.db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.item_terms USING fts5vocab(main, item_text, 'row')")
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        sql = "SELECT term FROM temp.item_terms WHERE term >= ? AND term < ? LIMIT ?"
        rows = bounded("The keyword search", lambda: self.db.execute(sql, (prefix, upper, limit)).fetchall())
        return [r[0] for r in rows]
