"""Sources yield ``Item``s: a stable id, where the image is, metadata and context text.

    folder:DIR (or a directory)       local files                       sources/folder.py
    urls:FILE.csv | FILE.jsonl        image URLs + metadata columns     sources/urls.py
    iiif:URL-OR-FILE                  a manifest or collection, v2.1/3  sources/iiif.py
    locgov:SEARCH-URL                 the loc.gov JSON API              sources/locgov.py
    alto:DIR-OR-FILE                  illustrations cut out of pages    sources/alto.py

A source delivers its items in pages: ``pages()`` yields (items, cursor), where the cursor lets
an interrupted harvest resume after the last stored page (None once the source is exhausted).
``complete`` says whether the source lists everything it holds, so that items it no longer
yields may be removed from the collection.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError
from ..records import Item

if TYPE_CHECKING:
    from ..http import Fetcher

SOURCES = {
    "folder": "a directory of image files",
    "urls": "a CSV or JSONL file of image URLs with metadata columns",
    "iiif": "a IIIF Presentation manifest or collection (URL or file), v2.1 or v3",
    "locgov": "a loc.gov search or collection URL",
    "alto": "a folder (or file) of ALTO XML pages; illustrations are cropped",
}


class Source(Protocol):
    spec: str  # canonical, stored with every item it yields
    complete: bool

    def pages(self, cursor: str | None = None) -> Iterator[tuple[list[Item], str | None]]: ...


def with_years(metadata: dict[str, Any]) -> dict[str, Any]:
    """``year`` (and ``year_end`` for a range) from a free-text ``date``, which is kept as written:
    "15. September 1859" -> 1859, "ca. 1820" -> 1820, "1750-1760" -> 1750 to 1760."""
    from ..filters import year_range

    date = metadata.get("date")
    date = date[0] if isinstance(date, list) and date else date
    found = year_range(str(date)) if isinstance(date, (str, int)) and "year" not in metadata else None
    if found:
        metadata["year"] = found[0]
        if found[1] != found[0]:
            metadata["year_end"] = found[1]
    return metadata


def source_gone(spec: str) -> bool:
    """Whether a local source (a folder or a URL list file) no longer exists. Remote sources are
    never known to be gone: an unreachable server is not a deleted collection."""
    kind, _, target = spec.partition(":")
    if kind not in ("folder", "urls"):
        return False
    from .folder import ref_path

    return not os.path.exists(ref_path(target))


def open_source(spec: str, *, fetcher: Fetcher | None = None, **options: Any) -> Source:
    """The source named by ``spec``; ``options`` go to its constructor (e.g. limit, images)."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in SOURCES:
        kind, target = prefix, rest
    elif os.path.isdir(os.path.expanduser(spec)):
        kind, target = "folder", spec
    else:
        known = "; ".join(f"{k}: {v}" for k, v in SOURCES.items())
        raise ConfigError(f"{spec!r} is not a directory or a known source. Known sources — {known}.")
    if kind == "folder":
        from .folder import FolderSource

        return FolderSource(target)
    if fetcher is None:
        from ..http import Fetcher

        fetcher = Fetcher()
    if kind == "urls":
        from .urls import UrlListSource

        return UrlListSource(
            target, **{k: v for k, v in options.items() if k in ("check_type",) and v is not None}, fetcher=fetcher
        )
    if kind == "iiif":
        from .iiif import IIIFSource

        return IIIFSource(
            target,
            fetcher,
            **{k: v for k, v in options.items() if k in ("limit", "lang", "alto", "min_size") and v is not None},
        )
    if kind == "locgov":
        from .locgov import LocGovSource

        return LocGovSource(
            target, fetcher, **{k: v for k, v in options.items() if k in ("limit", "lang") and v is not None}
        )
    from .alto import AltoSource

    return AltoSource(target, fetcher, **{k: v for k, v in options.items() if k in ("images", "min_size")})
