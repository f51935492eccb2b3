"""Exports a researcher can cite: search results with what reproduces them (the query as given,
the space, the model fingerprint, the index kind), as JSON or CSV with stable item ids."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from .query import Hits


def provenance(coll: Any, space: str | None, query: dict[str, Any]) -> dict[str, Any]:
    from .errors import NoEmbeddings

    try:
        sp = coll.space(space)
    except NoEmbeddings:
        if query.get("terms") or query.get("images") or not str(query.get("keywords") or "").strip():
            raise
        # Keywords alone rank by BM25 over the item text and OCR words: no space, no model.
        return {"collection": coll.name, "space": None, "model_fingerprint": None, "index": "keyword", "query": query}
    return {"collection": coll.name, "space": sp.name, "model_fingerprint": json.loads(sp.fingerprint.to_json()),
            "index": str(coll.index_for(sp.name).kind), "query": query}  # fmt: skip


def hits_csv(hits: Hits, about: dict[str, Any]) -> str:
    """One row per hit: rank, id, score, title, and the provenance repeated in every row (a row
    copied into a spreadsheet still says where it came from)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["rank", "id", "score", "title", "query", "collection", "space", "index", "model_fingerprint"])
    query, fp = (
        json.dumps(about["query"], ensure_ascii=False, sort_keys=True),
        json.dumps(about["model_fingerprint"], sort_keys=True),
    )
    for h in hits:
        w.writerow(
            [
                h.rank,
                h.id,
                f"{h.score:.6f}",
                str(h.metadata.get("title", "")),
                query,
                about["collection"],
                about["space"],
                about["index"],
                fp,
            ]
        )
    return out.getvalue()
