"""What every importer shares: the chunk and report records, the declared model, the reader
base class, and the safe loaders and column conventions of the file formats."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelError, SourceError
from ..records import PROVISIONAL, Item, ModelFingerprint

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
    from ..embedding import get_embedder, normalise_spec

    if spec is None:
        if from_file is None:
            raise ConfigError(
                "Say which model made these vectors: --model hf:ORG/NAME (e.g. hf:openai/clip-vit-base-patch32), so queries are embedded with it."
            )
        spec = from_file.spec
    spec = normalise_spec(spec)
    if from_file is not None and from_file.spec == spec and from_file.dim == dim:
        return from_file
    known = declared_dim(spec)
    if known is not None and known != dim:
        raise ConfigError(
            f"The vectors have {dim} dimensions but {spec} makes {known}: they cannot have come from this model. Check --model."
        )
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


def declared_dim(spec: str) -> int | None:
    """The dimension model ``spec`` makes, read without loading it: mini's heads file, a CLIP
    checkpoint's config.json (a local directory or the hub cache). None when not known here."""
    from ..embedding import parse_spec

    backend, name = parse_spec(spec)
    try:
        if backend == "mini":
            from ..embedding.mini import HEADS

            with open(HEADS, "rb") as f:
                header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
            return int(header["image.weight"]["shape"][0])
        if backend == "hf":
            config = Path(name) / "config.json"
            if not config.is_file():
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(name, "config.json")
                if not isinstance(cached, str):
                    return None
                config = Path(cached)
            cfg = json.loads(config.read_text())
            return int(cfg["projection_dim"]) if cfg.get("model_type") == "clip" and "projection_dim" in cfg else None
    except (OSError, ValueError, KeyError, TypeError, ImportError):
        return None
    return None


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


def require_file(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{what} {p} is not a file.")
    return p


def torch_load(path: Path, what: str) -> Any:
    """A torch.save file loaded without running code: tensors, lists, dicts, strings, numbers.
    Tensors are memory-mapped where the file format allows it."""
    from ..embedding import require_torch

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


def npy_problem(path: Path) -> str | None:
    """What is wrong with a .npy file's header or length, read before numpy maps it (None: it
    looks whole, or is not a .npy file at all: ``np.load`` says what it is)."""
    fmt = np.lib.format
    try:
        with path.open("rb") as f:
            if f.read(6) != b"\x93NUMPY":
                return None
            f.seek(0)
            version = fmt.read_magic(f)
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = reader(f, max_header_size=100_000)
            data_at, size = f.tell(), path.stat().st_size
    except (ValueError, OSError, SyntaxError, TypeError) as e:
        return f"{path} has a damaged .npy header ({str(e)[:200]}); re-export it"
    if dtype.hasobject:
        return None  # np.load refuses it: "holds Python objects"
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if data_at + need > size:
        dims = " x ".join(f"{d:,}" for d in shape) or "1"
        return (f"{path} is truncated: its header promises {dims} {dtype} values ({need:,} bytes of data) but the file holds "
                f"{max(0, size - data_at):,}; copy or export it again")  # fmt: skip
    return None


def load_npy(path: Path) -> np.ndarray:
    problem = npy_problem(path)
    if problem:
        raise SourceError("bad_file", problem)
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


MAX_NESTING = 32  # levels of lists and objects kept from a ``metadata`` column's JSON


def nesting(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (0: a scalar), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth + 1 > MAX_NESTING:
                return depth + 1
            deepest = max(deepest, depth + 1)
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def scalar_metadata(row: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    """Metadata from a parquet / CSV row: JSON-able scalars and lists of them; a ``metadata``
    column of JSON objects (what vitrina exports) is merged in."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in skip or value is None or value == "":
            continue
        if key == "metadata" and isinstance(value, str) and value.startswith("{"):
            try:
                parsed = json.loads(value)
            except (ValueError, RecursionError):  # RecursionError: nested thousands deep
                parsed = None
            if isinstance(parsed, dict) and nesting(parsed) <= MAX_NESTING:
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


def id_and_image(
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
        if id_column or any(c in row for c in ID_COLUMNS):
            return "", image  # the row has an id column but no id: a bad row, not row<N> (which may exist)
        item_id = image or fallback
    return str(item_id), image


def parquet_fingerprint(schema: Any) -> ModelFingerprint | None:
    raw = (schema.metadata or {}).get(META_KEY)
    if not raw:
        return None
    try:
        return ModelFingerprint.from_json(json.dumps(json.loads(raw)["fingerprint"]))
    except (ValueError, KeyError, TypeError):
        return None


def require_pyarrow():  # type: ignore[no-untyped-def]
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError("Parquet needs pyarrow: pip install 'vitrina[import]'") from e
    return pyarrow
