"""vitrina: search digitised heritage image collections by what they show.

>>> from vitrina import open_collection
>>> maps = open_collection("maps")
>>> maps.search("maps with sea monsters", where=["date<1800"], limit=5)
"""

from ._version import __version__
from .collection import Collection, ImageLimits, open_collection
from .embedding import Embedder, get_embedder
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
from .filters import Filter
from .images import load_image
from .index import Matches, SearchIndex
from .indexer import IndexReport
from .query import Hits, Query, Term
from .records import Hit, Item, ModelFingerprint

__all__ = [
    "__version__",
    "Collection", "open_collection", "ImageLimits", "SearchIndex", "Matches", "Embedder", "get_embedder", "load_image", "IndexReport",
    "Query", "Term", "Filter", "Hits", "Hit", "Item", "ModelFingerprint",
    "VitrinaError", "ConfigError", "ModelError", "ModelUnavailable", "ModalityError", "StoreError",
    "CollectionNotFound", "NoEmbeddings", "NoSuchSpace", "StoreLocked", "StoreCorrupt", "DiskFull", "SpaceMismatch", "QueryError", "ImageError",
    "SourceError", "Blocked",
]  # fmt: skip
