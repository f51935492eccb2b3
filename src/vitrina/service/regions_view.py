"""Images of a hit's region (``/api/regions``): the box cut from the item's local image, bounded
(the decode budget and pixel caps apply; the crop is decoded only as large as ``size`` needs)."""

from __future__ import annotations

import io
from typing import Any

from fastapi.responses import RedirectResponse, Response

from ..errors import ImageError, QueryError
from ..images import hold_decoded
from .errors import ServiceError


def region_jpeg(service: Any, item_id: str, xywh: str, size: int) -> Response:
    from ..iiif import IMAGE_URL
    from ..region_indexer import detail_image

    item = service.collection().items([item_id]).get(item_id)
    if item is None:
        raise ServiceError(404, "item_not_found", f"No item {item_id!r} in this collection.")
    x, y, w, h = (int(v) for v in xywh.split(","))
    m = IMAGE_URL.match(item.image)
    if m:  # a IIIF image server cuts the region itself
        return RedirectResponse(f"{m.group(1)}/{xywh}/!{size},{size}/0/default.jpg", status_code=307)
    with hold_decoded():
        try:
            image = detail_image(item.image, (x, y, w, h), size)
        except QueryError as e:
            raise ServiceError(400, "bad_region", str(e)) from e
        except ImageError as e:
            raise ServiceError(404, "image_unavailable", f"The image of item {item_id!r} cannot be shown.") from e
        image.thumbnail((size, size))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=85)
    return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})
