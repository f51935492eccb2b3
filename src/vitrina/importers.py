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

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import iiif
from .errors import ConfigError, ModelError, SourceError
from .records import PROVISIONAL, Item, ModelFingerprint

if TYPE_CHECKING:
    from .collection import Collection

KINDS = {
    "loc-beto": "the LoC maps paper's beto tensor + beto_idx URL list (torch.save), optional CSV join",
    "clip-retrieval": "img_emb/*.npy + metadata/*.parquet, paired by shard number and row order",
    "parquet": "a parquet file with a list or fixed-size-list vector column",
    "npy": "a [N, D] .npy file + an ids file (.txt, .csv, .jsonl or .parquet)",
}
FORMATS = ("clip-retrieval", "parquet")
META_KEY = b"vitrina"  # parquet schema metadata: {"fingerprint": ..., "space", "collection", "vitrina"}
ID_COLUMNS = ("id", "key", "item_id")
IMAGE_COLUMNS = ("image", "url", "image_url", "file_url", "image_path", "path")
ProgressCallback = Callable[[int, int], None]


@dataclass
class Chunk:
    """Rows [start, end) of a source: the good ones as items + vectors, the rest as ``bad``."""

    start: int
    end: int
    rows: list[int]  # source row index of each item / vector
    items: list[Item]
    vectors: np.ndarray  # (len(items), dim), any float dtype
    bad: list[tuple[int, str, str]] = field(default_factory=list)  # (row, id, reason)


@dataclass
class ImportReport:
    collection: str
    kind: str
    source: str
    space: str = ""
    model: str = ""
    verified: bool = False  # False: the model could not be loaded; its fingerprint is pinned at the first query
    rows: int = 0  # rows in the source
    imported: int = 0  # vectors stored by this run
    bad: int = 0
    bad_rows: list[dict[str, Any]] = field(default_factory=list)  # the first 100: row, id, reason
    resumed_at: int = 0  # rows before this were committed by an earlier run
    already_done: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["rows_per_second"] = round((self.rows - self.resumed_at) / self.seconds, 1) if self.seconds else None
        return d


# -- the model an import declares ---------------------------------------------------------------


def declare_model(
    spec: str | None, dim: int, *, from_file: ModelFingerprint | None = None, load: bool = True
) -> ModelFingerprint:
    """The fingerprint to record for imported vectors of ``dim`` dimensions.

    The declared model is loaded when it can be (a cached hub model, a local directory, mini):
    its real fingerprint is recorded and a dimension that disagrees is refused at once. When it
    cannot be loaded here (no network, no torch), a *provisional* fingerprint is recorded (the
    spec and the dimension, revision "unverified"); the first query that loads the model checks
    the dimension and pins the model's real revision (``Collection.embedder_for``). A file that
    carries its own fingerprint (a vitrina export) is taken as is when ``spec`` is not given or
    names the same model."""
    from .embedding import get_embedder, normalise_spec

    if spec is None:
        if from_file is None:
            raise ConfigError(
                "Say which model made these vectors: --model hf:ORG/NAME (e.g. hf:openai/clip-vit-base-patch32), so queries are embedded with it."
            )
        spec = from_file.spec
    spec = normalise_spec(spec)
    if from_file is not None and from_file.spec == spec and from_file.dim == dim:
        return from_file
    if load:
        try:
            fp = get_embedder(spec).fingerprint
        except (ModelError, ConfigError):
            fp = None
        if fp is not None:
            if fp.dim != dim:
                raise ConfigError(
                    f"The vectors have {dim} dimensions but {spec} makes {fp.dim}: they cannot have come from this model. Check --model."
                )
            return fp
    return ModelFingerprint(spec=spec, revision=PROVISIONAL, dim=dim, preprocessing=PROVISIONAL)


# -- readers ------------------------------------------------------------------------------------


class Reader:
    kind: str
    source: str  # for reports and item.source
    total: int
    dim: int
    fingerprint: ModelFingerprint | None = None  # carried by the file itself (a vitrina export)
    files: Sequence[Path] = ()

    def identity(self) -> str:
        """Which files (by path, size and mtime) an import checkpoint belongs to."""
        h = hashlib.sha256(self.kind.encode())
        for p in self.files:
            st = p.stat()
            h.update(f"\0{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        return h.hexdigest()[:20]

    def chunks(self, start: int, size: int) -> Iterator[Chunk]:
        raise NotImplementedError


def _require_file(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{what} {p} is not a file.")
    return p


def _torch_load(path: Path, what: str) -> Any:
    """A torch.save file loaded without running code: tensors, lists, dicts, strings, numbers.
    Tensors are memory-mapped where the file format allows it."""
    from .embedding import require_torch

    torch = require_torch("hf")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # a legacy (non-zip) file cannot be mapped; a broken one fails again below
            if "mmap" not in str(e) and "zip" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise SourceError("unsafe_pickle", f"{what} {path} holds Python objects other than tensors and lists, which vitrina will not unpickle "
                          f"(torch.load weights_only=True refused it: {first}). Re-save it as a plain tensor / list of strings.") from None  # fmt: skip
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise SourceError(
            "bad_file",
            f"{what} {path} could not be read as a torch.save file: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}",
        ) from None


def loc_iiif_id(url: str) -> str | None:
    """The IIIF identifier of a tile.loc.gov image URL (the 5th path segment from the end)."""
    split = iiif.split_image_url(url.strip())
    return split[0].rstrip("/").rsplit("/", 1)[-1] if split else None


class LocBetoReader(Reader):
    """The LoC maps paper's files: ``beto`` [N, D] + ``beto_idx`` (N image URLs), row i with row i;
    an optional ``p1_map_file_list.csv`` (p1_item_id, file_url, resource_url, segment_num) joined
    on the IIIF id of file_url. Item id: the IIIF id; image: the IIIF service at full size (fetched
    at the model's size when re-embedded)."""

    kind = "loc-beto"

    def __init__(
        self,
        beto: str | os.PathLike[str],
        beto_idx: str | os.PathLike[str],
        csv_path: str | os.PathLike[str] | None = None,
    ):
        import torch

        bp, ip = _require_file(beto, "beto"), _require_file(beto_idx, "beto_idx")
        self.files = [bp, ip] + ([_require_file(csv_path, "CSV")] if csv_path else [])
        self.source = f"import:loc-beto:{bp.resolve()}"
        tensor = _torch_load(bp, "beto")
        if isinstance(tensor, dict) and len(tensor) == 1:
            tensor = next(iter(tensor.values()))
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2 or not tensor.is_floating_point():
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise SourceError("bad_vectors", f"beto {bp} must hold one float tensor [N, D]; it holds {shape}.")
        urls = _torch_load(ip, "beto_idx")
        if not isinstance(urls, (list, tuple)) or not all(isinstance(u, str) for u in urls):
            raise SourceError(
                "bad_ids", f"beto_idx {ip} must hold a list of image URL strings; it holds {type(urls).__name__}."
            )
        if len(urls) != tensor.shape[0]:
            raise SourceError("length_mismatch", f"beto has {tensor.shape[0]:,} rows but beto_idx lists {len(urls):,} URLs: row i of one belongs to "
                              "row i of the other, so they cannot be paired. Use files saved together (the packing script skipped unreadable images).")  # fmt: skip
        self.tensor, self.urls = tensor, list(urls)
        self.total, self.dim = int(tensor.shape[0]), int(tensor.shape[1])
        self.csv: dict[str, tuple[str, ...]] = {}
        self.csv_columns: tuple[str, ...] = ()
        if csv_path:
            self._read_csv(self.files[2])

    def _read_csv(self, path: Path) -> None:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = tuple(next(reader, ()))
            if "file_url" not in header:
                raise SourceError(
                    "bad_csv",
                    f"{path} has no file_url column (expected p1_item_id, file_url, resource_url, segment_num).",
                )
            col = header.index("file_url")
            self.csv_columns = header
            for row in reader:
                key = loc_iiif_id(row[col]) if len(row) > col else None
                if key:
                    self.csv.setdefault(key, tuple(row))

    def item(self, url: str) -> Item:
        split = iiif.split_image_url(url.strip())
        if split is None:
            return Item(id=url, image=url, metadata={"file_url": url}, fingerprint=url, source=self.source)
        base = split[0].rstrip("/")
        key = base.rsplit("/", 1)[-1]
        metadata: dict[str, Any] = {"iiif_id": key, "file_url": url}
        row = self.csv.get(key)
        if row is not None:
            metadata.update({k: v for k, v in zip(self.csv_columns, row) if v not in ("", None) and k != "file_url"})
            if "segment_num" in metadata and str(metadata["segment_num"]).isdigit():
                metadata["segment_num"] = int(metadata["segment_num"])
            if metadata.get("resource_url"):
                metadata.setdefault("link", metadata["resource_url"])
        image = f"{base}/full/full/0/default.jpg"
        return Item(id=key, image=image, metadata=metadata, fingerprint=image, source=self.source)

    def chunks(self, start: int, size: int) -> Iterator[Chunk]:
        import torch

        for a in range(start, self.total, size):
            b = min(self.total, a + size)
            block = self.tensor[a:b]
            vectors = (
                block if block.dtype in (torch.float32, torch.float16, torch.float64) else block.float()
            ).numpy()  # a view of the map
            items, rows, bad = [], [], []
            for n in range(a, b):
                url = self.urls[n]
                if not url.strip():
                    bad.append((n, "", "empty URL in beto_idx"))
                    continue
                items.append(self.item(url))
                rows.append(n)
            yield Chunk(a, b, rows, items, vectors[np.array(rows, np.int64) - a] if bad else vectors, bad)


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise SourceError(
            "unsafe_pickle",
            f"{path} holds Python objects, which vitrina will not unpickle ({e}). Save a numeric array.",
        ) from None
    except OSError as e:
        raise SourceError("bad_file", f"{path} is not a readable .npy file: {e}") from None
    if not isinstance(array, np.ndarray):  # a zip: .npz, or a torch.save file
        getattr(array, "close", lambda: None)()
        raise SourceError("bad_file", f"{path} is not a .npy file (it is a zip archive: an .npz or a torch file?).")
    if array.ndim != 2 or array.dtype.kind != "f":
        raise SourceError(
            "bad_vectors", f"{path} must hold a float array [N, D]; it holds {array.dtype} {array.shape}."
        )
    return array


def _scalar_metadata(row: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    """Metadata from a parquet / CSV row: JSON-able scalars and lists of them; a ``metadata``
    column of JSON objects (what vitrina exports) is merged in."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in skip or value is None or value == "":
            continue
        if key == "metadata" and isinstance(value, str) and value.startswith("{"):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                out = {**parsed, **out}
                continue
        if isinstance(value, (str, int, bool)) or (isinstance(value, float) and np.isfinite(value)):
            out[key] = value
        elif (
            isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value) and len(value) <= 100
        ):
            out[key] = value
        elif hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    return out


def _id_and_image(
    row: dict[str, Any], id_column: str | None, image_column: str | None, fallback: str
) -> tuple[str, str]:
    item_id = (
        row.get(id_column) if id_column else next((row[c] for c in ID_COLUMNS if row.get(c) not in (None, "")), None)
    )
    image = (
        row.get(image_column)
        if image_column
        else next((row[c] for c in IMAGE_COLUMNS if isinstance(row.get(c), str) and row[c]), None)
    )
    image = str(image) if image not in (None, "") else ""
    if item_id in (None, ""):
        item_id = image or fallback
    return str(item_id), image


def _parquet_fingerprint(schema: Any) -> ModelFingerprint | None:
    raw = (schema.metadata or {}).get(META_KEY)
    if not raw:
        return None
    try:
        return ModelFingerprint.from_json(json.dumps(json.loads(raw)["fingerprint"]))
    except (ValueError, KeyError, TypeError):
        return None


def _pyarrow():  # type: ignore[no-untyped-def]
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError("Parquet needs pyarrow: pip install 'vitrina[import]'") from e
    return pyarrow


class ClipRetrievalReader(Reader):
    """clip-retrieval's output folder: img_emb/img_emb_K.npy with metadata/metadata_K.parquet
    (K = 0, 1, ...), row r of one shard's npy belonging to row r of its parquet. float16 is
    accepted. Id: the ``key`` column (else id, image_path, url); image: url (else image_path)."""

    kind = "clip-retrieval"

    def __init__(self, folder: str | os.PathLike[str]):
        pa = _pyarrow()
        root = Path(folder).expanduser()
        emb, meta = root / "img_emb", root / "metadata"
        if not emb.is_dir():
            raise ConfigError(
                f"{root} has no img_emb folder; clip-retrieval writes img_emb/*.npy and metadata/*.parquet."
            )
        shards = {_shard_number(p): p for p in emb.glob("*.npy")}
        metas = {_shard_number(p): p for p in meta.glob("*.parquet")} if meta.is_dir() else {}
        if not shards:
            raise ConfigError(f"{emb} holds no .npy files.")
        self.shards: list[tuple[Path, Path | None, np.ndarray, int]] = []  # npy, parquet, array, first row
        self.source = f"import:clip-retrieval:{root.resolve()}"
        row, dims = 0, set()
        self.fingerprint = None
        for k in sorted(shards):
            array = _load_npy(shards[k])
            pq_path = metas.get(k)
            if pq_path is not None:
                pf = pa.parquet.ParquetFile(pq_path)
                if pf.metadata.num_rows != len(array):
                    raise SourceError("length_mismatch", f"{shards[k].name} has {len(array):,} vectors but {pq_path.name} has {pf.metadata.num_rows:,} rows: "
                                      "row order pairs them, so they cannot be paired. Nothing was imported.")  # fmt: skip
                self.fingerprint = self.fingerprint or _parquet_fingerprint(pf.schema_arrow)
            elif metas:
                raise SourceError(
                    "missing_metadata",
                    f"{shards[k].name} has no metadata/{shards[k].stem.replace('img_emb', 'metadata')}.parquet.",
                )
            self.shards.append((shards[k], pq_path, array, row))
            dims.add(array.shape[1])
            row += len(array)
        if len(dims) != 1:
            raise SourceError("bad_vectors", f"The shards of {emb} have different dimensions: {sorted(dims)}.")
        self.total, self.dim = row, dims.pop()
        self.files = [p for s in self.shards for p in s[:2] if p is not None]

    def chunks(self, start: int, size: int) -> Iterator[Chunk]:
        pa = _pyarrow()
        for npy, pq_path, array, first in self.shards:
            n = len(array)
            if first + n <= start:
                continue
            batches = pa.parquet.ParquetFile(pq_path).iter_batches(batch_size=size) if pq_path else None
            offset = 0
            while offset < n:
                rows_in = min(size, n - offset)
                records = next(batches).to_pylist() if batches is not None else [{} for _ in range(rows_in)]
                rows_in = len(records)
                a = first + offset
                if a + rows_in > start:
                    skip = max(0, start - a)
                    items = []
                    for r in range(skip, rows_in):
                        item_id, image = _id_and_image(records[r], None, None, f"{npy.stem}:{offset + r}")
                        metadata = _scalar_metadata(
                            records[r],
                            {c for c in (*ID_COLUMNS, *IMAGE_COLUMNS) if records[r].get(c) in (item_id, image)},
                        )
                        items.append(
                            Item(
                                id=item_id,
                                image=image,
                                metadata=metadata,
                                fingerprint=image or item_id,
                                source=self.source,
                            )
                        )
                    yield Chunk(
                        a + skip,
                        a + rows_in,
                        list(range(a + skip, a + rows_in)),
                        items,
                        array[offset + skip : offset + rows_in],
                    )
                offset += rows_in


def _shard_number(path: Path) -> int:
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else 0


class ParquetReader(Reader):
    """One parquet file with a vector column (list or fixed-size list of floats), streamed in
    record batches. A row whose vector is missing or has another length is a bad row."""

    kind = "parquet"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        vector_column: str | None = None,
        id_column: str | None = None,
        image_column: str | None = None,
    ):
        pa = _pyarrow()
        self.path = _require_file(path, "Parquet file")
        self.files = [self.path]
        self.source = f"import:parquet:{self.path.resolve()}"
        try:
            self.pf = pa.parquet.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as e:
            raise SourceError("bad_file", f"{self.path} is not a readable parquet file: {e}") from None
        schema = self.pf.schema_arrow
        lists = [
            f.name
            for f in schema
            if pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_fixed_size_list(f.type)
        ]
        lists = [n for n in lists if pa.types.is_floating(schema.field(n).type.value_type)]
        if vector_column is None:
            named = [
                n
                for n in lists
                if n in ("vector", "embedding", "embeddings", "emb", "image_embedding", "clip_embedding")
            ]
            if len(named) == 1 or len(lists) == 1:
                vector_column = (named or lists)[0]
            else:
                raise ConfigError(
                    f"Say which column holds the vectors: --vector-column (float list columns: {', '.join(lists) or 'none'})."
                )
        if vector_column not in lists:
            raise ConfigError(
                f"{self.path} has no float list column {vector_column!r} (float list columns: {', '.join(lists) or 'none'})."
            )
        for given, what in ((id_column, "--id-column"), (image_column, "--image-column")):
            if given is not None and given not in schema.names:
                raise ConfigError(f"{self.path} has no column {given!r} ({what}); columns: {', '.join(schema.names)}.")
        self.vector_column, self.id_column, self.image_column = vector_column, id_column, image_column
        vtype = schema.field(vector_column).type
        self.total = self.pf.metadata.num_rows
        self.fingerprint = _parquet_fingerprint(schema)
        if pa.types.is_fixed_size_list(vtype):
            self.dim = vtype.list_size
        else:  # the most common length among the first rows
            first = next(self.pf.iter_batches(batch_size=1000, columns=[vector_column]), None)
            lengths = [len(v) for v in (first.column(0).to_pylist() if first is not None else []) if v is not None]
            if not lengths:
                raise SourceError("bad_vectors", f"The first rows of {self.path} have no vectors in {vector_column!r}.")
            self.dim = max(set(lengths), key=lengths.count)
        # Heavy columns (images as bytes, nested structs) are never read.
        self.columns = [f.name for f in schema if f.name == vector_column or not (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)
                        or pa.types.is_struct(f.type) or (f.name != vector_column and f.name in lists))]  # fmt: skip

    def chunks(self, start: int, size: int) -> Iterator[Chunk]:
        pa = _pyarrow()
        a = 0
        for batch in self.pf.iter_batches(batch_size=size, columns=self.columns):
            n = batch.num_rows
            if a + n <= start:
                a += n
                continue
            skip = max(0, start - a)
            batch = batch.slice(skip)
            col = batch.column(self.vector_column)
            valid = np.ones(len(col), bool)
            if pa.types.is_fixed_size_list(col.type):
                valid &= ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
                flat = col.flatten() if col.null_count == 0 else col.filter(pa.array(valid)).flatten()
                vectors = np.asarray(flat.to_numpy(zero_copy_only=False)).reshape(-1, self.dim)
            else:
                lengths = col.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False)
                valid &= lengths == self.dim
                vectors = np.asarray(col.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)).reshape(
                    -1, self.dim
                )
            rest = batch.drop_columns([self.vector_column]).to_pylist()
            items, rows, bad = [], [], []
            for r, record in enumerate(rest):
                row = a + skip + r
                item_id, image = _id_and_image(record, self.id_column, self.image_column, f"row{row}")
                if not valid[r]:
                    got = (
                        "no vector"
                        if col[r].as_py() is None
                        else f"{len(col[r].as_py())} dimensions, expected {self.dim}"
                    )
                    bad.append((row, item_id, got))
                    continue
                skip_cols = (
                    {self.id_column or "", self.image_column or ""}
                    | ({c for c in ID_COLUMNS if record.get(c) == item_id})
                    | ({c for c in IMAGE_COLUMNS if record.get(c) == image and image})
                )
                items.append(
                    Item(
                        id=item_id,
                        image=image,
                        metadata=_scalar_metadata(record, skip_cols),
                        fingerprint=image or item_id,
                        source=self.source,
                    )
                )
                rows.append(row)
            yield Chunk(a + skip, a + n, rows, items, vectors, bad)
            a += n


class NpyReader(Reader):
    """A [N, D] .npy (memory-mapped, never unpickled) and an ids file of N rows: .txt (one id per
    line; an http(s) URL or a file path is also the image), or .csv / .jsonl / .parquet with an
    id column, an image column and metadata columns."""

    kind = "npy"

    def __init__(
        self,
        vectors: str | os.PathLike[str],
        ids: str | os.PathLike[str],
        *,
        id_column: str | None = None,
        image_column: str | None = None,
    ):
        vp, ip = _require_file(vectors, "Vectors file"), _require_file(ids, "Ids file")
        self.files = [vp, ip]
        self.source = f"import:npy:{vp.resolve()}"
        self.array = _load_npy(vp)
        self.records = _read_records(ip)
        if len(self.records) != len(self.array):
            raise SourceError("length_mismatch", f"{vp.name} has {len(self.array):,} vectors but {ip.name} has {len(self.records):,} ids: "
                              "row order pairs them, so they cannot be paired. Nothing was imported.")  # fmt: skip
        self.id_column, self.image_column = id_column, image_column
        self.total, self.dim = len(self.array), int(self.array.shape[1])

    def chunks(self, start: int, size: int) -> Iterator[Chunk]:
        for a in range(start, self.total, size):
            b = min(self.total, a + size)
            items = []
            for n in range(a, b):
                record = self.records[n]
                item_id, image = _id_and_image(record, self.id_column, self.image_column, f"row{n}")
                if not image and (item_id.startswith(("http://", "https://")) or os.path.isabs(item_id)):
                    image = item_id
                skip = {self.id_column or "", self.image_column or ""} | {
                    c for c in (*ID_COLUMNS, *IMAGE_COLUMNS) if record.get(c) in (item_id, image)
                }
                items.append(
                    Item(
                        id=item_id,
                        image=image,
                        metadata=_scalar_metadata(record, skip),
                        fingerprint=image or item_id,
                        source=self.source,
                    )
                )
            yield Chunk(a, b, list(range(a, b)), items, self.array[a:b])


def _read_records(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return list(_pyarrow().parquet.read_table(path).to_pylist())
    if suffix in (".jsonl", ".ndjson"):
        out = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError:
                        raise SourceError("bad_ids", f"{path} line {n} is not JSON.") from None
                    out.append(row if isinstance(row, dict) else {"id": str(row)})
        return out
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8-sig", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    with path.open(encoding="utf-8") as f:
        return [{"id": line.rstrip("\r\n")} for line in f if line.strip()]


def open_reader(kind: str, paths: Sequence[str], **options: Any) -> Reader:
    """The reader for ``kind`` (see KINDS) over ``paths``; options: csv_path, vector_column,
    id_column, image_column."""
    options = {k: v for k, v in options.items() if v is not None}
    if kind == "loc-beto":
        if len(paths) != 2:
            raise ConfigError("loc-beto takes two files: BETO (the tensor) and BETO_IDX (the URL list).")
        return LocBetoReader(paths[0], paths[1], options.get("csv_path"))
    if kind == "clip-retrieval":
        return ClipRetrievalReader(paths[0])
    if kind == "parquet":
        return ParquetReader(
            paths[0], **{k: options[k] for k in ("vector_column", "id_column", "image_column") if k in options}
        )
    if kind == "npy":
        if len(paths) != 2:
            raise ConfigError("npy takes two files: VECTORS.npy and an ids file (--ids).")
        return NpyReader(paths[0], paths[1], **{k: options[k] for k in ("id_column", "image_column") if k in options})
    raise ConfigError(f"Unknown import kind {kind!r}; known: {', '.join(KINDS)}.")


# -- the import itself --------------------------------------------------------------------------


def import_vectors(
    coll: Collection,
    reader: Reader,
    *,
    model: str | None = None,
    space: str | None = None,
    chunk: int = 20_000,
    restart: bool = False,
    load_model: bool = True,
    progress: ProgressCallback | None = None,
    on_bad: Callable[[int, str, str], None] | None = None,
) -> ImportReport:
    """Import ``reader``'s rows into ``coll``: items first, then their vectors, chunk by chunk,
    each chunk's vectors committed together with the cursor. Run again after a kill: it resumes
    after the last committed chunk (``restart`` starts over; rows are upserts either way)."""
    from .embedding import space_name_for

    started = time.perf_counter()
    fingerprint = declare_model(model, reader.dim, from_file=reader.fingerprint, load=load_model)
    if space is None:
        same = [s.name for s in coll.spaces() if s.fingerprint.compatible(fingerprint)]
        space = same[0] if same else space_name_for(fingerprint.spec)
    report = ImportReport(collection=coll.name, kind=reader.kind, source=reader.source, space=space, model=fingerprint.spec,
                          verified=not fingerprint.provisional, rows=reader.total)  # fmt: skip
    key = f"import:{space}:{reader.identity()}"
    state = json.loads(coll.state(key) or "{}") if not restart else {}
    start = int(state.get("row", 0))
    report.resumed_at, report.bad = start, int(state.get("bad", 0))
    if state.get("done"):
        report.already_done = True
        report.seconds = time.perf_counter() - started
        return report
    seen: dict[str, int] = {}

    def bad(row: int, item_id: str, reason: str) -> None:
        report.bad += 1
        if len(report.bad_rows) < 100:
            report.bad_rows.append({"row": row, "id": item_id, "reason": reason})
        if on_bad is not None:
            on_bad(row, item_id, reason)

    with coll.writer():
        for part in reader.chunks(start, chunk):
            for row, item_id, reason in part.bad:
                bad(row, item_id, reason)
            keep = []
            for n, item in enumerate(part.items):
                first = seen.setdefault(item.id, part.rows[n])
                if first != part.rows[n]:
                    bad(part.rows[n], item.id, f"duplicate id (first at row {first})")
                else:
                    keep.append(n)
            items = [part.items[n] for n in keep]
            existing = coll.items([i.id for i in items])
            if existing:  # keep what an earlier import or enrichment added; the source's values win
                items = [
                    Item(**{**asdict(i), "metadata": {**existing[i.id].metadata, **i.metadata}})
                    if i.id in existing
                    else i
                    for i in items
                ]
            vectors = np.asarray(part.vectors[keep] if len(keep) != len(part.items) else part.vectors, np.float32)
            if vectors.shape[1:] != (fingerprint.dim,):
                raise SourceError(
                    "bad_vectors",
                    f"{reader.source}: rows {part.start}-{part.end} have {vectors.shape[1:]} dimensions, expected {fingerprint.dim}.",
                )
            with np.errstate(over="ignore", invalid="ignore"):
                norms = np.linalg.norm(vectors, axis=1)
            good = np.isfinite(norms) & (norms >= 1e-12)
            for n in np.flatnonzero(~good).tolist():
                bad(
                    part.rows[keep[n]],
                    items[n].id,
                    "zero vector" if np.isfinite(norms[n]) else "not finite (NaN or infinity)",
                )
            ok = np.flatnonzero(good)
            ids = [items[n].id for n in ok]
            coll.add_items([items[n] for n in ok])
            cursor = json.dumps({"row": part.end, "bad": report.bad, "done": part.end >= reader.total})

            source_rows = [part.rows[keep[n]] for n in ok]  # the import re-checks; nothing is refused there now

            def refused(i: int, item_id: str, reason: str, rows: list[Any] = source_rows) -> None:
                bad(rows[i], item_id, reason)

            coll.import_vectors(ids, vectors[ok] if len(ok) != len(vectors) else vectors, fingerprint=fingerprint, space=space, batch=max(len(ids), 1),
                                on_bad=refused, checkpoint=(key, cursor))  # fmt: skip
            report.imported += len(ids)
            if progress:
                progress(part.end, reader.total)
    report.seconds = time.perf_counter() - started
    return report


# -- export -------------------------------------------------------------------------------------


def export_space(
    coll: Collection,
    out: str | os.PathLike[str],
    *,
    format: str = "parquet",
    space: str | None = None,
    chunk: int = 50_000,
    shard_rows: int = 1_000_000,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Write a space's vectors with ids, image URLs, captions and metadata (JSON) so other tools
    (and ``import_vectors``) can read them; the model fingerprint goes into the parquet schema
    metadata under ``vitrina``.

    ``parquet``: one file, columns id, image, caption, metadata, vector (fixed-size list of float32).
    ``clip-retrieval``: a folder with img_emb/img_emb_K.npy (float32) and metadata/metadata_K.parquet
    (key, url, caption, metadata), ``shard_rows`` rows per shard, plus vitrina.json.
    Written beside ``out`` and renamed into place at the end: a killed export leaves nothing half-written."""
    import shutil
    import tempfile

    from ._version import __version__

    pa = _pyarrow()
    if format not in FORMATS:
        raise ConfigError(f"Unknown export format {format!r}; known: {', '.join(FORMATS)}.")
    sp = coll.space(space)
    dim, total = sp.fingerprint.dim, sp.live
    info = {
        "fingerprint": json.loads(sp.fingerprint.to_json()),
        "space": sp.name,
        "collection": coll.name,
        "rows": total,
        "vitrina": __version__,
    }
    meta = {META_KEY: json.dumps(info).encode()}
    target = Path(out).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    if format == "clip-retrieval" and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} exists and is not an empty folder; give a new folder for the export.")
    names = ("key", "url") if format == "clip-retrieval" else ("id", "image")
    schema = pa.schema([(names[0], pa.string()), (names[1], pa.string()), ("caption", pa.string()), ("metadata", pa.string())]
                       + ([("vector", pa.list_(pa.float32(), dim))] if format == "parquet" else []), metadata=meta)  # fmt: skip

    def table(ids: list[str], vectors: np.ndarray | None) -> Any:
        items = coll.items(ids)
        rows = [items.get(i) for i in ids]
        columns = [pa.array(ids, pa.string()), pa.array([r.image if r else "" for r in rows], pa.string()),
                   pa.array([str(r.metadata.get("caption", "")) if r else "" for r in rows], pa.string()),
                   pa.array([json.dumps(r.metadata if r else {}, ensure_ascii=False) for r in rows], pa.string())]  # fmt: skip
        if vectors is not None:
            columns.append(
                pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, np.float32).ravel()), dim)
            )
        return pa.Table.from_arrays(columns, schema=schema)

    done = 0
    if format == "parquet":
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            with pa.parquet.ParquetWriter(tmp, schema) as writer:
                for ids, vectors in coll.iter_vectors(sp.name, chunk=chunk):
                    writer.write_table(table(ids, vectors))
                    done += len(ids)
                    if progress:
                        progress(done, total)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return {**info, "format": format, "out": str(target), "rows": done}
    tmpdir = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        (tmpdir / "img_emb").mkdir()
        (tmpdir / "metadata").mkdir()
        shard, in_shard, array, writer = 0, 0, None, None
        for ids, vectors in coll.iter_vectors(sp.name, chunk=min(chunk, shard_rows)):
            pos = 0
            while pos < len(ids):
                if array is None:
                    rows = min(shard_rows, total - done)
                    array = np.lib.format.open_memmap(
                        tmpdir / "img_emb" / f"img_emb_{shard}.npy", mode="w+", dtype=np.float32, shape=(rows, dim)
                    )
                    writer = pa.parquet.ParquetWriter(tmpdir / "metadata" / f"metadata_{shard}.parquet", schema)
                take = min(len(ids) - pos, len(array) - in_shard)
                array[in_shard : in_shard + take] = vectors[pos : pos + take]
                writer.write_table(table(ids[pos : pos + take], None))  # type: ignore[union-attr]
                in_shard, pos, done = in_shard + take, pos + take, done + take
                if in_shard == len(array):
                    array.flush()
                    writer.close()  # type: ignore[union-attr]
                    shard, in_shard, array, writer = shard + 1, 0, None, None
            if progress:
                progress(done, total)
        if array is not None or writer is not None:
            raise SourceError(
                "changed",
                f"Space {sp.name!r} changed during the export ({done} of {total} rows read); run the export again.",
            )
        (tmpdir / "vitrina.json").write_text(json.dumps({**info, "shards": shard}, indent=2))
        if target.exists():
            target.rmdir()
        os.replace(tmpdir, target)
    finally:
        if tmpdir.exists():
            shutil.rmtree(tmpdir, ignore_errors=True)
    return {**info, "format": format, "out": str(target), "rows": done, "shards": shard}
