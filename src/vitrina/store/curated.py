"""The filter values people give items (schema.MIGRATION_9): the sets an item is in, as the
multi-valued key ``set``, and corrected tags, which replace the machine's value of their key.
``items.refresh_values`` adds them after the metadata and the machine tags."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .sql import CHUNK, placeholders

__all__ = ["SET_KEY", "curated_values"]

SET_KEY = "set"  # --where set=NAME


def curated_values(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per item id: {"set": [names], tag: corrected value}; empty before schema 9 (the migrations
    that recompute values run before the tables exist)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'corrections'").fetchone() is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for k in range(0, len(ids), CHUNK):
        part = list(ids[k : k + CHUNK])
        marks = placeholders(len(part))
        for item_id, name in db.execute(
            f"SELECT item_id, set_name FROM set_items WHERE item_id IN ({marks}) ORDER BY set_name", part
        ):
            out.setdefault(item_id, {}).setdefault(SET_KEY, []).append(name)
        for item_id, name, value in db.execute(
            f"SELECT item_id, name, value FROM corrections WHERE item_id IN ({marks})", part
        ):
            out.setdefault(item_id, {})[name] = value
    return out
