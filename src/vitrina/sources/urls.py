"""A CSV or JSONL list of image URLs with metadata columns, or a plain list of URLs, one a line.

The URL column is the first of: url, file_url, image_url, image. The id is the `id` column, else
`p1_item_id` + `segment_num` (the LoC maps paper's `merged_files.csv`), else a hash of the URL,
so a reordered or extended list keeps every id. Every other column is kept as metadata. A IIIF
Image API URL is fetched at the size the model needs, not as listed (`pct:100`, `full`).

Rows that are not images (the LoC list's PDF reports, videos, audio) are skipped at ingest by
their URL's extension, and, with ``check_type``, by the content type a HEAD request answers; each
is reported with its URL and counted by kind.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..captions import add_caption
from ..errors import ConfigError, ImageError
from ..iiif import not_image_kind
from ..records import Item
from . import with_years

if TYPE_CHECKING:
    from ..http import Fetcher

URL_COLUMNS = ("url", "file_url", "image_url", "image")


class UrlListSource:
    complete = True

    def __init__(self, path: str, *, check_type: bool = False, fetcher: Fetcher | None = None):
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise ConfigError(f"{path} is not a file; urls: takes a .csv or .jsonl list of image URLs.")
        self.spec = f"urls:{self.path}"
        self.skipped: list[str] = []
        self.skip_counts: dict[str, int] = {}
        self.check_type, self.fetcher = check_type, fetcher

    def _skip(self, why: str, kind: str) -> None:
        self.skipped.append(why)
        self.skip_counts[kind] = self.skip_counts.get(kind, 0) + 1

    def _not_image(self, url: str) -> str | None:
        kind = not_image_kind(url)
        if kind is None and self.check_type and self.fetcher is not None:
            try:
                content_type = self.fetcher.content_type(url)
            except ImageError:
                return None  # unknown: the index run will find out and say why
            if content_type and not content_type.startswith("image/"):
                kind = not_image_kind(format_=content_type) or content_type.split(";")[0].strip()
        return kind

    def rows(self) -> Iterator[dict[str, Any]]:
        if self.path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            with self.path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, start=1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except ValueError:
                            self._skip(f"line {n}: not JSON", "bad line")
                            continue
                        if isinstance(row, dict):
                            yield row
        else:
            with self.path.open(encoding="utf-8-sig", newline="") as f:
                first = f.readline()
                f.seek(0)
                if first.strip().lower().startswith(("http://", "https://")):  # a plain list, one URL a line, no header
                    yield from ({"url": line.strip()} for line in f if line.strip())
                    return
                reader = csv.DictReader(f)
                columns = [c for c in reader.fieldnames or [] if c]
                if not any(c in URL_COLUMNS for c in columns):
                    raise ConfigError(f"{self.path} has no URL column (its columns: {', '.join(columns) or 'none'}); "
                                      f"name the column of image URLs one of {', '.join(URL_COLUMNS)}, or give one URL a line without a header.")  # fmt: skip
                yield from reader

    def pages(self, cursor: str | None = None) -> Iterator[tuple[list[Item], str | None]]:
        items = []
        for n, row in enumerate(self.rows(), start=1):
            url = next((str(row[c]).strip() for c in URL_COLUMNS if row.get(c)), "")
            if not url.startswith(("http://", "https://")):
                self._skip(f"row {n}: no http(s) URL", "no URL")
                continue
            other = self._not_image(url)
            if other is not None:
                self._skip(f"row {n}: {url} is not an image ({other})", other)
                continue
            if row.get("id"):
                item_id = str(row["id"])
            elif row.get("p1_item_id"):
                item_id = f"{row['p1_item_id']}/{row.get('segment_num', 0)}"
            else:
                item_id = hashlib.sha1(url.encode()).hexdigest()[:16]
            metadata = {k: v for k, v in row.items() if k not in URL_COLUMNS and k != "id" and v not in (None, "")}
            if "resource_url" in metadata:
                metadata.setdefault("link", metadata["resource_url"])
            metadata = add_caption(with_years(metadata))
            metadata.setdefault("title", item_id)
            items.append(Item(id=item_id, image=url, metadata=metadata, fingerprint=url, source=self.spec))
        yield items, None
