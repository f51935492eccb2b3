"""Region proposals found in the image itself: a cheap detector of "things drawn on paper",
without model weights (numpy + Pillow; scipy's labelling when it is installed).

A heritage scan is mostly paper with ink on it; a detail worth finding (a cartouche, a sea
monster, a vignette) is a compact, dense patch of ink, where map lines, coastlines and lettering
are thin or sparse. So, on a grey copy about ``work_side`` pixels long:

1. the local background is the image blurred over a wide window (paper tone, stains, pale colour
   washes follow it); ink is what departs from it by more than ``contrast`` grey levels, or is
   strongly coloured where the paper is not;
2. **blobs at several scales**: the ink is closed (dilated) with a small and a larger radius and
   cut into connected components; a component's box is a candidate unless it is tiny or spans
   most of the page (a graticule or frame joins everything into one);
3. **density peaks at several scales**: the fraction of ink in square windows of 1/8, 1/5 and 1/3
   of the shorter side; the local maxima are candidates too (a drawing crossed by a map line
   still stands out by its density, where its component would have merged with the line);
4. each candidate is scored by its ink mass times the square root of its ink density (a dense
   drawing beats a long sparse line of the same mass), padded by ``pad`` of its side, made square
   (the model centre-crops to a square) and kept inside the image; near-duplicates (IoU above
   ``overlap``) go, best first, and the best ``n`` remain.

Boxes are (x, y, w, h) in the pixels of the image given.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["ink_mask", "propose"]

Box = tuple[int, int, int, int]


def ink_mask(image: Image.Image, work_side: int = 512, contrast: float = 28.0) -> tuple[np.ndarray, float]:
    """(bool mask of ink on a copy whose longer side is ``work_side``, that copy's scale)."""
    scale = min(1.0, work_side / max(image.size))
    small = image.convert("RGB")
    if scale < 1:
        small = small.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BOX
        )
    radius = max(2, round(max(small.size) / 24))
    background = small.filter(ImageFilter.BoxBlur(radius)).filter(ImageFilter.BoxBlur(radius))
    rgb = np.asarray(small, np.float32)
    bg = np.asarray(background, np.float32)
    grey, bg_grey = rgb.mean(2), bg.mean(2)
    dark = bg_grey - grey > contrast  # darker than the paper around it
    chroma = rgb.max(2) - rgb.min(2)
    coloured = (chroma - (bg.max(2) - bg.min(2))) > 2 * contrast  # much more colourful than the paper around it
    return dark | coloured, scale


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square, with summed-area tables (no scipy needed)."""
    if r <= 0:
        return mask
    return _window_sum(mask.astype(np.int32), 2 * r + 1) > 0


def _window_sum(a: np.ndarray, k: int) -> np.ndarray:
    """Sum of ``a`` over the k x k window centred on each pixel (zero outside)."""
    p = k // 2
    padded = np.pad(a, ((p + 1, k - 1 - p), (p + 1, k - 1 - p)))
    s = padded.cumsum(0).cumsum(1)
    return s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    try:
        from scipy import ndimage  # type: ignore[import-untyped]

        labels, n = ndimage.label(mask)
        return labels, int(n)
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn; a plain union-find otherwise
        return _label_numpy(mask)


def _label_numpy(mask: np.ndarray) -> tuple[np.ndarray, int]:
    h, w = mask.shape
    parent = np.arange(h * w)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    ys, xs = np.nonzero(mask)
    for y, x in zip(ys.tolist(), xs.tolist()):
        i = y * w + x
        for j in ((y - 1) * w + x if y and mask[y - 1, x] else -1, i - 1 if x and mask[y, x - 1] else -1):
            if j >= 0:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    labels = np.zeros((h, w), np.int32)
    roots: dict[int, int] = {}
    for y, x in zip(ys.tolist(), xs.tolist()):
        labels[y, x] = roots.setdefault(find(y * w + x), len(roots) + 1)
    return labels, len(roots)


def _components(ink: np.ndarray, radius: int) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) of the connected components of the ink closed by ``radius``."""
    labels, n = _label(_dilate(ink, radius))
    if n == 0:
        return []
    try:
        from scipy import ndimage  # type: ignore[import-untyped]

        slices = ndimage.find_objects(labels)
        return [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices if s is not None]
    except ImportError:  # pragma: no cover
        out = []
        for k in range(1, n + 1):
            ys, xs = np.nonzero(labels == k)
            out.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
        return out


def _peaks(ink: np.ndarray, side: int, per_scale: int) -> list[tuple[int, int, int, int]]:
    """Windows of ``side`` pixels around the local maxima of ink density, densest first."""
    density = _window_sum(ink.astype(np.int32), side)
    h, w = density.shape
    out: list[tuple[int, int, int, int]] = []
    d = density.astype(np.float64)
    for _ in range(per_scale):
        k = int(np.argmax(d))
        if d.flat[k] <= 0:
            break
        y, x = divmod(k, w)
        x0, y0 = max(0, x - side // 2), max(0, y - side // 2)
        out.append((x0, y0, min(w, x0 + side), min(h, y0 + side)))
        d[max(0, y - side) : y + side, max(0, x - side) : x + side] = 0  # suppress this peak's neighbourhood
    return out


def _iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / float(aw * ah + bw * bh - inter) if inter else 0.0


def _square(x0: float, y0: float, x1: float, y1: float, pad: float, width: int, height: int) -> Box:
    side = max(x1 - x0, y1 - y0) * (1 + 2 * pad)
    side = min(side, width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x = min(max(0.0, cx - side / 2), width - side)
    y = min(max(0.0, cy - side / 2), height - side)
    return round(x), round(y), max(1, round(side)), max(1, round(side))


def propose(
    image: Image.Image,
    n: int = 12,
    *,
    work_side: int = 512,
    contrast: float = 28.0,
    min_frac: float = 0.04,
    max_frac: float = 0.6,
    pad: float = 0.12,
    overlap: float = 0.5,
) -> list[Box]:
    """Up to ``n`` square boxes (x, y, w, h in ``image`` pixels) around dense patches of ink,
    best first (see the module docstring). ``min_frac``/``max_frac``: the smallest and largest
    candidate side, as fractions of the image's shorter side."""
    if n <= 0 or min(image.size) < 8:
        return []
    ink, scale = ink_mask(image, work_side, contrast)
    h, w = ink.shape
    short = min(h, w)
    lo, hi = max(2, min_frac * short), max_frac * short
    candidates: list[tuple[int, int, int, int]] = []
    for radius in (max(1, short // 120), max(2, short // 40)):
        candidates += _components(ink, radius)
    for div in (8, 5, 3):
        candidates += _peaks(ink, max(4, short // div), 6)
    cum = np.pad(ink.astype(np.int32), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    scored: list[tuple[float, Box]] = []
    for x0, y0, x1, y1 in candidates:
        side = max(x1 - x0, y1 - y0)
        if side < lo or side > hi:
            continue
        mass = float(cum[y1, x1] - cum[y0, x1] - cum[y1, x0] + cum[y0, x0])
        if mass <= 0:
            continue
        density = mass / ((x1 - x0) * (y1 - y0))
        scored.append((mass * density**0.5, _square(x0, y0, x1, y1, pad, w, h)))
    scored.sort(key=lambda t: -t[0])
    kept: list[Box] = []
    for _, box in scored:
        if all(_iou(box, k) <= overlap for k in kept):
            kept.append(box)
            if len(kept) == n:
                break
    inv = 1 / scale
    out = []
    for x, y, bw, _ in kept:
        side = min(round(bw * inv), image.width, image.height)
        out.append((min(round(x * inv), image.width - side), min(round(y * inv), image.height - side), side, side))
    return out
