"""Exact-image retrieval: hard perturbed copies of indexed pictures as queries, top-1 / top-10 of
the original (the Norwegian library's protocol), beside the same model with random weights."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..collection import Collection
from ..embedding import embed_images
from ..images import read_image
from .metrics import bootstrap_ci, rank_of, recall_at_k
from .retrieval import space_matrix


def _perturbations(rng: random.Random) -> dict[str, Callable[[Image.Image, Image.Image], Image.Image]]:
    """Hard copies of a picture, as a library meets them: a part of the page, a skewed scan with
    the background filled, another scanner's colour and contrast, the verso printing through, and
    all of these at once. Each takes (image, another image of the collection)."""
    from PIL import ImageEnhance, ImageFilter

    def crop(im: Image.Image, _: Image.Image, keep: tuple[float, float] = (0.5, 0.7)) -> Image.Image:
        w, h = im.size
        fw, fh = rng.uniform(*keep), rng.uniform(*keep)
        cw, ch = max(1, int(w * fw)), max(1, int(h * fh))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return im.crop((x, y, x + cw, y + ch))

    def rotate(im: Image.Image, _: Image.Image) -> Image.Image:
        fill = tuple(rng.randint(60, 200) for _ in range(3))
        return im.rotate(
            rng.choice([-1, 1]) * rng.uniform(12, 25), expand=True, fillcolor=fill, resample=Image.Resampling.BILINEAR
        )

    def colour(im: Image.Image, _: Image.Image) -> Image.Image:
        im = ImageEnhance.Color(im).enhance(rng.uniform(0.0, 0.4))
        im = ImageEnhance.Contrast(im).enhance(rng.choice([rng.uniform(0.4, 0.6), rng.uniform(1.6, 2.0)]))
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.2))
        tint = np.asarray([1.0, rng.uniform(0.85, 0.95), rng.uniform(0.6, 0.8)], np.float32)  # yellowed paper
        return Image.fromarray(np.clip(np.asarray(im, np.float32) * tint, 0, 255).astype(np.uint8))

    def print_through(im: Image.Image, other: Image.Image) -> Image.Image:
        verso = ImageOps.mirror(other.convert("RGB")).resize(im.size).filter(ImageFilter.GaussianBlur(1.5))
        return Image.blend(im, verso, rng.uniform(0.35, 0.5))

    def jpeg(im: Image.Image, quality: int) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    def combined(im: Image.Image, other: Image.Image) -> Image.Image:
        im = crop(im, other, (0.7, 0.85))
        im = colour(print_through(im, other), other)
        im = im.rotate(rng.uniform(-8, 8), expand=True, fillcolor=(128, 128, 128))
        return jpeg(im.resize((max(1, im.width // 2), max(1, im.height // 2))), 40)

    return {"crop": crop, "rotate": rotate, "colour": colour, "print_through": print_through, "combined": combined}


PERTURBATIONS = ("crop", "rotate", "colour", "print_through", "combined")


def _mini_features(embedder: Any) -> Callable[[list[Image.Image]], np.ndarray] | None:
    """For the mini model: its frozen towers' features, so random heads reuse them."""
    if not (hasattr(embedder, "heads") and hasattr(embedder, "towers")):
        return None
    return lambda images: embedder.towers.image_features(np.stack([embedder.preprocess(im) for im in images]))


def random_weights_embedder(embedder: Any, seed: int = 0) -> Any | None:
    """The same architecture with untrained weights: a hf: model rebuilt from its config with
    random initialisation, the mini towers with random heads. None for a model we cannot rebuild."""
    import copy

    if hasattr(embedder, "randomised"):
        return embedder.randomised(seed)
    if hasattr(embedder, "heads") and hasattr(embedder, "towers"):  # mini
        rng = np.random.default_rng(seed)
        twin = copy.copy(embedder)
        twin.heads = {
            k: (rng.standard_normal(v.shape).astype(np.float32) if k.endswith("weight") else np.zeros_like(v))
            for k, v in embedder.heads.items()
        }
        return twin
    if hasattr(embedder, "model") and hasattr(embedder.model, "config"):  # hf
        import torch
        from transformers import AutoModel

        torch.manual_seed(seed)
        twin = copy.copy(embedder)
        twin.model = AutoModel.from_config(embedder.model.config).to(embedder.device, embedder.dtype).eval()
        return twin
    return None


def eval_exact_image(coll: Collection, *, sample: int = 200, seed: int = 0, space: str | None = None, fetcher: Any = None, candidates: int = 1000,
                     baseline: bool = True, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Hard perturbed copies of a seeded sample of items as image queries, ranked among a fixed
    set of ``candidates`` items (the sample plus others); ties count against the original. With
    ``baseline``, the same architecture with random weights is measured on the same queries."""
    sp, ids, matrix = space_matrix(coll, space)
    embedder = coll.embedder_for(sp)
    rnd = random.Random(seed)
    chosen = sorted(rnd.sample(range(len(ids)), min(sample, len(ids))))
    rest = sorted(set(range(len(ids))) - set(chosen))
    pool = sorted(chosen + rnd.sample(rest, max(0, min(len(rest), candidates - len(chosen)))))
    row = {n: r for r, n in enumerate(pool)}
    items = coll.items([ids[i] for i in pool])

    def load(n: int) -> Image.Image | None:
        try:
            return read_image(items[ids[n]].image, fetcher=fetcher)
        except Exception:
            return None

    originals = {n: load(n) for n in chosen}
    readable = [n for n in chosen if originals[n] is not None]
    perturb = _perturbations(random.Random(seed))
    queries: dict[int, list[Image.Image]] = {}
    for j, n in enumerate(readable):
        other = originals[readable[(j + 1) % len(readable)]] if len(readable) > 1 else originals[n]
        queries[n] = [fn(originals[n], other) for fn in perturb.values()]  # type: ignore[arg-type]

    flat = [im for n in readable for im in queries[n]]
    heads = _mini_features(embedder)

    def embed(model: Any, images: list[Image.Image], tag: str = "queries") -> np.ndarray:
        out = []
        for start in range(0, len(images), 64):
            chunk = images[start : start + 64]
            if heads is not None and hasattr(model, "heads"):  # mini: tower features once, each model's heads
                key = (tag, start)
                if key not in feature_cache:
                    feature_cache[key] = heads(chunk)
                f = feature_cache[key]
                v = f @ model.heads["image.weight"].T + model.heads["image.bias"]
                out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
            else:
                out.append(embed_images(model, chunk))
            if progress:
                progress(min(start + 64, len(images)), len(images))
        return np.concatenate(out) if out else np.zeros((0, matrix.shape[1]), np.float32)

    feature_cache: dict[tuple[str, int], np.ndarray] = {}

    def measure(model: Any, cand: np.ndarray) -> dict[str, list[int]]:
        q = embed(model, flat)
        scores = cand @ q.T
        per = len(perturb)
        target = np.repeat(np.asarray([row[n] for n in readable]), per)
        r = rank_of(scores, target)
        return {name: [int(x) for x in r[col::per]] for col, name in enumerate(perturb)}

    ranks = measure(embedder, matrix[pool])
    out: dict[str, Any] = {
        "per_item": [{"id": ids[n], **{name: r[j] for name, r in ranks.items()}} for j, n in enumerate(readable)]
    }
    for name, r in ranks.items():
        out[name] = {
            "top1": round(recall_at_k(r, 1), 4),
            "top10": round(recall_at_k(r, 10), 4),
            "ci95": bootstrap_ci(r, (1, 10), seed=seed),
        }
    out.update({"queries": len(readable), "unreadable": len(chosen) - len(readable), "candidates": len(pool), "items": len(ids), "space": sp.name,
                "model": sp.fingerprint.spec, "seed": seed, "chance": {"top1": round(1 / len(pool), 4), "top10": round(min(1.0, 10 / len(pool)), 4)}})  # fmt: skip
    twin = random_weights_embedder(embedder, seed) if baseline and readable else None
    if twin is not None:
        pool_images = [originals.get(n) or load(n) for n in pool]
        cand = np.zeros((len(pool), matrix.shape[1]), np.float32)
        ok = [k for k, im in enumerate(pool_images) if im is not None]
        cand[ok] = embed(twin, [pool_images[k] for k in ok], "pool")  # type: ignore[misc]
        base = measure(twin, cand)
        out["random_weights"] = {
            name: {"top1": round(recall_at_k(r, 1), 4), "top10": round(recall_at_k(r, 10), 4)}
            for name, r in base.items()
        }
    elif baseline:
        out["random_weights"] = None
    return out
