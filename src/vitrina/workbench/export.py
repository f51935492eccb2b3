"""A set out of vitrina, citable and reusable:

- ``rows`` / ``to_csv`` / ``to_json``: each item with its score in the set, the labels people gave
  it, the workbench tags (machine value, score, and the person's correction), title and image;
  the JSON adds the set's query, who made it and when, and the model fingerprint of the space.
- ``iiif_collection``: a IIIF Presentation 3 Collection of the manifests the set's items come from;
  ``iiif_manifest``: one Manifest whose canvases are the set's items (each ``partOf`` its source
  manifest and canvas, the region as ``#xywh=`` where known).
- ``caption_pairs``: JSON lines ``{"id", "caption", "group"}`` for ``vitrina finetune --pairs``.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from .._version import __version__
from ..captions import build_caption, group_keys
from ..iiif_out import PRESENTATION_CONTEXT, target_of

__all__ = ["FORMATS", "caption_pairs", "title_of", "iiif_collection", "iiif_manifest", "to_csv", "to_json"]

FORMATS = ("csv", "json", "iiif-collection", "iiif-manifest", "pairs")
CSV_FIELDS = ("id", "set_score", "title", "image", "labels", "tags", "set", "set_query", "model")


def title_of(metadata: dict[str, Any], item_id: str) -> str:
    title = metadata.get("title")
    return str(title[0] if isinstance(title, list) and title else title or item_id)


def to_json(bundle: dict[str, Any]) -> dict[str, Any]:
    """The whole export: the set's record, the model, and one row per item."""
    return {"format": "vitrina-set/1", "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "vitrina": __version__, **bundle}  # fmt: skip


def to_csv(bundle: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    query = json.dumps(bundle["set"]["query"], ensure_ascii=False)
    model = json.dumps(bundle["model"], ensure_ascii=False)
    for row in bundle["items"]:
        writer.writerow({**row, "title": _csv_safe(row["title"]), "labels": json.dumps(row["labels"], ensure_ascii=False),
                         "tags": json.dumps(row["tags"], ensure_ascii=False), "set": _csv_safe(bundle["set"]["name"]),
                         "set_query": query, "model": model})  # fmt: skip
    return out.getvalue()


def _csv_safe(text: str) -> str:
    """No formula for a spreadsheet that opens the file: a cell starting with = + - @ is quoted."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def iiif_collection(bundle: dict[str, Any], base: str) -> dict[str, Any]:
    manifests: dict[str, str] = {}
    for row in bundle["items"]:
        target = target_of(row["metadata"], row["image"])
        if target:
            manifests.setdefault(target["manifest"], row["title"])
    name = bundle["set"]["name"]
    return {"@context": PRESENTATION_CONTEXT, "id": f"{base}/sets/{quote(name)}/collection.json", "type": "Collection",
            "label": {"none": [name]}, "summary": {"none": [f"{len(manifests)} manifests of the set {name!r}"]},
            "items": [{"id": m, "type": "Manifest", "label": {"none": [t]}} for m, t in manifests.items()]}  # fmt: skip


def iiif_manifest(bundle: dict[str, Any], base: str) -> dict[str, Any]:
    name = bundle["set"]["name"]
    mid = f"{base}/sets/{quote(name)}/manifest.json"
    canvases = []
    for n, row in enumerate(bundle["items"], 1):
        md = row["metadata"]
        width, height = md.get("width"), md.get("height")
        width = width if isinstance(width, int) and width > 0 else 1000
        height = height if isinstance(height, int) and height > 0 else 1000
        cid = f"{mid}/canvas/{n}"
        canvas: dict[str, Any] = {"id": cid, "type": "Canvas", "label": {"none": [row["title"]]}, "width": width, "height": height,
                                  "metadata": [{"label": {"none": ["vitrina id"]}, "value": {"none": [row["id"]]}}]}  # fmt: skip
        if str(row["image"]).startswith(("http://", "https://")):
            canvas["items"] = [{"id": f"{cid}/page", "type": "AnnotationPage", "items": [{
                "id": f"{cid}/page/image", "type": "Annotation", "motivation": "painting", "target": cid,
                "body": {"id": row["image"], "type": "Image", "format": "image/jpeg", "width": width, "height": height}}]}]  # fmt: skip
        target = target_of(md, row["image"])
        if target:
            fragment = f"#xywh={target['xywh']}" if target.get("xywh") else ""
            canvas["seeAlso"] = [{"id": target["canvas"] + fragment, "type": "Canvas"}]
            canvas["partOf"] = [{"id": target["manifest"], "type": "Manifest"}]
        canvases.append(canvas)
    return {
        "@context": PRESENTATION_CONTEXT,
        "id": mid,
        "type": "Manifest",
        "label": {"none": [name]},
        "items": canvases,
    }


def caption_pairs(bundle: dict[str, Any]) -> Iterator[str]:
    """One JSON line per item with a caption (built from its metadata as ``vitrina captions`` does)."""
    for row in bundle["items"]:
        caption = build_caption(row["metadata"])
        if caption:
            yield json.dumps({"id": row["id"], "caption": caption, "group": group_keys(row["id"], row["metadata"])[0]},
                             ensure_ascii=False)  # fmt: skip
