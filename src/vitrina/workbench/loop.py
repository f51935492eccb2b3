"""Train in the loop: a probe trained on a question's yes / no labels (``classify.train_probe``,
so it becomes the same tag ``vitrina classify`` makes, usable in ``--where`` and ``prune``), the
labels written over its output as corrections, and a review queue of the unlabelled items the
probe is least sure of (uncertainty sampling: the probability nearest the probe's threshold).

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

from ..errors import ConfigError, QueryError

if TYPE_CHECKING:
    from ..collection import Collection

__all__ = ["MIN_PER_ANSWER", "curve", "probabilities", "review_queue", "train"]

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
    history = [*curve(coll, tag), point][-CURVE_KEPT:]
    coll.set_state(_curve_key(tag), json.dumps(history))
    report.update({"question": question, "tag": tag, "curve": history})
    return report


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


def review_queue(coll: Collection, tag: str, labelled: set[str], *, limit: int = 20, order: str = "uncertain",
                 seed: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """Unlabelled items to review next: ``uncertain`` (nearest the threshold first), ``random``,
    ``yes`` (most likely yes first, to find more positives) or ``no``."""
    if order not in ("uncertain", "random", "yes", "no"):
        raise QueryError(f"Unknown review order {order!r}; use uncertain, random, yes or no.")
    if not 1 <= limit <= MAX_QUEUE:
        raise QueryError(f"A review queue holds 1 to {MAX_QUEUE} items, not {limit}.")
    ids, p, threshold = probabilities(coll, tag)
    open_ = np.asarray([i not in labelled for i in ids], bool)
    candidates = np.flatnonzero(open_)
    if order == "uncertain":
        logit = np.log(np.clip(p, 1e-7, 1 - 1e-7) / np.clip(1 - p, 1e-7, 1))
        key = np.abs(logit - math.log(max(threshold, 1e-7) / max(1 - threshold, 1e-7)))
        chosen = candidates[np.argsort(key[candidates], kind="stable")[:limit]]
    elif order == "random":
        chosen = np.random.default_rng(seed).permutation(candidates)[:limit]
    else:
        sign = -1 if order == "yes" else 1
        chosen = candidates[np.argsort(sign * p[candidates], kind="stable")[:limit]]
    return [
        {"id": ids[k], "p_yes": round(float(p[k]), 4), "machine": "yes" if p[k] >= threshold else "no"} for k in chosen
    ]
