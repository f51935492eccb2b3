"""npy: a [N, D] .npy file + an ids file (.txt one per line, or .csv / .jsonl / .parquet)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import SourceError
from ..records import Item
from .common import (
    ID_COLUMNS,
    IMAGE_COLUMNS,
    Chunk,
    Reader,
    id_and_image,
    load_npy,
    require_file,
    require_pyarrow,
    scalar_metadata,
)


class NpyReader(Reader):
    """A [N, D] .npy (memory-mapped, never unpickled) and an ids file of N rows: .txt (one id per
    line; an http(s) URL or a file path is also the image), or .csv / .jsonl / .parquet with an
    id column, an image column and metadata columns."""

    kind = "npy"

    def __init__(
        self,
        vectors: str | os.PathLike[str],
        ids: str | os.PathLike[str],
        *,
        id_column: str | None = None,
        image_column: str | None = None,
    ):
        vp, ip = require_file(vectors, "Vectors file"), require_file(ids, "Ids file")
        self.files = [vp, ip]
        self.source = f"import:npy:{vp.resolve()}"
        self.array = load_npy(vp)
        self.records = read_records(ip)
        if len(self.records) != len(self.array):
            raise SourceError("length_mismatch", f"{vp.name} has {len(self.array):,} vectors but {ip.name} has {len(self.records):,} ids: "
                              "row order pairs them, so they cannot be paired. Nothing was imported.")  # fmt: skip
        self.id_column, self.image_column = id_column, image_column
        self.total, self.dim = len(self.array), int(self.array.shape[1])

    def chunks(self, start: int, size: int) -> Iterator[Chunk]:
        for a in range(start, self.total, size):
            b = min(self.total, a + size)
            items = []
            for n in range(a, b):
                record = self.records[n]
                item_id, image = id_and_image(record, self.id_column, self.image_column, f"row{n}")
                if not image and (item_id.startswith(("http://", "https://")) or os.path.isabs(item_id)):
                    image = item_id
                skip = {self.id_column or "", self.image_column or ""} | {
                    c for c in (*ID_COLUMNS, *IMAGE_COLUMNS) if record.get(c) in (item_id, image)
                }
                items.append(
                    Item(
                        id=item_id,
                        image=image,
                        metadata=scalar_metadata(record, skip),
                        fingerprint=image or item_id,
                        source=self.source,
                    )
                )
            yield Chunk(a, b, list(range(a, b)), items, self.array[a:b])


def read_records(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return list(require_pyarrow().parquet.read_table(path).to_pylist())
    if suffix in (".jsonl", ".ndjson"):
        out = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError:
                        raise SourceError("bad_ids", f"{path} line {n} is not JSON.") from None
                    out.append(row if isinstance(row, dict) else {"id": str(row)})
        return out
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8-sig", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    with path.open(encoding="utf-8") as f:
        return [{"id": line.rstrip("\r\n")} for line in f if line.strip()]
