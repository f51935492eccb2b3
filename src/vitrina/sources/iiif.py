"""IIIF Presentation manifests and collections (v2.1 and v3), from a URL or a local file.

A collection is walked breadth-first (sub-collections, v2.1 paging with first/next), each
document fetched once (visited set) and at most ``max_depth`` levels deep. Each canvas with an
image becomes one item whose id is the canvas id; its image is the canvas's Image API service,
fetched later at the size the model needs. A manifest that cannot be read is reported and
skipped; the rest goes on.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import iiif
from ..captions import add_caption
from ..errors import SourceError, VitrinaError
from ..http import Blocked, Fetcher
from ..records import Item


class IIIFSource:
    def __init__(self, target: str, fetcher: Fetcher, *, limit: int | None = None, max_depth: int = 8):
        self.target, self.fetcher, self.limit, self.max_depth = target, fetcher, limit, max_depth
        local = Path(target).expanduser()
        self.local = local.is_file()
        self.spec = f"iiif:{local.resolve() if self.local else target}"
        self.problems: list[str] = []  # (url, why) of documents that could not be read
        self.complete = True  # False once anything was skipped or limited

    def _load(self, ref: str) -> dict[str, Any]:
        if self.local and ref == self.target:
            try:
                return json.loads(Path(ref).expanduser().read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as e:
                raise SourceError("bad_manifest", f"{ref}: not a readable JSON file ({type(e).__name__})") from e
        doc = self.fetcher.get_json(ref)
        if not isinstance(doc, dict):
            raise SourceError("bad_manifest", f"{ref}: not a IIIF document (JSON {type(doc).__name__})")
        return doc

    def pages(self, cursor: str | None = None) -> Iterator[tuple[list[Item], str | None]]:
        queue: deque[tuple[str, int, dict[str, Any] | None]] = deque([(self.target, 0, None)])
        seen: set[str] = set()
        count = 0
        while queue:
            ref, depth, embedded = queue.popleft()
            if ref in seen:
                continue
            seen.add(ref)
            try:
                doc = embedded if embedded is not None and (embedded.get("sequences") or embedded.get("items") and iiif.kind(embedded) == "Manifest") else self._load(ref)
            except Blocked:
                raise
            except VitrinaError as e:
                self.problems.append(f"{ref}: {e}")
                self.complete = False
                continue
            doc_kind = iiif.kind(doc)
            if doc_kind == "Collection" or (not iiif.canvases(doc) and iiif.children(doc)):
                if depth >= self.max_depth:
                    self.problems.append(f"{ref}: deeper than {self.max_depth} levels, skipped")
                    self.complete = False
                    continue
                for child in iiif.children(doc):
                    queue.append((iiif.ident(child), depth + 1, child if iiif.kind(child) == "Manifest" else None))
                for key in ("first", "next"):  # v2.1 paged collections
                    page = iiif.ident(doc.get(key))
                    if page and page not in seen:
                        queue.append((page, depth, None))
                continue
            records = iiif.manifest_images(doc, iiif.ident(doc) or ref)
            if not records and doc_kind != "Manifest":
                self.problems.append(f"{ref}: neither a manifest nor a collection")
                self.complete = False
                continue
            items = []
            for r in records:
                if self.limit is not None and count >= self.limit:
                    self.complete = False
                    break
                count += 1
                metadata = add_caption({**r["metadata"], **({"iiif_service": r["service"]} if r["service"] else {})})
                items.append(Item(id=r["id"], image=r["image"], metadata=metadata, context=r["context"], fingerprint=r["image"], source=self.spec))
            yield items, None
            if self.limit is not None and count >= self.limit:
                return
