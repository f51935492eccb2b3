"""Bring your embeddings: import precomputed vectors (and their items) from common layouts, and
export a space to them.

    loc-beto        the Library of Congress maps paper's `beto` tensor [N, 512] + `beto_idx` list of
                    N image URLs (``torch.save``), optionally joined to `p1_map_file_list.csv`
    clip-retrieval  a folder with img_emb/img_emb_K.npy + metadata/metadata_K.parquet, row order paired
    parquet         one file with a list / fixed-size-list vector column and an id column
    npy             a [N, D] .npy file + an ids file (.txt one per line, or .csv / .jsonl / .parquet)

Every import declares the model the vectors came from (``model``), so that text and image
queries are embedded with it (see ``declare_model``). Files are read in chunks (memory maps for
.npy and torch tensors), so a 562,842 x 512 import needs little more memory than one chunk plus
the ids. Each chunk's rows become items (id, image URL, metadata) and then vectors, checked
(finite, non-zero) and normalised; a bad row is reported with its index and skipped, never
silently dropped. The cursor is committed with each chunk's vectors, so an import killed at any
moment and run again carries on after the last committed chunk: every row is imported exactly once.

Untrusted files are never unpickled: torch files load with ``weights_only=True`` (tensors and
lists of strings only), .npy files with ``allow_pickle=False``.
"""

from .clip_retrieval import ClipRetrievalReader
from .common import (
    FORMATS,
    ID_COLUMNS,
    IMAGE_COLUMNS,
    KINDS,
    META_KEY,
    Chunk,
    ImportReport,
    ProgressCallback,
    Reader,
    declare_model,
)
from .export import export_space
from .locbeto import LocBetoReader, loc_iiif_id
from .npy import NpyReader
from .parquet import ParquetReader
from .run import import_vectors, open_reader

__all__ = [
    "FORMATS", "ID_COLUMNS", "IMAGE_COLUMNS", "KINDS", "META_KEY", "Chunk", "ImportReport", "ProgressCallback", "Reader",
    "declare_model", "ClipRetrievalReader", "LocBetoReader", "NpyReader", "ParquetReader", "loc_iiif_id",
    "import_vectors", "open_reader", "export_space",
]  # fmt: skip
