"""Probes and calibration that report every dropped or repeated label row and refuse what they
cannot evaluate (issue 16). Stored vectors from the numpy FakeEmbedder: real images, real SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.fakes import FAKE_SPEC
from vitrina import open_collection
from vitrina.classify import probe_path, train_probe, zero_shot
from vitrina.cli import cli
from vitrina.errors import QueryError


@pytest.fixture
def pages(tmp_path: Path, fake_embedder):  # type: ignore[no-untyped-def]
    """60 pages: blank ones, printed ones (noise) and a few stained ones (blank with a dark blot)."""
    folder = tmp_path / "pages"
    folder.mkdir()
    rng = np.random.default_rng(0)
    kinds = {}
    for n in range(60):
        kind = "stained" if n % 10 == 9 else "blank" if n % 2 else "printed"
        base = rng.integers(0, 255, (32, 32, 3)).astype(int) if kind == "printed" else np.full((32, 32, 3), 240)
        if kind == "stained":
            base[4:28, 4:28] = 30
        Image.fromarray(np.clip(base + rng.integers(-8, 8, base.shape), 0, 255).astype(np.uint8)).save(
            folder / f"p{n:02d}.png"
        )
        kinds[f"p{n:02d}.png"] = kind
    coll = open_collection(tmp_path / "pages-coll", create=True, embedder=fake_embedder)
    coll.index(str(folder), model=FAKE_SPEC)
    return coll, kinds


def _labels(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("id,label\n" + "".join(f"{i},{label}\n" for i, label in rows))
    return path


def test_repeated_rows_are_counted_once_and_reported(pages, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coll, kinds = pages
    rows = [(i, k) for i, k in kinds.items() if k != "stained"][:30]
    once = train_probe(coll, _labels(tmp_path / "once.csv", rows), name="once")
    # Each row three times, one id labelled both ways: the repeats would otherwise sit on both
    # sides of every fold.
    twice = train_probe(
        coll,
        _labels(tmp_path / "rep.csv", rows * 3 + [(rows[0][0], "printed" if rows[0][1] == "blank" else "blank")]),
        name="rep",
    )
    assert twice.duplicates == 60 and twice.conflicting == [rows[0][0]] and twice.trained_on == 29
    assert any("repeated" in w for w in twice.warnings) and any("two different labels" in w for w in twice.warnings)
    assert once.duplicates == 0 and once.trained_on == 30 and not once.warnings


def test_a_class_with_one_item_refuses_the_probe_and_saves_nothing(pages, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coll, kinds = pages
    rows = [(i, k) for i, k in kinds.items() if k != "stained"][:20] + [
        next((i, k) for i, k in kinds.items() if k == "stained")
    ]
    with pytest.raises(QueryError, match="'stained' has a single labelled item"):
        train_probe(coll, _labels(tmp_path / "one.csv", rows), name="lonely")
    assert not probe_path(coll, "lonely").exists() and "lonely" not in (coll.item(rows[0][0]).tags or {})


def test_a_rare_class_keeps_the_folds_and_curves_choose_the_threshold(pages, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coll, kinds = pages
    rows = list(kinds.items())  # 6 stained, 27 blank, 27 printed
    report = train_probe(coll, _labels(tmp_path / "all.csv", rows), name="kind", folds=5)
    assert report.folds == 5 and report.f1_macro_cv is not None and report.f1_macro_cv > 0.8, report.to_dict()
    assert (
        report.f1_chance == pytest.approx(1 / 3, abs=1e-3)
        and report.f1_macro_cv_ci95[0] <= report.f1_macro_cv <= report.f1_macro_cv_ci95[1]
    )
    stained = report.per_class["stained"]
    assert stained["items"] == 6 and 0 <= stained["average_precision"] <= 1 and stained["curve"][-1]["recall"] == 1.0
    assert all(0 <= p["precision"] <= 1 for p in stained["curve"])

    # Binary: the positive class is tagged where its probability reaches the chosen threshold.
    binary = [(i, "printed" if k == "printed" else "other") for i, k in rows]
    report = train_probe(coll, _labels(tmp_path / "bin.csv", binary), name="printed", C=0.5)
    saved = json.loads(probe_path(coll, "printed").read_text())
    assert (
        report.threshold is not None
        and saved["threshold"] == report.threshold == report.per_class["printed"]["threshold"]
        and saved["C"] == 0.5
    )
    ids, matrix = coll.vectors()
    p1 = 1 / (1 + np.exp(-(matrix @ np.asarray(saved["coef"]).T + np.asarray(saved["intercept"]))[:, 0]))
    for n, item_id in enumerate(ids):
        assert coll.item(item_id).tags["printed"]["value"] == (
            saved["classes"][1] if p1[n] >= saved["threshold"] else saved["classes"][0]
        )


def test_classify_cli_trains_with_C_and_reports_f1_intervals_and_drops(pages, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coll, kinds = pages
    labels = _labels(
        tmp_path / "l.csv", [(i, k) for i, k in kinds.items() if k != "stained"][:30] * 2 + [("no-such.png", "blank")]
    )
    runs = {}
    for C in ("0.001", "100"):
        run = CliRunner().invoke(
            cli,
            [
                "classify",
                str(coll.path),
                "--train",
                str(labels),
                "--name",
                f"k{C.replace('.', '')}",
                "--C",
                C,
                "--json",
            ],
        )
        assert run.exit_code == 0, run.output
        runs[C] = json.loads(run.stdout)
    assert runs["100"]["C"] == 100 and runs["100"]["duplicates"] == 30 and runs["100"]["skipped"] == ["no-such.png"]
    import hashlib

    assert runs["100"]["labels_sha256"] == "sha256:" + hashlib.sha256(labels.read_bytes()).hexdigest()
    coef = {
        C: np.abs(np.asarray(json.loads(probe_path(coll, f"k{C.replace('.', '')}").read_text())["coef"])).sum()
        for C in runs
    }
    assert coef["0.001"] < coef["100"] / 10, coef  # regularisation shrinks the probe
    text = CliRunner().invoke(cli, ["classify", str(coll.path), "--train", str(labels), "--name", "shown"])
    assert text.exit_code == 0 and "95% CI" in text.output and "chance" in text.output and "threshold" in text.output, (
        text.output
    )
    assert "30 repeated rows" in text.output and "no vector" in text.output
    lonely = _labels(
        tmp_path / "lonely.csv",
        [
            ("p00.png", "printed"),
            ("p01.png", "blank"),
            ("p02.png", "printed"),
            ("p09.png", "stained"),
            ("p03.png", "blank"),
        ],
    )
    refused = CliRunner().invoke(cli, ["classify", str(coll.path), "--train", str(lonely), "--name", "lonely"])
    assert refused.exit_code != 0 and "single labelled item" in refused.output and "Traceback" not in refused.output


def test_calibration_reports_rows_it_drops_and_refuses_a_single_class(mini_collection, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ids, _ = mini_collection.vectors()
    categories = ["geography", "food", "transportation"]
    rows = [(i, i.split("/")[0]) for i in ids if i.split("/")[0] in categories][:30]
    others = [(i, "animals") for i in ids if i.startswith("animals/")][:10]
    labels = _labels(tmp_path / "cal.csv", rows + others + rows[:5] + [("no/such.png", "food")])
    report = zero_shot(mini_collection, categories, name="cal", calibrate=labels)
    c = report.calibration
    assert (
        c is not None
        and c["labelled"] == len(rows)
        and c["dropped"] == {"duplicates": 5, "conflicting": 0, "not_a_label": len(others), "no_vector": 1}
    ), c
    assert any(f"{len(others)} of" in w and "'animals'" in w for w in report.warnings)
    one_class = _labels(tmp_path / "one.csv", [(i, "food") for i in ids if i.startswith("food/")][:8] + others)
    with pytest.raises(QueryError, match="at least two of the labels"):
        zero_shot(mini_collection, categories, name="cal1", calibrate=one_class)


def _macro_f1(truth: list[str], pred: list[str]) -> float:
    f1 = []
    for c in sorted(set(truth)):
        tp = sum(t == p == c for t, p in zip(truth, pred))
        f1.append(2 * tp / (pred.count(c) + truth.count(c)))
    return sum(f1) / len(f1)


def test_binary_f1_is_nested_and_scored_at_each_folds_own_threshold() -> None:
    """Issue 27, defect 8: the F1 of a binary probe is scored at thresholds tuned inside each
    outer fold's training part, not at 0.5 and not at a threshold tuned on the scored items."""
    from vitrina.classify import cross_validate

    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(0.6, 1, (15, 4)), rng.normal(0, 1, (85, 4))]  # a rare, overlapping positive class
    y = np.asarray(["yes"] * 15 + ["no"] * 85)
    cv = cross_validate(x, y, ["no", "yes"], positive="yes", folds=5, C=1.0, seed=0)
    score, threshold = cv["oof"][:, 1], np.asarray(cv["thresholds"])[cv["fold"]]
    assert len(cv["thresholds"]) == 5 and sorted(set(cv["fold"].tolist())) == [0, 1, 2, 3, 4]
    expected = np.where(score >= threshold, "yes", "no")
    assert (expected != np.where(score >= 0.5, "yes", "no")).sum() >= 5  # the thresholds matter here
    assert cv["pred"].tolist() == expected.tolist()
    assert cv["f1"] == pytest.approx(_macro_f1(y.tolist(), expected.tolist()))
    assert cv["f1_at_0.5"] == pytest.approx(_macro_f1(y.tolist(), np.where(score >= 0.5, "yes", "no").tolist()))
    assert cv["f1"] != pytest.approx(cv["f1_at_0.5"])
    # The first fold's threshold is the best positive-class F1 of an inner cross-validation of its training part:
    # the scored items never choose it (recomputed here with scikit-learn directly).
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    train = np.flatnonzero(cv["fold"] != 0)
    inner = np.zeros(len(train))
    for a, b in StratifiedKFold(5, shuffle=True, random_state=1).split(x[train], y[train]):
        m = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(x[train][a], y[train][a])
        inner[b] = m.predict_proba(x[train][b])[:, list(m.classes_).index("yes")]

    def f1_at(t: float) -> float:  # the positive class's F1
        said, truth = inner >= t, y[train] == "yes"
        return 2 * float((said & truth).sum()) / float(said.sum() + truth.sum())

    candidates = sorted(set(inner.tolist()), reverse=True)
    best = max(candidates, key=f1_at)  # the highest threshold with the best F1
    assert cv["thresholds"][0] == pytest.approx(best, abs=1e-4) and f1_at(cv["thresholds"][0]) == f1_at(best)
    # Naming the other class positive detects "no": the thresholds now apply to its probability.
    other = cross_validate(x, y, ["no", "yes"], positive="no", folds=5, C=1.0, seed=0)
    assert (
        other["positive"] == "no"
        and other["pred"].tolist()
        == np.where(other["oof"][:, 0] >= np.asarray(other["thresholds"])[other["fold"]], "no", "yes").tolist()
    )


def test_the_user_names_the_positive_class(pages, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coll, kinds = pages
    rows = [(i, "printed" if k == "printed" else "blank") for i, k in kinds.items()]
    labels = _labels(tmp_path / "b.csv", rows)
    report = train_probe(coll, labels, name="isblank", positive="blank")
    saved = json.loads(probe_path(coll, "isblank").read_text())
    assert (
        report.positive == saved["positive"] == "blank" and report.threshold == report.per_class["blank"]["threshold"]
    )
    assert len(report.cv_predictions) == len(rows) and len(report.fold_thresholds) == report.folds
    ids, matrix = coll.vectors()
    p1 = 1 / (1 + np.exp(-(matrix @ np.asarray(saved["coef"]).T + np.asarray(saved["intercept"]))[:, 0]))
    p_blank = p1 if saved["classes"][1] == "blank" else 1 - p1
    for n, item_id in enumerate(ids):
        assert coll.item(item_id).tags["isblank"]["value"] == (
            "blank" if p_blank[n] >= saved["threshold"] else "printed"
        )
    run = CliRunner().invoke(
        cli, ["classify", str(coll.path), "--train", str(labels), "--name", "x", "--positive", "Blank"]
    )
    assert run.exit_code != 0 and "'Blank' is not one of the labels ('blank', 'printed')" in run.output, run.output
    three = _labels(tmp_path / "3.csv", list(kinds.items()))
    run = CliRunner().invoke(
        cli, ["classify", str(coll.path), "--train", str(three), "--name", "x", "--positive", "blank"]
    )
    assert run.exit_code != 0 and "binary probe" in run.output and "3 classes" in run.output, run.output
    run = CliRunner().invoke(
        cli, ["classify", str(coll.path), "--train", str(labels), "--name", "y", "--positive", "blank"]
    )
    assert run.exit_code == 0 and "Tagged as blank at probability" in run.output and "nested" in run.output, run.output
