"""A 2-D map of a whole space: every item placed by similarity, for the page's Map view.

    spaces/<space>.map    derived: a 4096-byte header (magic + JSON stamp), then the points as
                          uint16 x, y pairs (little-endian, 0..65535 over the bounding box),
                          then the item ids: a JSON array (format 2; format 1, still read:
                          newline-separated UTF-8, which an id holding a newline broke)

UMAP (``pip install 'vitrina[map]'``) when it is installed and asked for, else PCA (always
available: numpy only). The stamp says what the map was built from (space generation, rows,
checksum of sampled rows, method); a map that no longer fits the space is stale, and the service
reports it rather than drawing items in the wrong places. Written to a temporary file and renamed:
a kill leaves the old map or none. The whole file is what the page downloads: 4 bytes a point
plus the ids (about 6 MB for 300k items), drawn on a canvas.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, QueryError
from .files import write_atomic
from .store import MOVED_KEY

if TYPE_CHECKING:
    from .collection import Collection

MAGIC = b"VITRINA-MAP\n"
HEADER_SIZE = 4096
FORMAT = 2
METHODS = ("auto", "pca", "umap")
PCA_FIT_ROWS = 100_000  # the axes are estimated on an even sample (200 MB at 512-d); every row is projected


@dataclass
class MapData:
    stamp: dict[str, Any]
    ids: list[str]
    xy: np.ndarray  # (n, 2) uint16


def map_path(coll: Collection, space: str) -> Path:
    return coll.paths.map(space)


def _umap() -> Any:
    try:
        import umap
    except ImportError:
        return None
    return umap


def _offsets(chunks: Any) -> Any:
    start = 0
    for ids, v in chunks:
        yield start, (ids, v)
        start += len(ids)


def pca_axes(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, the first two principal axes (dim, 2)) of ``sample``; signs fixed so reruns agree."""
    mean = sample.mean(axis=0, dtype=np.float64)
    second = np.zeros((sample.shape[1], sample.shape[1]))
    for start in range(0, len(sample), 20_000):  # in blocks: no float64 copy of the whole sample
        block = sample[start : start + 20_000].astype(np.float64)
        second += block.T @ block
    cov = second / len(sample) - np.outer(mean, mean) if len(sample) > 1 else np.eye(sample.shape[1])
    _, vecs = np.linalg.eigh(np.atleast_2d(cov))
    axes = vecs[:, ::-1][:, :2].copy()
    axes *= np.where(axes[np.abs(axes).argmax(axis=0), [0, 1]] < 0, -1, 1)
    return mean, axes


def pca_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """``vectors`` on the first two principal components of an even sample of them, (n, 2)."""
    rng = np.random.default_rng(seed)
    sample = (
        vectors
        if len(vectors) <= PCA_FIT_ROWS
        else vectors[np.sort(rng.choice(len(vectors), PCA_FIT_ROWS, replace=False))]
    )
    mean, axes = pca_axes(sample)
    return np.asarray((vectors - mean) @ axes)


def quantise(points: np.ndarray) -> np.ndarray:
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.round((points - lo) / span * 65535).astype("<u2")


def build_map(coll: Collection, space: str | None = None, *, method: str = "auto", seed: int = 0) -> dict[str, Any]:
    """Compute and store the map of ``space``; returns its stamp (method, rows, seconds)."""
    if method not in METHODS:
        raise ConfigError(f"Unknown map method {method!r}; use one of {', '.join(METHODS)}.")
    from .index.ann import checksum

    started = time.perf_counter()
    sp = coll.space(space)
    if not sp.live:
        raise QueryError(f"Space {sp.name!r} has no vectors to map; index the collection first.")
    umap = _umap() if method in ("auto", "umap") else None
    if method == "umap" and umap is None:
        raise ConfigError("The UMAP map needs umap-learn: pip install 'vitrina[map]' (or use --method pca).")
    if umap is not None and sp.live >= 16:
        ids, vectors = coll.vectors(sp.name)
        points = umap.UMAP(n_components=2, metric="cosine", random_state=seed, low_memory=True).fit_transform(vectors)
        used = "umap"
    else:  # streamed: fitted on an even sample, every row projected chunk by chunk
        step = max(1, sp.live // PCA_FIT_ROWS)
        sample = np.concatenate([v[(-start) % step :: step] for start, (_, v) in _offsets(coll.iter_vectors(sp.name))])
        mean, axes = pca_axes(sample)
        del sample
        ids, parts = [], []
        for chunk_ids, v in coll.iter_vectors(sp.name):
            ids += chunk_ids
            parts.append((v - mean) @ axes)
        points, used = np.concatenate(parts), "pca"
    view = coll.space_view(sp.name)
    sp_now = view.space()
    matrix = view.vectors(sp_now)
    stamp = {"format": FORMAT, "space": sp.name, "generation": sp_now.generation, "rows": sp_now.rows, "live": sp_now.live,
             "checksum": checksum(matrix, sp_now.rows), "method": used, "points": len(ids), "built_at": time.time(),
             "seconds": round(time.perf_counter() - started, 3), "moved": coll.state(MOVED_KEY)}  # fmt: skip
    _write(map_path(coll, sp.name), stamp, quantise(points), ids)
    return stamp


def _write(path: Path, stamp: dict[str, Any], xy: np.ndarray, ids: list[str]) -> None:
    header = MAGIC + json.dumps(stamp).encode()
    if len(header) > HEADER_SIZE - 1:
        raise ValueError("map stamp too long")
    write_atomic(
        path,
        header.ljust(HEADER_SIZE - 1)
        + b"\n"
        + np.ascontiguousarray(xy, "<u2").tobytes()
        + json.dumps(ids, ensure_ascii=False).encode(),
    )


def read_map(path: Path) -> MapData:
    data = path.read_bytes()
    if not data.startswith(MAGIC) or len(data) < HEADER_SIZE:
        raise ValueError(f"{path} is not a vitrina map file")
    stamp = json.loads(data[len(MAGIC) : HEADER_SIZE].decode().strip())
    n = int(stamp["points"])
    xy = np.frombuffer(data, "<u2", count=2 * n, offset=HEADER_SIZE).reshape(n, 2)
    tail = data[HEADER_SIZE + 4 * n :].decode()
    if not n:
        ids = []
    elif stamp.get("format", 1) >= 2:
        ids = json.loads(tail)
    else:
        ids = tail.split("\n")
    if not isinstance(ids, list) or len(ids) != n:
        raise ValueError(f"{path}: {len(ids)} ids for {n} points")
    return MapData(stamp, ids, xy)


def map_problem(coll: Collection, stamp: dict[str, Any]) -> str | None:
    """Why a stored map no longer fits its space (None: it does)."""
    from .index.ann import checksum

    sp = coll.space(stamp.get("space"))
    if stamp.get("generation") != sp.generation or stamp.get("rows") != sp.rows or stamp.get("live") != sp.live:
        return "the space changed since the map was built; run `vitrina map` again"
    if stamp.get("moved") != coll.state(MOVED_KEY):  # the map file holds item ids; moves.py changes some
        return "items were moved or renamed since the map was built; run `vitrina map` again"
    if checksum(coll.space_view(sp.name).vectors(sp), sp.rows) != stamp.get("checksum"):
        return "the vectors differ from those the map was built from; run `vitrina map` again"
    return None


def load_map(coll: Collection, space: str | None = None) -> tuple[bytes, dict[str, Any]]:
    """The stored map file's bytes (what the page downloads) and its stamp; QueryError naming the
    fix when there is none or it is stale."""
    sp = coll.space(space)
    path = map_path(coll, sp.name)
    if not path.exists():
        raise QueryError(f"No map of space {sp.name!r} yet; run `vitrina map {coll.name}`.")
    data = path.read_bytes()
    try:
        stamp = read_map(path).stamp
    except (ValueError, KeyError, TypeError) as e:  # damaged, or written by an older version from odd ids
        raise QueryError(
            f"The map of space {sp.name!r} is stale: it cannot be read ({e}); run `vitrina map` again."
        ) from None
    problem = map_problem(coll, stamp)
    if problem:
        raise QueryError(f"The map of space {sp.name!r} is stale: {problem}.")
    return data, stamp


def map_colours(coll: Collection, key: str, ids: list[str], top: int = 10) -> dict[str, Any] | None:
    """Each map point's value of metadata key or tag ``key``, as a code into the ``top`` most
    common values (``top`` = other, -1 = none), for colouring the map. One query over the
    normalised values (not one per item); None when no item has the key."""
    from collections import Counter

    found = coll.first_values(key)
    if found is None:
        return None
    values = [None if (v := found.get(i)) is None else v[:80] for i in ids]
    common = [v for v, _ in Counter(v for v in values if v is not None).most_common(top)]
    code = {v: n for n, v in enumerate(common)}
    return {"key": key, "values": common, "codes": [-1 if v is None else code.get(v, top) for v in values]}
