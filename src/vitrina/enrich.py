"""Enrich imported Library of Congress rows from their loc.gov resource records.

An item imported with the LoC maps paper's CSV (``vitrina import loc-beto ... --csv
p1_map_file_list.csv``) knows its ``resource_url`` and ``segment_num``; its catalogue record is

    resource_url + "?fo=json&sp=" + (segment_num + 1)

From that record come title, date, place, subjects, notes, format and contributors, and a
caption built from them the way the paper built its captions (``captions.py``). The vector is
kept: only metadata changes.

Politeness is the loc.gov source's (``sources/locgov.py``): at most one request per second to
www.loc.gov, a User-Agent naming vitrina, responses cached in the collection, and the first 429
stops the run at once. Enriched items are marked (``enriched: locgov``) and written every few
items, so running the same command again carries on with the rest. At one request per second
the 562,842 maps take six and a half days: use --limit to enrich a part, or enrich only what
your searches surface.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .captions import build_caption
from .errors import ConfigError, ImageError
from .http import Blocked, Fetcher
from .records import Item

if TYPE_CHECKING:
    from .collection import Collection
    from .indexer import ProgressCallback

MARK = "locgov"
FIELDS = {  # metadata key <- record keys, first found (in the record's "item", then at the top)
    "title": ("title",),
    "date": ("date", "dates"),
    "location": ("location", "locations", "place"),
    "subject": ("subject", "subjects", "subject_headings"),
    "notes": ("notes", "note"),
    "original_format": ("original_format", "format"),
    "contributor": ("contributor", "contributors", "contributor_names"),
    "description": ("description", "summary"),
    "call_number": ("call_number",),
}
ENRICHERS = {"locgov": "loc.gov resource records for items imported with the LoC maps CSV (resource_url, segment_num)"}


@dataclass
class EnrichReport:
    collection: str
    source: str = "locgov"
    candidates: int = 0  # items with a resource_url
    enriched: int = 0  # by this run
    already: int = 0  # enriched by an earlier run
    without_resource: int = 0  # items with no resource_url: imported without --csv
    failed: int = 0
    problems: list[str] = field(default_factory=list)  # the first 50
    requests: int = 0
    interrupted: bool = False
    message: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


def record_url(resource_url: str, segment_num: Any) -> str:
    sep = "&" if "?" in resource_url else "?"
    return f"{resource_url}{sep}fo=json&sp={int(segment_num) + 1}"


def record_metadata(doc: Any) -> dict[str, Any]:
    """The catalogue fields of a loc.gov resource (or item) JSON record."""
    if not isinstance(doc, dict):
        return {}
    inner: dict[str, Any] = doc["item"] if isinstance(doc.get("item"), dict) else {}
    out: dict[str, Any] = {}
    for key, names in FIELDS.items():
        for source in (inner, doc):
            value = next((source[n] for n in names if source.get(n) not in (None, "", [], {})), None)
            if value is not None:
                out[key] = value
                break
    return out


def enrich(coll: Collection, source: str = "locgov", *, fetcher: Fetcher | None = None, limit: int | None = None,
           progress: ProgressCallback | None = None, batch: int = 20) -> EnrichReport:  # fmt: skip
    """Fetch the loc.gov record of every imported item not enriched yet (see module docstring)."""
    if source not in ENRICHERS:
        raise ConfigError(f"Unknown enrichment {source!r}; known: {', '.join(ENRICHERS)}.")
    started = time.perf_counter()
    report = EnrichReport(collection=coll.name, source=source)
    todo: list[str] = []  # ids only: the items are read again a batch at a time
    for item in coll.iter_items():
        md = item.metadata
        if not md.get("resource_url") or md.get("segment_num") in (None, ""):
            report.without_resource += 1
        elif md.get("enriched") == MARK:
            report.already += 1
        else:
            todo.append(item.id)
    report.candidates = len(todo) + report.already
    if limit is not None:
        todo = todo[:limit]
    own = fetcher is None
    http = fetcher or Fetcher(cache_dir=coll.paths.http_cache)
    pending: list[Item] = []
    try:
        with coll.writer():
            for n, item in enumerate(_items(coll, todo, batch), start=1):
                url = record_url(str(item.metadata["resource_url"]), item.metadata["segment_num"])
                http.like_loc_gov(urlsplit(url).hostname or "")  # a local mirror gets loc.gov's pace too
                try:
                    found = record_metadata(http.get_json(url))
                except Blocked as e:
                    report.interrupted, report.message = True, str(e)
                    break
                except ImageError as e:
                    report.failed += 1
                    if len(report.problems) < 50:
                        report.problems.append(f"{item.id}: {e}")
                    continue
                metadata = {**item.metadata, **found, "enriched": MARK}
                caption = build_caption(metadata)
                if caption:
                    metadata["caption"] = caption
                pending.append(Item(**{**asdict(item), "metadata": metadata, "tags": {}}))
                report.enriched += 1
                if len(pending) >= batch:
                    coll.add_items(pending)
                    pending = []
                if progress:
                    progress(n, len(todo))
            if pending:
                coll.add_items(pending)
    finally:
        report.requests = http.requests
        if own:
            http.close()
    report.seconds = time.perf_counter() - started
    return report


def _items(coll: Collection, ids: list[str], batch: int) -> Iterator[Item]:
    for start in range(0, len(ids), batch):
        found = coll.items(ids[start : start + batch])
        yield from (found[i] for i in ids[start : start + batch] if i in found)
