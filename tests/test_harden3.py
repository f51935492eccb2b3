"""Hardening, round three (issue 28): odd ids, null ids, wrong dimensions, truncated files,
messages instead of tracebacks. Each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vitrina import open_collection
from vitrina.importers import import_vectors, open_reader
from vitrina.records import Item

DECLARED = "hf:example/clip-64"  # declared, never loaded


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- 2. ids with control characters ---------------------------------------------------------------


def test_ids_with_control_characters_are_bad_rows_with_a_clear_reason(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", unit_rows(5, 64))
    rows = [{"id": "ok-1"}, {"id": "two\nlines"}, {"id": "tab\there"}, {"id": "nul\x00"}, {"id": "ok-2"}]
    (tmp_path / "ids.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    coll = open_collection("odd-ids", create=True)
    report = import_vectors(coll, open_reader("npy", [str(tmp_path / "v.npy"), str(tmp_path / "ids.jsonl")]), model=DECLARED)
    assert report.imported == 2 and report.bad == 3
    reasons = {b["row"]: b["reason"] for b in report.bad_rows}
    assert "control character (U+000A)" in reasons[1] and "U+0009" in reasons[2] and "U+0000" in reasons[3]
    assert sorted(i.id for i in coll.iter_items()) == ["ok-1", "ok-2"]


def _collection_with_odd_ids(tmp_path: Path, model: str) -> Any:
    """A collection that already holds an id with a newline (written before ids were checked)."""
    from vitrina.embedding import get_embedder
    from vitrina.layout import build_map

    coll = open_collection(tmp_path / "odd", create=True)
    ids = ["plain", "two\nlines", "tab\there", "last"]
    fp = get_embedder(model).fingerprint
    with coll.writer():
        coll.add_items(Item(id=i, image=f"{n}.jpg", fingerprint="1", source="t", metadata={"kind": "k" + str(n % 2)})
                       for n, i in enumerate(ids))  # fmt: skip
        coll.import_vectors(ids, unit_rows(4, fp.dim), fingerprint=fp, space="v")
    build_map(coll, method="pca")
    return coll, ids


def test_one_odd_id_cannot_take_the_map_down(tmp_path: Path, tiny_clip: str) -> None:
    from fastapi.testclient import TestClient

    from vitrina.layout import read_map
    from vitrina.service import create_app

    coll, ids = _collection_with_odd_ids(tmp_path, tiny_clip)
    assert read_map(coll.path / "spaces" / "v.map").ids == ids
    with TestClient(create_app(str(coll.path)), raise_server_exceptions=False) as client:
        assert client.get("/api/map").status_code == 200
        colours = client.get("/api/map/colours", params={"key": "kind"})
        assert colours.status_code == 200 and len(colours.json()["codes"]) == 4
        # A damaged map file is reported as stale (rebuild it), not a 500.
        path = coll.path / "spaces" / "v.map"
        path.write_bytes(path.read_bytes()[:-3])
        r = client.get("/api/map")
        assert r.status_code == 409 and "vitrina map" in r.json()["error"]["message"]


# -- 7. null ids --------------------------------------------------------------------------------


def test_a_null_id_is_a_bad_row_not_row_n(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = unit_rows(3, 64)
    pq.write_table(pa.table({"id": ["row0", None, "b"], "embedding": [list(map(float, v)) for v in vectors]}),
                   tmp_path / "t.parquet")  # fmt: skip
    coll = open_collection("null-ids", create=True)
    report = import_vectors(coll, open_reader("parquet", [str(tmp_path / "t.parquet")]), model=DECLARED)
    assert report.imported == 2 and report.bad == 1
    assert report.bad_rows[0]["row"] == 1 and "empty (null)" in report.bad_rows[0]["reason"]
    assert sorted(i.id for i in coll.iter_items()) == ["b", "row0"]
    # Without an id column at all, rows are still named by their position.
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "ids.csv").write_text("title\nA\nB\nC\n")
    plain = open_collection("no-id-column", create=True)
    assert import_vectors(plain, open_reader("npy", [str(tmp_path / "v.npy"), str(tmp_path / "ids.csv")]), model=DECLARED).imported == 3
