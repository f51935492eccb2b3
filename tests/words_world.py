"""A collection where words and pictures each see part of the truth (for keyword/fused evaluation).

For each topic word, the items about it are of three kinds: pictured and named in their text
(A), named but poorly pictured (B: a faint, cluttered scan), pictured but not named (C: the OCR
missed the caption). Beside them, items that are not about it: named but picturing something else
(D: a place name, a passing mention) and look-alikes that are not named (E). CLIP finds A and C
(and is fooled by E), the words find A and B (and are fooled by D): only together do they find
all three. Image vectors are drawn around a concept vector per topic; the query embedder maps a
topic word to its concept, and any other text (Norwegian, say) to an unrelated vector.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from vitrina import Item, ModelFingerprint, open_collection
from vitrina.collection import Collection

DIM = 32
TOPICS = [
    "whale",
    "ship",
    "lighthouse",
    "church",
    "bridge",
    "horse",
    "mountain",
    "harbour",
    "fish",
    "portrait",
    "tree",
    "windmill",
]
FILLER = "the of and plate page printed engraved volume chapter figure drawn after nature from".split()
FP = ModelFingerprint(spec="hf:test/words", revision="words-1", dim=DIM, preprocessing="none")


class WordsEmbedder:
    """Topic words to their concept vectors; any other text to a fixed unrelated vector."""

    min_side = 8

    def __init__(self, concepts: dict[str, np.ndarray]):
        self.fingerprint = FP
        self.concepts = concepts

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            if t.strip().lower() in self.concepts:
                out.append(self.concepts[t.strip().lower()])
            else:
                v = np.random.default_rng(
                    int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
                ).standard_normal(DIM)
                out.append(v / np.linalg.norm(v))
        return np.stack(out).astype(np.float32)


def build(path: Path, seed: int = 0, *, background: int = 200) -> tuple[Collection, list[tuple[str, dict[str, float]]]]:
    """The collection (opened with its query embedder) and judged queries: one per topic word."""
    rng = np.random.default_rng(seed)
    concepts = {t: v / np.linalg.norm(v) for t, v in zip(TOPICS, rng.standard_normal((len(TOPICS), DIM)))}

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    def noise(scale: float) -> np.ndarray:
        return rng.standard_normal(DIM) * scale / np.sqrt(DIM)

    def text(*words: str) -> str:
        body = list(rng.choice(FILLER, 12)) + list(words)
        rng.shuffle(body)
        return " ".join(body)

    items: list[Item] = []
    vectors: list[np.ndarray] = []
    judged: dict[str, dict[str, float]] = {t: {} for t in TOPICS}
    for t in TOPICS:
        others = [o for o in TOPICS if o != t]
        kinds = [("A", 4), ("B", 4), ("C", 4), ("D", 6), ("E", 6)]
        for kind, n in kinds:
            for j in range(n):
                other = others[int(rng.integers(len(others)))]  # a word, never a picture: no item pictures two topics
                clutter = unit(rng.standard_normal(DIM))  # what else is in the picture (no topic)
                if kind == "A":
                    v, words = concepts[t] + noise(0.8), (t, t)
                elif kind == "B":
                    v, words = 0.3 * concepts[t] + clutter + noise(0.8), (t, t)
                elif kind == "C":
                    v, words = concepts[t] + noise(0.8), ()
                elif kind == "D":
                    v, words = clutter + noise(0.8), (t,)
                else:
                    v, words = 0.8 * concepts[t] + 0.6 * clutter + noise(0.8), (other,)
                item_id = f"{t}-{kind}{j}"
                items.append(Item(id=item_id, image=f"/scans/{item_id}.jpg", fingerprint="1", source="words", metadata={"title": f"Plate {len(items)}"},
                                  context=text(*words)))  # fmt: skip
                vectors.append(unit(v))
                if kind in "ABC":
                    judged[t][item_id] = 1.0
    for b in range(background):
        items.append(
            Item(
                id=f"bg-{b}",
                image=f"/scans/bg-{b}.jpg",
                fingerprint="1",
                source="words",
                metadata={"title": f"Plate {len(items)}"},
                context=text(),
            )
        )
        vectors.append(unit(rng.standard_normal(DIM)))
    coll = open_collection(path, create=True, embedder=WordsEmbedder(concepts))
    with coll.writer():
        coll.add_items(items)
        coll.import_vectors(
            [it.id for it in items], np.stack(vectors).astype(np.float32), fingerprint=FP, space="words"
        )
    return coll, list(judged.items())
