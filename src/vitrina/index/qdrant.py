"""Qdrant as a derived copy of a space: ``vitrina sync`` pushes vectors and normalised metadata,
``QdrantIndex`` searches through it and answers in the same ``Matches``.

Targets: ``qdrant+http://HOST:PORT/NAME`` (or https), ``qdrant+edge:///FOLDER#NAME`` (Qdrant's
own Rust engine in this process, qdrant-edge-py: see qdrant_edge.py), ``qdrant:PATH#NAME`` (the
client's local mode, a folder: pure Python, small collections) and ``qdrant::memory:#NAME``
(tests). The SQLite store stays the source of truth.

Points: id = the item's ``rid``; vector = its stored vector; payload = ``{"id": item id, "rid":
rid, "_d": digest}`` plus, for every filterable key, the key's normal values (filters.py) as three lists:
``t_<h>`` casefolded texts, ``n_<h>`` first numbers, ``v_<h>`` whole-text numbers, where ``<h>`` is
a hash of the key (metadata keys may hold characters that Qdrant's JSON paths do not accept).
So ``=`` is "some text equals, or some v equals"; ``!=`` its negation ("no value equals", an item
without the key passes); ``<``..``>=`` with a number a range over ``n_<h>``; ``~`` a substring
match (``MatchSubstring``: case-sensitive on the casefolded texts, so exactly "some value contains
the operand") served by a keyword index with the prefix option. Not a full-text ``MatchText``: that
matches whole words, so ``title~harb`` would miss "harbour". Ordering by text has no Qdrant
equivalent: it is resolved in the store's SQL index and sent as a condition on ``rid`` (as ``~`` is
for a server that rejects substring matches). Server and edge targets get payload indexes on
``rid`` and on every key's three fields (the local mode has none).

Regions (vitrina.regions): each region row of the space is a point too, with an id of its own
(``region_point_id``: a hash of the item's rid and the box, above 2**62, so it survives
compaction) and the item's payload plus ``box`` ([x, y, w, h]): filters and exclusions name the
item's ``rid``, so they apply to its regions. ``QdrantIndex`` ranks points like any index and
``vitrina.region_search.RegionIndex`` collapses them to items, as for exact and ANN.

Sync is incremental and resumable: each point carries a digest of its row, space generation and
values; a sync streams the store's points in chunks, reads back the same points' digests, upserts
what differs (new, re-embedded, metadata changed), then pages through Qdrant's points in id order
and deletes those whose item or region is gone, every write with ``wait=True``, and ends by
checking that Qdrant counts as many points as the space has vectors. Its memory is a chunk and a
page, not the space (benchmarks/sync_memory.py). A killed sync is finished by the next.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, VitrinaError
from ..faults import fault_point
from ..filters import COLUMNS, Filter, normal_values
from ..store import Store
from . import Matches
from .exact import ExactIndex


class SyncError(VitrinaError):
    pass


def _qdrant() -> Any:
    try:
        import qdrant_client
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ConfigError("Qdrant needs its client: pip install 'vitrina[qdrant]'.") from e
    return qdrant_client


def is_target(text: str) -> bool:
    return text.startswith(("qdrant:", "qdrant+http://", "qdrant+https://", "qdrant+edge:"))


def connect(target: str, default_name: str) -> tuple[Any, str]:
    """(client, collection name) for a target string (see the module docstring)."""
    qc = _qdrant()
    if target.startswith("qdrant+edge:"):
        from .qdrant_edge import EdgeClient

        where, _, name = target[len("qdrant+edge:") :].partition("#")
        if where.startswith("//"):  # qdrant+edge:///abs/folder (an empty host)
            where = where[2:]
        if not where:
            raise ConfigError(f"{target!r} names no folder: write qdrant+edge:///FOLDER#NAME.")
        return EdgeClient(where), (name or default_name)
    if target.startswith(("qdrant+http://", "qdrant+https://")):
        url = target[len("qdrant+") :]
        scheme, _, rest = url.partition("://")
        host, _, name = rest.partition("/")
        return qc.QdrantClient(url=f"{scheme}://{host}", timeout=60), (name.strip("/") or default_name)
    if target.startswith("qdrant:"):
        where, _, name = target[len("qdrant:") :].partition("#")
        if where == ":memory:":
            return qc.QdrantClient(location=":memory:"), (name or default_name)
        return qc.QdrantClient(path=where), (name or default_name)
    raise ConfigError(
        f"{target!r} is not a Qdrant target: use qdrant+http://HOST:PORT/NAME, qdrant+edge:///FOLDER#NAME or qdrant:PATH#NAME."
    )


@functools.lru_cache(maxsize=4096)
def field(kind: str, key: str) -> str:
    return f"{kind}_{hashlib.blake2b(key.encode(), digest_size=8).hexdigest()}"


REGION_IDS = 1 << 62  # region point ids lie above every item rid


def region_point_id(rid: int, box: tuple[int, int, int, int], dup: int = 0) -> int:
    """A region's point id: stable across compactions (rows move, the item and box stay);
    ``dup`` tells apart identical boxes of one item."""
    key = f"{rid}:{','.join(map(str, box))}:{dup}".encode()
    return REGION_IDS | (int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") & (REGION_IDS - 1))


def _payload(
    item_id: str,
    columns: dict[str, str],
    values: list[tuple[str, str, float | None, float | None]],
    row: int,
    generation: Any,
    rid: int = 0,
    box: tuple[int, int, int, int] | None = None,
) -> dict[str, Any]:
    per_key: dict[str, list[tuple[str, float | None, float | None]]] = {}
    for key, text, num, val in values:
        if key not in COLUMNS:
            per_key.setdefault(key, []).append((text, num, val))
    for key, value in columns.items():
        per_key[key] = [(v.text, v.num, v.val) for v in normal_values(value)]
    payload: dict[str, Any] = {"id": item_id, "rid": rid}
    if box is not None:
        payload["box"] = list(box)
    for key, vals in per_key.items():
        payload[field("t", key)] = [t for t, _, _ in vals]
        payload[field("n", key)] = [n for _, n, _ in vals if n is not None]
        payload[field("v", key)] = [v for _, _, v in vals if v is not None]
    digest = hashlib.blake2b(
        json.dumps([row, generation, payload], sort_keys=True).encode(), digest_size=12
    ).hexdigest()
    payload["_d"] = digest
    return payload


@dataclass
class SyncReport:
    target: str
    collection: str
    space: str
    new: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    points: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sync(
    store: Store,
    space: str,
    target: str,
    *,
    batch: int = 256,
    shards: int | None = None,
    replicas: int | None = None,
    page: int = 2048,
) -> SyncReport:
    """Bring the Qdrant copy of ``space`` up to date (see the module docstring). Memory is bounded by
    ``batch`` and ``page``, not by the size of the space: the store's points go in chunks, each
    compared with the digests of the same points read back from Qdrant, and then Qdrant's points
    are paged through in id order and checked against the store for removed items."""
    qc = _qdrant()
    models = qc.models
    sp = store.space(space)
    client, name = connect(target, f"{store.name}-{sp.name}")
    report = SyncReport(target, name, sp.name)
    view = store.space_view(sp.name)
    try:
        if not client.collection_exists(name):
            client.create_collection(
                name, vectors_config=models.VectorParams(size=sp.fingerprint.dim, distance=models.Distance.COSINE),
                shard_number=shards, replication_factor=replicas,
            )  # fmt: skip
        else:
            size = client.get_collection(name).config.params.vectors.size
            if size != sp.fingerprint.dim:
                raise SyncError(
                    f"Qdrant collection {name!r} holds {size}-dimensional vectors; space {sp.name!r} has {sp.fingerprint.dim}. Sync to another name."
                )
        if target.startswith("qdrant+"):  # a server or the edge engine (the client's local mode has no payload indexes)
            _payload_indexes(client, name, models, view.value_keys())
        vectors = view.vectors(sp)
        ids = _PointIds()
        for chunk in view.points(sp, batch):
            pids = [ids.next(point.rid, point.box) for point in chunk]
            known = {
                int(p.id): (p.payload or {}).get("_d", "")
                for p in client.retrieve(name, pids, with_payload=["_d"], with_vectors=False)
            }
            upserts = []
            for pid, point in zip(pids, chunk):
                payload = _payload(
                    point.id, point.columns, point.values, point.row, sp.generation, point.rid, point.box
                )
                if known.get(pid) == payload["_d"]:
                    report.unchanged += 1
                    continue
                if pid in known:
                    report.changed += 1
                else:
                    report.new += 1
                upserts.append(
                    models.PointStruct(
                        id=pid, vector=np.asarray(vectors[point.row], np.float32).tolist(), payload=payload
                    )
                )
            if upserts:
                client.upsert(name, points=upserts, wait=True)
                fault_point("qdrant_after_batch")
        report.removed = _remove_gone(client, name, models, view, sp, page)
        report.points = client.count(name, exact=True).count
        if report.points != sp.live:
            raise SyncError(
                f"After the sync Qdrant collection {name!r} counts {report.points} points but space {sp.name!r} has {sp.live} vectors; run the sync again."
            )
        if hasattr(client, "optimize"):  # the edge engine builds its indexes when asked (a server: in the background)
            client.optimize(name)
    finally:
        client.close()
    return report


class _PointIds:
    """Point ids in the order ``SpaceView.points`` yields the points: an item's rid, or for a region
    ``region_point_id`` with ``dup`` counting identical boxes of the same item (a rid's regions
    come together, so only the current rid's ids are kept)."""

    def __init__(self) -> None:
        self.rid = -1
        self.seen: set[int] = set()

    def next(self, rid: int, box: tuple[int, int, int, int] | None) -> int:
        if box is None:
            return rid
        if rid != self.rid:
            self.rid, self.seen = rid, set()
        dup = 0
        while (pid := region_point_id(rid, box, dup)) in self.seen:
            dup += 1
        self.seen.add(pid)
        return pid


def _payload_indexes(client: Any, name: str, models: Any, keys: Sequence[str]) -> None:
    """Payload indexes for every filtered field that lacks one: ``rid`` (exclusions), and per key
    ``t_`` (keyword, with the prefix option that serves substring matches), ``n_`` and ``v_``."""
    have = set(getattr(client.get_collection(name), "payload_schema", None) or {})
    wanted: dict[str, Any] = {"rid": models.PayloadSchemaType.INTEGER}
    for key in sorted({*keys, *COLUMNS}):
        wanted[field("t", key)] = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, prefix=True)
        wanted[field("n", key)] = models.PayloadSchemaType.FLOAT
        wanted[field("v", key)] = models.PayloadSchemaType.FLOAT
    for path, schema in wanted.items():
        if path not in have:
            client.create_payload_index(name, path, schema, wait=True)


def _remove_gone(client: Any, name: str, models: Any, view: Any, sp: Any, page: int) -> int:
    """Delete the points whose item or region is no longer in the space, a page of Qdrant's points at a time."""
    removed = 0
    offset = None
    while True:
        points, offset = client.scroll(name, limit=page, offset=offset, with_payload=["rid"], with_vectors=False)
        items = [int(p.id) for p in points if int(p.id) < REGION_IDS]
        regions = [(int(p.id), int((p.payload or {}).get("rid", -1))) for p in points if int(p.id) >= REGION_IDS]
        live = view.live_rids(sp, items)
        gone = [i for i in items if i not in live]
        expected: set[int] = set()
        for rid, boxes in view.region_boxes(sp, sorted({rid for _, rid in regions})).items():
            ids = _PointIds()
            expected.update(ids.next(rid, box) for box in boxes)
        gone += [pid for pid, _ in regions if pid not in expected]
        if gone:
            client.delete(name, points_selector=models.PointIdsList(points=gone), wait=True)
            removed += len(gone)
        if offset is None:
            return removed


class QdrantIndex:
    """``SearchIndex`` over a synced Qdrant collection; vectors and counts come from the store."""

    kind = "qdrant"

    def __init__(self, store: Store, space: str, target: str, client: Any = None, name: str | None = None):
        self.store = store
        self.space_name = space
        self.exact = ExactIndex(store, space)
        self._owns_client = client is None
        if client is None:
            client, name = connect(target, f"{store.name}-{space}")
        self.client, self.name = client, name or f"{store.name}-{space}"
        # ~ as a substring match in Qdrant (False: a client or server too old for it, the rid list instead)
        self.substring = hasattr(_qdrant().models, "MatchSubstring")

    def close(self) -> None:
        """Let the Qdrant folder go (local mode and the edge engine lock it while a client is open)."""
        if self._owns_client:
            self.client.close()

    def count(self) -> int:
        return self.exact.count()

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self.exact.vectors(ids)

    def matrix(self) -> tuple[list[str], np.ndarray]:
        return self.exact.matrix()

    def translate(self, filters: Sequence[Filter]) -> Any:
        """vitrina filters -> a Qdrant filter with the reference semantics (None: no filter)."""
        models = _qdrant().models
        must: list[Any] = []
        must_not: list[Any] = []
        for f in filters:
            operand = f.value.casefold()
            if f.op in ("=", "!="):
                alternatives: list[Any] = [
                    models.FieldCondition(key=field("t", f.key), match=models.MatchValue(value=operand))
                ]
                if f.operand_val is not None:
                    alternatives.append(
                        models.FieldCondition(
                            key=field("v", f.key), range=models.Range(gte=f.operand_val, lte=f.operand_val)
                        )
                    )
                (must if f.op == "=" else must_not).append(models.Filter(should=alternatives))
            elif f.op != "~" and f.operand_number is not None:
                bound = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}[f.op]
                must.append(
                    models.FieldCondition(key=field("n", f.key), range=models.Range(**{bound: f.operand_number}))
                )
            elif f.op == "~" and self.substring:  # keyword values containing the (casefolded) operand
                must.append(
                    models.FieldCondition(key=field("t", f.key), match=models.MatchSubstring(substring=operand))
                )
            else:  # text ordering (or a server without substring matches): exact in the store's index, sent as item rids
                rids = self.exact.view.matching_rids(f)
                must.append(models.FieldCondition(key="rid", match=models.MatchAny(any=sorted({int(r) for r in rids}))))
        if not must and not must_not:
            return None
        return models.Filter(must=must or None, must_not=must_not or None)

    def search(
        self,
        queries: np.ndarray,
        *,
        filters: Sequence[Filter] = (),
        exclude: Sequence[Collection[str]] = (),
        limit: int = 10,
        offset: int = 0,
        min_score: float | None = None,
    ) -> list[Matches]:
        models = _qdrant().models
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        sp, rid_of_row = self.exact.view.current()
        base = self.translate(filters)
        wholes = models.IsEmptyCondition(is_empty=models.PayloadField(key="box"))  # items, not their regions
        try:
            considered = self.client.count(
                self.name, count_filter=models.Filter(must=[wholes] if base is None else [base, wholes]), exact=True
            ).count
        except Exception as e:  # the client's own exceptions: a server older than substring matches says 400
            if not (
                self.substring and any(f.op == "~" for f in filters) and getattr(e, "status_code", 0) in (400, 422)
            ):
                raise
            self.substring = False
            return self.search(
                queries, filters=filters, exclude=exclude, limit=limit, offset=offset, min_score=min_score
            )
        out = []
        hit_rids: list[int] = []
        for col, q in enumerate(queries):
            ids = list(exclude[col]) if col < len(exclude) else []
            qfilter = base
            if ids:
                rows = [r for r in self.exact.view.rows_of(ids).values() if r < sp.rows]
                rids = [int(rid_of_row[r]) for r in rows if rid_of_row[r] >= 0]
                if rids:
                    qfilter = models.Filter(
                        must=[base] if base is not None else None,
                        must_not=[models.FieldCondition(key="rid", match=models.MatchAny(any=rids))],
                    )
            found = self.client.query_points(self.name, query=q.tolist(), limit=limit, offset=offset, query_filter=qfilter,
                                             score_threshold=min_score, with_payload=["id", "rid"], with_vectors=False).points  # fmt: skip
            m = Matches(considered=considered)
            for p in found:
                payload = p.payload or {}
                m.ids.append(payload["id"])
                m.scores.append(float(p.score))
                hit_rids.append(int(p.id) if int(p.id) < REGION_IDS else int(payload.get("rid", -1)))
            out.append(m)
        # A point is keyed by the item's rid, which a moved file keeps: answer with the id the item
        # has now (the payload's may be older than the last sync), in one look-up for the batch.
        current = self.exact.view.ids_of_rids(hit_rids) if hit_rids else {}
        at = 0
        for m in out:
            m.ids = [current.get(hit_rids[at + k], i) for k, i in enumerate(m.ids)]
            at += len(m.ids)
        return out
