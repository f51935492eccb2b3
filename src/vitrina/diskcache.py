"""A size-capped file cache (the HTTP cache inside a collection, and the service's thumbnails and
deep-zoom tiles). The oldest files go first once the cap is reached, so a long harvest, or a
visitor who asks for every tile of every item, cannot fill the collection's disk; a cache that cannot be
written says so once (a warning) and is left alone for the rest of the run, which goes on."""

from __future__ import annotations

import logging
import shutil
import stat
import threading
from pathlib import Path

from .files import write_atomic

MAX_BYTES = 1 << 30  # at most 1 GiB, and at most a quarter of the disk space free when first used
log = logging.getLogger("vitrina.cache")


class FileCache:
    def __init__(self, root: Path, max_bytes: int | None = None):
        self.root = root
        self.max_bytes = max_bytes
        self.broken: str | None = None  # why writing stopped, if it did
        self._files: dict[Path, int] | None = None  # path -> size, oldest first
        self._total = 0
        self._lock = threading.Lock()

    def _scan(self) -> None:
        found = []
        for p in self.root.rglob("*"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue  # removed while we looked (another process's cache dropping its oldest)
            if stat.S_ISREG(st.st_mode):
                found.append((st.st_mtime, p, st.st_size))
        found.sort(key=lambda t: t[0])
        self._files = {p: size for _, p, size in found}
        self._total = sum(self._files.values())
        if self.max_bytes is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self.max_bytes = min(MAX_BYTES, (shutil.disk_usage(self.root).free + self._total) // 4)

    def put(self, path: Path, data: bytes) -> None:
        with self._lock:
            if self.broken:
                return
            try:
                if self._files is None:
                    self._scan()
                assert self._files is not None and self.max_bytes is not None
                while self._files and self._total + len(data) > self.max_bytes:
                    oldest = next(iter(self._files))
                    self._total -= self._files.pop(oldest)
                    oldest.unlink(missing_ok=True)
                if len(data) > self.max_bytes:
                    return
                write_atomic(path, data, durable=False)
            except OSError as e:
                self.broken = f"{type(e).__name__}: {e}"
                log.warning("The cache %s cannot be written (%s); carrying on without it.", self.root, self.broken)
                return
            self._total += len(data) - self._files.pop(path, 0)
            self._files[path] = len(data)


_caches: dict[Path, FileCache] = {}
_caches_lock = threading.Lock()


def cache_put(root: Path, path: Path, data: bytes, max_bytes: int | None = None) -> None:
    """Store ``data`` at ``path`` inside the cache ``root`` (one capped cache per root and process;
    ``max_bytes`` is read when the root is first used: default ``MAX_BYTES`` or a quarter of the
    free disk, whichever is less)."""
    with _caches_lock:
        cache = _caches.get(root)
        if cache is None:
            cache = _caches[root] = FileCache(root, max_bytes)
    cache.put(path, data)
