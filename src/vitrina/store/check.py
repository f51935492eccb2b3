"""Consistency checks of a store (``vitrina info --check``)."""

from __future__ import annotations

import sqlite3

import numpy as np

from ..errors import StoreCorrupt
from ..vectors import VectorFile
from .spaces import Space, Spaces

__all__ = ["check"]


def check(db: sqlite3.Connection, spaces: Spaces) -> list[str]:
    """Consistency problems, empty when the store is sound."""
    problems = []
    if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
        problems.append("SQLite integrity_check failed")
    for space in spaces.spaces():
        bad = db.execute(
            "SELECT count(*) FROM vectors WHERE space=? AND row >= ?", (space.name, space.rows)
        ).fetchone()[0]
        if bad:
            problems.append(f"space {space.name}: {bad} items point past the committed rows")
        mapped = db.execute("SELECT count(*) FROM vectors WHERE space=?", (space.name,)).fetchone()[0]
        mapped += spaces.regions.count(space.name)  # region rows are live rows too
        if mapped != space.live:
            problems.append(f"space {space.name}: {mapped} mapped vectors but {space.live} live rows")
        try:
            vf = spaces.vector_file(space)
        except StoreCorrupt as e:
            problems.append(str(e))
            continue
        bad_rows = _bad_vectors(spaces, space, vf)
        if bad_rows:
            problems.append(
                f"space {space.name}: {len(bad_rows)} live vectors are zero or not finite (rows {', '.join(map(str, bad_rows[:5]))})"
            )
    failed = db.execute(
        "SELECT count(DISTINCT v.item_id) FROM vectors v JOIN items i ON i.id = v.item_id WHERE i.status = 'failed'"
    ).fetchone()[0]
    if failed:
        problems.append(f"{failed} failed items still have a vector")
    return problems


def _bad_vectors(spaces: Spaces, space: Space, vf: VectorFile, chunk: int = 1 << 16) -> list[int]:
    """Live rows that are all zero or hold NaN/inf: a full scan of the mapped file, in chunks
    (a few seconds per million 512-d rows), so no sampling is needed."""
    matrix = vf.matrix(space.rows)
    dead = np.zeros(space.rows, bool)
    dead[spaces.dead_rows(space.name)] = True
    bad: list[int] = []
    for start in range(0, space.rows, chunk):
        part = np.asarray(matrix[start : start + chunk])
        norms = np.einsum("ij,ij->i", part, part)
        wrong = ~np.isfinite(norms) | (norms == 0)
        bad += (np.flatnonzero(wrong & ~dead[start : start + chunk]) + start).tolist()
    return bad
