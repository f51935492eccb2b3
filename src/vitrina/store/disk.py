"""The collection on disk: the writer lock, and a full disk named (which collection, which
mount, how much to free)."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DiskFull, StoreLocked
from .paths import CollectionPaths

__all__ = ["acquire_writer_lock", "disk_full_as_error", "free_bytes"]


def acquire_writer_lock(paths: CollectionPaths, name: str) -> int:
    """Take the collection's writer lock (flock) and note who holds it; returns the file
    descriptor that holds it (close it to let go). flock dies with the process, so a killed
    writer leaves no stale lock. StoreLocked, naming the holder, when another process has it."""
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.writer_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise StoreLocked(
            f"Collection {name!r} is being written by {holder}; wait for it to finish, or stop it and run again."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"PID {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    return fd


@contextmanager
def disk_full_as_error(path: Path, name: str) -> Iterator[None]:
    """Turn a full disk, at whatever stage it strikes (SQLite's "database or disk is full" or its
    "disk I/O error", ENOSPC from a vector file or the cache), into one ``DiskFull`` that names the
    collection's disk and the space to free. Every write is crash-safe, so a re-run resumes."""
    try:
        yield
    except DiskFull:
        raise
    except (OSError, sqlite3.Error) as e:
        free, needed = free_bytes(path), _needed(path)
        if isinstance(e, OSError):
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        else:  # "disk I/O error" is also what SQLite says when its WAL cannot grow: trust it only on a nearly full disk
            text = str(e)
            full = "database or disk is full" in text or (
                "disk I/O error" in text and free is not None and free < needed
            )
        if not full:
            raise
        shown = "unknown" if free is None else _size(free)
        raise DiskFull(
            f"The disk holding collection {name!r} ({path}, on {_mount_point(path)}) is full: {shown} free. Free at least "
            f"{_size(needed)} there (or move the collection to a larger disk), then run the same command again: it carries on "
            f"where it stopped, nothing written so far is lost. ({type(e).__name__}: {e})"
        ) from e


def _needed(path: Path) -> int:
    """Room a run wants: SQLite's WAL and checkpoint may briefly hold about half the database
    again, plus some batches of vectors and the download cache's next files."""
    try:
        used = sum(p.stat().st_size for p in CollectionPaths(path).db_files)
    except OSError:
        used = 0
    return max(16 << 20, used // 2)


def free_bytes(path: Path) -> int | None:
    """Free bytes on the disk holding ``path`` (or its nearest existing parent); None if unknown."""
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def _mount_point(path: Path) -> Path:
    path = path if path.exists() else next((p for p in path.parents if p.exists()), path)
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"
