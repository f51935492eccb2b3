"""Hard CLIP-like clouds for the recall-target benchmarks (importable): heavy-tailed cluster
sizes and diffuse clusters, as in real collections where one series dominates.

Like ``synthetic.CloudModel`` (a shared mean direction, a latent subspace, isotropic noise, text
queries off the cloud by a fixed gap), but

- cluster sizes follow a power law (``sizes ∝ rank^-alpha``: with 2,000 clusters and alpha 1.1
  the largest holds ~14% of the images, the smallest a few);
- each cluster has its own spread, log-uniform over ``spread`` (0.4–1.6 × the latent scale): some
  are tight series, some diffuse subjects that overlap their neighbours;
- text-like queries aim at clusters chosen half by size (users ask about what there is a lot of)
  and half uniformly (and about the rare subjects), with a target point drawn from that cluster's
  own spread, so a query about the dominant diffuse series has true neighbours spread over many
  IVF lists.
"""

from __future__ import annotations

import numpy as np
from synthetic import CloudModel, _unit


class HardCloud(CloudModel):
    def __init__(self, dim: int = 512, clusters: int = 2000, latent: int = 192, seed: int = 0, alpha: float = 1.1,
                 spread: tuple[float, float] = (0.4, 1.6)):  # fmt: skip
        super().__init__(dim, clusters, latent, seed)
        rng = np.random.default_rng(seed + 100)
        weights = np.arange(1, clusters + 1, dtype=np.float64) ** -alpha
        self.weights = rng.permutation(weights / weights.sum())
        self.spreads = np.exp(rng.uniform(np.log(spread[0]), np.log(spread[1]), clusters)).astype(np.float32)

    def _pick(self, rng: np.random.Generator, n: int, uniform_share: float = 0.0) -> np.ndarray:
        by_size = rng.choice(len(self.weights), n, p=self.weights)
        uniform = rng.integers(0, len(self.weights), n)
        return np.where(rng.random(n) < uniform_share, uniform, by_size)

    def _latent_of(self, rng: np.random.Generator, picked: np.ndarray) -> np.ndarray:
        lat = self.centres.shape[1]
        noise = rng.standard_normal((len(picked), lat)).astype(np.float32) / np.sqrt(lat)
        return self.centres[picked] + self.spreads[picked, None] * noise

    def _latent(self, rng: np.random.Generator, n: int) -> np.ndarray:  # images: sizes by the power law
        return self._latent_of(rng, self._pick(rng, n))

    def texts(self, n: int, seed: int = 2) -> np.ndarray:
        rng = np.random.default_rng(seed)
        lat = self._latent_of(rng, self._pick(rng, n, uniform_share=0.5)) @ self.basis
        noise = rng.standard_normal((n, self.dim), dtype=np.float32) * (0.6 / np.sqrt(self.dim))
        return _unit(0.35 * self.mean + 1.1 * self.gap + lat + noise)
