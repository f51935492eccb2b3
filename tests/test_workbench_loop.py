"""The review queue's order (issue 29 part 3): the default ``mixed`` queue draws a stated share at
random (reproducibly), remembers those picks for an unbiased F1, and does not get stuck where pure
uncertainty order does (sampling bias). Real SQLite, real images; an embedder that reads a vector
written into the pixels, so the geometry of the collection is designed, not hoped for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fakes import FAKE_SPEC, FakeEmbedder
from vitrina import open_collection
from vitrina.errors import QueryError
from vitrina.workbench import loop

Q = "Is there a picture?"
TAG = "is_there_a_picture"


class PixelVectorEmbedder(FakeEmbedder):
    """An image's vector is its first row of red values (8 numbers), unit length."""

    def __init__(self) -> None:
        super().__init__(dim=8)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB"), np.float32)[0, :8, 0] / 255.0 - 0.5

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        out = np.asarray(pixels, np.float32).reshape(len(pixels), -1)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _save(folder: Path, name: str, vector: np.ndarray) -> None:
    pixels = np.full((8, 8, 3), 128, np.uint8)
    pixels[0, :, 0] = np.clip(np.round((np.asarray(vector) + 0.5) * 255), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / name)


@pytest.fixture
def trap(tmp_path: Path):  # type: ignore[no-untyped-def]
    return _make_trap(tmp_path)


def _make_trap(tmp_path: Path):  # type: ignore[no-untyped-def]
    """80 items: positives in two kinds, A (8) and B (24); negatives N (24) and a "bridge" of 24
    negatives between A and N. A probe that has seen only A and N puts B with the confident
    negatives and the bridge on its boundary, so pure uncertainty order labels the bridge and
    never meets B: the classic sampling-bias trap."""
    rng = np.random.default_rng(7)
    folder = tmp_path / "items"
    folder.mkdir(parents=True)
    truth: dict[str, str] = {}

    def add(kind: str, base: list[float], n: int, answer: str) -> None:
        for k in range(n):
            v = np.zeros(8)
            v[:3] = base
            v[3:] = rng.normal(0, 0.04, 5)
            _save(folder, f"{kind}{k:02d}.png", v)
            truth[f"{kind}{k:02d}.png"] = answer

    add("a", [0.4, 0.0, 0.0], 8, "yes")
    add("b", [-0.2, 0.3, 0.25], 24, "yes")  # further from A than N is
    add("n", [0.0, 0.4, 0.0], 24, "no")
    for k, t in enumerate(np.linspace(0.3, 0.65, 24)):  # the bridge, from N toward A
        v = np.zeros(8)
        v[:3] = [0.4 * t, 0.4 * (1 - t), 0.0]
        v[3:] = rng.normal(0, 0.04, 5)
        _save(folder, f"m{k:02d}.png", v)
        truth[f"m{k:02d}.png"] = "no"
    coll = open_collection(tmp_path / "coll", create=True, embedder=PixelVectorEmbedder())
    coll.index(str(folder), model=FAKE_SPEC)
    return coll, truth


def _f1_yes(coll, truth: dict[str, str]) -> float:  # type: ignore[no-untyped-def]
    tagged = set(coll.ids_where([f"{TAG}=yes"]))
    yes = {i for i, a in truth.items() if a == "yes"}
    return 2 * len(tagged & yes) / (len(tagged) + len(yes))


def _loop(coll, truth: dict[str, str], rounds: int, step: int, seed: int, **order) -> float:  # type: ignore[no-untyped-def]
    wb = coll.workbench
    for i in ("a00.png", "a01.png", "n00.png", "n01.png"):
        wb.label(Q, i, truth[i], who="sim")
    for _ in range(rounds):
        wb.train(Q, tag=TAG, seed=seed)
        for q in wb.review(Q, tag=TAG, limit=step, seed=seed, **order):
            wb.label(Q, q["id"], truth[q["id"]], who="sim")
    wb.train(Q, tag=TAG, seed=seed)
    return _f1_yes(coll, truth)


def _trained(coll, truth: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    wb = coll.workbench
    for i in (
        "a00.png",
        "a01.png",
        "a02.png",
        "b00.png",
        "b01.png",
        "n00.png",
        "n01.png",
        "m00.png",
        "m05.png",
        "m10.png",
    ):
        wb.label(Q, i, truth[i], who="sim")
    wb.train(Q, tag=TAG)


def test_the_mixed_queue_draws_its_stated_share_at_random_reproducibly(trap) -> None:  # type: ignore[no-untyped-def]
    coll, truth = trap
    _trained(coll, truth)
    wb = coll.workbench
    labelled = {lab["id"] for lab in wb.labels(Q)}
    queue = wb.review(Q, tag=TAG, limit=20, seed=3)  # the default order
    picks = [q["pick"] for q in queue]
    assert len(queue) == 20 and picks.count("random") == 5 and set(picks) == {"random", "uncertain"}
    assert [k for k, p in enumerate(picks) if p == "random"] == [2, 6, 10, 14, 18]  # spread through the queue
    assert not {q["id"] for q in queue} & labelled
    # Reproducible: the same labels, probe and seed give the same queue; another seed other random picks.
    assert wb.review(Q, tag=TAG, limit=20, seed=3) == queue
    other = wb.review(Q, tag=TAG, limit=20, seed=4)
    assert {q["id"] for q in other if q["pick"] == "random"} != {q["id"] for q in queue if q["pick"] == "random"}
    # The rest is the uncertainty queue, with the random picks taken out.
    uncertain = [q["id"] for q in wb.review(Q, tag=TAG, limit=40, order="uncertain")]
    drawn = {q["id"] for q in queue if q["pick"] == "random"}
    assert [q["id"] for q in queue if q["pick"] == "uncertain"] == [i for i in uncertain if i not in drawn][:15]
    # The random picks are drawn from every unlabelled item, not from near the boundary.
    seen: set[str] = set()
    for seed in range(40):
        seen |= {q["id"] for q in loop.review_queue(coll, TAG, labelled, limit=8, seed=seed) if q["pick"] == "random"}
    assert len(seen) >= 40 and seen - set(uncertain[:20])
    # Other shares, and a share of a short queue kept on average.
    half = loop.review_queue(coll, TAG, labelled, limit=20, explore=0.5)
    assert sum(q["pick"] == "random" for q in half) == 10
    ones = [loop.review_queue(coll, TAG, labelled, limit=1, seed=s)[0]["pick"] for s in range(100)]
    assert 12 <= ones.count("random") <= 38  # a quarter of 100
    assert all(q["pick"] == "uncertain" for q in loop.review_queue(coll, TAG, labelled, limit=20, explore=0))
    with pytest.raises(QueryError, match="between 0 and 1"):
        loop.review_queue(coll, TAG, labelled, explore=1.5)
    with pytest.raises(QueryError, match="mixed, uncertain"):
        wb.review(Q, tag=TAG, order="sideways")


def test_the_cold_start_rule_looks_for_the_rarer_answer(trap) -> None:  # type: ignore[no-untyped-def]
    coll, truth = trap
    wb = coll.workbench
    for i in ("a00.png", "a01.png", "n00.png", "n01.png", "n02.png", "n03.png"):
        wb.label(Q, i, truth[i], who="sim")
    wb.train(Q, tag=TAG)
    labelled = {lab["id"] for lab in wb.labels(Q)}
    queue = loop.review_queue(coll, TAG, labelled, limit=8, cold_start=3)
    likely = [q for q in queue if q["pick"] != "random"]
    assert {q["pick"] for q in likely} == {"likely"} and len(likely) == 6
    assert [q["p_yes"] for q in likely] == sorted((q["p_yes"] for q in likely), reverse=True)
    assert min(q["p_yes"] for q in likely) >= max(
        q["p_yes"] for q in loop.review_queue(coll, TAG, labelled, limit=80, order="uncertain") if q["id"] not in
        {x["id"] for x in queue}
    ) - 1e-9  # fmt: skip
    assert all(q["pick"] != "likely" for q in loop.review_queue(coll, TAG, labelled, limit=8, cold_start=2))


def test_random_picks_give_an_unbiased_f1_on_the_page(trap) -> None:  # type: ignore[no-untyped-def]
    coll, truth = trap
    _trained(coll, truth)
    wb = coll.workbench
    assert wb.curve(Q, tag=TAG)[-1]["random_labels"] == 0 and wb.curve(Q, tag=TAG)[-1]["f1_random"] is None
    queue = wb.review(Q, tag=TAG, limit=20, seed=1)
    drawn = [q["id"] for q in queue if q["pick"] == "random"]
    assert loop.random_picks_list(coll, TAG) == drawn
    for q in queue:
        wb.label(Q, q["id"], truth[q["id"]], who="sim")
    report = wb.train(Q, tag=TAG)
    point = report["curve"][-1]
    assert point["random_labels"] == len(drawn) == 5
    rows = [r for r in report["cv_predictions"] if r["id"] in drawn]
    f1s = []
    for answer in ("yes", "no"):
        truth_n = sum(r["label"] == answer for r in rows)
        said = sum(r["predicted"] == answer for r in rows)
        if truth_n or said:
            f1s.append(2 * sum(r["label"] == r["predicted"] == answer for r in rows) / (truth_n + said))
    assert point["f1_random"] == pytest.approx(np.mean(f1s), abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uncertainty_order_gets_stuck_where_the_default_does_not(tmp_path: Path, seed: int) -> None:
    """Three rounds of eight: pure uncertainty order labels the bridge and never finds the B kind
    of positive; the default order's random picks find it and the probe learns it."""
    f1 = {}
    for name, order in (("uncertain", {"order": "uncertain"}), ("default", {})):
        coll, truth = _make_trap(tmp_path / name)
        f1[name] = _loop(coll, truth, rounds=3, step=8, seed=seed, **order)
    assert f1["uncertain"] < 0.6 and f1["default"] >= 0.8, f1


def test_the_end_of_the_queue_and_a_busy_collection(trap) -> None:  # type: ignore[no-untyped-def]
    """Near the end, fewer items are left than the queue holds: every one of them is shown (none
    dropped by the random share). While someone else writes (an index run), the queue still
    answers; only the memory of its random picks waits."""
    from vitrina.store import CollectionPaths
    from vitrina.store.disk import acquire_writer_lock

    coll, truth = trap
    _trained(coll, truth)
    wb = coll.workbench
    names = sorted(truth)
    for name in names[:-10]:
        wb.label(Q, name, truth[name], who="sim")
    wb.train(Q, tag=TAG)
    for limit in (20, 12, 4):
        queue = wb.review(Q, tag=TAG, limit=limit, seed=2)
        assert len(queue) == min(limit, 10) and len({q["id"] for q in queue}) == len(queue)
    fd = acquire_writer_lock(CollectionPaths(coll.path), "another run")
    try:
        busy = wb.review(Q, tag=TAG, limit=4, seed=5)
    finally:
        import os

        os.close(fd)
    assert len(busy) == 4
