"""Export a space to parquet or clip-retrieval's layout, for other tools and ``import_vectors``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, SourceError
from .common import FORMATS, META_KEY, ProgressCallback, require_pyarrow

if TYPE_CHECKING:
    from ..collection import Collection


def export_space(
    coll: Collection,
    out: str | os.PathLike[str],
    *,
    format: str = "parquet",
    space: str | None = None,
    chunk: int = 50_000,
    shard_rows: int = 1_000_000,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Write a space's vectors with ids, image URLs, captions and metadata (JSON) so other tools
    (and ``import_vectors``) can read them; the model fingerprint goes into the parquet schema
    metadata under ``vitrina``.

    ``parquet``: one file, columns id, image, caption, metadata, vector (fixed-size list of float32).
    ``clip-retrieval``: a folder with img_emb/img_emb_K.npy (float32) and metadata/metadata_K.parquet
    (key, url, caption, metadata), ``shard_rows`` rows per shard, plus vitrina.json.
    Written beside ``out`` and renamed into place at the end: a killed export leaves nothing half-written."""
    import shutil
    import tempfile

    from .._version import __version__

    pa = require_pyarrow()
    if format not in FORMATS:
        raise ConfigError(f"Unknown export format {format!r}; known: {', '.join(FORMATS)}.")
    sp = coll.space(space)
    dim, total = sp.fingerprint.dim, sp.live
    info = {
        "fingerprint": json.loads(sp.fingerprint.to_json()),
        "space": sp.name,
        "collection": coll.name,
        "rows": total,
        "vitrina": __version__,
    }
    meta = {META_KEY: json.dumps(info).encode()}
    target = Path(out).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    if format == "clip-retrieval" and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} exists and is not an empty folder; give a new folder for the export.")
    names = ("key", "url") if format == "clip-retrieval" else ("id", "image")
    schema = pa.schema([(names[0], pa.string()), (names[1], pa.string()), ("caption", pa.string()), ("metadata", pa.string())]
                       + ([("vector", pa.list_(pa.float32(), dim))] if format == "parquet" else []), metadata=meta)  # fmt: skip

    def table(ids: list[str], vectors: np.ndarray | None) -> Any:
        items = coll.items(ids)
        rows = [items.get(i) for i in ids]
        columns = [pa.array(ids, pa.string()), pa.array([r.image if r else "" for r in rows], pa.string()),
                   pa.array([str(r.metadata.get("caption", "")) if r else "" for r in rows], pa.string()),
                   pa.array([json.dumps(r.metadata if r else {}, ensure_ascii=False) for r in rows], pa.string())]  # fmt: skip
        if vectors is not None:
            columns.append(
                pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, np.float32).ravel()), dim)
            )
        return pa.Table.from_arrays(columns, schema=schema)

    done = 0
    if format == "parquet":
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            with pa.parquet.ParquetWriter(tmp, schema) as writer:
                for ids, vectors in coll.iter_vectors(sp.name, chunk=chunk):
                    writer.write_table(table(ids, vectors))
                    done += len(ids)
                    if progress:
                        progress(done, total)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return {**info, "format": format, "out": str(target), "rows": done}
    tmpdir = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        (tmpdir / "img_emb").mkdir()
        (tmpdir / "metadata").mkdir()
        shard, in_shard, array, writer = 0, 0, None, None
        for ids, vectors in coll.iter_vectors(sp.name, chunk=min(chunk, shard_rows)):
            pos = 0
            while pos < len(ids):
                if array is None:
                    rows = min(shard_rows, total - done)
                    array = np.lib.format.open_memmap(
                        tmpdir / "img_emb" / f"img_emb_{shard}.npy", mode="w+", dtype=np.float32, shape=(rows, dim)
                    )
                    writer = pa.parquet.ParquetWriter(tmpdir / "metadata" / f"metadata_{shard}.parquet", schema)
                take = min(len(ids) - pos, len(array) - in_shard)
                array[in_shard : in_shard + take] = vectors[pos : pos + take]
                writer.write_table(table(ids[pos : pos + take], None))  # type: ignore[union-attr]
                in_shard, pos, done = in_shard + take, pos + take, done + take
                if in_shard == len(array):
                    array.flush()
                    writer.close()  # type: ignore[union-attr]
                    shard, in_shard, array, writer = shard + 1, 0, None, None
            if progress:
                progress(done, total)
        if array is not None or writer is not None:
            raise SourceError(
                "changed",
                f"Space {sp.name!r} changed during the export ({done} of {total} rows read); run the export again.",
            )
        (tmpdir / "vitrina.json").write_text(json.dumps({**info, "shards": shard}, indent=2))
        if target.exists():
            target.rmdir()
        os.replace(tmpdir, target)
    finally:
        if tmpdir.exists():
            shutil.rmtree(tmpdir, ignore_errors=True)
    return {**info, "format": format, "out": str(target), "rows": done, "shards": shard}
