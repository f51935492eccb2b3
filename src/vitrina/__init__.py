"""vitrina: search digitised heritage image collections by what they show.

>>> from vitrina import open_collection
>>> maps = open_collection("maps")
>>> maps.search("maps with sea monsters", where=["date<1800"], limit=5)
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._version import __version__
from .errors import (
    Blocked,
    CollectionNotFound,
    ConfigError,
    DiskFull,
    ImageError,
    ModalityError,
    ModelError,
    ModelUnavailable,
    NoEmbeddings,
    NoSuchSpace,
    QueryError,
    SourceError,
    SpaceMismatch,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    VitrinaError,
)

# The rest loads on first use (PEP 562), so that `import vitrina.cli` and the query service's
# client do not pay for numpy, PIL, the store and the index (about 0.9 s) before they need them.
_LAZY = {
    "Collection": "collection", "ImageLimits": "collection", "open_collection": "collection",
    "Embedder": "embedding", "get_embedder": "embedding", "Filter": "filters", "load_image": "images",
    "Matches": "index", "SearchIndex": "index", "IndexReport": "indexer",
    "Hits": "query", "Query": "query", "Term": "query", "Hit": "records", "Item": "records", "ModelFingerprint": "records",
}  # fmt: skip

if _TYPE_CHECKING:  # what __getattr__ loads, for type checkers and tests/test_house.py
    from .collection import Collection, ImageLimits, open_collection
    from .embedding import Embedder, get_embedder
    from .filters import Filter
    from .images import load_image
    from .index import Matches, SearchIndex
    from .indexer import IndexReport
    from .query import Hits, Query, Term
    from .records import Hit, Item, ModelFingerprint


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'vitrina' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "__version__",
    "Collection", "open_collection", "ImageLimits", "SearchIndex", "Matches", "Embedder", "get_embedder", "load_image", "IndexReport",
    "Query", "Term", "Filter", "Hits", "Hit", "Item", "ModelFingerprint",
    "VitrinaError", "ConfigError", "ModelError", "ModelUnavailable", "ModalityError", "StoreError",
    "CollectionNotFound", "NoEmbeddings", "NoSuchSpace", "StoreLocked", "StoreCorrupt", "DiskFull", "SpaceMismatch", "QueryError", "ImageError",
    "SourceError", "Blocked",
]  # fmt: skip
