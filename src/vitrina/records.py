"""Small immutable records passed between the stages."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# The revision (and preprocessing) recorded for imported vectors whose model could not be loaded
# at import time: the first query that loads the declared model pins its real fingerprint.
PROVISIONAL = "unverified"


@dataclass(frozen=True)
class ModelFingerprint:
    """What makes two vectors comparable: same model, same weights, same preprocessing."""

    spec: str  # e.g. "hf:openai/clip-vit-base-patch32" or "mini"
    revision: str  # commit hash, weights digest or version string
    dim: int
    preprocessing: str  # e.g. "resize-shortest 224 bicubic, center-crop 224, mean/std ..."
    modalities: tuple[str, ...] = ("image", "text")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelFingerprint:
        data = json.loads(text)
        data["modalities"] = tuple(data.get("modalities", ("image", "text")))
        return cls(**data)

    @property
    def provisional(self) -> bool:
        """Declared for imported vectors, not yet checked against the loaded model."""
        return self.revision == PROVISIONAL

    def compatible(self, other: ModelFingerprint) -> bool:
        """The one rule for "same model": vectors of the two can be compared. The spec may differ
        (a hub id and a local copy of the same weights are the same model). A provisional
        fingerprint (imported vectors, model not loaded yet) matches the same spec and dimension."""
        if self.provisional or other.provisional:
            return (self.spec, self.dim) == (other.spec, other.dim)
        return (self.revision, self.dim, self.preprocessing) == (other.revision, other.dim, other.preprocessing)

    def describe(self) -> str:
        if self.provisional:
            return f"{self.spec} ({self.dim} dims, declared at import, not yet verified)"
        return f"{self.spec} ({self.dim} dims, revision {self.revision[:12]})"


@dataclass(frozen=True)
class Item:
    """One image of a collection: as a source yields it, or as the collection stores it (then
    with its indexing ``status``, the failure ``reason``/``detail``, and classifier ``tags``)."""

    id: str  # stable across runs: a relative path, a canvas id + region, ...
    image: str  # where the pixels are: an absolute path or a URL
    metadata: dict[str, Any] = field(default_factory=dict)
    context: str = ""  # nearby text (OCR, caption) kept for display and text search later
    fingerprint: str = ""  # changes when the image changes (size + mtime, ETag, ...)
    source: str = ""  # the source spec that produced it, e.g. "folder:/data/scans"
    status: str = "pending"  # pending | ok | failed
    reason: str | None = None
    detail: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)  # name -> {"value", "score", "classifier"}


@dataclass(frozen=True)
class Region:
    """The part of an item that matched a query best (``vitrina.regions``): a box in the item's
    source pixels and the score of that box's own vector."""

    x: int
    y: int
    w: int
    h: int
    score: float

    def fragment(self) -> str:
        """The W3C media fragment IIIF uses for a part of a canvas: ``xywh=x,y,w,h``."""
        return f"xywh={self.x},{self.y},{self.w},{self.h}"

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h, "score": round(self.score, 6)}


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float
    image: str
    metadata: dict[str, Any] = field(default_factory=dict)
    rank: int = 0
    snippet: tuple[tuple[str, bool], ...] = ()  # keyword searches: the best passage, (text, matched word?) segments
    region: Region | None = None  # where on the item the match is, when a region of it ranked it
    words: tuple[dict[str, Any], ...] = ()  # keyword searches: matched words read from the image (OCR), with boxes

    def to_dict(self) -> dict[str, Any]:
        out = {
            "rank": self.rank,
            "id": self.id,
            "score": round(self.score, 6),
            "image": self.image,
            "metadata": self.metadata,
        }
        if self.snippet:
            out["snippet"] = [{"text": t, "match": m} for t, m in self.snippet]
        if self.region is not None:
            out["region"] = self.region.to_dict()
        if self.words:
            out["words"] = [dict(w) for w in self.words]
        return out
