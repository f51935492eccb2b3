"""parquet: one file with a list / fixed-size-list vector column and an id column."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from ..errors import ConfigError, SourceError
from ..records import Item
from .common import (
    ID_COLUMNS,
    IMAGE_COLUMNS,
    Chunk,
    Reader,
    id_and_image,
    parquet_fingerprint,
    require_file,
    require_pyarrow,
    scalar_metadata,
)


class ParquetReader(Reader):
    """One parquet file with a vector column (list or fixed-size list of floats), streamed in
    record batches. A row whose vector is missing or has another length is a bad row."""

    kind = "parquet"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        vector_column: str | None = None,
        id_column: str | None = None,
        image_column: str | None = None,
    ):
        pa = require_pyarrow()
        self.path = require_file(path, "Parquet file")
        self.files = [self.path]
        self.source = f"import:parquet:{self.path.resolve()}"
        try:
            self.pf = pa.parquet.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as e:
            raise SourceError("bad_file", f"{self.path} is not a readable parquet file: {e}") from None
        schema = self.pf.schema_arrow
        lists = [
            f.name
            for f in schema
            if pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_fixed_size_list(f.type)
        ]
        lists = [n for n in lists if pa.types.is_floating(schema.field(n).type.value_type)]
        if vector_column is None:
            named = [
                n
                for n in lists
                if n in ("vector", "embedding", "embeddings", "emb", "image_embedding", "clip_embedding")
            ]
            if len(named) == 1 or len(lists) == 1:
                vector_column = (named or lists)[0]
            else:
                raise ConfigError(
                    f"Say which column holds the vectors: --vector-column (float list columns: {', '.join(lists) or 'none'})."
                )
        if vector_column not in lists:
            raise ConfigError(
                f"{self.path} has no float list column {vector_column!r} (float list columns: {', '.join(lists) or 'none'})."
            )
        for given, what in ((id_column, "--id-column"), (image_column, "--image-column")):
            if given is not None and given not in schema.names:
                raise ConfigError(f"{self.path} has no column {given!r} ({what}); columns: {', '.join(schema.names)}.")
        self.vector_column, self.id_column, self.image_column = vector_column, id_column, image_column
        vtype = schema.field(vector_column).type
        self.total = self.pf.metadata.num_rows
        self.fingerprint = parquet_fingerprint(schema)
        if pa.types.is_fixed_size_list(vtype):
            self.dim = vtype.list_size
        else:  # the most common length among the first rows
            first = next(self.pf.iter_batches(batch_size=1000, columns=[vector_column]), None)
            lengths = [len(v) for v in (first.column(0).to_pylist() if first is not None else []) if v is not None]
            if not lengths:
                raise SourceError("bad_vectors", f"The first rows of {self.path} have no vectors in {vector_column!r}.")
            self.dim = max(set(lengths), key=lengths.count)
        # Heavy columns (images as bytes, nested structs) are never read.
        self.columns = [f.name for f in schema if f.name == vector_column or not (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)
                        or pa.types.is_struct(f.type) or (f.name != vector_column and f.name in lists))]  # fmt: skip

    def chunks(self, start: int, size: int) -> Iterator[Chunk]:
        pa = require_pyarrow()
        a = 0
        for batch in self.pf.iter_batches(batch_size=size, columns=self.columns):
            n = batch.num_rows
            if a + n <= start:
                a += n
                continue
            skip = max(0, start - a)
            batch = batch.slice(skip)
            col = batch.column(self.vector_column)
            valid = np.ones(len(col), bool)
            if pa.types.is_fixed_size_list(col.type):
                valid &= ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
                flat = col.flatten() if col.null_count == 0 else col.filter(pa.array(valid)).flatten()
                vectors = np.asarray(flat.to_numpy(zero_copy_only=False)).reshape(-1, self.dim)
            else:
                lengths = col.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False)
                valid &= lengths == self.dim
                vectors = np.asarray(col.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)).reshape(
                    -1, self.dim
                )
            rest = batch.drop_columns([self.vector_column]).to_pylist()
            items, rows, bad = [], [], []
            for r, record in enumerate(rest):
                row = a + skip + r
                item_id, image = id_and_image(record, self.id_column, self.image_column, f"row{row}")
                if not valid[r]:
                    got = (
                        "no vector"
                        if col[r].as_py() is None
                        else f"{len(col[r].as_py())} dimensions, expected {self.dim}"
                    )
                    bad.append((row, item_id, got))
                    continue
                skip_cols = (
                    {self.id_column or "", self.image_column or ""}
                    | ({c for c in ID_COLUMNS if record.get(c) == item_id})
                    | ({c for c in IMAGE_COLUMNS if record.get(c) == image and image})
                )
                items.append(
                    Item(
                        id=item_id,
                        image=image,
                        metadata=scalar_metadata(record, skip_cols),
                        fingerprint=image or item_id,
                        source=self.source,
                    )
                )
                rows.append(row)
            yield Chunk(a + skip, a + n, rows, items, vectors, bad)
            a += n
