"""clip-retrieval: img_emb/img_emb_K.npy paired with metadata/metadata_K.parquet."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import ConfigError, SourceError
from ..records import Item
from .common import (
    ID_COLUMNS,
    IMAGE_COLUMNS,
    Chunk,
    Reader,
    id_and_image,
    load_npy,
    parquet_fingerprint,
    require_pyarrow,
    scalar_metadata,
)


class ClipRetrievalReader(Reader):
    """clip-retrieval's output folder: img_emb/img_emb_K.npy with metadata/metadata_K.parquet
    (K = 0, 1, ...), row r of one shard's npy belonging to row r of its parquet. float16 is
    accepted. Id: the ``key`` column (else id, image_path, url); image: url (else image_path)."""

    kind = "clip-retrieval"

    def __init__(self, folder: str | os.PathLike[str]):
        pa = require_pyarrow()
        root = Path(folder).expanduser()
        emb, meta = root / "img_emb", root / "metadata"
        if not emb.is_dir():
            raise ConfigError(
                f"{root} has no img_emb folder; clip-retrieval writes img_emb/*.npy and metadata/*.parquet."
            )
        shards = {_shard_number(p): p for p in emb.glob("*.npy")}
        metas = {_shard_number(p): p for p in meta.glob("*.parquet")} if meta.is_dir() else {}
        if not shards:
            raise ConfigError(f"{emb} holds no .npy files.")
        self.shards: list[tuple[Path, Path | None, np.ndarray, int]] = []  # npy, parquet, array, first row
        self.source = f"import:clip-retrieval:{root.resolve()}"
        row, dims = 0, set()
        self.fingerprint = None
        for k in sorted(shards):
            array = load_npy(shards[k])
            pq_path = metas.get(k)
            if pq_path is not None:
                pf = pa.parquet.ParquetFile(pq_path)
                if pf.metadata.num_rows != len(array):
                    raise SourceError("length_mismatch", f"{shards[k].name} has {len(array):,} vectors but {pq_path.name} has {pf.metadata.num_rows:,} rows: "
                                      "row order pairs them, so they cannot be paired. Nothing was imported.")  # fmt: skip
                self.fingerprint = self.fingerprint or parquet_fingerprint(pf.schema_arrow)
            elif metas:
                raise SourceError(
                    "missing_metadata",
                    f"{shards[k].name} has no metadata/{shards[k].stem.replace('img_emb', 'metadata')}.parquet.",
                )
            self.shards.append((shards[k], pq_path, array, row))
            dims.add(array.shape[1])
            row += len(array)
        if len(dims) != 1:
            raise SourceError("bad_vectors", f"The shards of {emb} have different dimensions: {sorted(dims)}.")
        self.total, self.dim = row, dims.pop()
        self.files = [p for s in self.shards for p in s[:2] if p is not None]

    def chunks(self, start: int, size: int) -> Iterator[Chunk]:
        pa = require_pyarrow()
        for npy, pq_path, array, first in self.shards:
            n = len(array)
            if first + n <= start:
                continue
            batches = pa.parquet.ParquetFile(pq_path).iter_batches(batch_size=size) if pq_path else None
            offset = 0
            while offset < n:
                rows_in = min(size, n - offset)
                records = next(batches).to_pylist() if batches is not None else [{} for _ in range(rows_in)]
                rows_in = len(records)
                a = first + offset
                if a + rows_in > start:
                    skip = max(0, start - a)
                    items = []
                    for r in range(skip, rows_in):
                        item_id, image = id_and_image(records[r], None, None, f"{npy.stem}:{offset + r}")
                        metadata = scalar_metadata(
                            records[r],
                            {c for c in (*ID_COLUMNS, *IMAGE_COLUMNS) if records[r].get(c) in (item_id, image)},
                        )
                        items.append(
                            Item(
                                id=item_id,
                                image=image,
                                metadata=metadata,
                                fingerprint=image or item_id,
                                source=self.source,
                            )
                        )
                    yield Chunk(
                        a + skip,
                        a + rows_in,
                        list(range(a + skip, a + rows_in)),
                        items,
                        array[offset + skip : offset + rows_in],
                    )
                offset += rows_in


def _shard_number(path: Path) -> int:
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else 0
