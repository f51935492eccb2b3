"""loc-beto: the Library of Congress maps paper's ``beto`` tensor + ``beto_idx`` URL list."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import iiif
from ..errors import SourceError
from ..records import Item
from .common import Chunk, Reader, require_file, torch_load


def loc_iiif_id(url: str) -> str | None:
    """The IIIF identifier of a tile.loc.gov image URL (the 5th path segment from the end)."""
    split = iiif.split_image_url(url.strip())
    return split[0].rstrip("/").rsplit("/", 1)[-1] if split else None


class LocBetoReader(Reader):
    """The LoC maps paper's files: ``beto`` [N, D] + ``beto_idx`` (N image URLs), row i with row i;
    an optional ``p1_map_file_list.csv`` (p1_item_id, file_url, resource_url, segment_num) joined
    on the IIIF id of file_url. Item id: the IIIF id; image: the IIIF service at full size (fetched
    at the model's size when re-embedded)."""

    kind = "loc-beto"

    def __init__(
        self,
        beto: str | os.PathLike[str],
        beto_idx: str | os.PathLike[str],
        csv_path: str | os.PathLike[str] | None = None,
    ):
        import torch

        bp, ip = require_file(beto, "beto"), require_file(beto_idx, "beto_idx")
        self.files = [bp, ip] + ([require_file(csv_path, "CSV")] if csv_path else [])
        self.source = f"import:loc-beto:{bp.resolve()}"
        tensor = torch_load(bp, "beto")
        if isinstance(tensor, dict) and len(tensor) == 1:
            tensor = next(iter(tensor.values()))
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2 or not tensor.is_floating_point():
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise SourceError("bad_vectors", f"beto {bp} must hold one float tensor [N, D]; it holds {shape}.")
        urls = torch_load(ip, "beto_idx")
        if not isinstance(urls, (list, tuple)) or not all(isinstance(u, str) for u in urls):
            raise SourceError(
                "bad_ids", f"beto_idx {ip} must hold a list of image URL strings; it holds {type(urls).__name__}."
            )
        if len(urls) != tensor.shape[0]:
            raise SourceError("length_mismatch", f"beto has {tensor.shape[0]:,} rows but beto_idx lists {len(urls):,} URLs: row i of one belongs to "
                              "row i of the other, so they cannot be paired. Use files saved together (the packing script skipped unreadable images).")  # fmt: skip
        self.tensor, self.urls = tensor, list(urls)
        self.total, self.dim = int(tensor.shape[0]), int(tensor.shape[1])
        self.csv: dict[str, tuple[str, ...]] = {}
        self.csv_columns: tuple[str, ...] = ()
        if csv_path:
            self._read_csv(self.files[2])

    def _read_csv(self, path: Path) -> None:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = tuple(next(reader, ()))
            if "file_url" not in header:
                raise SourceError(
                    "bad_csv",
                    f"{path} has no file_url column (expected p1_item_id, file_url, resource_url, segment_num).",
                )
            col = header.index("file_url")
            self.csv_columns = header
            for row in reader:
                key = loc_iiif_id(row[col]) if len(row) > col else None
                if key:
                    self.csv.setdefault(key, tuple(row))

    def item(self, url: str) -> Item:
        split = iiif.split_image_url(url.strip())
        if split is None:
            return Item(id=url, image=url, metadata={"file_url": url}, fingerprint=url, source=self.source)
        base = split[0].rstrip("/")
        key = base.rsplit("/", 1)[-1]
        metadata: dict[str, Any] = {"iiif_id": key, "file_url": url}
        row = self.csv.get(key)
        if row is not None:
            metadata.update({k: v for k, v in zip(self.csv_columns, row) if v not in ("", None) and k != "file_url"})
            if "segment_num" in metadata and str(metadata["segment_num"]).isdigit():
                metadata["segment_num"] = int(metadata["segment_num"])
            if metadata.get("resource_url"):
                metadata.setdefault("link", metadata["resource_url"])
        image = f"{base}/full/full/0/default.jpg"
        return Item(id=key, image=image, metadata=metadata, fingerprint=image, source=self.source)

    def chunks(self, start: int, size: int) -> Iterator[Chunk]:
        import torch

        for a in range(start, self.total, size):
            b = min(self.total, a + size)
            block = self.tensor[a:b]
            vectors = (
                block if block.dtype in (torch.float32, torch.float16, torch.float64) else block.float()
            ).numpy()  # a view of the map
            items, rows, bad = [], [], []
            for n in range(a, b):
                url = self.urls[n]
                if not url.strip():
                    bad.append((n, "", "empty URL in beto_idx"))
                    continue
                items.append(self.item(url))
                rows.append(n)
            yield Chunk(a, b, rows, items, vectors[np.array(rows, np.int64) - a] if bad else vectors, bad)
