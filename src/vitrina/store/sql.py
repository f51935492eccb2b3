"""Small SQL helpers shared by the parts of the store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["CHUNK", "ints", "placeholders", "transaction"]

CHUNK = 500  # ids per IN (...) list: well under SQLite's limit of bound parameters


def placeholders(n: int) -> str:
    """``?,?,?`` for an ``IN (...)`` list of ``n`` values."""
    return ",".join("?" * n)


def ints(text: str | None) -> np.ndarray:
    """SQLite's group_concat of integers -> an int64 array (parsed in C, not row by row)."""
    if not text:
        return np.zeros(0, np.int64)
    return np.fromstring(text, dtype=np.int64, sep=",")


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken at once (BEGIN IMMEDIATE): committed, or rolled back on error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    else:
        db.execute("COMMIT")
