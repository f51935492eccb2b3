"""Loading a faiss index for serving: memory-mapped from its file where faiss allows it.

An index read the ordinary way is copied into anonymous memory (299 MB at 562,842 rows with
int8 codes, 5.2 GB at 10M). Read through ``faiss.ZeroCopyIOReader`` over a read-only
``np.memmap`` of the file, the large arrays of the index (flat and scalar-quantised codes, the
inverted lists' codes and ids, the HNSW graph) point into the mapping instead: serving memory is
page cache, shared by every process that serves the same file, and given back by the kernel
under pressure. Small parts (centroids, trained quantiser tables) are still copied.

Only for searching: a mapped index is read-only (``PROT_READ``), so an index that is extended or
re-trained is read with ``ann.read_ann`` as before. The file is replaced by rename, never
rewritten in place, so a mapping stays valid for as long as the index that holds it.

Falls back to an ordinary read (with one log line) when the faiss build has no zero-copy reader,
when reading the index through it fails (a type whose reader needs a real file), or when
``VITRINA_ANN_MMAP=0``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

log = logging.getLogger("vitrina.index")

ENV = "VITRINA_ANN_MMAP"


def mapping_enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "no", "false", "off")


def read_index_at(faiss: Any, path: Path | BinaryIO, offset: int) -> Any:
    """The faiss index stored in ``path`` (or an open file: then the very file whose header the
    caller read, even if the name was replaced since) from byte ``offset``: mapped when possible,
    else read.

    A mapped index holds its mapping in ``index.referenced_objects`` (faiss's own way of keeping
    Python objects alive as long as an index); ``mapping_of(index)`` returns it (None: read whole)."""
    if mapping_enabled() and hasattr(faiss, "ZeroCopyIOReader"):
        try:
            return _read_mapped(faiss, path, offset)
        except Exception as e:  # a type faiss cannot map: read it whole instead
            log.info("The approximate index %s cannot be memory-mapped (%s); reading it into memory.", path, e)
    if not isinstance(path, (str, Path)):
        path.seek(offset)
        return faiss.read_index(faiss.PyCallbackIOReader(path.read))
    with open(path, "rb") as f:
        f.seek(offset)
        return faiss.read_index(faiss.PyCallbackIOReader(f.read))


def _read_mapped(faiss: Any, path: Path | BinaryIO, offset: int) -> Any:
    mapping = np.memmap(path, dtype=np.uint8, mode="r", offset=offset)
    reader = faiss.ZeroCopyIOReader(faiss.swig_ptr(mapping), mapping.size)
    flags = getattr(faiss, "IO_FLAG_MMAP_IFC", 0) | getattr(faiss, "IO_FLAG_READ_ONLY", 0)
    index = faiss.read_index(reader, flags)
    index.referenced_objects = [*getattr(index, "referenced_objects", []), mapping]  # its arrays point into it
    return index


def mapping_of(index: Any) -> np.memmap | None:
    """The file mapping a mapped index reads from; None for an index read into memory."""
    return next((o for o in getattr(index, "referenced_objects", []) if isinstance(o, np.memmap)), None)


def is_mapped(index: Any) -> bool:
    return mapping_of(index) is not None
