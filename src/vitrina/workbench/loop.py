"""Train in the loop: a probe trained on a question's yes / no labels (``classify.train_probe``,
so it becomes the same tag ``vitrina classify`` makes, usable in ``--where`` and ``prune``), the
labels written over its output as corrections, and a review queue of the unlabelled items the
probe is least sure of (uncertainty sampling: the probability nearest the probe's threshold), with
a quarter of it drawn at random (``mixed``, the default: pure uncertainty order can get stuck on one
kind of positive; the random picks also give an unbiased F1 estimate).

Each training appends its cross-validated F1 and interval to the question's learning curve, so
the page can show how many labels a given F1 needed."""

from __future__ import annotations

import csv
import json
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, QueryError, StoreLocked

if TYPE_CHECKING:
    from ..collection import Collection

__all__ = [
    "COLD_START",
    "EXPLORE_SHARE",
    "MIN_PER_ANSWER",
    "ORDERS",
    "curve",
    "probabilities",
    "random_picks_list",
    "review_queue",
    "train",
]

MIN_PER_ANSWER = 2  # yes and no labels each, before a probe can be cross-validated
CURVE_KEPT = 200  # trainings remembered per question
MAX_QUEUE = 500


def _curve_key(tag: str) -> str:
    return f"workbench.curve.{tag}"


def curve(coll: Collection, tag: str) -> list[dict[str, Any]]:
    """The question's trainings so far: labels used, F1, its 95% interval, when."""
    try:
        return list(json.loads(coll.state(_curve_key(tag)) or "[]"))
    except ValueError:
        return []


def train(coll: Collection, question: str, tag: str, labels: list[dict[str, Any]], *, space: str | None = None,
          folds: int = 5, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Fit the probe ``tag`` on the yes / no labels, tag the collection, and write the labels over
    the probe's output (a person's answer wins over the machine's)."""
    from ..classify import train_probe

    answered = [lab for lab in labels if lab["answer"] in ("yes", "no")]
    yes = sum(lab["answer"] == "yes" for lab in answered)
    no = len(answered) - yes
    if yes < MIN_PER_ANSWER or no < MIN_PER_ANSWER:
        raise QueryError(f"Question {question!r} has {yes} yes and {no} no labels; a probe needs at least {MIN_PER_ANSWER} of each "
                         "(five or more for a useful F1). Label more items.")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vitrina-labels-") as tmp:
        path = Path(tmp) / f"{tag}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "label"])
            writer.writerows([lab["id"], lab["answer"]] for lab in answered)
        report = train_probe(coll, path, name=tag, space=space, folds=folds, seed=seed).to_dict()
    with coll.curating() as curation:
        curation.replace_corrections(
            tag, f"label:{question}", [(lab["id"], lab["answer"], lab["who"]) for lab in answered]
        )
    point = {"labels": len(answered), "yes": yes, "no": no, "f1": report["f1_macro_cv"], "ci95": report["f1_macro_cv_ci95"],
             "trained_on": report["trained_on"]}  # fmt: skip
    point.update(_random_part_f1(report.get("cv_predictions") or [], set(random_picks_list(coll, tag))))
    history = [*curve(coll, tag), point][-CURVE_KEPT:]
    coll.set_state(_curve_key(tag), json.dumps(history))
    report.update({"question": question, "tag": tag, "curve": history})
    return report


def _random_part_f1(predictions: list[dict[str, Any]], random_ids: set[str]) -> dict[str, Any]:
    """Cross-validated macro F1 over the labelled items that a mixed queue drew at random: they are
    an unbiased sample of the collection, where the uncertain picks are its hardest items (so the
    F1 over all labels runs low under uncertainty order)."""
    rows = [r for r in predictions if r["id"] in random_ids]
    if not rows:
        return {"random_labels": 0, "f1_random": None}
    scores = []
    for answer in ("yes", "no"):
        truth = sum(r["label"] == answer for r in rows)
        said = sum(r["predicted"] == answer for r in rows)
        hits = sum(r["label"] == answer and r["predicted"] == answer for r in rows)
        if truth or said:
            scores.append(2 * hits / (truth + said))
    return {"random_labels": len(rows), "f1_random": round(float(np.mean(scores)), 4)}


def _probe(coll: Collection, tag: str) -> dict[str, Any]:
    from ..classify import probe_path

    path = probe_path(coll, tag)
    if not path.exists():
        raise ConfigError(f"No probe {tag!r} in collection {coll.name!r} yet: label a few items and train it first.")
    probe: dict[str, Any] = json.loads(path.read_text())
    if probe.get("classes") != ["no", "yes"]:
        raise ConfigError(
            f"Classifier {tag!r} is not a yes/no probe of the workbench (classes {probe.get('classes')})."
        )
    return probe


def probabilities(coll: Collection, tag: str) -> tuple[list[str], np.ndarray, float]:
    """(ids, P(yes) of each, the probe's threshold) over the probe's space."""
    probe = _probe(coll, tag)
    coef = np.asarray(probe["coef"], np.float32)[0]
    bias = float(probe["intercept"][0])
    ids: list[str] = []
    parts = []
    for chunk_ids, matrix in coll.iter_vectors(probe["space"]):
        ids += chunk_ids
        parts.append(1 / (1 + np.exp(-(np.asarray(matrix, np.float32) @ coef + bias))))
    p = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return ids, p, float(probe.get("threshold") or 0.5)


ORDERS = ("mixed", "uncertain", "random", "yes", "no")
EXPLORE_SHARE = 0.25  # the share of a mixed queue drawn at random from the unlabelled items
COLD_START = 5  # a mixed queue looks for the rarer answer until each answer has this many labels
RANDOM_KEPT = 5000  # random picks remembered per tag (for the unbiased F1 estimate)


def _random_key(tag: str) -> str:
    return f"workbench.random.{tag}"


def random_picks_list(coll: Collection, tag: str) -> list[str]:
    """The items a mixed queue has offered as random picks (labelled or not), oldest first."""
    try:
        return [str(i) for i in json.loads(coll.state(_random_key(tag)) or "[]")]
    except ValueError:
        return []


def _answer_counts(coll: Collection, tag: str) -> dict[str, int]:
    counts = {"yes": 0, "no": 0}
    for row in coll.curation().corrections(tag):
        if str(row["source"] or "").startswith("label:") and row["value"] in counts:
            counts[row["value"]] += 1
    return counts


def review_queue(coll: Collection, tag: str, labelled: set[str], *, limit: int = 20, order: str = "mixed", seed: int = 0,
                 explore: float = EXPLORE_SHARE, cold_start: int = COLD_START) -> list[dict[str, Any]]:  # fmt: skip
    """Unlabelled items to review next, each with ``pick`` saying why it is there:

    - ``mixed`` (the default): a share ``explore`` of the queue drawn at random from all unlabelled
      items (``pick: random``; spread through the queue), the rest the probe's least sure
      (``uncertain``) — or, while either answer has fewer than ``cold_start`` labels, the items
      most likely to be that rarer answer (``likely``). Pure uncertainty order can lock onto one
      kind of positive and never see the others (sampling bias); the random share keeps exploring
      and gives an unbiased sample to estimate F1 on (``train`` reports it).
    - ``uncertain``: nearest the threshold first; ``random``; ``yes`` / ``no``: most likely that
      answer first.

    The queue is reproducible: the same labels, probe and ``seed`` give the same queue."""
    if order not in ORDERS:
        raise QueryError(f"Unknown review order {order!r}; use {', '.join(ORDERS)}.")
    if not 1 <= limit <= MAX_QUEUE:
        raise QueryError(f"A review queue holds 1 to {MAX_QUEUE} items, not {limit}.")
    if not 0 <= explore <= 1:
        raise QueryError(f"The random share of a review queue is between 0 and 1, not {explore}.")
    ids, p, threshold = probabilities(coll, tag)
    open_ = np.asarray([i not in labelled for i in ids], bool)
    candidates = np.flatnonzero(open_)
    rng = np.random.default_rng([seed, len(labelled)])
    logit = np.log(np.clip(p, 1e-7, 1 - 1e-7) / np.clip(1 - p, 1e-7, 1))
    uncertainty = np.abs(logit - math.log(max(threshold, 1e-7) / max(1 - threshold, 1e-7)))
    picks: list[tuple[int, str]] = []
    if order == "mixed":
        share = limit * explore
        n_random = min(len(candidates), int(share) + int(rng.random() < share - int(share)))
        drawn = rng.permutation(candidates)[:n_random]  # drawn from every unlabelled item: an unbiased sample
        rest = candidates[~np.isin(candidates, drawn)]
        counts = _answer_counts(coll, tag)
        rarer = min(counts, key=lambda a: counts[a])
        if counts[rarer] < cold_start:
            key, why = (-p if rarer == "yes" else p), "likely"
        else:
            key, why = uncertainty, "uncertain"
        n = min(limit, len(candidates))  # near the end fewer items are left than the queue holds
        main = rest[np.argsort(key[rest], kind="stable")[: n - n_random]]
        slots = {min(n - 1, int((k + 0.5) * n / n_random)) for k in range(n_random)} if n_random else set()
        main_left, drawn_left = main.tolist(), drawn.tolist()
        for position in range(n):
            if (position in slots and drawn_left) or not main_left:
                picks.append((drawn_left.pop(0), "random"))
            else:
                picks.append((main_left.pop(0), why))
        if n_random:
            served = [ids[k] for k, w in picks if w == "random"]
            remembered = [i for i in random_picks_list(coll, tag) if i not in served]
            try:
                coll.set_state(_random_key(tag), json.dumps([*remembered, *served][-RANDOM_KEPT:]))
            except StoreLocked:
                pass  # someone is writing (an index run, another curator): the queue is still right; these
                # picks just do not count towards the F1 on random picks
    elif order == "uncertain":
        picks = [(k, "uncertain") for k in candidates[np.argsort(uncertainty[candidates], kind="stable")[:limit]]]
    elif order == "random":
        picks = [(k, "random") for k in rng.permutation(candidates)[:limit]]
    else:
        sign = -1 if order == "yes" else 1
        picks = [(k, "likely") for k in candidates[np.argsort(sign * p[candidates], kind="stable")[:limit]]]
    return [
        {"id": ids[k], "p_yes": round(float(p[k]), 4), "machine": "yes" if p[k] >= threshold else "no", "pick": why}
        for k, why in picks
    ]
