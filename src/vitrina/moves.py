"""A moved or renamed file keeps its item: recognised by its content, not re-embedded as new.

At ingest each local file that is new or changed (size or modification time) is hashed once
(BLAKE2b-256 of its bytes, read in 1 MiB blocks; files over ``MAX_HASH_BYTES`` are not hashed);
an unchanged file keeps its hash and is not read. Items stored before schema 11 are hashed once,
on the first ingest after the upgrade.

After a complete listing, a file that disappeared and a never-embedded file listed in the same
run with the same hash are one picture moved: the old item takes the new id (the path relative to
the folder, which is what an id is for a folder source) and keeps its internal key, so its vectors
in every space, regions, OCR words, tags and what people made of it (sets, labels, corrections)
follow it, and nothing is embedded again. Two files with the same bytes that are both present stay
two items: only a departed item is carried over, and only to a file that has never been embedded.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable

from .sources.folder import ref_path
from .store import Store

__all__ = ["MAX_HASH_BYTES", "carry_over_moves", "file_hash", "hash_files"]

MAX_HASH_BYTES = 2 << 30  # 2 GiB: a larger file is not hashed (and not recognised when moved)
BLOCK = 1 << 20
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def file_hash(path: str, limit: int = MAX_HASH_BYTES) -> str | None:
    """BLAKE2b-256 of the file's bytes (hex), None for a file that is not a readable regular file
    of at most ``limit`` bytes. Memory: one block."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None  # checked before opening: a FIFO would block the open
        with open(path, "rb") as f:
            h = hashlib.blake2b(digest_size=32)
            read = 0
            while block := f.read(BLOCK):
                read += len(block)
                if read > limit:  # grew while being read
                    return None
                h.update(block)
    except OSError:
        return None  # vanished, unreadable: not hashed, never recognised; ingest goes on
    return f"b2:{h.hexdigest()}"


def hash_files(store: Store, ids: list[str]) -> int:
    """Hash the local files of these items that have no hash yet; returns how many were hashed."""
    moves = store.moves()
    todo = [(i, ref_path(image)) for i, image in moves.unhashed(ids) if not _URL.match(image)]
    done: list[tuple[str, str]] = []
    hashed = 0
    for item_id, path in todo:
        if os.path.isabs(path) and (h := file_hash(path)) is not None:
            done.append((item_id, h))
            hashed += 1
        if len(done) >= 1000:
            moves.set_hashes(done)
            done = []
    moves.set_hashes(done)
    return hashed


def carry_over_moves(store: Store, sources: Iterable[str], listed: set[str]) -> int:
    """Carry the departed items of ``sources`` over to the files listed this run with the same
    content; returns how many. Pairs are matched in id order where several share a hash (a moved
    file and a copy of it: one takes the item, the other is new)."""
    moves = store.moves()
    gone = moves.departures(sources, listed)
    if not gone:
        return 0
    came = moves.arrivals(sorted(gone), listed)
    pairs = [(old, new) for h, olds in sorted(gone.items()) for old, new in zip(olds, came.get(h, []), strict=False)]
    done = 0
    for i in range(0, len(pairs), 500):
        done += moves.carry_over(pairs[i : i + 500])
    return done
