"""Deep zoom for the item page: where the viewer (OpenSeadragon) gets its pixels, and the tiles
of local images (``/api/tiles``), cut by this server.

A IIIF item is shown from its own Image API (``info.json``); another web image as one picture; a
local image as a pyramid of 512-pixel JPEG tiles. Level ``L`` of an image W×H pixels is
``ceil(W / 2**(M - L))`` wide, where ``M = ceil(log2(max(W, H)))`` (the Deep Zoom convention). The
first request for a tile decodes its whole level once (JPEG draft mode, under the decode budget),
cuts all its tiles and keeps them in the collection's ``tiles/`` folder (a cache: safe to delete).
Levels above ``MAX_LEVEL_PIXELS`` are not served: the viewer's deepest level is then the largest
that fits, and it maps item pixels onto it (``sourceWidth`` in ``viewer_source``)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import threading
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from PIL import Image

from ..diskcache import cache_put
from ..errors import ImageError
from ..images import hold_decoded, load_image
from ..store import CollectionPaths
from .api import MAX_ID, service_of
from .errors import ServiceError
from .present import errors

TILE = 512
MAX_LEVEL_PIXELS = 120_000_000  # ~360 MB of RGB for the deepest level decoded at once
MAX_LEVEL = 24

router = APIRouter()
_locks: dict[tuple[str, int], threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class Pyramid:
    """The levels of a ``width`` × ``height`` image in tiles of ``tile`` pixels."""

    width: int
    height: int
    tile: int = TILE

    @property
    def full(self) -> int:
        """The level at the image's own size."""
        return max(0, math.ceil(math.log2(max(self.width, self.height))))

    def size(self, level: int) -> tuple[int, int]:
        scale = 2 ** (self.full - level)
        return max(1, math.ceil(self.width / scale)), max(1, math.ceil(self.height / scale))

    @property
    def top(self) -> int:
        """The deepest level served (the full size unless it is over ``MAX_LEVEL_PIXELS``)."""
        level = self.full
        while level > 0 and self.size(level)[0] * self.size(level)[1] > MAX_LEVEL_PIXELS:
            level -= 1
        return level

    @property
    def bottom(self) -> int:
        """The smallest level worth a request: the whole image in one tile."""
        level = self.top
        while level > 0 and max(self.size(level)) > self.tile:
            level -= 1
        return level

    def tiles(self, level: int) -> tuple[int, int]:
        w, h = self.size(level)
        return math.ceil(w / self.tile), math.ceil(h / self.tile)


def _local_path(image: str) -> str | None:
    if image.startswith(("http://", "https://", "crop:")):
        return None
    from ..sources.folder import ref_path

    return ref_path(image)


def _header_size(path: str) -> tuple[int, int] | None:
    try:
        with Image.open(path) as header:
            return header.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def viewer_source(item_id: str, image: str, preview: str) -> dict[str, Any]:
    """What the item page's viewer shows: ``type`` iiif (``info``: the Image API's info.json;
    ``offset``, ``crop``: where the item's picture lies on that image when it is a region of it), image
    (``url``: one picture) or tiles (``url``, ``width``/``height`` of the deepest level, levels,
    ``sourceWidth``/``sourceHeight``: the item's own pixels, in which boxes are given)."""
    from ..iiif import IMAGE_URL

    m = IMAGE_URL.match(image) if image.startswith(("http://", "https://")) else None
    if m:
        region = m.group(2)
        crop = [int(v) for v in region.split(",")] if region[0].isdigit() else None
        return {"type": "iiif", "info": f"{m.group(1)}/info.json", "offset": crop[:2] if crop else [0, 0],
                "crop": crop, "fallback": preview}  # fmt: skip
    if image.startswith(("http://", "https://")):
        return {"type": "image", "url": image}
    path = _local_path(image)
    size = _header_size(path) if path else None
    if size is None:  # an ALTO crop, or a file the header of which cannot be read: the preview
        return {"type": "image", "url": preview, "approximate": True}
    pyramid = Pyramid(*size)
    width, height = pyramid.size(pyramid.top)
    return {"type": "tiles", "url": "/api/tiles?" + urlencode({"id": item_id}), "tileSize": pyramid.tile,
            "minLevel": pyramid.bottom, "maxLevel": pyramid.top, "width": width, "height": height,
            "sourceWidth": size[0], "sourceHeight": size[1], "fallback": preview}  # fmt: skip


def _lock(key: str, level: int) -> threading.Lock:
    with _locks_guard:
        if len(_locks) > 1024:  # forget idle locks; one being held stays
            for k in [k for k, v in _locks.items() if not v.locked()]:
                del _locks[k]
        return _locks.setdefault((key, level), threading.Lock())


def _cut_level(path: str, pyramid: Pyramid, level: int) -> dict[tuple[int, int], bytes]:
    """Every tile of ``level``, as JPEG bytes: the image decoded once, no larger than the level needs."""
    width, height = pyramid.size(level)
    with hold_decoded():  # the decoded level counts against the decode budget until cut
        image = load_image(path, min_side=min(width, height))
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        out = {}
        nx, ny = pyramid.tiles(level)
        for ty in range(ny):
            for tx in range(nx):
                box = (tx * pyramid.tile, ty * pyramid.tile)
                tile = image.crop((*box, min(width, box[0] + pyramid.tile), min(height, box[1] + pyramid.tile)))
                buf = io.BytesIO()
                tile.convert("RGB").save(buf, "JPEG", quality=85)
                out[tx, ty] = buf.getvalue()
    return out


def tile_jpeg(
    root: Any, item_id: str, image: str, fingerprint: str, level: int, x: int, y: int, max_bytes: int | None = None
) -> bytes:
    """Tile (x, y) of ``level`` of a local item image (see the module's docstring)."""
    path = _local_path(image)
    size = _header_size(path) if path else None
    if size is None:
        raise ServiceError(404, "no_tiles", f"Item {item_id!r} has no local image to cut tiles from.")
    pyramid = Pyramid(*size)
    nx, ny = pyramid.tiles(level) if level <= pyramid.top else (0, 0)
    if not (pyramid.bottom <= level <= pyramid.top and x < nx and y < ny):
        raise ServiceError(404, "no_such_tile", f"Item {item_id!r} has no tile {x},{y} at level {level}.")
    key = hashlib.sha1(f"{item_id}\0{fingerprint}\0{TILE}".encode()).hexdigest()
    folder = CollectionPaths(root).tiles_dir / key[:2] / key / str(level)
    wanted = folder / f"{x}_{y}.jpg"
    with contextlib.suppress(FileNotFoundError):  # not cut yet, or just dropped by the cache's cap
        return wanted.read_bytes()
    with _lock(key, level):  # the other tiles of this level wait for this one cut, then read it
        with contextlib.suppress(FileNotFoundError):
            return wanted.read_bytes()
        try:
            tiles = _cut_level(path, pyramid, level)  # type: ignore[arg-type]
        except ImageError as e:
            raise ServiceError(404, "image_unavailable", f"The image of item {item_id!r} cannot be shown.") from e
        # capped, oldest first (a visitor can ask for every tile of every item); a read-only
        # folder: levels are cut on every request instead
        for (tx, ty), data in tiles.items():
            cache_put(CollectionPaths(root).tiles_dir, folder / f"{tx}_{ty}.jpg", data, max_bytes)
    return tiles[x, y]


@router.get(
    "/api/tiles",
    response_class=Response,
    responses={**errors(404, 422), 200: {"content": {"image/jpeg": {}}}},
    tags=["items"],
)
def tile_route(
    request: Request,
    id: Annotated[str, Query(min_length=1, max_length=MAX_ID)],  # noqa: A002
    level: Annotated[int, Query(ge=0, le=MAX_LEVEL)],
    x: Annotated[int, Query(ge=0, le=100_000)],
    y: Annotated[int, Query(ge=0, le=100_000)],
) -> Response:
    """A 512-pixel JPEG tile of a local item image for deep zoom (level ``L`` is the image
    scaled by 2^(L − ceil(log2(long side)))); the item page's viewer asks for these."""
    service = service_of(request)
    item = service.collection().items([id]).get(id)
    if item is None:
        raise ServiceError(404, "item_not_found", f"No item {id!r} in this collection.")
    data = tile_jpeg(service.path, id, item.image, item.fingerprint, level, x, y, service.config.image_cache_bytes)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})
