"""Regions in the store: boxes of an item with their own vector rows (see ``vitrina.regions``).

A region's vector is a row of its space's vector file, like the whole image's; the ``regions``
table maps the row to the item's rid and its box (x, y, w, h in the item's source pixels).
``region_sets`` records per item what its regions were cut for (item fingerprint + policy), so
an indexing run knows which items need cutting, also where the policy gave an item no region.
Writes go through ``Spaces.add_vectors`` (one transaction with the whole-image vectors); deleting
a region (the item changed, failed or went) marks its row dead by trigger, as for vectors.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .sql import CHUNK, ints, placeholders

__all__ = ["RegionBatch", "RegionRow", "Regions"]


@dataclass(frozen=True)
class RegionRow:
    rid: int
    row: int
    box: tuple[int, int, int, int]  # x, y, w, h in the item's source pixels


@dataclass
class RegionBatch:
    """The regions cut from a batch of items, written with their whole-image vectors.

    ``items``: every item of the batch that was cut (also those with no region); ``owners`` and
    ``boxes``: one per region vector (the owner is an item id of ``items``); ``cut``: the policy
    key, recorded with each item's fingerprint."""

    items: list[tuple[str, str]]  # (id, fingerprint)
    owners: list[str]
    boxes: list[tuple[int, int, int, int]]
    vectors: np.ndarray
    cut: str


class Regions:
    """Region rows of one store connection (``Store`` delegates)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def pending(self, space: str, cut: str, *, retry_failed: bool = False) -> list[sqlite3.Row]:
        """Items whose whole-image vector or regions are not current for their fingerprint and
        the policy ``cut``, in a stable order."""
        failed = "" if retry_failed else "AND (i.status != 'failed' OR i.reason IN ('fetch_failed', 'decoder_crashed'))"
        return self.db.execute(
            f"""SELECT i.id, i.image, i.fingerprint FROM items i
                LEFT JOIN vectors v ON v.item_id = i.id AND v.space = ?
                LEFT JOIN region_sets s ON s.rid = i.rid AND s.space = ?
                WHERE (v.item_id IS NULL OR v.fingerprint != i.fingerprint OR s.cut IS NULL
                       OR s.cut != i.fingerprint || '|' || ?) {failed}
                ORDER BY i.id""",
            (space, space, cut),
        ).fetchall()

    def write(self, space: str, start: int, batch: RegionBatch) -> None:
        """Inside the caller's transaction: replace the regions of ``batch.items`` by the batch's,
        whose vectors were written from row ``start`` on."""
        rids = dict(
            self.db.execute(
                f"SELECT id, rid FROM items WHERE id IN ({placeholders(len(batch.items))})", [i for i, _ in batch.items]
            ).fetchall()
        ) if batch.items else {}  # fmt: skip
        gone = [(space, rids[i]) for i, _ in batch.items if i in rids]
        self.db.executemany("DELETE FROM regions WHERE space=? AND rid=?", gone)
        self.db.executemany(
            "INSERT INTO regions (space, rid, row, x, y, w, h) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (space, rids[o], start + n, *box)
                for n, (o, box) in enumerate(zip(batch.owners, batch.boxes))
                if o in rids
            ],
        )
        self.db.executemany(
            """INSERT INTO region_sets (space, rid, cut) VALUES (?, ?, ?)
               ON CONFLICT(space, rid) DO UPDATE SET cut=excluded.cut""",
            [(space, rids[i], f"{fp}|{batch.cut}") for i, fp in batch.items if i in rids],
        )

    def forget_item(self, item_id: str) -> None:
        """Inside the caller's transaction: an item failed; its regions go in every space."""
        self.db.execute("DELETE FROM regions WHERE rid = (SELECT rid FROM items WHERE id = ?)", (item_id,))
        self.db.execute("DELETE FROM region_sets WHERE rid = (SELECT rid FROM items WHERE id = ?)", (item_id,))

    def rows(self, space: str, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(rows, item rids) of the region rows of ``space`` from row ``start`` on."""
        rows, rids = self.db.execute(
            "SELECT group_concat(row), group_concat(rid) FROM regions WHERE space = ? AND row >= ?", (space, start)
        ).fetchone()
        return ints(rows), ints(rids)

    def count(self, space: str) -> int:
        return int(self.db.execute("SELECT count(*) FROM regions WHERE space=?", (space,)).fetchone()[0])

    def most_per_item(self, space: str) -> int:
        row = self.db.execute(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM regions WHERE space=? GROUP BY rid)", (space,)
        ).fetchone()
        return int(row[0] or 0)

    def of_items(self, space: str, rids: Sequence[int]) -> list[RegionRow]:
        out: list[RegionRow] = []
        for i in range(0, len(rids), CHUNK):
            chunk = [int(r) for r in rids[i : i + CHUNK]]
            out.extend(
                RegionRow(r[0], r[1], (r[2], r[3], r[4], r[5]))
                for r in self.db.execute(
                    f"SELECT rid, row, x, y, w, h FROM regions INDEXED BY regions_rid WHERE space=? AND rid IN ({placeholders(len(chunk))})",
                    [space, *chunk],
                )
            )
        out.sort(key=lambda r: r.row)  # by row; sorted here, as ORDER BY row would scan the space's primary key
        return out

    def items_with_regions(self, space: str) -> int:
        return int(self.db.execute("SELECT count(DISTINCT rid) FROM regions WHERE space=?", (space,)).fetchone()[0])

    def drop(self, space: str) -> None:
        """Inside the caller's transaction: every region of ``space`` goes (their rows die)."""
        self.db.execute("DELETE FROM regions WHERE space=?", (space,))
        self.db.execute("DELETE FROM region_sets WHERE space=?", (space,))

    def renumber(self, space: str, moves: Sequence[tuple[int, int]]) -> None:
        """Inside a compaction's transaction: (new row, old row) pairs, ascending."""
        self.db.executemany("UPDATE regions SET row=? WHERE space=? AND row=?", ((n, space, o) for n, o in moves))
