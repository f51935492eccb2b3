"""A set out as a collection of its own, searchable at once: the set's items with their metadata,
their vectors of every space copied (not re-embedded: the same model fingerprint, so the model
recorded there embeds the queries), the machine tags, people's corrections, and the set itself.

    coll.workbench.to_collection("sea monsters", "/data/sea-monsters")

The copy is built in a hidden sibling folder and renamed into place at the end: a kill leaves the
target as it was (a ``.NAME.partial-*`` folder to delete at most), never a half collection. A
target that exists and is not empty is refused. Not copied: region vectors and OCR words (index
them again there: ``vitrina index --regions``, ``vitrina ocr``), labels, duplicate groups."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import QueryError

if TYPE_CHECKING:
    from ..collection_view import CollectionView

__all__ = ["to_collection"]

CHUNK = 50_000  # vectors read at a time


def _target(target: str | os.PathLike[str], home: Path | None) -> Path:
    from ..store.paths import resolve_collection

    path = resolve_collection(target, home)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise QueryError(f"{path} exists and is not empty; give a new folder (nothing was written).")
    return path


def to_collection(coll: CollectionView, name: str, members: list[str], target: str | os.PathLike[str], *,
                  home: Path | None = None, who: str = "unknown",
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Write set ``name`` (its ``members`` ids) as a new collection at ``target`` (a path, or a name
    under the home folder); returns what was copied."""
    from ..collection import open_collection
    from ..duplicates import TAG as DUPLICATE_OF
    from ..store import Store

    left = (Store.HIDDEN, DUPLICATE_OF)  # bookkeeping about the old collection's other items
    started = time.perf_counter()
    path = _target(target, home)
    items = coll.tagged_items(members)
    ids = [i for i in members if i in items]
    if not ids:
        raise QueryError(f"Set {name!r} has no items left in {coll.name!r}; nothing to export.")
    wanted = set(ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    copied: dict[str, int] = {}
    try:
        new = open_collection(work / path.name, create=True)
        with new.writer():
            new.add_items([replace(items[i], status="pending", reason=None, detail=None, tags={}) for i in ids])
            tags: dict[tuple[str, str], list[tuple[str, str, float]]] = {}
            for i in ids:
                for tag, t in items[i].tags.items():
                    if tag not in left:
                        tags.setdefault((tag, t.get("classifier") or ""), []).append(
                            (i, t["value"], t.get("score") or 0.0)
                        )
            for (tag, classifier), rows in tags.items():
                new.set_tags(tag, classifier, rows)
            done, total = 0, len(ids) * max(len(coll.spaces()), 1)
            for sp in coll.spaces():
                copied[sp.name] = 0
                for chunk_ids, vectors in coll.iter_vectors(sp.name, chunk=CHUNK):
                    keep = [n for n, i in enumerate(chunk_ids) if i in wanted]
                    if keep:
                        new.import_vectors([chunk_ids[n] for n in keep], np.asarray(vectors[keep], np.float32),
                                           fingerprint=sp.fingerprint, space=sp.name, batch=CHUNK)  # fmt: skip
                        copied[sp.name] += len(keep)
                    done += len(keep)
                    if progress:
                        progress(done, total)
            record = coll.curation().get_set(name) or {}
            # People's corrections of machine tags go along; not their duplicate verdicts (groups of the
            # old collection) nor a question's labels turned corrections (labels are not copied).
            fixes = [
                c
                for c in coll.curation().corrections()
                if c["id"] in wanted and c["name"] not in left and not str(c["source"]).startswith("label:")
            ]
            with new.curating() as curation:
                provenance = {**record.get("query", {}), "from": coll.name, "exported_by": who}
                curation.add_to_set(name, [(i, None) for i in ids], record.get("created_by") or who, provenance,
                                    record.get("note") or None)  # fmt: skip
                for c in fixes:
                    curation.correct(c["name"], [(c["id"], c["value"])], c["who"], c["source"])
        new.close()
        if path.exists():
            path.rmdir()  # checked empty above
        os.replace(work / path.name, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"set": name, "collection": str(path), "items": len(ids), "vectors": copied,
            "corrections": len(fixes), "seconds": round(time.perf_counter() - started, 3)}  # fmt: skip
