"""Approximate search for the embedded store: a derived faiss index beside the vectors.

    spaces/<space>.f32    the vectors: the source of truth
    spaces/<space>.ann    derived: a 4096-byte header (magic + JSON stamp) then a faiss index

The index only proposes *candidates*; every candidate is re-scored against the stored float32
vectors, so the scores of the hits are the exact cosine and the filters hold exactly. The index
holds compact codes (IVF: 4-bit PQ fast scan by default; int8, float16 or float32 on request), so serving needs the codes
and the graph in memory, not the float32 file: only the candidates' rows are read from it.

The stamp says what the index was built from: the space generation, the number of rows, a
checksum of sampled rows, the faiss parameters and the recall@10 measured at build time. An
index whose stamp no longer fits the space (re-embedded, truncated, replaced) is ignored with a
notice and search is exact. Rows appended since the build (the "tail") are scanned exactly and
merged, so a fresh ingest is searchable at once; ``vitrina index-ann`` adds them to the index.
Dead rows (re-embedded or removed items) and filtered-out items are excluded inside the faiss
search by a bitmap; a highly selective filter skips the index and ranks the allowed rows exactly.

Building (``ann_build.build_ann``) writes a temporary file and renames it over the old one
(``write_ann``), so a kill at any moment leaves the old index (or none) and the collection searchable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..faults import fault_point
from ..files import fsync_dir
from ..filters import Filter
from ..store import Space, Store
from . import Matches, top_k
from .ann_load import read_index_at
from .ann_tuning import describe_tuning
from .exact import ExactIndex

log = logging.getLogger("vitrina.index")

MAGIC = b"VITRINA-ANN\n"
HEADER_SIZE = 4096
FORMAT = 1
# pq4 (IVF only; the IVF default): 4-bit product quantization, one sub-quantizer per 2 dimensions, scanned
# with SIMD "fast scan" (faiss IVFPQFastScan, residual codes): a quarter of sq8's memory and a scan several
# times faster, so IVF can visit the quarter of its lists heavy-tailed clouds need (docs/benchmarks.md);
# coarser than sq8, so the tuner may re-rank more candidates (up to 2,000).
CODES = {"sq8": "SQ8", "fp16": "SQfp16", "flat": "Flat", "pq4": "PQ{m}x4fsr"}  # m: dim / 2


@dataclass
class AnnParams:
    """How the index is built and searched. ``oversample``: candidates fetched per wanted hit
    (re-ranked exactly); ``exact_below``: rank exactly when at most this many items pass the
    filters; ``selective``: ... or when at most this fraction of the items passes."""

    structure: str = "ivf"  # ivf | hnsw (see docs/search-index.md)
    codes: str = ""  # pq4 | sq8 | fp16 | flat; "": pq4 on IVF, sq8 on HNSW (indexes built before say sq8)
    m: int = 32  # HNSW links per node
    ef_construction: int = 80
    ef_search: int = 128
    nlist: int = 0  # IVF lists; 0 = about 4 * sqrt(rows)
    nprobe: int = 48
    oversample: int = 8
    min_candidates: int = 100
    exact_below: int = 20_000
    selective: float = 0.02

    def __post_init__(self) -> None:
        self.codes = self.codes or ("pq4" if self.structure == "ivf" else "sq8")

    def spec(self, rows: int, dim: int) -> str:
        if self.codes not in CODES:
            raise ConfigError(f"Unknown vector codes {self.codes!r}; use one of {', '.join(CODES)}.")
        if self.codes == "pq4" and (self.structure != "ivf" or dim % 2):
            raise ConfigError(f"pq4 codes need --structure ivf and an even dimension (here {dim}); use --codes sq8.")
        codes = CODES[self.codes].format(m=dim // 2)
        if self.structure == "hnsw":
            return f"HNSW{self.m},{codes}"
        if self.structure == "ivf":
            return f"IVF{self.lists(rows)},{codes}"
        raise ConfigError(f"Unknown ANN structure {self.structure!r}; use hnsw or ivf.")

    def lists(self, rows: int) -> int:
        return self.nlist or int(max(16, min(65536, 4 * np.sqrt(max(rows, 1)))))

    @property
    def kind(self) -> str:
        return f"{self.structure}-{self.codes}"

    def tuned(self, settings: dict[str, int]) -> AnnParams:
        """These parameters with a tuned setting (``ann_tuning``): nprobe or efSearch, and the
        candidates re-ranked for a page of 10 (scaled with larger pages)."""
        out = AnnParams(**self.__dict__)
        out.nprobe = int(settings.get("nprobe", self.nprobe))
        out.ef_search = int(settings.get("efSearch", self.ef_search))
        if "candidates" in settings:
            out.min_candidates = int(settings["candidates"])
            out.oversample = max(1, int(settings["candidates"]) // 10)
        return out


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ConfigError("Approximate search needs faiss: pip install 'vitrina[ann]'.") from e
    return faiss


def ann_path(store: Store, space: str) -> Path:
    return store.paths.ann(space)


def checksum(vectors: np.ndarray, rows: int) -> str:
    """A digest of ~257 evenly spaced rows (and the row count): cheap to check when opening."""
    h = hashlib.blake2b(str((rows, vectors.shape[1])).encode(), digest_size=16)
    if rows:
        for r in np.unique(np.linspace(0, rows - 1, 257).astype(np.int64)):
            h.update(np.ascontiguousarray(vectors[r]).tobytes())
    return h.hexdigest()


@dataclass
class _Loaded:
    stamp: dict[str, Any]
    index: Any  # a faiss index over rows [0, stamp["rows"])
    key: tuple[int, int, int] = (0, 0, 0)  # (inode, size, mtime_ns) of the file it came from
    checked: tuple[tuple[Any, int], str | None] | None = None  # ((generation, rows), problem) last checked
    problem: str | None = None  # why it could not be used with the space as last checked (for describe)
    notes: set[str] = field(default_factory=set)


_SHARED: dict[str, _Loaded] = {}
_SHARED_LOCK = threading.Lock()


def _shared(path: Path, key: tuple[int, int, int]) -> _Loaded:
    """The index file loaded once per process, shared by every thread and every open collection
    (faiss searches are read-only): a server's worker threads each open the collection but do
    not each load the index (issue 26: 299 MB per thread at 562,842 rows). Replaced when the
    file is (another inode, size or mtime); the lock makes concurrent first queries wait for
    one load instead of each loading."""
    name = str(path.resolve())
    with _SHARED_LOCK:
        cached = _SHARED.get(name)
        if cached is not None and cached.key == key:
            return cached
        stamp, index = read_ann(path, mapped=True)
        loaded = _SHARED[name] = _Loaded(stamp, index, key)
        return loaded


class AnnIndex:
    """The ``SearchIndex`` of a space with an approximate index file; exact when there is none,
    or when it is stale (see the module docstring)."""

    def __init__(self, store: Store, space: str, params: AnnParams | None = None, path: Path | None = None):
        self.store = store
        self.space_name = space
        self._path = path
        self.exact = ExactIndex(store, space)
        self.overrides = params  # search-time settings; None: as stamped in the file
        self._loaded: _Loaded | None = None
        self._missing_key: object = None

    @property
    def kind(self) -> str:  # type: ignore[override]
        loaded = self._load(self.store.space(self.space_name))
        return (
            "exact"
            if loaded is None or self._exact_by_tuning(loaded)
            else f"ann:{loaded.stamp['params']['structure']}-{loaded.stamp['params']['codes']}"
        )

    def _exact_by_tuning(self, loaded: _Loaded) -> bool:
        """The build found that the index cannot meet its recall target faster than a scan."""
        return self.overrides is None and (loaded.stamp.get("tuning") or {}).get("mode") == "exact"

    @property
    def path(self) -> Path:
        return self._path or ann_path(self.store, self.space_name)

    # -- delegated ----------------------------------------------------------------------------

    def count(self) -> int:
        return self.exact.count()

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self.exact.vectors(ids)

    def matrix(self) -> tuple[list[str], np.ndarray]:
        return self.exact.matrix()

    # -- the file -----------------------------------------------------------------------------

    def _load(self, sp: Space) -> _Loaded | None:
        """The index file as it is now, checked against the space (None: no usable index)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._loaded = None
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._loaded is None or self._loaded.key != key:
            try:
                self._loaded = _shared(self.path, key)
            except Exception as e:  # a damaged derived file: never fatal, search is exact
                if self._missing_key != key:
                    log.warning(
                        "Ignoring the approximate index %s (%s); searching exactly. Rebuild it with `vitrina index-ann`.",
                        self.path,
                        e,
                    )
                    self._missing_key = key
                return None
        loaded = self._loaded
        # The loaded index is shared by threads whose views of the space may differ (one just saw
        # an append or a compaction): the verdict is worked out for this view and read from this
        # call's own variable, never from a field another thread may be rewriting.
        view = (sp.generation, sp.rows)
        checked = loaded.checked  # one read of a (view, verdict) pair: never half of another thread's
        if checked is not None and checked[0] == view:
            verdict = checked[1]
        else:
            verdict = self._problem(loaded, sp)
            loaded.checked = (view, verdict)
            loaded.problem = verdict  # for describe()
            if verdict and verdict not in loaded.notes:
                loaded.notes.add(verdict)
                log.warning(
                    "The approximate index of space %r is stale (%s); searching exactly. Rebuild it with `vitrina index-ann`.",
                    sp.name,
                    verdict,
                )
        return None if verdict else loaded

    def _problem(self, loaded: _Loaded, sp: Space) -> str | None:
        stamp = loaded.stamp
        if stamp.get("space") != sp.name or stamp.get("dim") != sp.fingerprint.dim:
            return "built for another space"
        if stamp.get("generation") != sp.generation:
            return "the space was re-embedded since"
        if sp.rows < stamp["rows"]:
            return f"built from {stamp['rows']} rows, the space has {sp.rows}"
        vectors = self.exact.view.vectors(sp)
        if checksum(vectors, stamp["rows"]) != stamp.get("checksum"):
            return "the vectors differ from those it was built from"
        return None

    def describe(self) -> dict[str, Any]:
        """Kind, freshness and measured recall, for ``vitrina info``."""
        sp = self.store.space(self.space_name)
        if not self.path.exists():
            return {"kind": "exact"}
        loaded = self._load(sp)
        if loaded is None:
            problem = self._loaded.problem if self._loaded is not None else "unreadable"
            return {"kind": "exact", "ann": {"status": "stale", "problem": problem, "path": str(self.path)}}
        stamp = loaded.stamp
        behind = sp.rows - stamp["rows"]
        kind = f"ann:{stamp['params']['structure']}-{stamp['params']['codes']}"
        return {
            "kind": "exact" if self._exact_by_tuning(loaded) else kind,
            "ann": {"status": "fresh" if behind == 0 else "behind", "rows": stamp["rows"], "behind": behind, "built_at": stamp.get("built_at"),
                    "recall_at_10": stamp.get("recall"), "bytes": self.path.stat().st_size, "params": stamp["params"],
                    **({"tuning": {**stamp["tuning"], "summary": describe_tuning(stamp["tuning"])}} if stamp.get("tuning") else {})},
        }  # fmt: skip

    # -- searching ----------------------------------------------------------------------------

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
        sp = self.store.space(self.space_name)
        loaded = self._load(sp)
        if loaded is None or self._exact_by_tuning(loaded):
            return self.exact.search(
                queries, filters=filters, exclude=exclude, limit=limit, offset=offset, min_score=min_score
            )
        params = self.overrides or AnnParams(**loaded.stamp["params"])
        return search_rows(
            self.exact, loaded.index, loaded.stamp["rows"], params, queries, filters, exclude, limit, offset, min_score
        )


def fits_in_memory(nbytes: int) -> bool:
    """Whether a vector file of ``nbytes`` is read through its memory map (at most a quarter of
    physical memory: it normally sits in the page cache) rather than with concurrent preads.
    ``VITRINA_ANN_GATHER=map|pread`` forces one way."""
    forced = os.environ.get("VITRINA_ANN_GATHER", "")
    if forced in ("map", "pread"):
        return forced == "map"
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not a POSIX system
        return False
    return nbytes <= memory // 4


def search_rows(exact: ExactIndex, index: Any, indexed: int, params: AnnParams, queries: np.ndarray, filters: Sequence[Filter],
            exclude: Sequence[Collection[str]], limit: int, offset: int, min_score: float | None) -> list[Matches]:  # fmt: skip
    """Candidates from ``index`` (rows below ``indexed``) plus every row past it, re-ranked exactly."""
    faiss = faiss_module()
    queries = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, np.float32)))
    view = exact.view
    sp, rid_of_row = view.current()
    vector_file = view.file(sp)
    vectors = vector_file.matrix(sp.rows)
    allowed = view.allowed(filters, sp, rid_of_row)
    considered = sp.live if allowed is None else int(allowed.sum())
    excluded_rows: list[np.ndarray] = []
    for col in range(len(queries)):
        ids = list(exclude[col]) if col < len(exclude) else []
        found = list(view.rows_of(ids).values()) if ids else []
        excluded_rows.append(np.asarray([r for r in found if r < sp.rows], np.int64))
    need = offset + limit
    most_excluded = max((len(r) for r in excluded_rows), default=0)
    selective = considered <= max(params.exact_below, params.selective * sp.live)
    if (selective or need + most_excluded >= considered) and considered > sp.rows // 4:
        return exact.search(
            queries, filters=filters, exclude=exclude, limit=limit, offset=offset, min_score=min_score
        )  # one product beats a gather
    if selective or need + most_excluded >= considered:
        # Few items pass: rank them all exactly (the index would have to visit most of itself).
        everything = np.flatnonzero(allowed) if allowed is not None else np.arange(sp.rows)
        pool: np.ndarray | None = everything
        candidates: list[np.ndarray] = [everything] * len(queries)
    else:
        pool = None
        k = min(indexed, max(params.min_candidates, params.oversample * (need + most_excluded)))
        sel = None
        if allowed is not None:
            bits = np.packbits(allowed[:indexed], bitorder="little")
            sel = faiss.IDSelectorBitmap(indexed, faiss.swig_ptr(bits))
        fraction = considered / max(sp.live, 1)
        if params.structure == "ivf":
            nprobe = min(params.lists(indexed), int(params.nprobe / max(fraction, 0.1)))
            search_params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
        else:
            search_params = faiss.SearchParametersHNSW(
                sel=sel, efSearch=int(max(params.ef_search, k) / max(fraction, 0.1))
            )
        _, found = index.search(queries, k, params=search_params)
        tail = np.arange(indexed, sp.rows)
        if allowed is not None:
            tail = tail[allowed[indexed:]]
        candidates = [np.concatenate([f[f >= 0], tail]) for f in found]
    through_map = fits_in_memory(vectors.nbytes)
    out: list[Matches] = []
    picked: dict[int, int] = {}
    ranked: list[tuple[np.ndarray, np.ndarray]] = []
    pool_scores: np.ndarray | None = None
    for col, cand in enumerate(candidates):
        if pool is not None:  # one gather of the allowed rows for the whole batch
            if pool_scores is None:
                pool_scores = queries @ np.asarray(vectors[pool]).T
            rows, scores = pool, pool_scores[col].copy()
        else:
            rows = np.unique(cand)
            # A few scattered rows: through the map when the file fits in memory (in the page
            # cache: ~0.2 ms for 100 rows), else concurrent preads (no page faults waited in turn).
            block = np.asarray(vectors[rows]) if through_map else vector_file.gather(rows)
            scores = block @ queries[col]
        if allowed is not None:
            scores[~allowed[rows]] = -np.inf
        if len(excluded_rows[col]):
            scores[np.isin(rows, excluded_rows[col])] = -np.inf
        order = top_k(scores, need)[0][offset:]
        ranked.append((rows[order], scores[order]))
        for r in rows[order]:
            picked[int(r)] = int(rid_of_row[r])
    names = view.ids_of_rids([rid for rid in set(picked.values()) if rid >= 0])
    for rows, scores in ranked:
        m = Matches(considered=considered)
        for r, score in zip(rows.tolist(), scores.tolist()):
            if score == -np.inf or (min_score is not None and score < min_score):
                continue
            name = names.get(int(rid_of_row[r]))
            if name is not None:
                m.ids.append(name)
                m.scores.append(float(score))
        out.append(m)
    return out


# -- building -----------------------------------------------------------------------------------


def read_ann(path: Path, *, mapped: bool = False) -> tuple[dict[str, Any], Any]:
    """The stamp and the index; ``mapped``: for searching only, memory-mapped where faiss can (ann_load)."""
    faiss = faiss_module()
    with open(path, "rb") as f:
        header = f.read(HEADER_SIZE)
        if not header.startswith(MAGIC) or len(header) < HEADER_SIZE:
            raise ValueError("not a vitrina ANN file")
        stamp = json.loads(header[len(MAGIC) :].decode().strip())
        if stamp.get("format", 0) > FORMAT:
            raise ValueError(f"ANN format {stamp['format']} is newer than this vitrina reads")
        index = read_index_at(faiss, f, HEADER_SIZE) if mapped else faiss.read_index(faiss.PyCallbackIOReader(f.read))
    if index.ntotal != stamp["rows"]:
        raise ValueError(f"the index holds {index.ntotal} rows, its stamp says {stamp['rows']}")
    return stamp, index


def write_ann(path: Path, stamp: dict[str, Any], index: Any) -> None:
    """Header + index into a temporary file, fsynced, renamed over ``path``: all or nothing."""
    faiss = faiss_module()
    header = MAGIC + json.dumps(stamp).encode()
    if len(header) > HEADER_SIZE - 1:
        raise ValueError("ANN stamp too long")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.ljust(HEADER_SIZE - 1) + b"\n")
            writer = faiss.PyCallbackIOWriter(f.write)
            faiss.write_index(index, writer)
            del writer
            f.flush()
            fault_point("ann_before_fsync")
            os.fsync(f.fileno())
        fault_point("ann_before_rename")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
