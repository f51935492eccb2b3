"""CLIP-like synthetic vectors and text-like queries for the ANN benchmarks (importable).

Image vectors: a shared mean direction (CLIP image embeddings sit in a narrow cone), a cluster
centre and a within-cluster offset drawn from a 64-dimensional latent subspace, plus isotropic
noise, normalised. Text-like queries sit *off* that cloud, as CLIP text embeddings do (the
"modality gap"): a fixed offset direction, plus the latent part of a random target image, plus
noise, normalised. Their best cosines to the images are ~0.3-0.5, like real text->image scores,
where an image-like query (a stored vector plus a little noise) has ~0.9.
"""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class CloudModel:
    def __init__(self, dim: int = 512, clusters: int = 2000, latent: int = 192, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim, self.seed = dim, seed
        self.mean = _unit(rng.standard_normal(dim))
        self.basis = _unit(rng.standard_normal((latent, dim)))  # rows: latent directions
        self.centres = rng.standard_normal((clusters, latent)).astype(np.float32) / np.sqrt(latent)
        gap = rng.standard_normal(dim)
        self.gap = _unit(gap - (gap @ self.mean) * self.mean)  # the text-image offset, orthogonal to the image mean

    def _latent(self, rng: np.random.Generator, n: int) -> np.ndarray:
        c = self.centres[rng.integers(0, len(self.centres), n)]
        return c + 0.8 * rng.standard_normal((n, self.centres.shape[1])).astype(np.float32) / np.sqrt(
            self.centres.shape[1]
        )

    def images(self, n: int, seed: int = 1, chunk: int = 200_000) -> np.ndarray:
        """(n, dim) unit image-like vectors, generated in chunks (10M fit without a float64 copy)."""
        out = np.empty((n, self.dim), np.float32)
        rng = np.random.default_rng(seed)
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            lat = self._latent(rng, m) @ self.basis
            noise = rng.standard_normal((m, self.dim), dtype=np.float32) * (0.7 / np.sqrt(self.dim))
            out[s : s + m] = _unit(0.9 * self.mean + lat + noise)
        return out

    def texts(self, n: int, seed: int = 2) -> np.ndarray:
        """(n, dim) text-like queries: off the image cloud by a fixed offset, plus noise."""
        rng = np.random.default_rng(seed)
        lat = self._latent(rng, n) @ self.basis
        noise = rng.standard_normal((n, self.dim), dtype=np.float32) * (0.6 / np.sqrt(self.dim))
        return _unit(0.35 * self.mean + 1.1 * self.gap + lat + noise)

    def image_queries(self, images: np.ndarray, n: int, seed: int = 3) -> np.ndarray:
        rng = np.random.default_rng(seed)
        picked = images[rng.integers(0, len(images), n)]
        return _unit(picked + rng.standard_normal(picked.shape, dtype=np.float32) * (0.2 / np.sqrt(self.dim)))


def exact_top(images: np.ndarray, queries: np.ndarray, k: int = 10, chunk: int = 100_000) -> np.ndarray:
    """The exact top-k rows per query (ground truth), chunked over the images."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for s in range(0, len(images), chunk):
        sc = queries @ images[s : s + chunk].T
        kk = min(k, sc.shape[1])
        part = np.argpartition(-sc, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(sc, part, 1)], 1)
        best_i = np.concatenate([best_i, part + s], 1)
        keep = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))
