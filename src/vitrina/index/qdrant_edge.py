"""Qdrant's own engine in this process (``qdrant-edge-py``), behind the part of qdrant-client's
interface that ``vitrina.index.qdrant`` uses, so sync and search run unchanged against it.

Target ``qdrant+edge:///FOLDER#NAME``: one edge shard per name, in ``FOLDER/NAME``. Unlike the
client's local mode (pure Python, every point in memory, no payload indexes) this is the Rust
engine of the Qdrant server: segments on disk, payload indexes, HNSW built by its optimizer, the
same filter evaluation. Filters and points arrive as qdrant-client models and are converted here.

A shard's folder is locked by the engine while it is open, so the shards are shared per process
(every ``EdgeClient`` of one folder uses one open shard; the last ``close`` closes it).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..errors import ConfigError


def _edge() -> Any:
    try:
        import qdrant_edge
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ConfigError("The qdrant+edge target needs Qdrant's engine: pip install 'vitrina[qdrant]'.") from e
    return qdrant_edge


_LOCK = threading.Lock()
_OPEN: dict[str, list[Any]] = {}  # resolved folder -> [shard, users]


def _acquire(path: Path, create: Any = None) -> Any:
    key = str(path.resolve())
    with _LOCK:
        if key in _OPEN:
            _OPEN[key][1] += 1
            return _OPEN[key][0]
        qe = _edge()
        shard = qe.EdgeShard.create(key, create) if create is not None else qe.EdgeShard.load(key)
        _OPEN[key] = [shard, 1]
        return shard


def _release(path: Path) -> None:
    key = str(path.resolve())
    with _LOCK:
        entry = _OPEN.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _OPEN[key]
            entry[0].flush()
            entry[0].close()


def _match(qe: Any, m: Any) -> Any:
    kind = type(m).__name__
    if kind == "MatchValue":
        return qe.MatchValue(m.value)
    if kind == "MatchAny":
        return qe.MatchAny(list(m.any))
    if kind == "MatchSubstring":
        return qe.MatchSubstring(m.substring)
    if kind == "MatchText":
        return qe.MatchText(m.text)
    raise ConfigError(f"The qdrant+edge adapter cannot translate {kind}.")  # pragma: no cover - a vitrina bug


def convert_filter(f: Any) -> Any:
    """A qdrant-client filter or condition as the edge engine's (None stays None)."""
    if f is None:
        return None
    qe = _edge()
    kind = type(f).__name__
    if kind == "Filter":

        def side(conditions: Any) -> Any:
            return None if not conditions else [convert_filter(c) for c in conditions]

        return qe.Filter(must=side(f.must), should=side(f.should), must_not=side(f.must_not))
    if kind == "FieldCondition":
        if f.match is not None:
            return qe.FieldCondition(key=f.key, match=_match(qe, f.match))
        r = f.range
        return qe.FieldCondition(key=f.key, range=qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt))
    if kind == "IsEmptyCondition":
        return qe.IsEmptyCondition(f.is_empty.key)
    if kind == "HasIdCondition":
        return qe.HasIdCondition(set(f.has_id))
    raise ConfigError(f"The qdrant+edge adapter cannot translate {kind}.")  # pragma: no cover - a vitrina bug


def _schema(qe: Any, schema: Any) -> Any:
    """qdrant-client payload index params -> the edge engine's."""
    kind = getattr(schema, "type", schema)
    kind = getattr(kind, "value", kind)
    if kind == "keyword":
        return qe.KeywordIndexParams(prefix=bool(getattr(schema, "prefix", False)))
    return {"integer": qe.PayloadSchemaType.Integer, "float": qe.PayloadSchemaType.Float}[kind]


class EdgeClient:
    """The qdrant-client calls vitrina makes (collections are shard folders under ``root``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._held: dict[str, Any] = {}
        self._lock = threading.Lock()  # a service's threads share one client: one reference per shard

    def _shard(self, name: str) -> Any:
        with self._lock:
            if name not in self._held:
                self._held[name] = _acquire(self.root / name)
            return self._held[name]

    def collection_exists(self, name: str) -> bool:
        return (self.root / name / "edge_config.json").exists()

    def create_collection(self, name: str, vectors_config: Any, **_: Any) -> None:
        qe = _edge()
        self.root.mkdir(parents=True, exist_ok=True)
        config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=vectors_config.size, distance=qe.Distance.Cosine))
        with self._lock:
            if name in self._held:
                _release(self.root / name)
            self._held[name] = _acquire(self.root / name, config)

    def get_collection(self, name: str) -> Any:
        info = self._shard(name).info()
        config = json.loads((self.root / name / "edge_config.json").read_text())
        vectors = SimpleNamespace(size=int(config["vectors"][""]["size"]))
        return SimpleNamespace(config=SimpleNamespace(params=SimpleNamespace(vectors=vectors)),
                               payload_schema=dict(info.payload_schema), points_count=info.points_count)  # fmt: skip

    def create_payload_index(self, name: str, field_name: str, field_schema: Any, wait: bool = True) -> None:
        qe = _edge()
        self._shard(name).update(qe.UpdateOperation.create_field_index(field_name, _schema(qe, field_schema)))

    def scroll(self, name: str, *, limit: int, offset: Any = None, with_payload: Any = True, with_vectors: bool = False) -> Any:  # fmt: skip
        qe = _edge()
        return self._shard(name).scroll(
            qe.ScrollRequest(offset=offset, limit=limit, with_payload=with_payload, with_vector=with_vectors)
        )

    def retrieve(self, name: str, ids: list[Any], with_payload: Any = True, with_vectors: bool = False) -> Any:
        return self._shard(name).retrieve(list(ids), with_payload=with_payload, with_vector=with_vectors)

    def upsert(self, name: str, points: list[Any], wait: bool = True) -> None:
        qe = _edge()
        converted = [qe.Point(p.id, p.vector, p.payload) for p in points]
        self._shard(name).update(qe.UpdateOperation.upsert_points(converted))

    def delete(self, name: str, points_selector: Any, wait: bool = True) -> None:
        qe = _edge()
        self._shard(name).update(qe.UpdateOperation.delete_points(list(points_selector.points)))

    def count(self, name: str, count_filter: Any = None, exact: bool = True) -> Any:
        qe = _edge()
        n = self._shard(name).count(qe.CountRequest(exact=exact, filter=convert_filter(count_filter)))
        return SimpleNamespace(count=n)

    def query_points(self, name: str, *, query: list[float], limit: int, offset: int = 0, query_filter: Any = None,
                     score_threshold: float | None = None, with_payload: Any = True, with_vectors: bool = False) -> Any:  # fmt: skip
        qe = _edge()
        request = qe.QueryRequest(limit=limit, offset=offset, query=qe.Query.Nearest(query),
                                  filter=convert_filter(query_filter), score_threshold=score_threshold,
                                  with_payload=with_payload, with_vector=with_vectors)  # fmt: skip
        return SimpleNamespace(points=self._shard(name).query(request))

    def optimize(self, name: str) -> bool:
        """Run the engine's optimizers (index building) now, as a server would in the background."""
        return bool(self._shard(name).optimize())

    def close(self) -> None:
        with self._lock:
            for name in list(self._held):
                _release(self.root / name)
            self._held.clear()
