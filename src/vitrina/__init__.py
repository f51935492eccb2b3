"""vitrina: search digitised heritage image collections by what they show.

    >>> from vitrina import open_collection
    >>> maps = open_collection("maps")
    >>> maps.search("maps with sea monsters", where=["date<1800"], limit=5)
"""

from ._version import __version__
from .collection import Collection, open_collection
from .embedding import Embedder, get_embedder
from .errors import (
    CollectionNotFound,
    ConfigError,
    DiskFull,
    ImageError,
    ModalityError,
    ModelError,
    ModelUnavailable,
    QueryError,
    SpaceMismatch,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    VitrinaError,
)
from .images import load_image
from .indexer import IndexReport
from .query import Filter, Hits, Query, Term
from .records import Hit, Item, ModelFingerprint

__all__ = [
    "__version__",
    "Collection", "open_collection", "Embedder", "get_embedder", "load_image", "IndexReport",
    "Query", "Term", "Filter", "Hits", "Hit", "Item", "ModelFingerprint",
    "VitrinaError", "ConfigError", "ModelError", "ModelUnavailable", "ModalityError", "StoreError",
    "CollectionNotFound", "StoreLocked", "StoreCorrupt", "DiskFull", "SpaceMismatch", "QueryError", "ImageError",
]  # fmt: skip
