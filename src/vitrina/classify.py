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

TEMPLATES = ("{}", "a {}.", "a picture of a {}.", "a drawing of a {}.", "a photograph of a {}.", "a scan of a {}.", "an illustration of a {}.", "an old print of a {}.")
BATCH = 50_000


@dataclass
class ClassifyReport:
    name: str
    kind: str  # "zero-shot" or "probe"
    space: str
    labels: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    tagged: int = 0
    f1_macro_cv: float | None = None
    f1_macro_cv_std: float | None = None
    folds: int | None = None
    trained_on: int | None = None
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    calibration: dict[str, Any] | None = None  # zero-shot: fitted temperature and NLL before/after

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skipped": self.skipped[:50]}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _vectors(coll: Collection, space: str | None) -> tuple[Any, list[str], np.ndarray]:
    sp = coll.space(space)
    ids, matrix = coll.vectors(sp.name)
    return sp, ids, matrix


def class_vectors(coll: Collection, labels: list[str], templates: tuple[str, ...] = TEMPLATES, space: str | None = None) -> np.ndarray:
    sp = coll.space(space)
    if "text" not in sp.fingerprint.modalities:
        raise ModalityError(f"Space {sp.name!r} ({sp.fingerprint.spec}) is image-only: zero-shot classification needs a text tower. Train a probe instead (--train).")
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
    if calibrate is not None:
        position = {i: n for n, i in enumerate(ids)}
        known = [(position[i], labels.index(label)) for i, label in read_labels(calibrate) if i in position and label in labels]
        if len(known) < 2:
            raise QueryError(f"{calibrate}: fewer than two labelled items with vectors and one of the given labels.")
        sims = matrix[[k for k, _ in known]] @ classes.T
        temperature, fitted, default = fit_temperature(sims, np.asarray([t for _, t in known]))
        calibration = {"temperature": round(temperature, 3), "nll": round(fitted, 4), "nll_at_100": round(default, 4), "labelled": len(known)}
    tags = []
    for start in range(0, len(ids), BATCH):
        probs = _softmax(temperature * (matrix[start : start + BATCH] @ classes.T))
        best = probs.argmax(1)
        tags += [(ids[start + i], labels[b], float(probs[i, b])) for i, b in enumerate(best)]
    _write(coll, name, f"zero-shot@{sp.name}", tags)
    report = ClassifyReport(name=name, kind="zero-shot", space=sp.name, labels=labels, tagged=len(tags), seconds=time.perf_counter() - started, calibration=calibration)
    report.counts = {label: sum(1 for t in tags if t[1] == label) for label in labels}
    return report


def read_labels(path: Path) -> list[tuple[str, str]]:
    with Path(path).open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "label"} <= set(reader.fieldnames):
            raise ConfigError(f"{path}: the labels file needs the columns id,label.")
        return [(row["id"], row["label"]) for row in reader if row.get("id") and row.get("label")]


def train_probe(coll: Collection, labels_csv: Path, *, name: str, space: str | None = None, folds: int = 5, C: float = 1.0, seed: int = 0) -> ClassifyReport:
    """Fit, cross-validate, save and apply a logistic-regression probe."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score
    except ImportError as e:
        raise ConfigError("Probes need scikit-learn: pip install 'vitrina[eval]'") from e
    started = time.perf_counter()
    sp, ids, matrix = _vectors(coll, space)
    rows = {item_id: n for n, item_id in enumerate(ids)}
    pairs = read_labels(labels_csv)
    known = [(i, label) for i, label in pairs if i in rows]
    skipped = [i for i, _ in pairs if i not in rows]
    labels = sorted({label for _, label in known})
    if len(labels) < 2:
        raise QueryError(f"{labels_csv}: need labelled items of at least two classes that have vectors in space {sp.name!r}.")
    x = np.asarray(matrix[[rows[i] for i, _ in known]])
    y = np.asarray([label for _, label in known])
    smallest = min(int((y == label).sum()) for label in labels)
    folds = max(2, min(folds, smallest))
    model = LogisticRegression(C=C, max_iter=2000, class_weight="balanced")
    scores = cross_val_score(model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), scoring="f1_macro")
    model.fit(x, y)
    probe = {"name": name, "space": sp.name, "fingerprint": json.loads(sp.fingerprint.to_json()), "classes": [str(c) for c in model.classes_],
             "coef": model.coef_.tolist(), "intercept": model.intercept_.tolist(), "f1_macro_cv": float(scores.mean()), "trained_on": len(known),
             "created": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    _save_probe(coll, name, probe)
    report = apply_probe(coll, name)
    report.f1_macro_cv, report.f1_macro_cv_std, report.folds, report.trained_on, report.skipped = float(scores.mean()), float(scores.std()), folds, len(known), skipped
    report.seconds = time.perf_counter() - started
    return report


def probe_path(coll: Collection, name: str) -> Path:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"Classifier name {name!r}: use letters, digits, '_' and '-'.")
    return coll.path / "classifiers" / f"{name}.json"


def _save_probe(coll: Collection, name: str, probe: dict[str, Any]) -> None:
    write_atomic(probe_path(coll, name), json.dumps(probe).encode())


def apply_probe(coll: Collection, name: str) -> ClassifyReport:
    """Tag every item with a saved probe (after re-indexing, say). Refuses another model's space."""
    path = probe_path(coll, name)
    if not path.exists():
        raise ConfigError(f"No classifier {name!r} in collection {coll.name!r}; train it with --train LABELS.csv --name {name}.")
    probe = json.loads(path.read_text())
    sp = coll.space(probe["space"])
    trained = ModelFingerprint.from_json(json.dumps(probe["fingerprint"]))
    if not trained.compatible(sp.fingerprint):
        raise QueryError(f"Classifier {name!r} was trained on {trained.describe()}; space {sp.name!r} is now {sp.fingerprint.describe()}. Train it again.")
    coef, intercept, classes = np.asarray(probe["coef"], np.float32), np.asarray(probe["intercept"], np.float32), probe["classes"]
    ids, matrix = coll.vectors(sp.name)
    tags = []
    for start in range(0, len(ids), BATCH):
        logits = matrix[start : start + BATCH] @ coef.T + intercept
        if len(classes) == 2:  # binary: one coefficient row for the second class
            p1 = 1 / (1 + np.exp(-logits[:, 0]))
            probs = np.stack([1 - p1, p1], axis=1)
        else:
            probs = _softmax(logits)
        best = probs.argmax(1)
        tags += [(ids[start + i], classes[b], float(probs[i, b])) for i, b in enumerate(best)]
    _write(coll, name, f"probe:{name}@{sp.name}", tags)
    report = ClassifyReport(name=name, kind="probe", space=sp.name, labels=list(classes), tagged=len(tags), f1_macro_cv=probe.get("f1_macro_cv"), trained_on=probe.get("trained_on"))
    report.counts = {c: sum(1 for t in tags if t[1] == c) for c in classes}
    return report


def _write(coll: Collection, name: str, classifier: str, tags: list[tuple[str, str, float]]) -> None:
    coll.set_tags(name, classifier, tags)
