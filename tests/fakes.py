"""A numpy embedder for tests of query logic: no torch, deterministic, real images in and out."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from vitrina.records import ModelFingerprint

FAKE_SPEC = "hf:fake/numpy"  # a spec the model parser accepts; Collection.index uses the given embedder for it


class FakeEmbedder:
    """Texts map to fixed random unit vectors (by hash); images to a fixed random projection of
    their 8x8 thumbnail, so the same picture always gets the same vector and similar ones are close."""

    min_side = 8

    def __init__(self, dim: int = 16):
        self.fingerprint = ModelFingerprint(spec=FAKE_SPEC, revision="fake-1", dim=dim, preprocessing="8x8 thumbnail")
        self._projection = np.random.default_rng(0).standard_normal((8 * 8 * 3, dim)).astype(np.float32)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return (np.asarray(image.convert("RGB").resize((8, 8)), np.float32) / 255.0 - 0.5).transpose(2, 0, 1)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        out = pixels.reshape(len(pixels), -1) @ self._projection
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = np.stack(
            [
                np.random.default_rng(
                    int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
                ).standard_normal(self.fingerprint.dim)
                for t in texts
            ]
        )
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)
