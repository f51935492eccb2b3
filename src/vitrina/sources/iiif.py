"""IIIF Presentation manifests and collections (v2.1 and v3), from a URL or a local file.

A collection is walked breadth-first (sub-collections, v2.1 paging with first/next), each
document fetched once (visited set) and at most ``max_depth`` levels deep. Each canvas with an
image becomes one item whose id is the canvas id; its image is the canvas's Image API service,
fetched later at the size the model needs. One odd document never stops a walk: off-spec shapes
are read where the meaning is clear (``sequences`` as one object), and a document that still
cannot be read is reported and skipped; the rest goes on. Only when the document named on the
command line itself cannot be read is that an error (nothing else would be ingested).

Canvases that are not still images (audio, video, 3D, PDF) use their thumbnail / poster image,
or are skipped and counted by kind. Text in several languages gives the ``lang`` one.

With ``alto`` (``"auto"``: the canvas's or manifest's ``seeAlso`` / ``rendering`` links to ALTO;
or a URL template), each canvas's ALTO page is read and its illustrations become items cropped
from the canvas's Image API service by region, with the OCR text near them as context: the
National Library of Norway's book -> manifest -> ALTO -> crops flow.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import iiif
from ..captions import add_caption
from ..errors import ConfigError, ImageError, SourceError, VitrinaError
from ..http import Blocked, Fetcher
from ..iiif import ImageService
from ..records import Item
from . import with_years
from .alto import nearby_text, parse_alto, picture_boxes


class IIIFSource:
    def __init__(self, target: str, fetcher: Fetcher, *, limit: int | None = None, max_depth: int = 8, lang: str = "en",
                 alto: str | None = None, min_size: int = 64):  # fmt: skip
        self.target, self.fetcher, self.limit, self.max_depth, self.lang = (
            target,
            fetcher,
            limit,
            max_depth,
            lang or "en",
        )
        self.alto, self.min_size = alto, min_size
        local = Path(target).expanduser()
        self.local = local.is_file()
        self.spec = f"iiif:{local.resolve() if self.local else target}" + (f"|alto={alto}" if alto else "")
        self.problems: list[str] = []  # (url, why) of documents that could not be read
        self.complete = True  # False once anything was skipped or limited
        self.skip_counts: dict[
            str, int
        ] = {}  # what was not ingested, by kind (video, audio, pdf, unreadable document, ...)

    def _problem(self, ref: str, why: str, kind: str = "unreadable document") -> None:
        self.problems.append(f"{ref}: {why}")
        self.skip_counts[kind] = self.skip_counts.get(kind, 0) + 1
        self.complete = False

    def _load(self, ref: str) -> dict[str, Any]:
        if self.local and ref == self.target:
            try:
                return json.loads(Path(ref).expanduser().read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as e:
                raise SourceError("bad_manifest", f"{ref}: not a readable JSON file ({type(e).__name__})") from e
        try:
            doc = self.fetcher.get_json(ref)
        except ImageError as e:
            if e.reason == "bad_json":
                raise SourceError("bad_manifest", f"{ref}: not JSON (an error page?), or not UTF-8") from e
            raise
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
                items = self._document(ref, depth, embedded, queue, seen, count)
            except Blocked:
                raise
            except Exception as e:  # one odd document must not stop the walk (nor every re-run at the same place)
                why = str(e) if isinstance(e, VitrinaError) else f"not readable as IIIF ({type(e).__name__}: {e})"
                if ref == self.target and depth == 0 and isinstance(e, ImageError) and e.reason != "bad_json":
                    # Not fetched at all (refused address, 404, server down): nothing says it is not a manifest.
                    raise SourceError(e.reason, f"{ref}: could not be fetched: {why.removeprefix(ref + ': ')}") from e
                if ref == self.target and depth == 0:
                    raise SourceError(
                        "bad_manifest",
                        f"{ref}: {why.removeprefix(ref + ': ')}. Check that it is a IIIF manifest or collection (JSON, UTF-8).",
                    ) from e
                self._problem(ref, why.removeprefix(ref + ": "))
                continue
            if items is None:
                continue
            count += len(items)
            yield items, None
            if self.limit is not None and count >= self.limit:
                return

    def _document(self, ref: str, depth: int, embedded: dict[str, Any] | None, queue: deque[tuple[str, int, dict[str, Any] | None]],
                  seen: set[str], count: int) -> list[Item] | None:  # fmt: skip
        """The items of one document (None for a collection, whose children are queued)."""
        if embedded is not None and (
            embedded.get("sequences") or embedded.get("items") and iiif.kind(embedded) == "Manifest"
        ):
            doc = embedded
        else:
            doc = self._load(ref)
        doc_kind = iiif.kind(doc)
        if doc_kind == "Collection" or (not iiif.canvases(doc) and iiif.children(doc)):
            if depth >= self.max_depth:
                self._problem(ref, f"deeper than {self.max_depth} levels, skipped", "too deep")
                return None
            for child in iiif.children(doc):
                queue.append((iiif.ident(child), depth + 1, child if iiif.kind(child) == "Manifest" else None))
            for key in ("first", "next"):  # v2.1 paged collections
                page = iiif.ident(doc.get(key))
                if page and page not in seen:
                    queue.append((page, depth, None))
            return None
        records = iiif.manifest_images(doc, iiif.ident(doc) or ref, lang=self.lang, skipped=self.skip_counts)
        if not records and doc_kind != "Manifest":
            raise SourceError("bad_manifest", f"{ref}: neither a IIIF manifest nor a collection")
        items: list[Item] = []
        for r in records:
            if self.limit is not None and count + len(items) >= self.limit:
                self.complete = False
                break
            metadata = add_caption(
                with_years({**r["metadata"], **({"iiif_service": r["service"]} if r["service"] else {})})
            )
            if self.alto:
                items.extend(self._alto_items(doc, r, metadata))
            else:
                items.append(
                    Item(
                        id=r["id"],
                        image=r["image"],
                        metadata=metadata,
                        context=r["context"],
                        fingerprint=r["image"],
                        source=self.spec,
                    )
                )
        return items

    # -- ALTO per canvas (the nb.no flow) ---------------------------------------------------------

    def _alto_url(self, manifest: dict[str, Any], record: dict[str, Any]) -> str | None:
        canvas = record["canvas"]
        if self.alto and self.alto != "auto":
            manifest_id = iiif.ident(manifest) or self.target
            fields = {"page": record["index"], "canvas": record["id"], "canvas_name": _last_segment(record["id"]),
                      "manifest": manifest_id, "manifest_name": _last_segment(manifest_id.removesuffix("/manifest.json").removesuffix("/manifest"))}  # fmt: skip
            try:
                return self.alto.format(**fields)
            except (KeyError, IndexError, ValueError) as e:
                raise ConfigError(
                    f"--alto {self.alto!r}: {e!r} is not a template field; use {{page}}, {{page:04d}}, {{canvas}}, {{canvas_name}}, {{manifest}}, {{manifest_name}}."
                ) from None
        links = [x for key in ("seeAlso", "rendering") for x in iiif.as_list(canvas.get(key)) if _is_alto(x)]
        if links:
            return iiif.ident(links[0])
        # A manifest-level list with one ALTO per canvas, in canvas order.
        book = [x for key in ("seeAlso", "rendering") for x in iiif.as_list(manifest.get(key)) if _is_alto(x)]
        if len(book) == len(iiif.canvases(manifest)) and record["index"] <= len(book):
            return iiif.ident(book[record["index"] - 1])
        return None

    def _alto_items(self, manifest: dict[str, Any], record: dict[str, Any], metadata: dict[str, Any]) -> list[Item]:
        """Illustrations of one canvas, cut from its Image API service by region, from its ALTO page."""
        url = self._alto_url(manifest, record)
        if not url:
            self.skip_counts["page without ALTO"] = self.skip_counts.get("page without ALTO", 0) + 1
            return []
        if not record["service"]:
            self._problem(
                record["id"],
                "has ALTO but no Image API service to cut illustrations from",
                "page without image service",
            )
            return []
        try:
            page = parse_alto(url, self.fetcher.get_bytes(url, accept="application/xml, text/xml;q=0.9, */*;q=0.1"))
        except Blocked:
            raise
        except ImageError as e:
            if e.reason == "not_found":
                self.skip_counts["page without ALTO"] = self.skip_counts.get("page without ALTO", 0) + 1
            else:
                self._problem(url, str(e).removeprefix(url + ": "), "unreadable ALTO")
            return []  # one page, not the book
        except SourceError as e:
            self._problem(url, str(e).removeprefix(url + ": "), "unreadable ALTO")
            return []
        if not page.pictures:
            return []
        canvas, resource = record["canvas"], iiif.painted(record["canvas"], iiif.version(manifest)) or {}
        # Region requests are in image pixels: the painted image's size where given, else the canvas's.
        width, height = (
            _int(resource.get("width")) or _int(canvas.get("width")),
            _int(resource.get("height")) or _int(canvas.get("height")),
        )
        if not (width and height):
            info = ImageService.from_info(self.fetcher.get_json(record["service"] + "/info.json"), record["service"])
            width, height = info.width, info.height
        if not (page.width and page.height):
            raise SourceError(
                "bad_xml", f"{url}: the ALTO <Page> has no WIDTH/HEIGHT to scale its coordinates to the canvas"
            )
        sx, sy = width / page.width, height / page.height
        items = []
        for box, (x, y, w, h) in picture_boxes(page, sx, sy, width, height, self.min_size):
            image = f"{record['service']}/{x},{y},{w},{h}/full/0/default.jpg"
            block = box.id or f"{x},{y},{w},{h}"
            md = {**metadata, "title": f"{metadata.get('title', '')} — {block}".strip(" —"), "alto": url, "block": box.id, "block_type": box.kind,
                  "box_alto": [box.x, box.y, box.w, box.h], "box_pixels": [x, y, w, h]}  # fmt: skip
            context = " ".join(t for t in (nearby_text(page, box), record["context"]) if t)[:1000]
            items.append(
                Item(
                    id=f"{record['id']}#{block}",
                    image=image,
                    metadata=md,
                    context=context,
                    fingerprint=image,
                    source=self.spec,
                )
            )
        return items


def _last_segment(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _is_alto(link: Any) -> bool:
    """A seeAlso / rendering link to an ALTO page (by format, profile or label, else by its URL)."""
    about = " ".join(str(link.get(k) or "") for k in ("format", "profile", "label")) if isinstance(link, dict) else ""
    tail = "/".join(iiif.ident(link).lower().split("?")[0].rstrip("/").split("/")[-2:])
    return "alto" in about.lower() or "alto" in tail
