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


# -- evaluations --------------------------------------------------------------------------------


def _space_matrix(coll: Collection, space: str | None) -> tuple[Any, list[str], np.ndarray]:
    sp = coll.space(space)
    ids, matrix = coll.vectors(sp.name)
    return sp, ids, matrix


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """JSONL lines {"id": ..., "caption": ...} (as `vitrina captions` writes) or a CSV id,caption."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            return [(r["id"], r["caption"]) for r in csv.DictReader(f) if r.get("id") and r.get("caption")]
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get("id") and row.get("caption"):
                out.append((str(row["id"]), str(row["caption"])))
    return out


def eval_pairs(coll: Collection, pairs: Sequence[tuple[str, str]], *, space: str | None = None, ks: Sequence[int] = KS) -> dict[str, Any]:
    sp, ids, matrix = _space_matrix(coll, space)
    position = {i: n for n, i in enumerate(ids)}
    usable = [(i, c) for i, c in pairs if i in position]
    if not usable:
        raise QueryError("None of the pairs' ids has a vector in this space; check the ids (vitrina captions writes them).")
    embedder = coll.embedder_for(sp)
    ranks = []
    for start in range(0, len(usable), 256):
        chunk = usable[start : start + 256]
        texts = embedder.embed_texts([c for _, c in chunk])
        scores = matrix @ texts.T  # (items, queries)
        target = np.asarray([position[i] for i, _ in chunk])
        target_scores = scores[target, np.arange(len(chunk))]
        ranks += list((scores > target_scores[None, :]).sum(0))
    out = {f"recall@{k}": round(recall_at_k(ranks, k), 4) for k in ks}
    out.update({"mrr": round(mrr(ranks), 4), "queries": len(usable), "skipped": len(pairs) - len(usable), "items": len(ids), "space": sp.name, "model": sp.fingerprint.spec})
    return out


def _perturbations(seed: int) -> dict[str, Callable[[Image.Image], Image.Image]]:
    rng = random.Random(seed)

    def crop(im: Image.Image) -> Image.Image:
        w, h = im.size
        dx, dy = int(w * rng.uniform(0.05, 0.1)), int(h * rng.uniform(0.05, 0.1))
        return im.crop((dx, dy, w - dx, h - dy))

    def jpeg(im: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=30)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    return {
        "crop": crop,
        "rescale": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2))),
        "jpeg": jpeg,
        "rotate": lambda im: im.rotate(rng.choice([-7, -4, 4, 7]), expand=True, fillcolor=(255, 255, 255)),
        "grayscale": lambda im: ImageOps.grayscale(im).convert("RGB"),
    }


def eval_exact_image(coll: Collection, *, sample: int = 200, seed: int = 0, space: str | None = None, fetcher: Any = None) -> dict[str, Any]:
    sp, ids, matrix = _space_matrix(coll, space)
    embedder = coll.embedder_for(sp)
    chosen = sorted(random.Random(seed).sample(range(len(ids)), min(sample, len(ids))))
    items = coll.items([ids[i] for i in chosen])
    perturb = _perturbations(seed)
    ranks: dict[str, list[int]] = {name: [] for name in perturb}
    failed = 0
    for n in chosen:
        try:
            original = read_image(items[ids[n]].image, fetcher=fetcher)
        except Exception:
            failed += 1
            continue
        queries = embed_images(embedder, [fn(original) for fn in perturb.values()])
        scores = matrix @ queries.T
        for col, name in enumerate(perturb):
            ranks[name].append(int((scores[:, col] > scores[n, col]).sum()))
    out: dict[str, Any] = {name: {"top1": round(recall_at_k(r, 1), 4), "top10": round(recall_at_k(r, 10), 4)} for name, r in ranks.items()}
    out.update({"queries": len(chosen) - failed, "unreadable": failed, "items": len(ids), "space": sp.name, "model": sp.fingerprint.spec})
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


def eval_queries(coll: Collection, judged: Sequence[tuple[str, dict[str, float]]], *, k: int = 10, space: str | None = None) -> dict[str, Any]:
    per_query = []
    for query, relevant in judged:
        ranked = [h.id for h in coll.search(query, limit=k, space=space)]
        per_query.append({"query": query, f"ndcg@{k}": round(ndcg_at_k(ranked, relevant, k), 4), f"p@{k}": round(precision_at_k(ranked, relevant, k), 4), "relevant": len(relevant)})
    sp = coll.space(space)
    return {f"ndcg@{k}": round(float(np.mean([q[f"ndcg@{k}"] for q in per_query])), 4) if per_query else 0.0,
            f"p@{k}": round(float(np.mean([q[f"p@{k}"] for q in per_query])), 4) if per_query else 0.0,
            "queries": len(per_query), "per_query": per_query, "space": sp.name, "model": sp.fingerprint.spec}  # fmt: skip


def captions(coll: Collection, *, held_out_percent: int = 20) -> list[dict[str, Any]]:
    """Caption pairs from item metadata (the LoC recipe), with a deterministic split by item."""
    from .captions import build_caption

    out = []
    for item in coll.iter_items(exclude_status="failed"):
        caption = item.metadata.get("caption") or build_caption(item.metadata)
        if caption:
            bucket = int(hashlib.md5(item.id.encode()).hexdigest(), 16) % 100
            out.append({"id": item.id, "caption": caption, "split": "held_out" if bucket < held_out_percent else "train"})
    return out


# -- reports ------------------------------------------------------------------------------------


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """A table per evaluation kind, one row per space."""
    lines = []
    for kind, by_space in results.items():
        if not by_space:
            continue
        lines.append(f"### {kind}\n")
        first = next(iter(by_space.values()))
        if kind == "exact_image":
            cols = [f"{p} top1/top10" for p in first if isinstance(first[p], dict)]
            lines.append("| space | model | " + " | ".join(cols) + " | queries |")
            lines.append("|---" * (len(cols) + 3) + "|")
            for space, r in by_space.items():
                cells = [f"{r[p]['top1']:.1%} / {r[p]['top10']:.1%}" for p in r if isinstance(r[p], dict)]
                lines.append(f"| {space} | {r['model']} | " + " | ".join(cells) + f" | {r['queries']} |")
        else:
            keys = [k for k, v in first.items() if isinstance(v, float)]
            lines.append("| space | model | " + " | ".join(keys) + " | queries |")
            lines.append("|---" * (len(keys) + 3) + "|")
            for space, r in by_space.items():
                lines.append(f"| {space} | {r['model']} | " + " | ".join(f"{r[k]:.1%}" if k != "mrr" else f"{r[k]:.3f}" for k in keys) + f" | {r['queries']} |")
        lines.append("")
    return "\n".join(lines)


def svg_chart(results: dict[str, dict[str, Any]], title: str = "vitrina evaluation") -> str:
    """Grouped bars: one group per metric, one bar per space (no plotting library needed)."""
    bars: list[tuple[str, str, float]] = []  # (metric, space, value)
    for kind, by_space in results.items():
        for space, r in by_space.items():
            for key, value in r.items():
                if isinstance(value, float) and key != "mrr":
                    bars.append((f"{kind}: {key}", space, value))
                elif isinstance(value, dict) and "top10" in value:
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
            out.append(f'<rect x="{left}" y="{y + s * 18}" width="{w:.1f}" height="{bar_h}" fill="{colours[s % len(colours)]}"/>')
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + s * 18 + 12}">{value:.1%}</text>')
        y += row_h
    for s, space in enumerate(spaces):
        out.append(f'<rect x="10" y="{y + 6 + s * 22}" width="14" height="14" fill="{colours[s % len(colours)]}"/><text x="30" y="{y + 18 + s * 22}">{_esc(space)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
