"""``CollectionView``: the read side of a collection — describe it, list its items and spaces,
hand out read-only views of its vectors. ``Collection`` (collection.py) adds writing, indexing
and searching on top; a service thread, a cache or a runner needs no more than this.

Everything here reads through the ``Store`` façade; nothing outside ``store`` and ``index``
knows about vector rows or SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .embedding import resolve_model, space_name_for
from .errors import QueryError
from .filters import Filter, parse_filters
from .index import SearchIndex, open_index
from .records import Item, ModelFingerprint
from .store import CollectionPaths, Curation, Space, SpaceView, Store, disk_full_as_error

if TYPE_CHECKING:
    from .workbench import Workbench

__all__ = ["CollectionView"]

V = TypeVar("V", bound="CollectionView")


class CollectionView:
    """One collection opened for reading (``create`` makes an empty one; opening upgrades an
    older schema). ``index`` picks the search index: "auto", "exact", or a Qdrant target."""

    def __init__(self, path: Path, *, create: bool = False, index: str = "auto"):
        self.path = path
        self.index_kind = index
        self.name = path.name
        with disk_full_as_error(path, self.name):  # creating (or upgrading) it writes
            self._store = Store(path, create=create)
        self._indexes: dict[str, SearchIndex] = {}
        self._facets: tuple[int, dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} at {self.path}>"

    def close(self) -> None:
        self._drop_indexes()
        self._store.close()

    def _drop_indexes(self) -> None:
        """Forget the open indexes (they are made again on the next search), closing what holds
        something: a Qdrant client keeps its folder locked until it is closed."""
        for index in self._indexes.values():
            closing = getattr(index, "close", None)
            if closing is not None:
                closing()
        self._indexes.clear()

    def __enter__(self: V) -> V:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def index_for(self, space: str | None = None) -> SearchIndex:
        """The search index of a space (see ``vitrina.index``)."""
        name = self.space(space).name
        if name not in self._indexes:
            self._indexes[name] = open_index(self._store, name, self.index_kind)
        return self._indexes[name]

    def model_and_space(self, model: str | None, space: str | None) -> tuple[str, str]:
        """The model spec and space an indexing run writes: the given ones, else the space's own
        model, else the collection's first space, else the default model and its space name."""
        spaces = {s.name: s for s in self._store.spaces()}
        if model is None and space in spaces:
            model = spaces[space].fingerprint.spec
        elif model is None and spaces and space is None:
            first = next(iter(spaces.values()))
            model, space = first.fingerprint.spec, first.name
        spec = resolve_model(model)
        return spec, space or space_name_for(spec)

    def spaces(self) -> list[Space]:
        return self._store.spaces()

    def space(self, name: str | None = None) -> Space:
        """A space by name (default: the first); NoEmbeddings / NoSuchSpace when there is none."""
        return self._store.space(name)

    def fingerprint(self, space: str | None = None) -> ModelFingerprint:
        return self.space(space).fingerprint

    def vectors(self, space: str | None = None) -> tuple[list[str], np.ndarray]:
        """(ids, vectors) of every item embedded in ``space``, the vectors as one float32 array."""
        return self.index_for(space).matrix()

    def _index_info(self, space: str) -> dict[str, Any]:
        from .index.ann import AnnIndex

        described = AnnIndex(self._store, space).describe()
        return {"index": described["kind"], **({"ann": described["ann"]} if "ann" in described else {})}

    def __len__(self) -> int:
        return sum(self._store.count_items().values())

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and bool(self._store.get_items([item_id]))

    def item(self, item_id: str) -> Item:
        """One item with its status and classifier tags; QueryError if there is none (naming the
        id it has now if its file was moved)."""
        found = self._store.get_items([item_id], tags=True).get(item_id)
        if found is None:
            moved = self.moved_to(item_id)
            hint = f": its file was moved or renamed, and it is now {moved!r}" if moved else ""
            raise QueryError(f"No item {item_id!r} in collection {self.name!r}{hint}.")
        return found

    def moved_to(self, item_id: str) -> str | None:
        """The id an item has now when its file was moved or renamed (recognised by its content,
        docs/sources/folder.md); None for an id that was never moved away."""
        return self._store.moves().moved_to([item_id]).get(item_id)

    def items(self, ids: Sequence[str]) -> dict[str, Item]:
        """Items by id (missing ids are left out)."""
        return self._store.get_items(list(ids))

    def iter_items(self, *, status: str | None = None, exclude_status: str | None = None) -> Iterator[Item]:
        """Every item in id order, streamed; ``status`` 'ok', 'failed' or 'pending' narrows it."""
        return self._store.iter_items(status=status, exclude_status=exclude_status)

    def facets(self) -> dict[str, Any]:
        """Metadata keys (and tags) with their most common values and numeric ranges, for filter
        menus; recomputed only when the collection changed."""
        version = self._store.data_version()
        if self._facets is None or self._facets[0] != version:
            self._facets = (version, self._store.facets())
        return self._facets[1]

    def info(self, check: bool = False) -> dict[str, Any]:
        by_status = self._store.count_items()
        failures = self._store.failures()
        reasons: dict[str, int] = {}
        for f in failures:
            reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        out: dict[str, Any] = {
            "name": self.name,
            "path": str(self.path),
            "items": sum(by_status.values()),
            "by_status": by_status,
            "failed_by_reason": reasons,
            "failures": [{"id": f["id"], "reason": f["reason"], "detail": f["detail"]} for f in failures[:20]],
            "spaces": [
                {
                    "name": s.name,
                    "model": s.fingerprint.spec,
                    "revision": s.fingerprint.revision,
                    "dim": s.fingerprint.dim,
                    "vectors": s.live,
                    "dead_rows": s.rows - s.live,
                    "preprocessing": s.fingerprint.preprocessing,
                    **self._index_info(s.name),
                    **self._region_info(s),
                }
                for s in self._store.spaces()
            ],  # fmt: skip
            "pruned": {
                "hidden": self._store.hidden_count(),
                "deleted": self._store.pruned_count(),
                "bytes_saved": int(self._store.get_meta("pruned_bytes_saved") or 0),
            },
            "schema_version": self._store.schema_version(),
            "disk_bytes": size,
        }
        if check:
            out["problems"] = self._store.check()
        return out

    def _region_info(self, s: Any) -> dict[str, Any]:
        """Regions of a space (vitrina.regions): how many, on how many items, vectors per item."""
        regions = self._store.region_count(s.name)
        items = s.live - regions
        policy = self._store.get_meta(f"regions:{s.name}") or "off"
        return {"regions": regions, "items_with_regions": self._store.items_with_regions(s.name), "region_policy": policy,
                "vectors_per_item": round(s.live / items, 2) if items else 0.0}  # fmt: skip

    def iter_vectors(self, space: str | None = None, *, chunk: int = 50_000) -> Iterator[tuple[list[str], np.ndarray]]:
        """(ids, vectors) of every item embedded in ``space``, in row order, ``chunk`` rows at a
        time (an export of millions never holds them all in memory)."""
        sp = self.space(space)
        ids, rows = self._store.live_vectors(sp.name)
        matrix = self._store.vector_file(sp).matrix(sp.rows)
        for start in range(0, len(ids), chunk):
            yield ids[start : start + chunk], np.asarray(matrix[rows[start : start + chunk]], np.float32)

    def state(self, key: str) -> str | None:
        """A small persistent value of the collection (an importer's or enricher's cursor)."""
        return self._store.get_meta(key)

    # -- views for runners, caches and backends ---------------------------------------------

    @property
    def paths(self) -> CollectionPaths:
        """The collection's folder layout (database, spaces, shards, caches): ask it, never join names."""
        return CollectionPaths(self.path)

    def data_stamp(self) -> tuple[int, int]:
        """Changes whenever the collection's data changed (another connection committed), for
        caches of what was read from it. Compare stamps of the same ``Collection`` only."""
        return id(self._store), self._store.data_version()  # data_version is per connection

    def pending(self, space: str, *, retry_failed: bool = False) -> list[dict[str, str]]:
        """Items with no vector in ``space`` for their current fingerprint, in id order, as
        {"id", "image", "fingerprint"} (what a worker needs to embed them)."""
        return [
            {"id": r["id"], "image": r["image"], "fingerprint": r["fingerprint"]}
            for r in self._store.pending(space, retry_failed=retry_failed)
        ]

    def fingerprints(self, ids: Sequence[str]) -> dict[str, str]:
        """Item fingerprints (file identity) by id, for the ids that exist."""
        return self._store.fingerprints_of(list(ids))

    def first_values(self, key: str) -> dict[str, str] | None:
        """Each item's first value of metadata key or tag ``key`` by id (one query; None: no item
        has the key), for colouring the map."""
        return self._store.first_values(key)

    def tagged_items(self, ids: Sequence[str]) -> dict[str, Item]:
        """Items by id with their classifier tags (missing ids are left out)."""
        return self._store.get_items(list(ids), tags=True)

    def space_view(self, space: str | None = None) -> SpaceView:
        """A read-only view of a space (default: the first): rows <-> ids, the mapped vectors, dead
        rows, the rows filters allow. For backends and derived files such as the map."""
        return self._store.space_view(self.space(space).name)

    def matched_words(self, item_id: str, keywords: str = "") -> dict[str, Any] | None:
        """The words read from the item's image (OCR) that ``keywords`` match (all its words when
        empty), with the size of the image their boxes are in: {width, height, keywords, words};
        None when the image has not been read."""
        from .index.keyword import KeywordIndex

        rid = self._store.rids_of([item_id]).get(item_id)
        page = self._store.ocr_page(rid) if rid is not None else None
        if rid is None or page is None or not page["width"]:
            return None
        if keywords.strip():
            words = KeywordIndex(self._store).word_boxes(keywords, [item_id]).get(item_id, [])
        else:
            words = self._store.words_of(rid, limit=5000)
        return {"width": page["width"], "height": page["height"], "keywords": keywords, "words": words}

    def ids_where(self, where: Sequence[str | Filter]) -> list[str]:
        """The ids of the items passing every filter (e.g. ["set=sea monsters", "date<1800"])."""
        rids = np.flatnonzero(self._store.filter_mask(parse_filters(where))[:-1])
        return sorted(self._store.ids_of_rids(rids.tolist()).values())

    def curation(self) -> Curation:
        """What people said about the items: sets, labels, corrections (read side; write through
        ``Collection.curating``). ``Collection.workbench`` is the friendly face."""
        return self._store.curation()

    @property
    def workbench(self) -> Workbench:
        """The curator's workbench: sets, labels, probes trained on them, review, export."""
        from .workbench import Workbench

        return Workbench(self)
