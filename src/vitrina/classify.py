"""Classifiers on stored embeddings; their outputs become item tags, usable as filters.

- ``zero_shot``: class prompts through the text tower, several templates per class averaged
  (the CLIP paper's prompt ensembling), softmax over cosine similarities at the model's
  temperature (CLIP's logit scale is 100).
- ``train_probe``: logistic regression (scikit-learn) on the stored image vectors of labelled
  items, cross-validated macro-F1 reported, saved as JSON (never pickle) with the fingerprint
  of the space it belongs to, and applied to the whole collection in batches (the Norwegian
  library's blank-page and segmentation-error classifiers are such probes).

    vitrina classify maps --zero-shot "blank page" "map" "photograph" "drawing" --name kind
    vitrina classify maps --train labels.csv --name page_kind
    vitrina search maps "harbour" --where "page_kind!=blank"
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .collection import Collection
from .errors import ConfigError, ModalityError, QueryError
from .files import write_atomic
from .records import ModelFingerprint

TEMPLATES = (
    "{}",
    "a {}.",
    "a picture of a {}.",
    "a drawing of a {}.",
    "a photograph of a {}.",
    "a scan of a {}.",
    "an illustration of a {}.",
    "an old print of a {}.",
)
BATCH = 50_000


@dataclass
class ClassifyReport:
    name: str
    kind: str  # "zero-shot" or "probe"
    space: str
    labels: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    tagged: int = 0
    f1_macro_cv: float | None = None  # macro-F1 of the pooled out-of-fold predictions
    f1_macro_cv_ci95: list[float] | None = None  # bootstrap over the labelled items
    f1_chance: float | None = None  # a guesser that follows the class shares scores 1/classes
    folds: int | None = None
    trained_on: int | None = None
    C: float | None = None
    skipped: list[str] = field(default_factory=list)  # labelled ids without a vector
    duplicates: int = 0  # repeated id,label rows, counted once
    conflicting: list[str] = field(default_factory=list)  # ids labelled with two classes: left out
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)  # F1, average precision, threshold, curve
    threshold: float | None = None  # binary probes: the positive class's threshold (best out-of-fold F1)
    positive: str | None = None  # binary probes: the class tagged where its probability reaches the threshold
    f1_macro_cv_at_half: float | None = None  # binary: the out-of-fold macro-F1 at probability 0.5, for comparison
    fold_thresholds: list[float] = field(
        default_factory=list
    )  # binary: each outer fold's threshold, tuned inside its training part
    cv_predictions: list[dict[str, Any]] = field(default_factory=list)  # per labelled item: fold, score, prediction
    warnings: list[str] = field(default_factory=list)
    labels_sha256: str | None = None  # the labels file the figures came from
    seconds: float = 0.0
    calibration: dict[str, Any] | None = None  # zero-shot: fitted temperature and NLL before/after

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skipped": self.skipped[:50], "conflicting": self.conflicting[:50]}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _vectors(coll: Collection, space: str | None) -> tuple[Any, list[str], np.ndarray]:
    sp = coll.space(space)
    ids, matrix = coll.vectors(sp.name)
    return sp, ids, matrix


def class_vectors(
    coll: Collection, labels: list[str], templates: tuple[str, ...] = TEMPLATES, space: str | None = None
) -> np.ndarray:
    sp = coll.space(space)
    if "text" not in sp.fingerprint.modalities:
        raise ModalityError(
            f"Space {sp.name!r} ({sp.fingerprint.spec}) is image-only: zero-shot classification needs a text tower. Train a probe instead (--train)."
        )
    embedder = coll.embedder_for(sp)
    out = []
    for label in labels:
        vecs = embedder.embed_texts([t.format(label) for t in templates])
        mean = vecs.mean(0)
        out.append(mean / np.linalg.norm(mean))
    return np.stack(out).astype(np.float32)


def fit_temperature(sims: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """The softmax temperature that minimises the negative log-likelihood of the true labels
    (temperature scaling, Guo et al. 2017). Returns (temperature, NLL there, NLL at 100)."""

    def nll(t: float) -> float:
        p = _softmax(t * sims)[np.arange(len(truth)), truth]
        return float(-np.log(np.clip(p, 1e-12, 1)).mean())

    grid = sorted({100.0, *np.geomspace(1, 500, 60).tolist()})
    best = min(grid, key=nll)
    return float(best), nll(best), nll(100.0)


def zero_shot(coll: Collection, labels: list[str], *, name: str = "zero_shot", templates: tuple[str, ...] = TEMPLATES, temperature: float = 100.0,
              space: str | None = None, calibrate: Path | None = None) -> ClassifyReport:  # fmt: skip
    """Tag every item with the most likely label. With ``calibrate`` (a CSV id,label of a few
    items), the temperature is fitted so the scores are calibrated probabilities for this collection."""
    if len(labels) < 2:
        raise QueryError("Zero-shot classification needs at least two labels.")
    started = time.perf_counter()
    sp, ids, matrix = _vectors(coll, space)
    classes = class_vectors(coll, labels, templates, sp.name)
    calibration = None
    warnings: list[str] = []
    if calibrate is not None:
        position = {i: n for n, i in enumerate(ids)}
        read = read_labels(calibrate)
        rows, duplicates, conflicting = dedupe_labels(read)
        other_label = [(i, label) for i, label in rows if label not in labels]
        no_vector = [i for i, label in rows if label in labels and i not in position]
        known = [(position[i], labels.index(label)) for i, label in rows if i in position and label in labels]
        dropped = {
            "duplicates": duplicates,
            "conflicting": len(conflicting),
            "not_a_label": len(other_label),
            "no_vector": len(no_vector),
        }
        if other_label:
            unknown = sorted({label for _, label in other_label})
            warnings.append(f"{calibrate}: {len(other_label)} of {len(rows)} rows have a label that is not one of the zero-shot labels "
                            f"({', '.join(map(repr, unknown[:5]))}); they were left out.")  # fmt: skip
        if duplicates or conflicting or no_vector:
            warnings.append(
                f"{calibrate}: left out {duplicates} repeated rows, {len(conflicting)} ids labelled twice differently, {len(no_vector)} ids without a vector."
            )
        present = sorted({labels[t] for _, t in known})
        if len(known) < 2 or len(present) < 2:
            raise QueryError(f"{calibrate}: calibration needs labelled items of at least two of the labels; {len(known)} usable rows cover "
                             f"{present or 'none'} ({', '.join(f'{v} {k}' for k, v in dropped.items() if v)} left out). Label items with the zero-shot labels.")  # fmt: skip
        sims = matrix[[k for k, _ in known]] @ classes.T
        temperature, fitted, default = fit_temperature(sims, np.asarray([t for _, t in known]))
        calibration = {"labels_sha256": _sha256(calibrate), "temperature": round(temperature, 3), "nll": round(fitted, 4), "nll_at_100": round(default, 4), "labelled": len(known),
                       "rows": len(read), "dropped": dropped, "labels_present": present}  # fmt: skip
    tags = []
    for start in range(0, len(ids), BATCH):
        probs = _softmax(temperature * (matrix[start : start + BATCH] @ classes.T))
        best = probs.argmax(1)
        tags += [(ids[start + i], labels[b], float(probs[i, b])) for i, b in enumerate(best)]
    _write(coll, name, f"zero-shot@{sp.name}", tags)
    report = ClassifyReport(name=name, kind="zero-shot", space=sp.name, labels=labels, tagged=len(tags), seconds=time.perf_counter() - started, calibration=calibration,
                            warnings=warnings)  # fmt: skip
    report.counts = {label: sum(1 for t in tags if t[1] == label) for label in labels}
    return report


def read_labels(path: Path) -> list[tuple[str, str]]:
    with Path(path).open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "label"} <= set(reader.fieldnames):
            raise ConfigError(f"{path}: the labels file needs the columns id,label.")
        return [(row["id"], row["label"]) for row in reader if row.get("id") and row.get("label")]


def dedupe_labels(rows: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int, list[str]]:
    """Rows with each id once: a repeated id,label row counts once (repeats would sit on both sides
    of a cross-validation split and inflate its F1); an id given two labels is left out. Returns
    (rows, repeated rows, ids with conflicting labels)."""
    seen: dict[str, set[str]] = {}
    for i, label in rows:
        seen.setdefault(i, set()).add(label)
    conflicting = sorted(i for i, labels in seen.items() if len(labels) > 1)
    kept = [(i, next(iter(labels))) for i, labels in seen.items() if len(labels) == 1]
    return kept, len(rows) - len(set(rows)), conflicting


def _macro_f1(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> float:
    scores = []
    for c in classes:
        tp = float(np.sum((pred == c) & (y == c)))
        denominator = float(np.sum(pred == c) + np.sum(y == c))
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


def _floor4(value: float) -> float:
    """Rounded down to 4 decimals: a threshold rounded up would leave out the item that set it."""
    return float(np.floor(float(value) * 1e4) / 1e4)


def _curve(truth: np.ndarray, score: np.ndarray, points: int = 20) -> dict[str, Any]:
    """One class against the rest: precision/recall at each threshold (thinned to ``points``), the
    average precision, and the threshold with the best F1."""
    order = np.argsort(-score, kind="stable")
    s, t = score[order], truth[order].astype(float)
    tp = np.cumsum(t)
    precision = tp / np.arange(1, len(t) + 1)
    recall = tp / max(1.0, t.sum())
    last = np.r_[s[1:] != s[:-1], True]  # one point per distinct score
    precision, recall, thresholds = precision[last], recall[last], s[last]
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    best = int(np.argmax(f1))
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    keep = sorted(set(np.linspace(0, len(thresholds) - 1, min(points, len(thresholds))).astype(int).tolist()) | {best})
    return {"average_precision": round(ap, 4), "best_f1": round(float(f1[best]), 4), "threshold": _floor4(thresholds[best]),
            "precision_at_threshold": round(float(precision[best]), 4), "recall_at_threshold": round(float(recall[best]), 4),
            "curve": [{"threshold": round(float(thresholds[k]), 4), "precision": round(float(precision[k]), 4), "recall": round(float(recall[k]), 4)} for k in keep]}  # fmt: skip


def _best_threshold(truth: np.ndarray, score: np.ndarray) -> float:
    return float(_curve(truth, score)["threshold"])


def _folds_for(y: np.ndarray, folds: int) -> int:
    """As many folds as asked, but at most half the items and no more than the rarest class has."""
    smallest = min(int((y == c).sum()) for c in set(y.tolist()))
    return max(2, min(folds, len(y) // 2, smallest))


def cross_validate(x: np.ndarray, y: np.ndarray, labels: list[str], *, positive: str | None = None, folds: int = 5, C: float = 1.0,
                   seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Out-of-fold predictions of a logistic-regression probe, scored honestly.

    Several classes: each item takes its most probable class. Two classes: the ``positive`` class
    is predicted where its probability reaches a threshold, and each outer fold's threshold is
    chosen **inside that fold's training part** (the best F1 on an inner cross-validation of it),
    never on the items it then scores: a threshold tuned on the pooled out-of-fold predictions
    themselves flatters the F1 (0.701 against a nested 0.594 in issue 27). Returns the
    probabilities ``oof`` (items x labels), ``fold`` per item, the predictions, the per-fold
    thresholds, the nested macro-F1 and (binary) the macro-F1 at probability 0.5."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        model = LogisticRegression(C=C, max_iter=2000, class_weight="balanced").fit(x[train], y[train])
        out = np.zeros((len(test), len(labels)), np.float64)
        out[:, [labels.index(str(c)) for c in model.classes_]] = model.predict_proba(x[test])
        return out

    oof = np.zeros((len(y), len(labels)), np.float64)
    fold = np.zeros(len(y), int)
    thresholds: list[float] = []
    notes: list[str] = []
    binary = len(labels) == 2
    pos = labels.index(positive or labels[1]) if binary else -1
    pred = np.empty(len(y), dtype=object)
    import warnings as _warnings

    with _warnings.catch_warnings():
        _warnings.filterwarnings(
            "ignore", message="The least populated class"
        )  # chosen: a rare class sits in fewer folds
        outer = StratifiedKFold(folds, shuffle=True, random_state=seed)
        for n, (train, test) in enumerate(outer.split(x, y)):
            oof[test] = fit_predict(train, test)
            fold[test] = n
            if not binary:
                continue
            inner_y = y[train]
            if min(int((inner_y == c).sum()) for c in labels) < 2:
                threshold = 0.5  # too few items to tune on: the default
                notes.append(f"fold {n + 1}: too few items of a class to tune a threshold; 0.5 used")
            else:
                inner = StratifiedKFold(_folds_for(inner_y, folds), shuffle=True, random_state=seed + 1)
                inner_oof = np.zeros(len(train), np.float64)
                for a, b in inner.split(x[train], inner_y):
                    inner_oof[b] = fit_predict(train[a], train[b])[:, pos]
                threshold = _best_threshold(inner_y == labels[pos], inner_oof)
            thresholds.append(round(threshold, 4))
            pred[test] = np.where(oof[test, pos] >= threshold, labels[pos], labels[1 - pos])
    if not binary:
        pred = np.asarray(labels, dtype=object)[oof.argmax(1)]
    out: dict[str, Any] = {"oof": oof, "fold": fold, "pred": pred.astype(str), "f1": _macro_f1(y, pred.astype(str), labels),
                           "thresholds": thresholds, "notes": notes, "positive": labels[pos] if binary else None}  # fmt: skip
    if binary:
        at_half = np.where(oof[:, pos] >= 0.5, labels[pos], labels[1 - pos])
        out["f1_at_0.5"] = _macro_f1(y, at_half, labels)
    return out


def train_probe(
    coll: Collection,
    labels_csv: Path,
    *,
    name: str,
    space: str | None = None,
    folds: int = 5,
    C: float = 1.0,
    seed: int = 0,
    positive: str | None = None,
) -> ClassifyReport:
    """Fit, cross-validate, save and apply a logistic-regression probe.

    Cross-validation pools the out-of-fold predictions of ``folds`` stratified folds and scores
    them once (macro-F1, a bootstrap interval, per-class precision/recall curves): a class with
    fewer items than folds then sits in fewer test folds instead of forcing every class down to
    two folds. A class with one labelled item cannot be evaluated, so the probe is refused.
    A binary probe's ``positive`` class (default: the second label in sorted order) is tagged
    where its probability reaches a threshold; the reported F1 is nested (each fold's threshold
    tuned inside its training part, see ``cross_validate``)."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as e:
        raise ConfigError("Probes need scikit-learn: pip install 'vitrina[eval]'") from e
    if not C > 0:
        raise ConfigError(f"--C must be positive (smaller is more regularised), not {C}.")
    started = time.perf_counter()
    sp, ids, matrix = _vectors(coll, space)
    rows = {item_id: n for n, item_id in enumerate(ids)}
    pairs, duplicates, conflicting = dedupe_labels(read_labels(labels_csv))
    known = [(i, label) for i, label in pairs if i in rows]
    skipped = [i for i, _ in pairs if i not in rows]
    labels = sorted({label for _, label in known})
    if len(labels) < 2:
        raise QueryError(
            f"{labels_csv}: need labelled items of at least two classes that have vectors in space {sp.name!r}."
        )
    x = np.asarray(matrix[[rows[i] for i, _ in known]])
    y = np.asarray([label for _, label in known])
    counts = {label: int((y == label).sum()) for label in labels}
    lonely = [label for label, n in counts.items() if n < 2]
    if lonely:
        raise QueryError(f"{labels_csv}: class{'es' if len(lonely) > 1 else ''} {', '.join(map(repr, lonely))} "
                         f"{'have' if len(lonely) > 1 else 'has'} a single labelled item with a vector: the probe cannot be cross-validated and was not saved. "
                         "Label at least two items of every class (five or more for a useful figure), or leave the class out.")  # fmt: skip
    folds = max(2, min(folds, len(y) // 2))
    if positive is not None and positive not in labels:
        raise QueryError(f"--positive {positive!r} is not one of the labels ({', '.join(map(repr, labels))}).")
    if positive is not None and len(labels) != 2:
        raise QueryError(
            f"--positive names the class of a binary probe; {labels_csv} has {len(labels)} classes ({', '.join(map(repr, labels))})."
        )
    cv = cross_validate(x, y, labels, positive=positive, folds=folds, C=C, seed=seed)
    oof, pred, f1 = cv["oof"], cv["pred"], cv["f1"]
    per_class = {label: {"items": counts[label], **_curve(y == label, oof[:, k])} for k, label in enumerate(labels)}
    threshold = None
    if (
        len(labels) == 2
    ):  # binary: the probe applied to the collection tags the positive class where its pooled out-of-fold F1 is best
        threshold = per_class[cv["positive"]]["threshold"]
    rng = np.random.default_rng(seed)
    boot = [_macro_f1(y[idx], pred[idx], labels) for idx in rng.integers(0, len(y), (500, len(y)))]
    for label in labels:
        tp = float(np.sum((pred == label) & (y == label)))
        per_class[label]["f1"] = round(2 * tp / max(1.0, float(np.sum(pred == label) + counts[label])), 4)
    model = LogisticRegression(C=C, max_iter=2000, class_weight="balanced").fit(x, y)
    probe = {"name": name, "space": sp.name, "fingerprint": json.loads(sp.fingerprint.to_json()), "classes": [str(c) for c in model.classes_],
             "coef": model.coef_.tolist(), "intercept": model.intercept_.tolist(), "f1_macro_cv": f1, "trained_on": len(known), "C": C,
             "threshold": threshold, "positive": cv["positive"], "labels_sha256": _sha256(labels_csv), "created": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    _save_probe(coll, name, probe)
    report = apply_probe(coll, name)
    report.f1_macro_cv, report.folds, report.trained_on, report.skipped = f1, folds, len(known), skipped
    report.f1_macro_cv_ci95 = [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)]
    report.f1_chance, report.C, report.per_class, report.duplicates, report.conflicting = (
        round(1 / len(labels), 4),
        C,
        per_class,
        duplicates,
        conflicting,
    )
    report.labels_sha256 = probe["labels_sha256"]
    report.fold_thresholds, report.f1_macro_cv_at_half = cv["thresholds"], cv.get("f1_at_0.5")
    report.cv_predictions = [{"id": i, "label": label, "fold": int(cv["fold"][n]), "scores": [round(float(v), 4) for v in oof[n]], "predicted": str(pred[n])}
                             for n, (i, label) in enumerate(known)]  # fmt: skip
    report.warnings += cv["notes"]
    if duplicates:
        report.warnings.append(
            f"{labels_csv}: {duplicates} repeated rows counted once (repeats inflate a cross-validated F1)."
        )
    if conflicting:
        report.warnings.append(
            f"{labels_csv}: {len(conflicting)} ids have two different labels and were left out (e.g. {conflicting[0]})."
        )
    if skipped:
        report.warnings.append(
            f"{labels_csv}: {len(skipped)} labelled ids have no vector in space {sp.name!r} (e.g. {skipped[0]})."
        )
    rare = [label for label, n in counts.items() if n < folds]
    if rare:
        report.warnings.append(
            f"Classes with fewer items than {folds} folds sit in fewer test folds: {', '.join(rare)}; their figures are rough."
        )
    report.seconds = time.perf_counter() - started
    return report


def _sha256(path: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def probe_path(coll: Collection, name: str) -> Path:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"Classifier name {name!r}: use letters, digits, '_' and '-'.")
    return coll.paths.classifier(name)


def _save_probe(coll: Collection, name: str, probe: dict[str, Any]) -> None:
    write_atomic(probe_path(coll, name), json.dumps(probe).encode())


def apply_probe(coll: Collection, name: str) -> ClassifyReport:
    """Tag every item with a saved probe (after re-indexing, say). Refuses another model's space."""
    path = probe_path(coll, name)
    if not path.exists():
        raise ConfigError(
            f"No classifier {name!r} in collection {coll.name!r}; train it with --train LABELS.csv --name {name}."
        )
    probe = json.loads(path.read_text())
    sp = coll.space(probe["space"])
    trained = ModelFingerprint.from_json(json.dumps(probe["fingerprint"]))
    if not trained.compatible(sp.fingerprint):
        raise QueryError(
            f"Classifier {name!r} was trained on {trained.describe()}; space {sp.name!r} is now {sp.fingerprint.describe()}. Train it again."
        )
    coef, intercept, classes = (
        np.asarray(probe["coef"], np.float32),
        np.asarray(probe["intercept"], np.float32),
        probe["classes"],
    )
    ids, matrix = coll.vectors(sp.name)
    tags = []
    for start in range(0, len(ids), BATCH):
        logits = matrix[start : start + BATCH] @ coef.T + intercept
        if len(classes) == 2:  # binary: one coefficient row for the second class
            p1 = 1 / (1 + np.exp(-logits[:, 0]))
            probs = np.stack([1 - p1, p1], axis=1)
            pos = classes.index(probe.get("positive") or classes[1])
            # the positive class where its probability reaches the threshold chosen by cross-validation
            best = np.where(probs[:, pos] >= (probe.get("threshold") or 0.5), pos, 1 - pos)
        else:
            probs = _softmax(logits)
            best = probs.argmax(1)
        tags += [(ids[start + i], classes[b], float(probs[i, b])) for i, b in enumerate(best)]
    _write(coll, name, f"probe:{name}@{sp.name}", tags)
    report = ClassifyReport(name=name, kind="probe", space=sp.name, labels=list(classes), tagged=len(tags), f1_macro_cv=probe.get("f1_macro_cv"), trained_on=probe.get("trained_on"),
                            C=probe.get("C"), threshold=probe.get("threshold"),
                            positive=probe.get("positive") or (classes[1] if len(classes) == 2 else None))  # fmt: skip
    report.counts = {c: sum(1 for t in tags if t[1] == c) for c in classes}
    return report


def _write(coll: Collection, name: str, classifier: str, tags: list[tuple[str, str, float]]) -> None:
    coll.set_tags(name, classifier, tags)
