"""Running an import: the reader for a kind, then items and vectors chunk by chunk, resumable."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, SourceError
from ..records import Item
from ..store.items import id_problem
from .clip_retrieval import ClipRetrievalReader
from .common import KINDS, ImportReport, ProgressCallback, Reader, declare_model
from .locbeto import LocBetoReader
from .npy import NpyReader
from .parquet import ParquetReader

if TYPE_CHECKING:
    from ..collection import Collection


def open_reader(kind: str, paths: Sequence[str], **options: Any) -> Reader:
    """The reader for ``kind`` (see KINDS) over ``paths``; options: csv_path, vector_column,
    id_column, image_column."""
    options = {k: v for k, v in options.items() if v is not None}
    if kind == "loc-beto":
        if len(paths) != 2:
            raise ConfigError("loc-beto takes two files: BETO (the tensor) and BETO_IDX (the URL list).")
        return LocBetoReader(paths[0], paths[1], options.get("csv_path"))
    if kind == "clip-retrieval":
        return ClipRetrievalReader(paths[0])
    if kind == "parquet":
        return ParquetReader(
            paths[0], **{k: options[k] for k in ("vector_column", "id_column", "image_column") if k in options}
        )
    if kind == "npy":
        if len(paths) != 2:
            raise ConfigError("npy takes two files: VECTORS.npy and an ids file (--ids).")
        return NpyReader(paths[0], paths[1], **{k: options[k] for k in ("id_column", "image_column") if k in options})
    raise ConfigError(f"Unknown import kind {kind!r}; known: {', '.join(KINDS)}.")


def _check_dimension(coll: Collection, space: str, fingerprint: Any) -> None:
    """Refuse vectors whose dimension disagrees with the target space, or with another space of
    the collection made by the same model (whose real fingerprint is known), before writing."""
    for sp in coll.spaces():
        if sp.name == space and not sp.fingerprint.compatible(fingerprint):
            raise ConfigError(
                f"Space {space!r} holds {sp.fingerprint.describe()}; these vectors are {fingerprint.describe()}. "
                "Import into another space (--space NAME) or check --model. Nothing was imported."
            )
        if sp.fingerprint.spec == fingerprint.spec and sp.fingerprint.dim != fingerprint.dim:
            raise ConfigError(
                f"The vectors have {fingerprint.dim} dimensions but {fingerprint.spec} makes {sp.fingerprint.dim} "
                f"(space {sp.name!r}): they cannot have come from this model. Check --model. Nothing was imported."
            )


# -- the import itself --------------------------------------------------------------------------


def import_vectors(
    coll: Collection,
    reader: Reader,
    *,
    model: str | None = None,
    space: str | None = None,
    chunk: int = 20_000,
    restart: bool = False,
    load_model: bool = True,
    progress: ProgressCallback | None = None,
    on_bad: Callable[[int, str, str], None] | None = None,
) -> ImportReport:
    """Import ``reader``'s rows into ``coll``: items first, then their vectors, chunk by chunk,
    each chunk's vectors committed together with the cursor. Run again after a kill: it resumes
    after the last committed chunk (``restart`` starts over; rows are upserts either way)."""
    from ..embedding import space_name_for

    started = time.perf_counter()
    fingerprint = declare_model(model, reader.dim, from_file=reader.fingerprint, load=load_model)
    if space is None:
        same = [s.name for s in coll.spaces() if s.fingerprint.compatible(fingerprint)]
        space = same[0] if same else space_name_for(fingerprint.spec)
    _check_dimension(coll, space, fingerprint)  # before any item is written
    report = ImportReport(collection=coll.name, kind=reader.kind, source=reader.source, space=space, model=fingerprint.spec,
                          verified=not fingerprint.provisional, rows=reader.total)  # fmt: skip
    key = f"import:{space}:{reader.identity()}"
    state = json.loads(coll.state(key) or "{}") if not restart else {}
    start = int(state.get("row", 0))
    report.resumed_at, report.bad = start, int(state.get("bad", 0))
    if state.get("done"):
        report.already_done = True
        report.seconds = time.perf_counter() - started
        return report
    seen: dict[str, int] = {}

    def bad(row: int, item_id: str, reason: str) -> None:
        report.bad += 1
        if len(report.bad_rows) < 100:
            report.bad_rows.append({"row": row, "id": item_id, "reason": reason})
        if on_bad is not None:
            on_bad(row, item_id, reason)

    with coll.writer():
        for part in reader.chunks(start, chunk):
            for row, item_id, reason in part.bad:
                bad(row, item_id, reason)
            keep = []
            for n, item in enumerate(part.items):
                problem = id_problem(item.id)
                if problem:
                    bad(part.rows[n], item.id, problem)
                    continue
                first = seen.setdefault(item.id, part.rows[n])
                if first != part.rows[n]:
                    bad(part.rows[n], item.id, f"duplicate id (first at row {first})")
                else:
                    keep.append(n)
            items = [part.items[n] for n in keep]
            existing = coll.items([i.id for i in items])
            if existing:  # keep what an earlier import or enrichment added; the source's values win
                items = [
                    Item(**{**asdict(i), "metadata": {**existing[i.id].metadata, **i.metadata}})
                    if i.id in existing
                    else i
                    for i in items
                ]
            vectors = np.asarray(part.vectors[keep] if len(keep) != len(part.items) else part.vectors, np.float32)
            if vectors.shape[1:] != (fingerprint.dim,):
                raise SourceError(
                    "bad_vectors",
                    f"{reader.source}: rows {part.start}-{part.end} have {vectors.shape[1:]} dimensions, expected {fingerprint.dim}.",
                )
            with np.errstate(over="ignore", invalid="ignore"):
                norms = np.linalg.norm(vectors, axis=1)
            good = np.isfinite(norms) & (norms >= 1e-12)
            for n in np.flatnonzero(~good).tolist():
                bad(
                    part.rows[keep[n]],
                    items[n].id,
                    "zero vector" if np.isfinite(norms[n]) else "not finite (NaN or infinity)",
                )
            ok = np.flatnonzero(good)
            ids = [items[n].id for n in ok]
            coll.add_items([items[n] for n in ok])
            cursor = json.dumps({"row": part.end, "bad": report.bad, "done": part.end >= reader.total})

            source_rows = [part.rows[keep[n]] for n in ok]  # the import re-checks; nothing is refused there now

            def refused(i: int, item_id: str, reason: str, rows: list[Any] = source_rows) -> None:
                bad(rows[i], item_id, reason)

            coll.import_vectors(ids, vectors[ok] if len(ok) != len(vectors) else vectors, fingerprint=fingerprint, space=space, batch=max(len(ids), 1),
                                on_bad=refused, checkpoint=(key, cursor))  # fmt: skip
            report.imported += len(ids)
            if progress:
                progress(part.end, reader.total)
    report.seconds = time.perf_counter() - started
    return report
