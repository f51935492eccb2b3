"""Text→image with caption pairs (recall@k, MRR, per item, by a metadata key, paired between
spaces), judged queries (nDCG@k, P@k), and whether the evaluated items were in the model's own
training data."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..collection import Collection
from ..errors import QueryError
from ..images import read_image
from .metrics import (
    KS,
    chance,
    chance_shared,
    image_signature,
    mrr,
    ndcg_at_k,
    paired_test,
    precision_at_k,
    rank_intervals,
    rank_of,
    recall_at_k,
    signature_distance,
    small_sample_warning,
)

ItemIds = set[str] | frozenset[str]


def space_matrix(
    coll: Collection, space: str | None, candidates: ItemIds | None = None
) -> tuple[Any, list[str], np.ndarray]:
    """The space, its item ids and their vectors (one row each); with ``candidates``, only the
    items among them (spaces compared on the items they all cover)."""
    sp = coll.space(space)
    ids, matrix = coll.vectors(sp.name)
    if candidates is not None:
        keep = [n for n, i in enumerate(ids) if i in candidates]
        ids, matrix = [ids[n] for n in keep], matrix[keep]
    return sp, ids, matrix


def common_candidates(coll: Collection, spaces: Sequence[str]) -> tuple[set[str] | None, dict[str, Any] | None]:
    """The items every one of ``spaces`` has a vector for, and what was dropped from each, when
    they differ: a space lacking vectors ranks among fewer candidates, so its figures (and a paired
    test against it) are not comparable. (None, None) when the spaces cover the same items."""
    covered = {s: set(coll.vectors(s)[0]) for s in spaces}
    if len(covered) < 2:
        return None, None
    common = set.intersection(*covered.values())
    if all(len(c) == len(common) for c in covered.values()):
        return None, None
    if not common:
        counts = ", ".join(f"{s} {len(c)}" for s, c in covered.items())
        raise QueryError(
            f"The spaces have no item in common ({counts} items): they cannot be compared; index the same items into each."
        )
    dropped = {s: len(c) - len(common) for s, c in covered.items()}
    return common, {"items": len(common), "covered": {s: len(c) for s, c in covered.items()}, "dropped": dropped}


def eval_pairs(coll: Collection, pairs: Sequence[tuple[str, str]], *, space: str | None = None, ks: Sequence[int] = KS, split: str | None = None,
               seed: int = 0, check_training: bool = True, progress: Callable[[int, int], None] | None = None,
               candidates: ItemIds | None = None, shared_hits: bool = True) -> dict[str, Any]:  # fmt: skip
    """Text→image: each caption ranks every item of the space (with ``candidates``: those of them
    only, as when spaces are compared); ``split`` is what the pairs are (see ``select_split``) and
    is written in the report. A caption several items share scores a hit on any of them
    (``shared_hits``; False: only its own item counts, as the mini model's card measured)."""
    sp, ids, matrix = space_matrix(coll, space, candidates)
    position = {i: n for n, i in enumerate(ids)}
    usable = [(i, c) for i, c in pairs if i in position]
    if not usable:
        raise QueryError(
            "None of the pairs' ids has a vector in this space; check the ids (vitrina captions writes them)."
        )
    embedder = coll.embedder_for(sp)
    sharing = shared_captions(usable) if shared_hits else {}
    ranks: list[int] = []
    hits: list[str] = []
    tops: list[list[str]] = []
    for start in range(0, len(usable), 256):
        chunk = usable[start : start + 256]
        texts = embedder.embed_texts([c for _, c in chunk])
        scores = matrix @ texts.T
        ranks += [int(r) for r in rank_of(scores, np.asarray([position[i] for i, _ in chunk]))]
        # A caption shared by several items: a hit on any of them counts (the one ranked first).
        for q, (i, c) in enumerate(chunk):
            group = sharing.get(_caption_key(c))
            if not group:
                hits.append(i)
                continue
            rows = np.asarray([position[g] for g in group])
            best = rows[int(np.argmax(scores[rows, q]))]
            others = np.ones(len(ids), bool)
            others[rows] = False
            ranks[start + q] = int((scores[others, q] >= scores[best, q]).sum())
            hits.append(ids[best])
        # What each query found first (for the contact sheet): the top few, without sorting every score.
        top_n = min(TOP, len(ids))
        first = np.argpartition(-scores, top_n - 1, axis=0)[:top_n]
        for q in range(scores.shape[1]):
            tops.append([ids[n] for n in sorted(first[:, q], key=lambda n: -scores[n, q])])
        if progress:
            progress(len(ranks), len(usable))
    out: dict[str, Any] = {f"recall@{k}": round(recall_at_k(ranks, k), 4) for k in ks}
    out.update({"mrr": round(mrr(ranks), 4), "queries": len(usable), "skipped": len(pairs) - len(usable), "items": len(ids), "space": sp.name, "model": sp.fingerprint.spec,
                "split": split or "unspecified", "candidates_digest": candidates_digest_of(ids), "ci95": rank_intervals(ranks, ks), "interval": "Wilson 95 %",
                "chance": chance_shared(len(ids), [len(sharing.get(_caption_key(c), [i])) for i, c in usable], ks) if sharing else chance(len(ids), ks),
                "per_query": [{"id": i, "caption": c, "rank": r, "top": t, **({"hit": h, "shares_caption": len(sharing[_caption_key(c)])} if _caption_key(c) in sharing else {})}
                              for (i, c), r, t, h in zip(usable, ranks, tops, hits)]})  # fmt: skip
    out["per_item"] = per_item(out["per_query"])
    out["never_found"] = sum(1 for r in out["per_item"] if r["best_rank"] >= 10)
    out["warnings"] = [w for w in [small_sample_warning("text→image", ranks, max(ks))] if w]
    if sharing:
        out["duplicate_captions"] = {"captions": len(sharing), "items": sum(len(g) for g in sharing.values()),
                                     "groups": [{"caption": next(c for i, c in usable if _caption_key(c) == key), "ids": g} for key, g in list(sharing.items())[:20]]}  # fmt: skip
        example = out["duplicate_captions"]["groups"][0]
        out["warnings"].append(f"{out['duplicate_captions']['items']} items share {len(sharing)} captions (e.g. {example['caption']!r}: {', '.join(example['ids'][:3])}): "
                               "a query scores a hit on whichever item with its caption ranks first (per_query 'hit'); make captions distinct to score each item on its own.")  # fmt: skip
    if check_training:
        overlap = training_overlap(coll, sp, sorted({i for i, _ in usable}))
        if overlap:
            out["training_overlap"] = overlap
    return out


TOP = 5  # retrieved items kept per query


def _caption_key(caption: str) -> str:
    return " ".join(caption.split()).casefold()


def shared_captions(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Captions (compared without case and extra spaces) that several items have: caption -> ids.
    Such items cannot be told apart by their caption, so each counts as a hit for the others."""
    by_caption: dict[str, list[str]] = {}
    for i, c in pairs:
        ids = by_caption.setdefault(_caption_key(c), [])
        if i not in ids:
            ids.append(i)
    return {c: ids for c, ids in by_caption.items() if len(ids) > 1}


def candidates_digest_of(ids: Sequence[str]) -> str:
    """A short fingerprint of a candidate set: equal sets, equal digests."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


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

    from ..embedding.mini import TRAINING

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
# A signature with fewer cells set than this is a near-uniform picture (a white page, plain paper,
# one line of text: 2 of 512): it lies within SAME_PICTURE of the 67 near-empty training
# signatures and says nothing about which picture it is, so it is not compared (issue 27).
LOW_INFORMATION = 24


def signature_bits(signature: bytes) -> int:
    """How many cells of an image signature are set (0 for a uniform picture)."""
    return int(np.unpackbits(np.frombuffer(signature, np.uint8)).sum())


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
        found: list[str] = []
        plain: list[str] = []
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
            if signature_bits(signature) < LOW_INFORMATION:
                plain.append(item_id)
            elif signature_distance(signatures, signature).min() <= SAME_PICTURE:
                found.append(item_id)
        what = "the mini model's training drawings (openclipart-png; by file path and image signature)"
    elif spec.startswith("hf:") and (Path(spec[3:]) / "vitrina-finetune.json").is_file():
        record = json.loads((Path(spec[3:]) / "vitrina-finetune.json").read_text())
        trained = set(record.get("train_ids") or [])
        if not trained:
            return None
        checked, plain = ids, []
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
        "low_information": len(plain),
    }
    if plain:
        out["note"] = (f"{len(plain)} near-uniform pictures (blank pages, plain paper, a line of text) were checked by file path only: "
                       "their image signature cannot tell them from a training drawing.")  # fmt: skip
    if found:
        out["warning"] = (f"{len(found)} of {len(checked)} evaluated items ({share:.0%}) are in {what}: figures on them measure memory, "
                          "not search; evaluate on items the model never saw.")  # fmt: skip
    return out


def eval_queries(coll: Collection, judged: Sequence[tuple[str, dict[str, float]]], *, k: int = 10, space: str | None = None,
                 progress: Callable[[int, int], None] | None = None, candidates: ItemIds | None = None, check_training: bool = True) -> dict[str, Any]:  # fmt: skip
    """nDCG@k and P@k per judged query. Judged ids that are not in the collection are counted and
    left out (they could never be found); a query left with none is skipped, not scored 0. With
    ``candidates``, only those items are ranked (spaces compared on the items they all cover)."""
    extra = 0
    if candidates is not None:
        extra = len(coll.vectors(space)[0]) - len(candidates)
    per_query = []
    unknown: list[str] = []
    skipped: list[str] = []
    all_zero: list[str] = []
    targets: set[str] = set()
    present = set(coll.items(sorted({i for _, rel in judged for i in rel})))
    if candidates is not None:
        present &= set(candidates)
    for n, (query, relevant) in enumerate(judged):
        if progress and (n % 50 == 49 or n == len(judged) - 1):
            progress(n + 1, len(judged))
        missing = [i for i in relevant if i not in present]
        unknown += missing
        relevant = {i: g for i, g in relevant.items() if i in present}
        if not any(g > 0 for g in relevant.values()):
            skipped.append(query)
            if relevant:  # judged, but every grade is 0: nothing to find
                all_zero.append(query)
            continue
        ranked = [h.id for h in coll.search(query, limit=k + extra, space=space)]
        if candidates is not None:  # the first k among the common items lie within the first k + dropped
            ranked = [i for i in ranked if i in candidates][:k]
        targets.update(i for i, g in relevant.items() if g > 0)
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
    if all_zero:
        warnings.append(f"{len(all_zero)} queries judge every item not relevant (relevance 0) and were skipped: nothing to find "
                        f"(e.g. {all_zero[0]!r}).")  # fmt: skip
    absent = [q for q in skipped if q not in all_zero]
    if absent:
        warnings.append(
            f"{len(absent)} queries have no judged item in the collection and were skipped (e.g. {absent[0]!r})."
        )
    if not per_query:
        raise QueryError(
            "None of the judged queries has a relevant item in this collection; check the ids in the queries file."
        )
    out["warnings"] = warnings
    if check_training:
        overlap = training_overlap(coll, sp, sorted(targets))
        if overlap:
            out["training_overlap"] = overlap
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
    """Each space against the first, on the queries both answered (paired_test). Refuses spaces
    whose queries ranked different candidate sets (see ``common_candidates``)."""
    names = list(by_space)
    sizes = {n: by_space[n].get("items") for n in names}
    digests = {by_space[n].get("candidates_digest") for n in names}
    if len(set(sizes.values())) > 1 or len(digests) > 1:
        counts = ", ".join(f"{n} {c}" for n, c in sizes.items())
        raise QueryError(f"The spaces ranked different numbers of candidates ({counts}): a paired test between them would "
                         "compare unequal tasks. Evaluate them on the items they all cover (run_eval does).")  # fmt: skip
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
