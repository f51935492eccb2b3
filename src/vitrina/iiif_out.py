"""IIIF out: send hits back into the viewers curators use (Mirador, Universal Viewer).

An item knows its place in the IIIF world when its metadata has a ``manifest`` and a ``canvas``
(items imported from IIIF manifests) and, for a crop, a region: ``box_pixels`` (ALTO
illustrations; canvas and image pixels agree when the canvas has the image's size, as the
manifests vitrina reads do) or the region of a IIIF Image API URL. From that:

- a Content State 1.0 annotation (a region of a canvas ``partOf`` its manifest), base64url-encoded
  into a viewer's ``?iiif-content=`` address;
- search results within one manifest as a Content Search 2.0-style ``AnnotationPage``: one
  ``highlighting`` annotation per hit, targeting ``canvas#xywh=…`` ``partOf`` the manifest;
- the words read from an item's image (OCR) as a Presentation 3 ``AnnotationPage`` of
  ``supplementing`` annotations, each a ``TextualBody`` on ``canvas#xywh=…`` (``words_page``), and
  a one-canvas ``Manifest`` of the item whose canvas links that page from its ``annotations``
  (``item_manifest``), so a IIIF viewer (Mirador, Universal Viewer) shows the words on the image.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

SEARCH_CONTEXT = "http://iiif.io/api/search/2/context.json"
PRESENTATION_CONTEXT = "http://iiif.io/api/presentation/3/context.json"
# Where "open in a IIIF viewer" goes; {content} is the base64url content state. Override with
# $VITRINA_IIIF_VIEWER (e.g. a local Mirador or Universal Viewer that accepts iiif-content).
DEFAULT_VIEWER = "https://projectmirador.org/embed/?iiif-content={content}"
_REGION = re.compile(r"/(\d+),(\d+),(\d+),(\d+)/[^/]+/[^/]+/[^/]+$")


def _web(value: object) -> str | None:
    return value if isinstance(value, str) and value.lower().startswith(("http://", "https://")) else None


def target_of(metadata: dict[str, Any], image: str = "") -> dict[str, Any] | None:
    """{"manifest", "canvas", "xywh" (or None)} of an item, None when it has no canvas in a manifest."""
    manifest, canvas = _web(metadata.get("manifest")), _web(metadata.get("canvas"))
    if not manifest or not canvas:
        return None
    xywh = None
    box = metadata.get("box_pixels")
    if isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) and v >= 0 for v in box):
        xywh = ",".join(str(v) for v in box)
    else:
        m = _REGION.search(image.split("?")[0]) if image else None
        if m:
            xywh = ",".join(m.groups())
    return {"manifest": manifest, "canvas": canvas, "xywh": xywh}


def _canvas_ref(target: dict[str, Any]) -> dict[str, Any]:
    fragment = f"#xywh={target['xywh']}" if target.get("xywh") else ""
    return {
        "id": target["canvas"] + fragment,
        "type": "Canvas",
        "partOf": [{"id": target["manifest"], "type": "Manifest"}],
    }


def content_state(target: dict[str, Any]) -> dict[str, Any]:
    """A IIIF Content State 1.0 annotation: this canvas (region) of this manifest."""
    return {
        "@context": PRESENTATION_CONTEXT,
        "type": "Annotation",
        "motivation": ["contentState"],
        "target": _canvas_ref(target),
    }


def encode_content_state(state: dict[str, Any]) -> str:
    """base64url without padding, of the UTF-8 JSON (Content State 1.0, section 2.3)."""
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def viewer_url(target: dict[str, Any], template: str | None = None) -> str:
    template = template or os.environ.get("VITRINA_IIIF_VIEWER") or DEFAULT_VIEWER
    return template.replace("{content}", quote(encode_content_state(content_state(target)), safe=""))


def annotation_page(page_id: str, hits: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Hits ({"id", "score", "title", "target"}) as a Content Search 2.0-style AnnotationPage.
    Hits without a target (no canvas in a manifest) are left out."""
    items = []
    for rank, hit in enumerate(hits, 1):
        target = hit.get("target")
        if not target:
            continue
        items.append({
            "id": f"{page_id}#hit-{rank}", "type": "Annotation", "motivation": "highlighting",
            "label": {"none": [f"{hit['title']} (score {hit['score']:.3f})"]},
            "body": {"type": "TextualBody", "value": str(hit["title"]), "format": "text/plain"},
            "target": _canvas_ref(target),
        })  # fmt: skip
    return {"@context": SEARCH_CONTEXT, "id": page_id, "type": "AnnotationPage", "items": items}


def words_page(page_id: str, canvas_id: str, words: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The words read from an item's image ({"text", "box": [x, y, w, h]} in the canvas's pixels)
    as a Presentation 3 AnnotationPage: one ``supplementing`` annotation per word, its text a
    ``TextualBody``, its target ``canvas#xywh=`` (whole pixels, at least 1 wide and high)."""
    items = []
    for n, word in enumerate(words, 1):
        x, y, w, h = (round(float(v)) for v in word["box"])
        items.append({
            "id": f"{page_id}#word-{n}", "type": "Annotation", "motivation": "supplementing",
            "body": {"type": "TextualBody", "value": str(word["text"]), "format": "text/plain"},
            "target": f"{canvas_id}#xywh={max(0, x)},{max(0, y)},{max(1, w)},{max(1, h)}",
        })  # fmt: skip
    return {"@context": PRESENTATION_CONTEXT, "id": page_id, "type": "AnnotationPage", "items": items}


def item_manifest(manifest_id: str, canvas_id: str, label: str, size: tuple[int, int], image: dict[str, Any],
                  words_page_id: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A Presentation 3 Manifest of one item: one Canvas of ``size`` painted with ``image`` (an
    ``Image`` body: {"id", "format", "width", "height"}), its words page (``words_page``) linked
    from the canvas's ``annotations``."""
    width, height = size
    canvas: dict[str, Any] = {
        "id": canvas_id, "type": "Canvas", "label": {"none": [label]}, "width": width, "height": height,
        "items": [{"id": f"{canvas_id}#painting", "type": "AnnotationPage", "items": [{
            "id": f"{canvas_id}#image", "type": "Annotation", "motivation": "painting",
            "body": {"type": "Image", **image}, "target": canvas_id}]}],
    }  # fmt: skip
    if words_page_id:
        canvas["annotations"] = [{"id": words_page_id, "type": "AnnotationPage"}]
    return {"@context": PRESENTATION_CONTEXT, "id": manifest_id, "type": "Manifest", "label": {"none": [label]},
            "items": [canvas]}  # fmt: skip
