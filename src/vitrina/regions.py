"""Regions: parts of a large image embedded on their own, so that a detail a few pixels wide at
the model's input size (a sea monster in a map's cartouche) can be found, and shown where it is.

The data model (docs/regions.md): a region belongs to an item; it has a box (x, y, w, h in the
item's source pixels) and its own vector, a row of the space's vector file like the whole image's,
mapped to the item by the ``regions`` table (store/regions.py). So every search index (exact, ANN,
Qdrant) ranks region rows like any other, filters on the item apply to its regions, and
``vitrina.region_search`` collapses the rows to one hit per item above the index protocol.

The policy (``RegionPolicy``) says which boxes to cut: ``off``; ``grid``: multi-scale grids with
overlap on every image; ``auto``: only where the image is large (its shorter side at least
``min_short`` source pixels), region proposals found in the image itself (``vitrina.proposals``:
dense patches of ink on paper) and a coarse grid, within the cap (measured against grids alone in
benchmarks/regions_gain.py: docs/regions.md). The grids are aspect-aware (a long strip gets more tiles along
its length), and at most ``cap`` boxes per image. The policy's ``key`` is recorded with each item's
regions, so changing it re-cuts them on the next run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from PIL import Image

from .errors import ConfigError

__all__ = ["DETAIL_RE", "MODES", "RegionPolicy", "grid_boxes", "parse_detail"]

MODES = ("off", "auto", "grid")
Box = tuple[int, int, int, int]
AUTO_SCALES = (2,)  # --regions auto: a coarse grid ...
AUTO_PROPOSALS = 8  # ... after this many proposals (benchmarks/regions_gain.py: 16 found no more)
PROPOSAL_SCALE = 6  # proposals as small as 1/6 of the shorter side still get the model's input size
DETAIL_RE = re.compile(r"^(?P<item>.+)#xywh=(?P<x>\d+),(?P<y>\d+),(?P<w>\d+),(?P<h>\d+)$")


@dataclass(frozen=True)
class RegionPolicy:
    mode: str = "off"
    min_short: int = 896  # auto: cut images whose shorter side has at least this many source pixels
    scales: tuple[int, ...] = (2, 3)  # tiles across the shorter side, one grid per scale
    overlap: float = 0.25  # of a tile, between neighbours
    cap: int = 32  # boxes per image at most
    proposals: int = 0  # boxes found in the image (vitrina.proposals), before the grids

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--regions must be one of {', '.join(MODES)}, not {self.mode!r}.")
        if (not 1 <= self.cap <= 256 or not self.scales or min(self.scales) < 1 or not 0 <= self.overlap < 0.9
                or not 0 <= self.proposals <= self.cap):  # fmt: skip
            raise ConfigError(f"Region policy out of range: {self}.")

    @classmethod
    def parse(cls, mode: str | None) -> RegionPolicy:
        """The policy a mode names: ``auto`` is proposals + a coarse grid (the best measured)."""
        if mode == "auto":
            return cls("auto", scales=AUTO_SCALES, proposals=AUTO_PROPOSALS)
        return cls(mode or "off")

    @property
    def on(self) -> bool:
        return self.mode != "off"

    @property
    def key(self) -> str:
        """What the regions of an item were cut with (recorded beside the item's fingerprint)."""
        if not self.on:
            return "off"
        scales = "+".join(map(str, self.scales))
        floor = f"min{self.min_short}" if self.mode == "auto" else "all"
        found = f"p{self.proposals}+" if self.proposals else ""
        return f"{found}grid:{scales}:o{self.overlap:g}:cap{self.cap}:{floor}"

    def to_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "min_short": self.min_short, "scales": list(self.scales), "overlap": self.overlap,
                "cap": self.cap, "proposals": self.proposals, "key": self.key}  # fmt: skip

    def applies(self, width: int, height: int) -> bool:
        if self.mode == "grid":
            return min(width, height) >= 2
        return self.mode == "auto" and min(width, height) >= self.min_short

    def boxes(self, width: int, height: int, image: Image.Image | None = None) -> list[Box]:
        """The boxes to cut from an image of this size (source pixels); none if it is not cut.
        ``image``: the decoded image (any scale), where proposals are looked for."""
        if not self.applies(width, height):
            return []
        grids = [grid_boxes(width, height, s, self.overlap) for s in sorted(self.scales)]
        out: list[Box] = []
        if self.proposals and image is not None:
            from .proposals import propose

            sx, sy = width / image.width, height / image.height
            for x, y, w, h in propose(image, self.proposals):
                box = (round(x * sx), round(y * sy), max(1, round(w * sx)), max(1, round(h * sy)))
                if box not in out:
                    out.append(box)
        for grid in grids:
            room = self.cap - len(out)
            if room <= 0:
                break
            if len(grid) > room:  # the finest grid that does not fit: evenly thinned
                step = len(grid) / room
                grid = [grid[int(k * step)] for k in range(room)]
            out.extend(b for b in grid if b not in out)
        return out

    def decode_side(self, model_side: int) -> int:
        """The shorter side to decode at, so the finest tile still has ``model_side`` pixels (and
        a proposal of a sixth of the shorter side too)."""
        return model_side * max(*self.scales, PROPOSAL_SCALE if self.proposals else 1)


def grid_boxes(width: int, height: int, scale: int, overlap: float) -> list[Box]:
    """Square tiles of side ``min(width, height) / scale``, overlapping by ``overlap`` of a tile,
    spread evenly from edge to edge along both sides (more of them along the longer side)."""
    side = max(1, min(width, height) // scale)

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        n = math.ceil((length - side) / (side * (1 - overlap))) + 1
        return [round(k * (length - side) / (n - 1)) for k in range(n)]

    return [(x, y, side, side) for y in starts(height) for x in starts(width)]


def parse_detail(value: str) -> tuple[str, Box] | None:
    """``ITEM#xywh=x,y,w,h`` (the W3C media fragment IIIF uses) -> (item id, box); None if it is not one."""
    m = DETAIL_RE.match(value)
    if not m:
        return None
    box = (int(m["x"]), int(m["y"]), int(m["w"]), int(m["h"]))
    return m["item"], box
