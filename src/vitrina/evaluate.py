"""Measure retrieval quality on your own collection.

- ``eval_pairs``: text→image with caption pairs (a caption per item): recall@k and MRR.
- ``eval_exact_image``: perturbed copies of indexed images (crop, rescale, JPEG, rotate,
  grayscale) as queries: top-1 / top-10 of the original (the Norwegian library's protocol).
- ``eval_queries``: a curator's queries with relevant item ids (optionally graded):
  nDCG@k and precision@k.

Reports come as a dict (JSON), Markdown and an SVG chart. Metric functions are plain numpy and
tested on hand-computed cases (tests/test_evaluate.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .collection import Collection
from .embedding import embed_images
from .errors import ConfigError, QueryError
from .images import read_image

KS = (1, 5, 10)
KINDS = ("text_to_image", "exact_image", "queries")


# -- metrics ------------------------------------------------------------------------------------


def recall_at_k(ranks: Sequence[int], k: int) -> float:
    """Share of queries whose target is among the first k (ranks are 0-based)."""
    return float(np.mean(np.asarray(ranks) < k)) if len(ranks) else 0.0


def mrr(ranks: Sequence[int]) -> float:
    return float(np.mean(1.0 / (np.asarray(ranks) + 1))) if len(ranks) else 0.0


def precision_at_k(ranked: Sequence[str], relevant: dict[str, float], k: int) -> float:
    return sum(1 for r in ranked[:k] if relevant.get(r, 0) > 0) / k


def ndcg_at_k(ranked: Sequence[str], relevant: dict[str, float], k: int) -> float:
    """Normalised discounted cumulative gain with graded relevance (gain 2^rel - 1)."""
    dcg = sum((2 ** relevant.get(r, 0) - 1) / math.log2(i + 2) for i, r in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def image_signature(image: Image.Image) -> bytes:
    """64 bytes that recognise a picture after resizing and recompression: on a 16x16 grayscale
    grid, where each cell is clearly brighter (first 32 bytes) or clearly darker (last 32) than its
    left neighbour. ``signature_distance`` counts the cells that disagree."""
    small = np.asarray(ImageOps.grayscale(image.convert("RGB")).resize((17, 16), Image.Resampling.BOX), np.int16)
    diff = (small[:, 1:] - small[:, :-1]).flatten()
    return bytes(np.packbits(diff > 4)) + bytes(np.packbits(diff < -4))


def signature_distance(known: np.ndarray, signature: bytes) -> np.ndarray:
    """Distance of one signature to each row of ``known`` (n x 64 uint8)."""
    return np.unpackbits(known ^ np.frombuffer(signature, np.uint8)[None, :], axis=1).sum(1)


# -- evaluations --------------------------------------------------------------------------------


def _space_matrix(coll: Collection, space: str | None) -> tuple[Any, list[str], np.ndarray]:
    sp = coll.space(space)
    ids, matrix = coll.vectors(sp.name)
    return sp, ids, matrix


SPLITS = ("held_out", "train", "all")


def read_pair_rows(path: Path) -> list[dict[str, Any]]:
    """Rows {"id", "caption", "split"} from JSONL (as `vitrina captions` writes) or a CSV
    id,caption[,split]; ``split`` is None where the file does not say."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            source: list[dict[str, Any]] = list(csv.DictReader(f))
    else:
        source = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in source:
        if row.get("id") and row.get("caption"):
            rows.append({"id": str(row["id"]), "caption": str(row["caption"]), "split": row.get("split") or None})
    return rows


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """JSONL lines {"id": ..., "caption": ...} (as `vitrina captions` writes) or a CSV id,caption."""
    return [(r["id"], r["caption"]) for r in read_pair_rows(path)]


def select_split(rows: Sequence[dict[str, Any]], split: str = "held_out") -> tuple[list[tuple[str, str]], str]:
    """The pairs of one split, and what to call it in a report. A file without a split column
    is evaluated whole and said to be so: nothing then shows that the model never saw them."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if not any(r.get("split") for r in rows):
        return [(r["id"], r["caption"]) for r in rows], "all (the pairs file has no split)"
    if split == "all":
        return [(r["id"], r["caption"]) for r in rows], "all (train and held-out)"
    chosen = [(r["id"], r["caption"]) for r in rows if (r.get("split") or "train") == split]
    if not chosen:
        raise QueryError(
            f"The pairs file has no {split!r} pairs; write them with `vitrina captions`, or evaluate --split all (and say so)."
        )
    return chosen, split


def file_sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def chance(candidates: int, ks: Sequence[int] = KS) -> dict[str, float]:
    """What ranking the candidates at random scores: recall@k = k/N, MRR = H_N / N."""
    n = max(1, candidates)
    out = {f"recall@{k}": round(min(1.0, k / n), 4) for k in ks}
    out["mrr"] = round(float(np.sum(1.0 / np.arange(1, n + 1)) / n), 4)
    return out


def bootstrap_ci(
    ranks: Sequence[int], ks: Sequence[int] = KS, *, samples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals (queries resampled with replacement) for recall@k and MRR."""
    r = np.asarray(ranks)
    if not len(r):
        return {}
    idx = np.random.default_rng(seed).integers(0, len(r), (samples, len(r)))
    drawn = r[idx]
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    stats = {f"recall@{k}": (drawn < k).mean(1) for k in ks}
    stats["mrr"] = (1.0 / (drawn + 1)).mean(1)
    return {
        key: [round(float(np.percentile(v, lo)), 4), round(float(np.percentile(v, hi)), 4)] for key, v in stats.items()
    }


def paired_test(
    ranks_a: Sequence[int], ranks_b: Sequence[int], *, samples: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """A paired comparison of two models on the same queries: the mean difference in reciprocal
    rank (b - a), its bootstrap 95 % interval and a two-sided sign-flip permutation p-value."""
    a, b = 1.0 / (np.asarray(ranks_a) + 1), 1.0 / (np.asarray(ranks_b) + 1)
    if len(a) != len(b) or not len(a):
        raise QueryError("A paired test needs the same queries for both models.")
    d = b - a
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), (samples, len(d)))].mean(1)
    flips = rng.choice([-1.0, 1.0], (samples, len(d)))
    null = np.abs((flips * d).mean(1))
    p = float((np.sum(null >= abs(d.mean()) - 1e-12) + 1) / (samples + 1))
    return {"mrr_difference": round(float(d.mean()), 4), "ci95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
            "p_value": round(p, 4), "queries": len(d), "better": int((d > 0).sum()), "worse": int((d < 0).sum()), "significant": p < 0.05}  # fmt: skip


def rank_of(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each query's target (scores: candidates x queries). Ties count against the
    target: a candidate that scores the same is ranked above it, so a constant model scores nothing."""
    target_scores = scores[target, np.arange(scores.shape[1])]
    return (scores >= target_scores[None, :]).sum(0) - 1


def eval_pairs(coll: Collection, pairs: Sequence[tuple[str, str]], *, space: str | None = None, ks: Sequence[int] = KS, split: str | None = None,
               seed: int = 0, check_training: bool = True, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Text→image: each caption ranks every item of the space; ``split`` is what the pairs are
    (see ``select_split``) and is written in the report."""
    sp, ids, matrix = _space_matrix(coll, space)
    position = {i: n for n, i in enumerate(ids)}
    usable = [(i, c) for i, c in pairs if i in position]
    if not usable:
        raise QueryError(
            "None of the pairs' ids has a vector in this space; check the ids (vitrina captions writes them)."
        )
    embedder = coll.embedder_for(sp)
    ranks: list[int] = []
    tops: list[list[str]] = []
    for start in range(0, len(usable), 256):
        chunk = usable[start : start + 256]
        texts = embedder.embed_texts([c for _, c in chunk])
        scores = matrix @ texts.T
        ranks += [int(r) for r in rank_of(scores, np.asarray([position[i] for i, _ in chunk]))]
        # What each query found first (for the contact sheet): the top few, without sorting every score.
        top_n = min(TOP, len(ids))
        first = np.argpartition(-scores, top_n - 1, axis=0)[:top_n]
        for q in range(scores.shape[1]):
            tops.append([ids[n] for n in sorted(first[:, q], key=lambda n: -scores[n, q])])
        if progress:
            progress(len(ranks), len(usable))
    out: dict[str, Any] = {f"recall@{k}": round(recall_at_k(ranks, k), 4) for k in ks}
    out.update({"mrr": round(mrr(ranks), 4), "queries": len(usable), "skipped": len(pairs) - len(usable), "items": len(ids), "space": sp.name, "model": sp.fingerprint.spec,
                "split": split or "unspecified", "chance": chance(len(ids), ks), "ci95": bootstrap_ci(ranks, ks, seed=seed),
                "per_query": [{"id": i, "caption": c, "rank": r, "top": t} for (i, c), r, t in zip(usable, ranks, tops)]})  # fmt: skip
    out["per_item"] = per_item(out["per_query"])
    out["never_found"] = sum(1 for r in out["per_item"] if r["best_rank"] >= 10)
    if check_training:
        overlap = training_overlap(coll, sp, sorted({i for i, _ in usable}))
        if overlap:
            out["training_overlap"] = overlap
    return out


TOP = 5  # retrieved items kept per query


def per_item(per_query: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target item with its number of queries and best rank, the never-found first."""
    best: dict[str, list[int]] = {}
    for q in per_query:
        best.setdefault(q["id"], []).append(q["rank"])
    return [
        {"id": i, "queries": len(r), "best_rank": min(r)}
        for i, r in sorted(best.items(), key=lambda kv: (-min(kv[1]), kv[0]))
    ]


# -- a model's own training data ----------------------------------------------------------------


def _mini_training() -> tuple[set[str], np.ndarray] | None:
    import gzip

    from .embedding.mini import TRAINING

    if not TRAINING.exists():
        return None
    data = json.loads(gzip.decompress(TRAINING.read_bytes()))
    tails = {_tail(i) for i in data["ids"]}
    return tails, np.stack([np.frombuffer(bytes.fromhex(h), np.uint8) for h in data["signature"]])


def _tail(path: str) -> str:
    """The last two parts of a path, lower-case, spaces as underscores ("flags/uk_flag.png")."""
    parts = path.replace("\\", "/").lower().replace(" ", "_").split("/")
    return "/".join(parts[-2:])


SAME_PICTURE = 10  # signatures this close: the same picture resized or recompressed, or a near-identical drawing


def training_overlap(
    coll: Collection, sp: Any, ids: Sequence[str], *, sample: int = 500, seed: int = 0, fetcher: Any = None
) -> dict[str, Any] | None:
    """Which of ``ids`` the space's model was trained on, where that is known: the ``mini``
    model's training drawings (by file path and by image hash; a sample of ``sample`` items is
    read), or the training pairs a `vitrina finetune` model recorded. None where nothing is known."""
    spec = sp.fingerprint.spec
    ids = list(ids)
    if spec == "mini":
        known = _mini_training()
        if known is None:
            return None
        tails, signatures = known
        checked = ids if len(ids) <= sample else sorted(random.Random(seed).sample(ids, sample))
        items = coll.items(checked)
        found = []
        for item_id in checked:
            item = items.get(item_id)
            if item is None:
                continue
            if _tail(item_id) in tails or _tail(str(item.image)) in tails:
                found.append(item_id)
                continue
            try:
                signature = image_signature(read_image(item.image, fetcher=fetcher))
            except Exception:
                continue
            if signature_distance(signatures, signature).min() <= SAME_PICTURE:
                found.append(item_id)
        what = "the mini model's training drawings (openclipart-png; by file path and image signature)"
    elif spec.startswith("hf:") and (Path(spec[3:]) / "vitrina-finetune.json").is_file():
        record = json.loads((Path(spec[3:]) / "vitrina-finetune.json").read_text())
        trained = set(record.get("train_ids") or [])
        if not trained:
            return None
        checked = ids
        found = [i for i in ids if i in trained]
        what = f"the pairs {spec} was fine-tuned on"
    else:
        return None
    share = len(found) / len(checked) if checked else 0.0
    out: dict[str, Any] = {
        "trained_on": what,
        "checked": len(checked),
        "overlapping": len(found),
        "share": round(share, 4),
        "examples": found[:5],
    }
    if found:
        out["warning"] = (f"{len(found)} of {len(checked)} evaluated items ({share:.0%}) are in {what}: figures on them measure memory, "
                          "not search; evaluate on items the model never saw.")  # fmt: skip
    return out


# -- exact image --------------------------------------------------------------------------------


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
    sp, ids, matrix = _space_matrix(coll, space)
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


def read_queries(path: Path) -> list[tuple[str, dict[str, float]]]:
    """CSV rows query,id[,relevance] (one row per judged item; relevance defaults to 1)."""
    judged: dict[str, dict[str, float]] = {}
    with Path(path).open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"query", "id"} <= set(reader.fieldnames):
            raise ConfigError(f"{path}: needs the columns query,id and optionally relevance.")
        for row in reader:
            if row.get("query") and row.get("id"):
                judged.setdefault(row["query"], {})[row["id"]] = float(row.get("relevance") or 1)
    return list(judged.items())


def eval_queries(coll: Collection, judged: Sequence[tuple[str, dict[str, float]]], *, k: int = 10, space: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """nDCG@k and P@k per judged query. Judged ids that are not in the collection are counted and
    left out (they could never be found); a query left with none is skipped, not scored 0."""
    per_query = []
    unknown: list[str] = []
    skipped: list[str] = []
    present = set(coll.items(sorted({i for _, rel in judged for i in rel})))
    for n, (query, relevant) in enumerate(judged):
        if progress and (n % 50 == 49 or n == len(judged) - 1):
            progress(n + 1, len(judged))
        missing = [i for i in relevant if i not in present]
        unknown += missing
        relevant = {i: g for i, g in relevant.items() if i in present}
        if not any(g > 0 for g in relevant.values()):
            skipped.append(query)
            continue
        ranked = [h.id for h in coll.search(query, limit=k, space=space)]
        per_query.append({"query": query, f"ndcg@{k}": round(ndcg_at_k(ranked, relevant, k), 4), f"p@{k}": round(precision_at_k(ranked, relevant, k), 4),
                          "relevant": len(relevant), "unknown_ids": len(missing)})  # fmt: skip
    sp = coll.space(space)
    out: dict[str, Any] = {f"ndcg@{k}": round(float(np.mean([q[f"ndcg@{k}"] for q in per_query])), 4) if per_query else 0.0,
                           f"p@{k}": round(float(np.mean([q[f"p@{k}"] for q in per_query])), 4) if per_query else 0.0,
                           "queries": len(per_query), "skipped_queries": skipped, "unknown_ids": len(unknown), "per_query": per_query, "space": sp.name,
                           "model": sp.fingerprint.spec}  # fmt: skip
    warnings = []
    if unknown:
        warnings.append(f"{len(unknown)} judged ids are not in the collection (e.g. {unknown[0]}); they were left out.")
    if skipped:
        warnings.append(
            f"{len(skipped)} queries have no judged item in the collection and were skipped (e.g. {skipped[0]!r})."
        )
    if not per_query:
        raise QueryError(
            "None of the judged queries has a relevant item in this collection; check the ids in the queries file."
        )
    out["warnings"] = warnings
    return out


def breakdown(
    coll: Collection, per_query: Sequence[dict[str, Any]], key: str, ks: Sequence[int] = KS
) -> dict[str, dict[str, Any]]:
    """Text→image figures per value of a metadata key or tag of the target item (the first value
    of a list; ``folder`` is the id's folder). Values with fewer than 5 queries are pooled as "other"."""
    items = coll.items(sorted({q["id"] for q in per_query}))
    groups: dict[str, list[int]] = {}
    for q in per_query:
        item = items.get(q["id"])
        value: Any = None
        if item is not None:
            if key == "folder":
                value = q["id"].rsplit("/", 1)[0] if "/" in q["id"] else "."
            elif key in (item.tags or {}):
                value = item.tags[key].get("value")
            else:
                value = item.metadata.get(key)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if isinstance(value, dict):
            value = next(iter(value), None)
        groups.setdefault("(none)" if value in (None, "") else str(value), []).append(q["rank"])
    pooled: dict[str, list[int]] = {}
    for value, ranks in groups.items():
        pooled.setdefault(value if len(ranks) >= 5 else "other", []).extend(ranks)
    return {value: {**{f"recall@{k}": round(recall_at_k(r, k), 4) for k in ks}, "mrr": round(mrr(r), 4), "queries": len(r)}
            for value, r in sorted(pooled.items(), key=lambda kv: -len(kv[1]))}  # fmt: skip


def paired_comparisons(by_space: dict[str, dict[str, Any]], *, seed: int = 0) -> list[dict[str, Any]]:
    """Each space against the first, on the queries both answered (paired_test)."""
    names = list(by_space)
    out = []
    first = {(q["id"], q["caption"]): q["rank"] for q in by_space[names[0]]["per_query"]}
    for other in names[1:]:
        ranks = {(q["id"], q["caption"]): q["rank"] for q in by_space[other]["per_query"]}
        common = [key for key in first if key in ranks]
        if common:
            out.append(
                {
                    "a": names[0],
                    "b": other,
                    **paired_test([first[c] for c in common], [ranks[c] for c in common], seed=seed),
                }
            )
    return out


def provenance(coll: Collection, spaces: Sequence[str], *, seed: int, files: dict[str, Path | None]) -> dict[str, Any]:
    """What a figure needs to be reproduced: collection, date, vitrina version, the models'
    fingerprints, the seed and the hashes of the input files."""
    import datetime

    from . import __version__

    return {"collection": str(coll.path), "items": len(coll), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "vitrina": __version__, "seed": seed,
            "models": {s: json.loads(coll.space(s).fingerprint.to_json()) for s in spaces},
            "files": {name: {"path": str(path), "sha256": file_sha256(path)} for name, path in files.items() if path is not None}}  # fmt: skip


def captions(coll: Collection, *, held_out_percent: int = 20) -> list[dict[str, Any]]:
    """Caption pairs from item metadata (the LoC recipe), split by group: items that share a
    series, a manifest or catalogue item, or a title stem (sheets of one map, items of one series)
    are joined into one group, and the group's hash picks its side, so near-duplicates never
    straddle train and held-out. Each row carries its ``group``."""
    from .captions import build_caption, group_keys

    rows: list[dict[str, Any]] = []
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for item in coll.iter_items(exclude_status="failed"):
        caption = item.metadata.get("caption") or build_caption(item.metadata)
        if caption:
            keys = group_keys(item.id, item.metadata)
            for other in keys[1:]:
                a, b = find(keys[0]), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            rows.append({"id": item.id, "caption": caption, "_key": keys[0]})
    for row in rows:
        group = find(row.pop("_key"))
        bucket = int(hashlib.md5(group.encode()).hexdigest(), 16) % 100
        row.update({"split": "held_out" if bucket < held_out_percent else "train", "group": group})
    return rows


# -- reports ------------------------------------------------------------------------------------


def _pct(value: float, ci: list[float] | None = None) -> str:
    return f"{value:.1%}" + (f" [{ci[0]:.1%}–{ci[1]:.1%}]" if ci else "")


def markdown(results: dict[str, Any]) -> str:
    """A table per evaluation kind, one row per space, with 95 % intervals and baselines; then
    paired tests, warnings and provenance."""
    lines = []
    for kind, by_space in results.items():
        if kind not in KINDS or not by_space:
            continue
        lines.append(f"### {kind}\n")
        first = next(iter(by_space.values()))
        if kind == "exact_image":
            names = [p for p in first if isinstance(first[p], dict) and "top1" in first[p] and p not in ("chance",)]
            lines.append(
                "| space | model | perturbation | top1 [95% CI] | top10 [95% CI] | random weights top1 / top10 | chance top1 / top10 | queries | candidates |"
            )
            lines.append("|---" * 9 + "|")
            for space, r in by_space.items():
                for p in names:
                    rnd = (r.get("random_weights") or {}).get(p)
                    base = f"{rnd['top1']:.1%} / {rnd['top10']:.1%}" if rnd else "n/a"
                    ci = r[p].get("ci95", {})
                    lines.append(f"| {space} | {r['model']} | {p} | {_pct(r[p]['top1'], ci.get('recall@1'))} | {_pct(r[p]['top10'], ci.get('recall@10'))} | {base} | "
                                 f"{r['chance']['top1']:.1%} / {r['chance']['top10']:.1%} | {r['queries']} | {r['candidates']} |")  # fmt: skip
        elif kind == "text_to_image":
            keys = [k for k, v in first.items() if isinstance(v, float)]
            lines.append(
                "| space | model | split | "
                + " | ".join(f"{k} [95% CI]" for k in keys)
                + " | queries | skipped | chance "
                + " / ".join(keys)
                + " |"
            )
            lines.append("|---" * (len(keys) + 6) + "|")
            for space, r in by_space.items():
                ci = r.get("ci95", {})
                cells = [
                    _pct(r[k], ci.get(k))
                    if k != "mrr"
                    else f"{r[k]:.3f}" + (f" [{ci['mrr'][0]:.3f}–{ci['mrr'][1]:.3f}]" if "mrr" in ci else "")
                    for k in keys
                ]
                chance_cells = " / ".join(
                    f"{r['chance'][k]:.1%}" if k != "mrr" else f"{r['chance'][k]:.3f}"
                    for k in keys
                    if k in r.get("chance", {})
                )
                lines.append(
                    f"| {space} | {r['model']} | {r.get('split', '')} | "
                    + " | ".join(cells)
                    + f" | {r['queries']} | {r.get('skipped', 0)} | {chance_cells} |"
                )
            for space, r in by_space.items():
                worst = [x["id"] for x in r.get("per_item", []) if x["best_rank"] >= 10][:3]
                if worst:
                    lines.append(
                        f"\n{space}: {r['never_found']} of {len(r['per_item'])} items never in the top 10 (e.g. {', '.join(worst)})."
                    )
            for space, r in by_space.items():
                if r.get("by"):
                    lines.append(f"\n{space}, by {r.get('by_key', 'value')}:\n")
                    lines.append("| value | recall@1 | recall@10 | mrr | queries |\n|---|---|---|---|---|")
                    for value, v in r["by"].items():
                        lines.append(
                            f"| {value} | {v['recall@1']:.1%} | {v['recall@10']:.1%} | {v['mrr']:.3f} | {v['queries']} |"
                        )
        else:
            keys = [k for k, v in first.items() if isinstance(v, float)]
            lines.append("| space | model | " + " | ".join(keys) + " | queries | skipped |")
            lines.append("|---" * (len(keys) + 4) + "|")
            for space, r in by_space.items():
                lines.append(
                    f"| {space} | {r['model']} | "
                    + " | ".join(f"{r[k]:.1%}" for k in keys)
                    + f" | {r['queries']} | {len(r.get('skipped_queries', []))} |"
                )
        lines.append("")
    for test in results.get("paired", []):
        verdict = "significant" if test["significant"] else "not significant"
        lines.append(f"Paired test, {test['b']} vs {test['a']} on {test['queries']} queries: MRR difference {test['mrr_difference']:+.3f} "
                     f"[95% CI {test['ci95'][0]:+.3f} to {test['ci95'][1]:+.3f}], p = {test['p_value']:.3g} ({verdict} at 0.05); "
                     f"better on {test['better']}, worse on {test['worse']}.")  # fmt: skip
    for w in results.get("warnings", []):
        lines.append(f"\n**Warning:** {w}")
    prov = results.get("provenance")
    if prov:
        files = ", ".join(f"{k} {v['path']} ({v['sha256'][:19]}…)" for k, v in prov["files"].items())
        models = ", ".join(f"{s}: {m['spec']} @ {m.get('revision')}" for s, m in prov["models"].items())
        lines.append(f"\n_Collection {prov['collection']} ({prov['items']} items), {prov['date']}, vitrina {prov['vitrina']}, seed {prov['seed']}; models {models}"
                     + (f"; files {files}" if files else "") + "._")  # fmt: skip
    return "\n".join(lines)


def contact_sheet(
    coll: Collection, results: dict[str, Any], *, misses: int = 20, hits: int = 8, fetcher: Any = None
) -> str:
    """An HTML page of text→image hits and misses per space: the caption, its target and what was
    found first, as small embedded thumbnails (no requests leave the page). Every string from the
    collection is escaped; ids are shown, never linked."""
    import base64
    import html

    thumbs: dict[str, str] = {}

    def thumb(item_id: str) -> str:
        if item_id not in thumbs:
            uri = ""
            try:
                item = coll.item(item_id)
                im = read_image(item.image, fetcher=fetcher).convert("RGB")
                im.thumbnail((112, 112))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=70)
                uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
            except Exception:  # an unreadable image is shown as its id alone
                pass
            thumbs[item_id] = uri
        uri = thumbs[item_id]
        img = f'<img src="{uri}" alt="">' if uri else '<span class="none">no image</span>'
        return f"<figure>{img}<figcaption>{html.escape(item_id)}</figcaption></figure>"

    parts = ["<!doctype html><html><head><meta charset=utf-8>",
             "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
             "<title>vitrina contact sheet</title><style>body{font:14px sans-serif;margin:1em}table{border-collapse:collapse}td{border-top:1px solid #ccc;"
             "padding:4px;vertical-align:top}figure{display:inline-block;margin:2px;width:116px}img{max-width:112px;max-height:112px}"
             "figcaption{font-size:10px;overflow-wrap:anywhere}.target{background:#e6f2e6}.miss{color:#a00}.near{color:#a60}.none{color:#888}</style></head><body>"]  # fmt: skip
    for space, r in (results.get("text_to_image") or {}).items():
        queries = sorted(r.get("per_query", []), key=lambda q: -q["rank"])
        # The worst-ranked queries first (a miss: not in the top 10), then some found first.
        chosen = [("miss" if q["rank"] >= 10 else "near", q) for q in queries if q["rank"] > 0][:misses] + [
            ("hit", q) for q in reversed(queries) if q["rank"] == 0
        ][:hits]
        parts.append(
            f"<h2>{html.escape(space)} ({html.escape(str(r.get('model', '')))}), split {html.escape(str(r.get('split', '')))}</h2>"
        )
        parts.append(
            f"<p>{r.get('never_found', 0)} of {len(r.get('per_item', []))} items are never in the top 10; recall@10 {r.get('recall@10', 0):.1%}.</p>"
        )
        parts.append("<table><tr><th>caption</th><th>rank</th><th>target</th><th>found first</th></tr>")
        for kind, q in chosen:
            found = "".join(thumb(i) for i in q.get("top", [])[:TOP])
            parts.append(f'<tr class="{kind}"><td>{html.escape(q["caption"])}</td><td class="{kind}">{q["rank"] + 1}</td>'
                         f'<td class="target">{thumb(q["id"])}</td><td>{found}</td></tr>')  # fmt: skip
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def svg_chart(results: dict[str, dict[str, Any]], title: str = "vitrina evaluation") -> str:
    """Grouped bars: one group per metric, one bar per space (no plotting library needed)."""
    bars: list[tuple[str, str, float]] = []  # (metric, space, value)
    for kind, by_space in results.items():
        if kind not in KINDS:
            continue
        for space, r in by_space.items():
            for key, value in r.items():
                if isinstance(value, float) and key != "mrr":
                    bars.append((f"{kind}: {key}", space, value))
                elif isinstance(value, dict) and "top10" in value and key != "chance":
                    bars.append((f"{kind}: {key} top10", space, float(value["top10"])))
    metrics = list(dict.fromkeys(b[0] for b in bars))
    spaces = list(dict.fromkeys(b[1] for b in bars))
    colours = ["#8a3b12", "#1f6f8b", "#5b8c2a", "#7a4e9d", "#c08a00"]
    row_h, bar_h, left, width = 18 * max(1, len(spaces)) + 14, 16, 250, 420
    height = 50 + row_h * len(metrics) + 24 * len(spaces)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{_esc(title)}</text>']  # fmt: skip
    y = 40
    for metric in metrics:
        out.append(f'<text x="{left - 8}" y="{y + 12}" text-anchor="end">{_esc(metric)}</text>')
        for s, space in enumerate(spaces):
            value = next((b[2] for b in bars if b[0] == metric and b[1] == space), None)
            if value is None:
                continue
            w = max(1.0, width * value)
            out.append(
                f'<rect x="{left}" y="{y + s * 18}" width="{w:.1f}" height="{bar_h}" fill="{colours[s % len(colours)]}"/>'
            )
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + s * 18 + 12}">{value:.1%}</text>')
        y += row_h
    for s, space in enumerate(spaces):
        out.append(
            f'<rect x="10" y="{y + 6 + s * 22}" width="14" height="14" fill="{colours[s % len(colours)]}"/><text x="30" y="{y + 18 + s * 22}">{_esc(space)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
