"""Indexing with regions: each pending item's whole image and the boxes its ``RegionPolicy`` cuts.

A local image is decoded once (JPEG draft mode down to the size the finest tile needs) and cut;
its boxes are in source pixels (the header's size). A IIIF Image API image is never fetched
whole: one overview at that same size (from which the whole image, the tiles and the proposals
are cut) and, for boxes too small in it, Image API regions at the model's input size; its boxes
are in the pixels of the item's image (its region of the IIIF image). Other references (plain
URLs, ALTO crops) are embedded whole, as without regions, and recorded as cut (no region) so
they are not retried.
A batch of items, with all their regions, is one durable step (``Store.add_vectors``): a killed
run loses the batches in flight, and the next one cuts those items again, so every region is
embedded exactly once. A changed image (new fingerprint) is cut again and its old regions die.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from .embedding import Embedder
from .errors import ImageError
from .images import hold_decoded, load_image, read_image
from .regions import Box, RegionPolicy
from .store import RegionBatch, Store

__all__ = ["Cut", "cut_image", "embed_pending_regions", "region_policy"]

Cut = tuple[list[np.ndarray], list[Box]]  # model inputs (the whole image first), the regions' boxes


def _local(ref: str) -> str | None:
    if ref.startswith(("http://", "https://", "crop:")):
        return None
    from .sources.folder import ref_path

    return ref_path(ref)


def cut_image(ref: str, embedder: Embedder, policy: RegionPolicy, limits: dict[str, Any], fetcher: Any = None) -> Cut:
    """The model inputs of an item: its whole image, then each box of ``policy``."""
    path = _local(ref)
    with hold_decoded():
        if path is None:
            remote = _cut_iiif(ref, embedder, policy, limits, fetcher) if policy.on else None
            if remote is not None:
                return remote
            return [embedder.preprocess(read_image(ref, fetcher=fetcher, min_side=embedder.min_side, **limits))], []
        with Image.open(path) as header:
            width, height = header.size
        cut = policy.applies(width, height)
        side = policy.decode_side(embedder.min_side // 2) if cut else embedder.min_side
        image = load_image(path, min_side=side, **limits)
        boxes = policy.boxes(width, height, image) if cut else []
        pixels = [embedder.preprocess(image)]
        sx, sy = image.width / width, image.height / height
        for x, y, w, h in boxes:
            crop = image.crop((round(x * sx), round(y * sy), round((x + w) * sx), round((y + h) * sy)))
            pixels.append(embedder.preprocess(crop))
        return pixels, boxes


def _cut_iiif(ref: str, embedder: Embedder, policy: RegionPolicy, limits: dict[str, Any], fetcher: Any) -> Cut | None:
    """A IIIF Image API image, cut without its master: one overview at the size the policy decodes
    local images at (the whole image, the grid tiles and the proposals come from it), plus the
    boxes too small in it, each fetched as an Image API region at the model's input size. None
    when ``ref`` is no IIIF image, its info.json is unusable or the image is small: read whole."""
    from .iiif import ImageService, split_image_url
    from .images import decode_fetched

    split = split_image_url(ref)
    if split is None:
        return None
    if fetcher is None:
        from .http import Fetcher

        fetcher = Fetcher()
    base, region = split
    try:
        service = ImageService.from_info(fetcher.get_json(base + "/info.json"), base)
        ix, iy, width, height = service.region_box(region)
    except ImageError as e:
        if e.reason not in ("not_found", "bad_json", "fetch_failed"):
            raise
        return None
    except (KeyError, TypeError, ValueError):
        return None
    if not policy.applies(width, height):
        return None

    def fetch(region: str, side: int) -> Image.Image:
        url, crop = service.url_for(region, side)
        return decode_fetched(fetcher.get_bytes(url), url, crop, min_side=side, **limits)

    overview = fetch(region, policy.decode_side(embedder.min_side // 2))
    boxes = policy.boxes(width, height, overview)
    pixels = [embedder.preprocess(overview)]
    sx, sy = overview.width / width, overview.height / height
    for x, y, w, h in boxes:
        if min(w * sx, h * sy) >= embedder.min_side // 2 or service.level == 0:  # as local images are cut
            part = overview.crop((round(x * sx), round(y * sy), round((x + w) * sx), round((y + h) * sy)))
        else:  # a small box: the server cuts it, at the model's size
            part = fetch(f"{ix + x},{iy + y},{w},{h}", embedder.min_side)
        pixels.append(embedder.preprocess(part))
    return pixels, boxes


def region_policy(store: Store, space: str, mode: str | None) -> RegionPolicy:
    """The policy of this run: ``mode`` when given (recorded for the space; "off" drops the
    space's regions), else the one recorded when the space was last indexed with one."""
    key = f"regions:{space}"
    recorded = store.get_meta(key)
    if mode is None:
        return RegionPolicy.parse(recorded)
    policy = RegionPolicy.parse(mode)
    if not policy.on and store.region_count(space):
        store.drop_regions(space)
    if recorded != policy.mode:
        store.set_meta(key, policy.mode)
    return policy


def embed_pending_regions(store: Store, embedder: Embedder, space: str, report: Any, policy: RegionPolicy, *,
                          batch_size: int | None = None, workers: int | None = None, retry_failed: bool = False,
                          max_pixels: int | None = None, max_decode_bytes: int | None = None, progress: Any = None,
                          fetcher: Any = None, **_: Any) -> Any:  # fmt: skip
    """Embed every item of ``space`` whose vector or regions are not current (see the module docstring)."""
    todo = store.pending_regions(space, policy.key, retry_failed=retry_failed)
    total = len(todo)
    # Up to cap + 1 model inputs per item: fewer items per batch keep a batch's memory bounded.
    per_batch = max(1, (batch_size or 32) // 8)
    limits = {"max_pixels": max_pixels, "max_decode_bytes": max_decode_bytes}
    report.settings = {
        "batch_items": per_batch,
        "workers": workers or 2,
        "decode": "threads",
        "regions": policy.to_dict(),
    }
    started = time.perf_counter()
    if progress:
        progress(0, total)

    def cut(row: Any) -> tuple[Cut | None, tuple[str, str] | None, float]:
        t0 = time.perf_counter()
        try:
            return cut_image(row["image"], embedder, policy, limits, fetcher), None, time.perf_counter() - t0
        except ImageError as e:
            return None, (e.reason, str(e)), time.perf_counter() - t0
        except Exception as e:  # one bad image costs that item, not the run
            return None, ("unreadable_image", f"{row['image']}: {type(e).__name__}: {e}"), time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=max(1, workers or 2), thread_name_prefix="vitrina-cut") as pool:
        for start in range(0, total, per_batch):
            rows = todo[start : start + per_batch]
            items: list[tuple[str, str]] = []
            whole: list[np.ndarray] = []
            owners: list[str] = []
            boxes: list[Box] = []
            crops: list[np.ndarray] = []
            failures: list[tuple[str, str, str]] = []
            for row, (cut_, failure, seconds) in zip(rows, pool.map(cut, rows)):
                report.timings["decode"] += seconds
                if failure is not None or cut_ is None:
                    reason, detail = failure or ("unreadable_image", "")
                    failures.append((row["id"], reason, detail))
                    continue
                pixels, item_boxes = cut_
                items.append((row["id"], row["fingerprint"]))
                whole.append(pixels[0])
                owners.extend([row["id"]] * len(item_boxes))
                boxes.extend(item_boxes)
                crops.extend(pixels[1:])
            t0 = time.perf_counter()
            try:
                vectors = (
                    embedder.embed_pixels(np.stack(whole + crops))
                    if whole
                    else np.zeros((0, embedder.fingerprint.dim), np.float32)
                )
                if not np.isfinite(vectors).all():
                    raise ValueError("the model produced NaN or infinite values")
            except Exception as e:  # the batch's items fail; the run goes on
                failures += [(i, "embed_error", f"{type(e).__name__}: {e}") for i, _ in items]
                items, whole, owners, boxes, crops = [], [], [], [], []
                vectors = np.zeros((0, embedder.fingerprint.dim), np.float32)
            report.timings["model"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            batch = RegionBatch(items=items, owners=owners, boxes=boxes, vectors=vectors[len(whole) :], cut=policy.key)
            store.add_vectors(space, items, vectors[: len(whole)], failures, regions=batch)
            report.timings["write"] += time.perf_counter() - t0
            report.embedded += len(items)
            report.regions += len(boxes)
            for item_id, reason, detail in failures:
                report.failed[reason] += 1
                if len(report.failures) < 100:
                    report.failures.append((item_id, reason, detail))
            report.seconds = time.perf_counter() - started
            if progress:
                progress(min(total, start + per_batch), total)
    report.seconds = time.perf_counter() - started
    return report


def detail_image(ref: str, box: Box, min_side: int, max_pixels: int | None = None) -> Image.Image:
    """The part ``box`` (x, y, w, h in source pixels) of a local item image, its shorter side at
    least ``min_side`` where the source allows: decoded only as large as that needs (JPEG draft)."""
    from .errors import QueryError

    path = _local(ref)
    if path is None:
        raise QueryError(
            f"A detail (#xywh=) can be cut from items with a local image; {ref!r} is not one. Upload the crop instead."
        )
    x, y, w, h = box
    with Image.open(path) as header:
        width, height = header.size
    if w < 1 or h < 1 or x >= width or y >= height:
        raise QueryError(f"The box {x},{y},{w},{h} lies outside the item's image ({width}x{height} pixels).")
    need = int(min_side * min(width, height) / max(1, min(w, h)))
    image = load_image(path, min_side=min(need, min(width, height)), max_pixels=max_pixels)
    sx, sy = image.width / width, image.height / height
    return image.crop((round(x * sx), round(y * sy), round(min(width, x + w) * sx), round(min(height, y + h) * sy)))


def detail_pixels(ref: str, box: Box, embedder: Embedder, max_pixels: int | None = None) -> np.ndarray:
    """The model input of the part ``box`` of a local item image (see ``detail_image``)."""
    with hold_decoded():
        return embedder.preprocess(detail_image(ref, box, embedder.min_side, max_pixels))
