"""One embedding space on disk: a pre-allocated, memory-mapped file of float32 rows.

Layout: a 4096-byte header (magic line + JSON: format, dim, dtype, model fingerprint), then
rows of ``dim`` float32. The file is grown with ``posix_fallocate`` so a full disk is a clean
``OSError`` (ENOSPC) at grow time, never a SIGBUS while writing through the map.

The file itself does not say how many rows are valid: the SQLite ``spaces.rows`` column does.
Rows are written and fsynced *before* the transaction that raises that count, so a kill at any
moment leaves at worst some unreferenced bytes past the committed count, overwritten next time.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .errors import StoreCorrupt
from .files import write_atomic
from .records import ModelFingerprint

MAGIC = b"VITRINA-VECTORS\n"
HEADER_SIZE = 4096
FORMAT = 1
DTYPE = np.dtype("<f4")
MIN_CAPACITY = 1024
GATHER_READS = 4096  # rows: fewer are read with concurrent preads, more through the map
GATHER_THREADS = 16


class VectorFile:
    def __init__(self, path: Path, dim: int, fingerprint: ModelFingerprint | None, writable: bool):
        self.path = path
        self.dim = dim
        self.fingerprint = fingerprint
        self.writable = writable
        self.row_bytes = dim * DTYPE.itemsize
        self._fd: int | None = None
        self._rfd: int | None = None  # read-only, for gather
        self._map: np.memmap | None = None
        self._mapped_capacity = 0
        self.generation = ""  # the space generation it was opened for (see Store.vector_file)
        self._inode = _inode(path)

    def is_current(self) -> bool:
        """False when the file on disk was replaced since it was opened (a re-embed elsewhere)."""
        return _inode(self.path) == self._inode

    @classmethod
    def create(cls, path: Path, fingerprint: ModelFingerprint) -> VectorFile:
        header = (
            MAGIC
            + json.dumps(
                {
                    "format": FORMAT,
                    "dim": fingerprint.dim,
                    "dtype": "float32",
                    "model": json.loads(fingerprint.to_json()),
                }
            ).encode()
        )
        if len(header) > HEADER_SIZE - 1:
            raise ValueError("model fingerprint too long for the vector file header")
        write_atomic(path, header.ljust(HEADER_SIZE - 1) + b"\n")
        return cls(path, fingerprint.dim, fingerprint, writable=True)

    @classmethod
    def open(cls, path: Path, *, writable: bool = False, committed_rows: int = 0) -> VectorFile:
        try:
            with open(path, "rb") as f:
                header = f.read(HEADER_SIZE)
            size = path.stat().st_size
        except FileNotFoundError as e:
            raise StoreCorrupt(
                f"Vector file {path} is missing; rebuild this space with `vitrina index --reembed`."
            ) from e
        if not header.startswith(MAGIC) or len(header) < HEADER_SIZE:
            raise StoreCorrupt(
                f"{path} is not a vitrina vector file (bad header); rebuild this space with `vitrina index --reembed`."
            )
        meta = json.loads(header[len(MAGIC) :].decode().strip())
        if meta.get("format", 0) > FORMAT:
            raise StoreCorrupt(
                f"{path} has vector format {meta['format']}; this vitrina reads <= {FORMAT}. Upgrade vitrina."
            )
        vf = cls(path, int(meta["dim"]), ModelFingerprint.from_json(json.dumps(meta["model"])), writable)
        if size < HEADER_SIZE + committed_rows * vf.row_bytes:
            raise StoreCorrupt(
                f"{path} holds {(size - HEADER_SIZE) // vf.row_bytes} rows but the collection has committed "
                f"{committed_rows}; the file was truncated. Rebuild this space with `vitrina index --reembed`."
            )
        return vf

    @property
    def capacity(self) -> int:
        return max(0, (self.path.stat().st_size - HEADER_SIZE) // self.row_bytes)

    def matrix(self, rows: int) -> np.ndarray:
        """A read-only view of the first ``rows`` rows, memory-mapped (no copy)."""
        if rows == 0:
            return np.zeros((0, self.dim), DTYPE)
        if self._map is None or self._mapped_capacity < rows:
            capacity = self.capacity
            self._map = _shared_map(self.path, self._inode, capacity, self.dim)
            self._mapped_capacity = capacity
        return self._map[:rows]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """A copy of the given rows (committed ones). A few rows scattered over a file larger than
        memory are read with concurrent ``pread``s: through the map, each is a page fault waited
        for in turn (100 random rows of a 20 GB file: ~250 ms through the map, ~10 ms so)."""
        rows = np.asarray(rows, np.int64)
        if len(rows) > GATHER_READS or len(rows) < 8:
            return np.array(self.matrix(int(rows.max()) + 1 if len(rows) else 0)[rows], DTYPE)
        out = np.empty((len(rows), self.dim), DTYPE)
        fd = self._read_fd()

        def read(i: int) -> None:
            offset = HEADER_SIZE + int(rows[i]) * self.row_bytes
            data = os.pread(fd, self.row_bytes, offset)
            if len(data) != self.row_bytes:
                raise StoreCorrupt(f"{self.path} ends before row {int(rows[i])}")
            out[i] = np.frombuffer(data, DTYPE)

        list(_gather_pool().map(read, range(len(rows))))
        return out

    def _read_fd(self) -> int:
        if self._rfd is None:
            self._rfd = os.open(self.path, os.O_RDONLY)
        return self._rfd

    def write_rows(self, start: int, vectors: np.ndarray) -> None:
        """Write ``vectors`` at row ``start`` and make them durable (before any commit refers to them)."""
        assert self.writable, "vector file opened read-only"
        vectors = np.ascontiguousarray(vectors, dtype=DTYPE)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("refusing to store NaN or infinite vectors")
        fd = self._open_fd()
        needed = HEADER_SIZE + (start + len(vectors)) * self.row_bytes
        size = os.fstat(fd).st_size
        if needed > size:
            grow_to = (
                HEADER_SIZE
                + max(MIN_CAPACITY, int((size - HEADER_SIZE) / self.row_bytes * 1.5), start + len(vectors))
                * self.row_bytes
            )
            _allocate(fd, size, grow_to)
        data = vectors.tobytes()
        offset = HEADER_SIZE + start * self.row_bytes
        written = 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], offset + written)
        os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)

    def _open_fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._rfd is not None:
            os.close(self._rfd)
            self._rfd = None
        self._map = None
        self._mapped_capacity = 0


_maps: weakref.WeakValueDictionary[tuple[str, tuple[int, int] | None, int, int], np.memmap] = (
    weakref.WeakValueDictionary()
)
_maps_lock = threading.Lock()


def _shared_map(path: Path, inode: tuple[int, int] | None, capacity: int, dim: int) -> np.memmap:
    """One read-only mapping per file (and size) per process, shared by every open store: a
    server's worker threads each open the collection, and a page resident through 16 separate
    mappings counts 16 times in the process's RSS (issue 26). Kept while anyone holds it."""
    key = (str(path), inode, capacity, dim)
    with _maps_lock:
        mapped = _maps.get(key)
        if mapped is None:
            mapped = np.memmap(path, dtype=DTYPE, mode="r", offset=HEADER_SIZE, shape=(capacity, dim))
            _maps[key] = mapped
        return mapped


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _gather_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=GATHER_THREADS, thread_name_prefix="vitrina-gather")
        return _pool


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _allocate(fd: int, size: int, new_size: int) -> None:
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, size, new_size - size)  # ENOSPC here, not SIGBUS later
    else:  # macOS: no posix_fallocate; write zeros so the blocks really exist
        chunk = b"\0" * (1 << 20)
        pos = size
        while pos < new_size:
            pos += os.pwrite(fd, chunk[: min(len(chunk), new_size - pos)], pos)
    os.fsync(fd)
