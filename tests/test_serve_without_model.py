"""`serve` starts when a space's model cannot load (offline, a deleted checkpoint): every route that
needs no model answers; a query that needs it answers 503 "unavailable" with Retry-After."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from vitrina import Item, ModelFingerprint, open_collection
from vitrina.service import create_app


def test_serve_starts_without_its_model_and_answers_what_needs_none(tmp_path: Path) -> None:
    gone = tmp_path / "deleted-checkpoint"  # a model directory that no longer exists
    fp = ModelFingerprint(spec=f"hf:{gone}", revision="r1", dim=8, preprocessing="none")
    coll = open_collection(tmp_path / "coll", create=True)
    ids = [f"it-{i:02d}" for i in range(6)]
    with coll.writer():
        coll.add_items(
            [Item(id=i, image=f"/x/{i}.jpg", fingerprint="1", source="s", metadata={"title": f"map {i}"}) for i in ids]
        )
        coll.import_vectors(ids, np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32), fingerprint=fp, space="v")  # fmt: skip
    with TestClient(create_app(coll.path)) as client:
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        assert client.get("/api/info").status_code == 200
        by_item = client.get("/api/search", params={"item": "it-01", "limit": 3})
        assert by_item.status_code == 200 and by_item.json()["hits"][0]["id"] != "it-01"
        by_text = client.get("/api/search", params={"q": "old map"})
        assert by_text.status_code == 503 and by_text.json()["error"]["code"] == "unavailable"
        assert by_text.headers["Retry-After"] == "30"
