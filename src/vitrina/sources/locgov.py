"""The Library of Congress loc.gov JSON API: search, format and collection pages.

    locgov:https://www.loc.gov/maps/?q=sea+monster
    locgov:https://www.loc.gov/collections/sanborn-maps/?dates=1880/1889

Pages are requested with fo=json, c=100 and at=results,pagination, and followed through
pagination.next. Each result that is an item (not a collection or web page) becomes one item:
its id is the loc.gov item id, its image the largest IIIF derivative's service (fetched later at
the model's size), and its metadata the catalogue fields with a caption built from them.

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
from ..errors import ConfigError
from ..http import Fetcher
from ..records import Item

LOC_RATES = {"www.loc.gov": 1.0, "loc.gov": 1.0, "tile.loc.gov": 0.5}
MAX_DEPTH = 100_000
KEEP = ("title", "date", "subject", "location", "contributor", "original_format", "online_format", "partof", "description", "notes",
        "rights", "rights_information", "access_restricted", "language", "call_number", "url")  # fmt: skip


def api_url(url: str, per_page: int = 100, *, any_host: bool = False) -> str:
    parts = urlsplit(url if "://" in url else "https://" + url)
    if not (parts.hostname or "").endswith("loc.gov") and not any_host:
        raise ConfigError(f"{url} is not a loc.gov address; locgov: takes a search, format or collection URL on www.loc.gov.")
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


def result_item(result: dict[str, Any], spec: str) -> Item | None:
    rid = str(result.get("id") or "")
    formats = [str(f).lower() for f in _list(result.get("original_format"))]
    if "/item/" not in rid or any(f in ("collection", "web page") for f in formats):
        return None
    item_id = rid.rstrip("/").rsplit("/item/", 1)[-1]
    image = _best_iiif([str(u) for u in _list(result.get("image_url"))])
    if image is None:
        return None
    metadata: dict[str, Any] = {k: result[k] for k in KEEP if result.get(k) not in (None, "", [])}
    notes = (result.get("item") or {}).get("notes") if isinstance(result.get("item"), dict) else None
    if notes:
        metadata["notes"] = notes
    metadata["link"] = str(result.get("url") or rid).replace("http://", "https://")
    metadata["manifest"] = f"https://www.loc.gov/item/{item_id}/manifest.json"
    metadata["loc_id"] = item_id
    return Item(id=f"loc:{item_id}", image=image, metadata=add_caption(metadata), fingerprint=image, source=spec)


class LocGovSource:
    complete = False  # a harvest may be limited or interrupted: never remove items because of it

    def __init__(self, url: str, fetcher: Fetcher, *, limit: int | None = None):
        # A local mirror of the API (trusted deployments, tests) is allowed when private URLs are.
        self.any_host = fetcher.allow_private
        self.first = api_url(url, any_host=self.any_host)
        self.spec = f"locgov:{url}"
        self.fetcher, self.limit = fetcher, limit
        host = urlsplit(self.first).hostname or ""
        for name, rate in {**LOC_RATES, host: LOC_RATES["www.loc.gov"]}.items():
            fetcher.host_rates.setdefault(name, rate)
        if host not in fetcher.stop_on_429:
            fetcher.stop_on_429 = (*fetcher.stop_on_429, host)  # the API bans: never retry a 429
        self.results_total: int | None = None

    def pages(self, cursor: str | None = None) -> Iterator[tuple[list[Item], str | None]]:
        url: str | None = cursor or self.first
        count = 0
        while url:
            data = self.fetcher.get_json(url)
            pagination = data.get("pagination") or {} if isinstance(data, dict) else {}
            self.results_total = pagination.get("of", self.results_total)
            items = []
            for result in (data.get("results") or []) if isinstance(data, dict) else []:
                item = result_item(result, self.spec) if isinstance(result, dict) else None
                if item is None:
                    continue
                if self.limit is not None and count >= self.limit:
                    break
                items.append(item)
                count += 1
            next_url = pagination.get("next")
            if next_url and int(pagination.get("to") or 0) >= MAX_DEPTH:
                raise ConfigError(f"loc.gov does not page past {MAX_DEPTH:,} results; split the query with dates= or fa= facets and harvest each part.")
            done = not next_url or (self.limit is not None and count >= self.limit)
            yield items, None if done else api_url(str(next_url), any_host=self.any_host)
            if done:
                return
            url = api_url(str(next_url), any_host=self.any_host)
