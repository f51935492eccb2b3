"""Upkeep of a collection: its approximate index built (``build_ann``) and items pruned
(``prune``). ``Collection.build_ann`` and ``Collection.prune`` are their faces."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import QueryError
from .filters import Filter, parse_filters
from .indexer import ProgressCallback

if TYPE_CHECKING:
    from .embedding import Embedder
    from .store import Space, Store

log = logging.getLogger("vitrina.index")

__all__ = ["build_ann", "caption_sample", "disk_bytes", "prune"]


def build_ann(store: Store, sp: Space, embedder_for: Callable[[Space], Embedder], *, structure: str | None = None, codes: str | None = None,
              nlist: int | None = None, rebuild: bool = False, threads: int | None = None, queries: np.ndarray | None = None,
              caption_queries: int = 0, progress: ProgressCallback | None = None, target_recall: float | None = 0.98,
              max_latency_ms: float | None = None) -> Any:  # fmt: skip
    """Build (or bring up to date) the approximate index of space ``sp``; see ``Collection.build_ann``.
    Probe queries for the recall target: the items' captions (else titles) embedded with the
    space's model; without any, stored vectors shifted by the gap measured between the model's
    embeddings of a few generic prompts and the stored images (``ann_tuning``); without the model,
    an assumed gap."""
    from .index.ann import AnnParams
    from .index.ann_build import build_ann as build
    from .index.ann_tuning import GAP_PROMPTS

    params = None
    if structure or codes or nlist:
        defaults = AnnParams()
        params = AnnParams(structure=structure or defaults.structure, codes=codes or "", nlist=nlist or 0)
    label = "given"
    prompts = None
    wants_model = caption_queries > 0 or target_recall
    if queries is None and wants_model and "text" in sp.fingerprint.modalities:
        texts = caption_sample(store, caption_queries) if caption_queries > 0 else []
        try:
            embedder = embedder_for(sp) if texts or target_recall else None
        except Exception as e:  # a measurement extra: no model here (offline, no cache) must not stop the build
            log.warning(
                "recall on captions not measured (probes: stored images and an assumed text-image gap): the model of space %s did not load (%s)",
                sp.name,
                e,
            )
            embedder = None
        if embedder is not None and texts:
            queries = np.concatenate([embedder.embed_texts(texts[i : i + 64]) for i in range(0, len(texts), 64)])
            label = "captions"
        elif embedder is not None:  # no captions: measure the modality gap of the space instead
            prompts = embedder.embed_texts(list(GAP_PROMPTS))
    return build(
        store,
        sp.name,
        params,
        rebuild=rebuild,
        threads=threads,
        queries=queries,
        queries_label=label,
        progress=progress,
        target_recall=target_recall,
        prompts=prompts,
        max_latency_ms=max_latency_ms,
    )


def caption_sample(store: Store, n: int) -> list[str]:
    """Up to ``n`` distinct captions (else titles) of indexed items, spread over the collection
    by a hash of the id, so the sample is the same on every build."""
    picked: list[tuple[int, str]] = []
    for item in store.iter_items(status="ok"):
        text = item.metadata.get("caption") or item.metadata.get("title")
        if isinstance(text, str) and text.strip():
            picked.append((zlib.crc32(item.id.encode()), text.strip()[:300]))
            if len(picked) > 4 * n:  # keep memory bounded on millions of items
                picked = sorted(picked)[:n]
    return list(dict.fromkeys(t for _, t in sorted(picked)))[:n]


def prune(
    store: Store,
    path: Path,
    where: Sequence[str | Filter],
    action: str,
    write: Callable[[], AbstractContextManager[Store]],
) -> dict[str, Any]:
    """Hide, unhide or delete the items passing ``where``; see ``Collection.prune``. ``store``
    reads, ``write()`` holds the writer lock."""
    if action not in ("hide", "unhide", "delete"):
        raise QueryError(f"Unknown prune action {action!r}; use hide, unhide or delete.")
    filters = parse_filters(where)
    if not filters and action != "unhide":
        raise QueryError(
            "Pruning needs at least one --where filter (e.g. --where 'kind=blank'); it never prunes a whole collection."
        )
    if action == "unhide":
        filters = (*filters, Filter(store.HIDDEN, "=", "true"))
    rids = np.flatnonzero(store.filter_mask(filters)[:-1])
    ids = sorted(store.ids_of_rids(rids.tolist()).values())
    reason = " ".join(str(f) for f in filters)
    out: dict[str, Any] = {"action": action, "matched": len(ids)}
    with write() as writing:
        if action == "delete":
            before = disk_bytes(path)
            out["deleted"] = writing.delete_items(ids, reason)
            for sp in writing.spaces():
                writing.compact(sp.name, force=True)
            saved = max(0, before - disk_bytes(path))
            total = int(writing.get_meta("pruned_bytes_saved") or 0) + saved
            writing.set_meta("pruned_bytes_saved", str(total))
            out["bytes_saved"] = saved
        else:
            out["changed"] = writing.set_hidden(ids, action == "hide", reason)
    return out


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
