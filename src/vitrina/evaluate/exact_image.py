"""Exact-image retrieval: hard perturbed copies of indexed pictures as queries, top-1 / top-10 of
the original (the Norwegian library's protocol), beside the same model with random weights."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..collection import Collection
from ..embedding import embed_images
from ..errors import QueryError
from ..images import read_image
from .metrics import paired_test, rank_intervals, rank_of, recall_at_k, small_sample_warning
from .retrieval import ItemIds, candidates_digest_of, space_matrix, training_overlap


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


def baseline_seed(seed: int, spec: str) -> int:
    """The random baseline's seed: derived from the evaluation's seed and the model, through a
    hash, so it is independent of the seed a checkpoint was initialised with (tiny test models
    are built from seeds 0, 1, 2: a baseline seeded 0 was the model itself)."""
    digest = hashlib.sha256(f"vitrina random-weights baseline\0{seed}\0{spec}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def random_weights_embedder(embedder: Any, seed: int = 0) -> Any | None:
    """The same architecture with freshly initialised weights, from ``baseline_seed(seed, spec)``:
    a hf: model rebuilt from its config, the mini model's towers and heads all re-initialised
    (``MiniEmbedder.randomised``). None for a model we cannot rebuild."""
    import copy

    spec = getattr(getattr(embedder, "fingerprint", None), "spec", "")
    fresh = baseline_seed(seed, spec)
    if hasattr(embedder, "randomised"):
        return embedder.randomised(fresh)
    if hasattr(embedder, "model") and hasattr(embedder.model, "config"):  # hf
        import torch
        from transformers import AutoModel

        from ..embedding.quiet import quiet_models

        with quiet_models(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(fresh)
            model = AutoModel.from_config(embedder.model.config)
        twin = copy.copy(embedder)
        twin.model = model.to(embedder.device, embedder.dtype).eval()
        return twin
    return None


def paired_exact_image(by_space: dict[str, dict[str, Any]], *, seed: int = 0) -> list[dict[str, Any]]:
    """Each space against the first, per perturbation, on the items both perturbed; refused for
    spaces whose copies were ranked among different candidates."""
    names = list(by_space)
    first = by_space[names[0]]
    out = []
    for other in names[1:]:
        r = by_space[other]
        if r.get("candidates_digest") != first.get("candidates_digest"):
            raise QueryError(f"{names[0]} and {other} ranked the exact-image copies among different candidates "
                             f"({first.get('candidates')} and {r.get('candidates')} items): not comparable.")  # fmt: skip
        a = {q["id"]: q for q in first["per_item"]}
        b = {q["id"]: q for q in r["per_item"]}
        common = [i for i in a if i in b]
        for name in PERTURBATIONS:
            if common and name in a[common[0]]:
                test = paired_test([a[i][name] for i in common], [b[i][name] for i in common], seed=seed)
                out.append({"a": names[0], "b": other, "perturbation": name, **test})
    return out


def eval_exact_image(coll: Collection, *, sample: int = 200, seed: int = 0, space: str | None = None, fetcher: Any = None, candidates: int = 1000,
                     baseline: bool = True, progress: Callable[[int, int], None] | None = None, restrict: ItemIds | None = None,
                     check_training: bool = True) -> dict[str, Any]:  # fmt: skip
    """Hard perturbed copies of a seeded sample of items as image queries, ranked among a fixed
    set of ``candidates`` items (the sample plus others); ties count against the original. With
    ``baseline``, the same architecture with random weights is measured on the same queries and
    candidates, with a paired test against the model. ``restrict``: only these items (spaces
    compared on the items they all cover); the sample depends on the ids, not their order."""
    sp, ids, matrix = space_matrix(coll, space, restrict)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    ids, matrix = [ids[n] for n in order], matrix[order]
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

    # One count over every image embedded (the queries, then the baseline's queries and candidates),
    # so progress is one step that only goes forward.
    planned = len(flat) + (len(flat) + len(pool) if baseline and readable else 0)
    done = 0

    def embed(model: Any, images: list[Image.Image]) -> np.ndarray:
        nonlocal done
        out = []
        for start in range(0, len(images), 64):
            out.append(embed_images(model, images[start : start + 64]))
            done += len(out[-1])
            if progress:
                progress(min(done, planned), planned)
        return np.concatenate(out) if out else np.zeros((0, matrix.shape[1]), np.float32)

    def measure(model: Any, cand: np.ndarray, q: np.ndarray) -> dict[str, list[int]]:
        scores = cand @ q.T
        per = len(perturb)
        target = np.repeat(np.asarray([row[n] for n in readable]), per)
        r = rank_of(scores, target)
        return {name: [int(x) for x in r[col::per]] for col, name in enumerate(perturb)}

    model_queries = embed(embedder, flat)
    ranks = measure(embedder, matrix[pool], model_queries)
    out: dict[str, Any] = {
        "per_item": [{"id": ids[n], **{name: r[j] for name, r in ranks.items()}} for j, n in enumerate(readable)]
    }
    for name, r in ranks.items():
        out[name] = {
            "top1": round(recall_at_k(r, 1), 4),
            "top10": round(recall_at_k(r, 10), 4),
            "ci95": rank_intervals(r, (1, 10)),
        }
    warnings = [w for w in [small_sample_warning("exact image", ranks[PERTURBATIONS[0]], 10)] if w]
    out.update({"queries": len(readable), "unreadable": len(chosen) - len(readable), "candidates": len(pool), "items": len(ids), "space": sp.name,
                "model": sp.fingerprint.spec, "seed": seed, "candidates_digest": candidates_digest_of([ids[n] for n in pool]), "warnings": warnings, "chance": {"top1": round(1 / len(pool), 4), "top10": round(min(1.0, 10 / len(pool)), 4)}})  # fmt: skip
    twin = random_weights_embedder(embedder, seed) if baseline and readable else None
    if twin is not None:
        twin_queries = embed(twin, flat)
        if np.allclose(twin_queries, model_queries, atol=1e-6):
            raise QueryError(
                f"The random-weights baseline of {sp.fingerprint.spec} gives the model's own vectors: it is not random."
            )
        pool_images = [originals.get(n) or load(n) for n in pool]
        cand = np.zeros((len(pool), matrix.shape[1]), np.float32)
        ok = [k for k, im in enumerate(pool_images) if im is not None]
        cand[ok] = embed(twin, [pool_images[k] for k in ok])  # type: ignore[misc]
        base = measure(twin, cand, twin_queries)
        out["random_weights"] = {
            name: {"top1": round(recall_at_k(r, 1), 4), "top10": round(recall_at_k(r, 10), 4),
                   "paired": paired_test(r, ranks[name], seed=seed)}  # b = the model, a = random weights
            for name, r in base.items()
        }  # fmt: skip
        out["random_weights_seed"] = baseline_seed(seed, sp.fingerprint.spec)
    elif baseline:
        out["random_weights"] = None
    if progress and done < planned:  # no baseline model, or unreadable candidates: the step is over
        progress(planned, planned)
    if check_training:  # the sampled originals: a model's own training drawings are found far more easily
        overlap = training_overlap(coll, sp, [ids[n] for n in readable], fetcher=fetcher)
        if overlap:
            out["training_overlap"] = overlap
    return out
