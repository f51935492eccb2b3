"""The Library of Congress loc.gov JSON API: search, format and collection pages.

    locgov:https://www.loc.gov/maps/?q=sea+monster
    locgov:https://www.loc.gov/collections/sanborn-maps/?dates=1880/1889
    locgov:https://www.loc.gov/item/2004629123/          one item (or .../resource/ID/)

Pages are requested with fo=json, c=100 and at=results,pagination, and followed through
pagination.next. Every result that is an item (its id is an /item/ URL, whatever its
original_format: ["map", "collection"] is a real, often multi-sheet map) becomes items: its id
is the loc.gov item id, its image the largest IIIF derivative's service (fetched later at the
model's size), and its metadata the catalogue fields with a caption built from them. An item of
several files (sheets) gives one item per file, ``loc:ID`` for the first and ``loc:ID/sheet-N``
for the others, read from the item's IIIF manifest; so does a result without an image URL.
Results not taken are counted by reason in the ingest summary (``skipped``).

Etiquette (https://www.loc.gov/apis/json-and-yaml/working-within-limits/): vitrina sends at most
one API request per second to www.loc.gov and one image request every two seconds to
tile.loc.gov — under the strictest published limits — with a User-Agent that names it. The first
429 stops the harvest at once (loc.gov blocks for up to an hour and asks clients not to retry);
the next-page cursor is stored, so the same command later resumes where it stopped. loc.gov does
not page past 100,000 results: split bigger harvests with dates= or fa= facets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import iiif
from ..captions import add_caption
from ..errors import ConfigError, SourceError
from ..http import Blocked, Fetcher
from ..records import Item
from . import with_years

MAX_DEPTH = 100_000
KEEP = ("title", "date", "subject", "location", "contributor", "original_format", "online_format", "partof", "description", "notes",
        "rights", "rights_information", "access_restricted", "language", "call_number", "url")  # fmt: skip


def api_url(url: str, per_page: int = 100, *, any_host: bool = False) -> str:
    parts = urlsplit(url if "://" in url else "https://" + url)
    if not (parts.hostname or "").endswith("loc.gov") and not any_host:
        raise ConfigError(
            f"{url} is not a loc.gov address; locgov: takes a search, format or collection URL on www.loc.gov."
        )
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("fo", "c", "at")]
    query += [("fo", "json"), ("c", str(per_page)), ("at", "results,pagination")]
    return urlunsplit((parts.scheme or "https", parts.netloc, parts.path or "/", urlencode(query), ""))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _best_iiif(image_urls: list[str]) -> str | None:
    """The largest IIIF derivative among a result's image_url list (small to large, may be //-relative)."""
    for url in reversed(image_urls):
        url = ("https:" + url) if url.startswith("//") else url
        split = iiif.split_image_url(url.split("#")[0])
        if split:
            base, region = split
            return f"{base}/{region}/full/0/default.jpg"
    return None


def _files(result: dict[str, Any]) -> int:
    """How many files (sheets, pages) the result's resources hold."""
    total = 0
    for r in _list(result.get("resources")):
        if isinstance(r, dict):
            try:
                total += max(1, int(r.get("files") or 1))
            except (TypeError, ValueError):
                total += 1
    return total


def result_item(result: dict[str, Any], spec: str) -> Item | None:
    """The item of one search result from its image_url (None when it has none, or is not an item)."""
    rid = str(result.get("id") or "")
    if "/item/" not in rid:
        return None
    item_id = rid.rstrip("/").rsplit("/item/", 1)[-1]
    image = _best_iiif([str(u) for u in _list(result.get("image_url"))])
    if image is None:
        return None
    return Item(id=f"loc:{item_id}", image=image, metadata=_metadata(result, item_id), fingerprint=image, source=spec)


def _metadata(result: dict[str, Any], item_id: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {k: result[k] for k in KEEP if result.get(k) not in (None, "", [])}
    notes = (result.get("item") or {}).get("notes") if isinstance(result.get("item"), dict) else None
    if notes:
        metadata["notes"] = notes
    metadata["link"] = str(result.get("url") or result.get("id") or "").replace("http://", "https://")
    metadata["manifest"] = f"https://www.loc.gov/item/{item_id}/manifest.json"
    metadata["loc_id"] = item_id
    return add_caption(with_years(metadata))


class LocGovSource:
    complete = False  # a harvest may be limited or interrupted: never remove items because of it

    def __init__(self, url: str, fetcher: Fetcher, *, limit: int | None = None, lang: str = "en"):
        # A local mirror of the API (trusted deployments, tests) is allowed when private URLs are.
        self.any_host = fetcher.allow_private
        self.first = api_url(url, any_host=self.any_host)
        parts = urlsplit(self.first)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.single = "/item/" in parts.path or "/resource/" in parts.path  # one item, not a search
        if self.single:
            self.first = urlunsplit((parts.scheme, parts.netloc, parts.path, "fo=json", ""))
        self.lang = lang
        self.skip_counts: dict[str, int] = {}
        self.problems: list[str] = []
        self.spec = f"locgov:{url}"
        self.fetcher, self.limit = fetcher, limit
        fetcher.like_loc_gov(urlsplit(self.first).hostname or "")  # loc.gov itself is paced by every Fetcher
        self.results_total: int | None = None

    def _skip(self, reason: str, problem: str | None = None) -> None:
        self.skip_counts[reason] = self.skip_counts.get(reason, 0) + 1
        if problem and len(self.problems) < 100:
            self.problems.append(problem)

    def result_items(self, result: dict[str, Any]) -> list[Item]:
        """Every file of one result: one item from its image_url, or one per sheet from its manifest."""
        rid = str(result.get("id") or result.get("url") or "")
        if "/item/" not in rid:
            self._skip("not an item (collection, web page)")
            return []
        item_id = rid.rstrip("/").rsplit("/item/", 1)[-1].split("/")[0]
        single = result_item(result, self.spec)
        if single is not None and _files(result) <= 1:
            return [single]
        manifest = f"{self.origin}/item/{item_id}/manifest.json"
        try:
            doc = self.fetcher.get_json(manifest)
            skipped: dict[str, int] = {}
            records = (
                iiif.manifest_images(doc, manifest, lang=self.lang, skipped=skipped) if isinstance(doc, dict) else []
            )
        except Blocked:
            raise
        except Exception as e:  # one odd manifest costs its item, not the harvest
            records, skipped = [], {}
            if single is None:
                self._skip("no image", f"{rid}: no image URL, and its manifest could not be read ({e})")
                return []
        for kind, n in skipped.items():
            self.skip_counts[kind] = self.skip_counts.get(kind, 0) + n
        if not records:
            if single is not None:
                return [single]
            self._skip("no image", f"{rid}: no image URL, and no image in its manifest")
            return []
        base = _metadata(result, item_id)
        items = []
        for n, r in enumerate(records, start=1):
            metadata = dict(base)
            if len(records) > 1:
                metadata.update(sheet=n, sheets=len(records))
                if r.get("canvas_label"):
                    metadata["sheet_label"] = r["canvas_label"]
            items.append(Item(id=f"loc:{item_id}" if n == 1 else f"loc:{item_id}/sheet-{n}", image=r["image"], metadata=metadata,
                              fingerprint=r["image"], source=self.spec))  # fmt: skip
        return items

    def pages(self, cursor: str | None = None) -> Iterator[tuple[list[Item], str | None]]:
        url: str | None = cursor or self.first
        count = 0
        while url:
            data = self.fetcher.get_json(url)
            if self.single:
                yield self._single(data)[: self.limit], None
                return
            pagination = data.get("pagination") or {} if isinstance(data, dict) else {}
            self.results_total = pagination.get("of", self.results_total)
            items = []
            for result in (data.get("results") or []) if isinstance(data, dict) else []:
                if self.limit is not None and count >= self.limit:
                    break
                if not isinstance(result, dict):
                    self._skip("not a result")
                    continue
                got = self.result_items(result)[: None if self.limit is None else self.limit - count]
                items.extend(got)
                count += len(got)
            next_url = pagination.get("next")
            if next_url and int(pagination.get("to") or 0) >= MAX_DEPTH:
                raise ConfigError(
                    f"loc.gov does not page past {MAX_DEPTH:,} results; split the query with dates= or fa= facets and harvest each part."
                )
            done = not next_url or (self.limit is not None and count >= self.limit)
            yield items, None if done else api_url(str(next_url), any_host=self.any_host)
            if done:
                return
            url = api_url(str(next_url), any_host=self.any_host)

    def _single(self, data: Any) -> list[Item]:
        """An item (or resource) page's JSON: its "item" record with the page's resources."""
        if not isinstance(data, dict) or not isinstance(data.get("item"), dict):
            raise SourceError("bad_json", f'{self.first}: not a loc.gov item page (no "item" in its JSON)')
        record = dict(data["item"])
        page = self.first.split("?")[0]
        item_url = next((str(u) for u in (record.get("id"), record.get("url"), page) if u and "/item/" in str(u)), "")
        if not item_url:
            raise SourceError(
                "bad_json",
                f"{self.first}: its JSON names no /item/ URL; give the item's URL (locgov:https://www.loc.gov/item/ID/)",
            )
        record.update(id=item_url, url=record.get("url") or item_url)
        record.setdefault("image_url", data.get("image_url"))
        record["resources"] = data.get("resources") or record.get("resources")
        return self.result_items(record)
