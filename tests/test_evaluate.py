"""Evaluation metrics on hand-computed cases; the harness on the mini model reproduces the
metrics recorded when it was built; classifiers become tags that filter searches."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image

from tests.conftest import DEMO
from vitrina import open_collection
from vitrina.classify import apply_probe, train_probe, zero_shot
from vitrina.embedding.mini import CARD
from vitrina.evaluate import (
    captions,
    eval_exact_image,
    eval_pairs,
    eval_queries,
    markdown,
    mrr,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    svg_chart,
)

DEMO_PAIRS = [
    (json.loads(line)["id"], json.loads(line)["caption"]) for line in (DEMO / "captions.jsonl").read_text().splitlines()
]


def test_metrics_equal_hand_computed_values() -> None:
    ranks = [0, 2, 9, 15]
    assert (recall_at_k(ranks, 1), recall_at_k(ranks, 5), recall_at_k(ranks, 10)) == (0.25, 0.5, 0.75)
    assert mrr(ranks) == pytest.approx((1 + 1 / 3 + 1 / 10 + 1 / 16) / 4)
    ranked, relevant = ["a", "b", "c"], {"a": 1, "c": 2}
    dcg = 1 / math.log2(2) + 3 / math.log2(4)
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(ranked, relevant, 3) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["c", "a", "b"], relevant, 3) == pytest.approx(1.0)
    assert precision_at_k(ranked, relevant, 3) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranked, {}, 3) == 0.0 and recall_at_k([], 1) == 0.0


def test_harness_reproduces_the_documented_mini_metrics(mini_collection) -> None:  # type: ignore[no-untyped-def]
    expected = json.loads(CARD.read_text())["metrics_demo_subset"]
    # The card counts only each caption's own drawing; by default a caption shared by several
    # drawings (27 demo items in 10 groups) scores a hit on any of them.
    got = eval_pairs(mini_collection, DEMO_PAIRS, shared_hits=False, check_training=False)
    assert got["queries"] == len(DEMO_PAIRS) == expected["pairs"] and "duplicate_captions" not in got
    for k in (1, 5, 10):
        assert got[f"recall@{k}"] == pytest.approx(expected[f"text_to_image_recall@{k}"], abs=0.01)
    assert 0 < got["mrr"] < 1
    shared = eval_pairs(mini_collection, DEMO_PAIRS, check_training=False)
    assert shared["duplicate_captions"]["items"] == 27 and shared["duplicate_captions"]["captions"] == 10
    assert all(shared[f"recall@{k}"] >= got[f"recall@{k}"] for k in (1, 5, 10)) and shared["mrr"] >= got["mrr"]


def test_ties_count_against_the_target() -> None:
    from vitrina.evaluate import rank_of

    # A model that gives every candidate the same score has found nothing.
    assert list(rank_of(np.zeros((5, 3), np.float32), np.asarray([0, 2, 4]))) == [4, 4, 4]
    scores = np.asarray([[0.9, 0.1], [0.9, 0.5], [0.2, 0.5]], np.float32)
    assert list(rank_of(scores, np.asarray([0, 2]))) == [1, 1]


def test_exact_image_uses_hard_copies_beside_a_random_weights_baseline(mini_collection, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = eval_exact_image(mini_collection, sample=12, seed=1, candidates=40)
    assert (
        result["queries"] == 12
        and result["candidates"] == 40
        and result["chance"]["top1"] == pytest.approx(1 / 40, abs=1e-4)
    )
    names = ("crop", "rotate", "colour", "print_through", "combined")
    baseline = result["random_weights"]
    assert set(baseline) == set(names)
    for name in names:
        assert (
            0 <= result[name]["top1"] <= result[name]["top10"] <= 1
            and result[name]["ci95"]["recall@1"][0] <= result[name]["top1"]
        )
    # Measured (seed 1): top-1 crop 92 %, rotate 100 %, colour 100 %, print-through 75 %, combined 25 %,
    # and the random heads score the same: on exact copies the ImageNet tower does the work, not
    # the trained heads; the report shows that beside every figure. The combined copy is hard.
    assert result["combined"]["top1"] < 0.6 and baseline["combined"]["top1"] < 0.6, result["combined"]

    # A random linear projection of pixels is the "random network" an easy test (half size, JPEG)
    # let pass; the hard copies must leave it far behind the trained image tower.
    from tests.fakes import FAKE_SPEC, FakeEmbedder

    random_net = open_collection(tmp_path / "random", create=True, embedder=FakeEmbedder(64))
    random_net.index(str(DEMO), model=FAKE_SPEC)
    other = eval_exact_image(random_net, sample=12, seed=1, candidates=40, baseline=False)
    mean = {name: float(np.mean([r[p]["top1"] for p in names])) for name, r in (("random", other), ("mini", result))}
    # measured (sample 20, 100 candidates): mean top-1 0.30 for the projection, 0.79 for mini (crop 30 % vs 85 %, rotate 15 % vs 100 %)
    assert mean["random"] < 0.5 and mean["mini"] > mean["random"] + 0.25, mean


def test_curator_queries(mini_collection) -> None:  # type: ignore[no-untyped-def]
    cars = [i for i, c in DEMO_PAIRS if i.startswith("transportation/") and "car" in c]
    phones = [i for i, _ in DEMO_PAIRS if i.startswith("office/telephone/")]
    result = eval_queries(mini_collection, [("a car", {i: 1 for i in cars}), ("a telephone", {i: 2 for i in phones})])
    assert result["queries"] == 2 and result["ndcg@10"] > 0.3, result
    # Judged ids that are not in the collection are counted, not silently scored as misses.
    mixed = eval_queries(
        mini_collection, [("a car", {**{i: 1 for i in cars}, "no/such/item": 1}), ("a unicorn", {"no/such/unicorn": 1})]
    )
    assert (
        mixed["unknown_ids"] == 2
        and mixed["skipped_queries"] == ["a unicorn"]
        and mixed["queries"] == 1
        and mixed["per_query"][0]["relevant"] == len(cars)
    )
    assert mixed["ndcg@10"] == result["per_query"][0]["ndcg@10"] and len(mixed["warnings"]) == 2
    from vitrina.errors import QueryError

    with pytest.raises(QueryError):
        eval_queries(mini_collection, [("a car", {"no/such/item": 1})])


def test_zero_shot_tags_filter_searches(mini_collection) -> None:  # type: ignore[no-untyped-def]
    labels = ["map", "car", "flag", "fruit", "telephone", "person", "star", "house"]
    report = zero_shot(mini_collection, labels, name="kind")
    assert report.tagged == len(DEMO_PAIRS) and sum(report.counts.values()) == report.tagged
    tagged_maps = {h.id for h in mini_collection.search("a drawing", where=["kind=map"], limit=500)}
    assert tagged_maps and len(tagged_maps) == report.counts["map"]
    geography = [i for i in tagged_maps if i.startswith("geography/")]
    # Measured 2026-11-22: 5 of the 27 items tagged "map" are drawn maps (0.19), against a base rate
    # of 14/215 (0.065); a weak model, but clearly better than chance.
    assert len(geography) / len(tagged_maps) > 2 * 14 / 215
    item = mini_collection.item(next(iter(tagged_maps)))
    assert item.tags["kind"]["value"] == "map" and 0 < item.tags["kind"]["score"] <= 1
    assert {h.id for h in mini_collection.search("a drawing", where=["kind!=map"], limit=500)}.isdisjoint(tagged_maps)


@pytest.mark.parametrize("true_temperature", [6.0, 20.0, 60.0])
def test_temperature_fit_recovers_a_known_temperature(true_temperature: float) -> None:
    from vitrina.classify import fit_temperature

    # Three temperatures far apart: a fit replaced by any constant fails at least two of them.
    rng = np.random.default_rng(0)
    sims = rng.uniform(-0.3, 0.3, (4000, 5))
    probs = np.exp(true_temperature * sims) / np.exp(true_temperature * sims).sum(1, keepdims=True)
    truth = np.asarray([rng.choice(5, p=p) for p in probs])
    temperature, fitted, at_100 = fit_temperature(sims, truth)
    assert 0.75 * true_temperature < temperature < 1.3 * true_temperature, (temperature, fitted, at_100)
    assert fitted <= at_100


def test_zero_shot_scores_can_be_calibrated(mini_collection, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from vitrina.classify import _softmax, class_vectors

    categories = ["geography", "food", "transportation", "people", "animals"]
    rows = [(i, i.split("/")[0]) for i, _ in DEMO_PAIRS if i.split("/")[0] in categories]
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n" + "".join(f"{i},{c}\n" for i, c in rows[::2]))
    report = zero_shot(mini_collection, categories, name="category", calibrate=labels)
    c = report.calibration
    # measured 2026-11-22: temperature 17, NLL 2.11 -> 0.76 (docs/evaluation.md)
    assert (
        c is not None and c["labelled"] == len(rows[::2]) and c["temperature"] < 50 and c["nll"] < c["nll_at_100"] - 0.5
    ), c
    # The stored scores are the softmax at the fitted temperature, recomputed here independently.
    ids, matrix = mini_collection.vectors()
    classes = class_vectors(mini_collection, categories)
    for item_id, _ in rows[1::10]:
        expected = _softmax(c["temperature"] * (matrix[ids.index(item_id)][None, :] @ classes.T))[0]
        tag = mini_collection.item(item_id).tags["category"]
        assert tag["value"] == categories[int(expected.argmax())] and tag["score"] == pytest.approx(
            float(expected.max()), abs=1e-3
        )


def test_probe_learns_separable_labels_and_not_shuffled_ones(tmp_path: Path, tiny_clip: str) -> None:
    folder = tmp_path / "pages"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for n in range(40):
        kind = "blank" if n % 2 else "printed"
        base = (
            np.full((48, 64, 3), 245, np.uint8)
            if kind == "blank"
            else rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        )
        noise = rng.integers(-6, 6, base.shape)
        Image.fromarray(np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)).save(folder / f"p{n:02d}.png")
        rows.append((f"p{n:02d}.png", kind))
    coll = open_collection("probe", create=True)
    coll.index(str(folder), model=tiny_clip)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n" + "".join(f"{i},{label}\n" for i, label in rows[:30]) + "missing.png,blank\n")
    report = train_probe(coll, labels, name="page_kind")
    assert report.f1_macro_cv is not None and report.f1_macro_cv > 0.9, report.to_dict()
    assert report.trained_on == 30 and report.skipped == ["missing.png"] and report.tagged == 40
    unseen = {i: label for i, label in rows[30:]}
    predicted = {i: coll.item(i).tags["page_kind"]["value"] for i in unseen}
    assert sum(predicted[i] == unseen[i] for i in unseen) >= 9
    hits = coll.search("page", where=["page_kind!=blank"], limit=100)
    assert hits and all(coll.item(h.id).tags["page_kind"]["value"] == "printed" for h in hits)
    assert apply_probe(coll, "page_kind").tagged == 40  # saved as JSON, applied again

    shuffled = tmp_path / "shuffled.csv"
    perm = np.random.default_rng(3).permutation([label for _, label in rows])
    shuffled.write_text("id,label\n" + "".join(f"{i},{label}\n" for (i, _), label in zip(rows, perm)))
    chance = train_probe(coll, shuffled, name="noise")
    assert chance.f1_macro_cv is not None and chance.f1_macro_cv < 0.75, chance.to_dict()


@pytest.mark.slow
def test_reports_and_cli(mini_collection, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    results = {
        "text_to_image": {"mini": eval_pairs(mini_collection, DEMO_PAIRS[:60])},
        "exact_image": {"mini": eval_exact_image(mini_collection, sample=5, candidates=20, baseline=False)},
        "queries": {},
    }
    md = markdown(results)
    assert "| mini | mini |" in md and "recall@10" in md
    svg = ElementTree.fromstring(svg_chart(results))
    assert svg.tag.endswith("svg") and len(svg.findall("{http://www.w3.org/2000/svg}rect")) >= 4
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": i, "caption": c}) + "\n" for i, c in DEMO_PAIRS[:40]))
    run = subprocess.run([sys.executable, "-m", "vitrina", "eval", str(mini_collection.path), "--pairs", str(pairs), "--report", str(tmp_path / "report" / "q")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "report" / "q.svg").exists() and json.loads((tmp_path / "report" / "q.json").read_text())[
        "text_to_image"
    ]["mini"]["queries"] == 40
    assert "recall@1" in run.stdout


def test_captions_split_by_group_keeps_near_duplicates_together_and_never_moves() -> None:
    from vitrina import Item

    towns = [
        "Bergen",
        "Oslo",
        "Trondheim",
        "Tromsø",
        "Bodø",
        "Stavanger",
        "Ålesund",
        "Hamar",
        "Molde",
        "Narvik",
        "Drammen",
        "Skien",
        "Larvik",
        "Halden",
        "Moss",
    ]
    # Three sheets of each town's map, and a series of prints with unrelated titles.
    items = [Item(id=f"{town}-{sheet}", image="x", source="t", metadata={"title": f"Map of {town}, sheet {sheet}", "date": "1850", "original_format": ["map"]})
             for town in towns for sheet in (1, 2, 3)]  # fmt: skip
    items += [
        Item(
            id=f"print-{n}",
            image="x",
            source="t",
            metadata={"title": f"Harbour view {word}", "series": "Harbours of Norway"},
        )
        for n, word in enumerate(["north", "south", "east", "west"])
    ]
    open_collection("caps", create=True).add_items(items)
    first = captions(open_collection("caps"), held_out_percent=30)
    assert len(first) == len(items) and first[0]["caption"] == "Map of Bergen, sheet 1 from 1850."
    side = {r["id"]: r["split"] for r in first}
    for town in towns:
        assert side[f"{town}-1"] == side[f"{town}-2"] == side[f"{town}-3"], town
    assert len({side[f"print-{n}"] for n in range(4)}) == 1
    assert {r["split"] for r in first} == {"train", "held_out"}
    assert captions(open_collection("caps"), held_out_percent=30) == first


@pytest.mark.parametrize(
    ("metadata", "caption"),
    [({"title": "Sanborn fire insurance map from Boston, Suffolk County", "original_format": ["map"], "date": "1885"},
      "Sanborn fire insurance map from Boston, Suffolk County from 1885."),
     ({"title": "New York", "original_format": ["map"]}, "A map of New York."),
     ({"title": "Plan of Boston harbour, 1775", "original_format": ["map"], "date": "1775-06-01"}, "Plan of Boston harbour, 1775."),
     ({"title": "Nautical chart of the Oslofjord", "original_format": "maps"}, "Nautical chart of the Oslofjord."),
     ({"title": "Atlas of Bergen", "original_format": ["map"], "date": "1901"}, "Atlas of Bergen from 1901."),
     ({"title": "Boston harbor", "original_format": ["map"], "date": "1775", "location": ["boston", "massachusetts"]},
      "A map of Boston harbor from 1775, in Massachusetts."),
     # issue 27, defect 9: no English frame around another language; the part after ':' kept; an article
     ({"title": "Karte von Norwegen", "original_format": ["map"], "date": "1850"}, "Karte von Norwegen, 1850."),
     ({"title": "Kart over Kristiania og omegn", "original_format": ["map"], "location": ["norway"]}, "Kart over Kristiania og omegn, Norway."),
     ({"title": "Vue de Bergen", "original_format": ["print"], "language": ["french"]}, "Vue de Bergen."),
     ({"title": "La Crosse", "original_format": ["map"], "language": ["english"]}, "A map of La Crosse."),
     ({"title": "View of Bergen", "original_format": ["photo"], "date": "1890"}, "A photo of a view of Bergen from 1890."),
     ({"title": "environs of Bergen", "original_format": ["map"]}, "A map of the environs of Bergen."),
     ({"title": "Boston harbor : with soundings and the channel", "original_format": ["map"], "date": "1775"},
      "A map of Boston harbor from 1775. With soundings and the channel."),
     ({"title": "Plan of Boston, scale 1:12,000", "original_format": ["map"]}, "Plan of Boston, scale 1:12,000.")],
)  # fmt: skip
def test_captions_read_like_the_title_says(metadata: dict, caption: str) -> None:  # type: ignore[type-arg]
    from vitrina.captions import build_caption

    assert build_caption(metadata) == caption


# -- issue 16: honest measurement ---------------------------------------------------------------

MINI_TRAINING = Path(__file__).parent / "data" / "mini-training"


def _eval_cli(*args: str) -> dict:  # type: ignore[type-arg]
    from click.testing import CliRunner

    from vitrina.cli import cli

    run = CliRunner().invoke(cli, ["eval", *args, "--json", "-q"])
    assert run.exit_code == 0, run.output
    return json.loads(run.stdout)


def test_eval_scores_held_out_pairs_by_default_and_says_which(mini_collection, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"id": i, "caption": c, "split": "held_out" if n % 4 == 0 else "train"}) + "\n"
            for n, (i, c) in enumerate(DEMO_PAIRS[:80])
        )
    )
    held = _eval_cli(str(mini_collection.path), "--pairs", str(pairs))
    r = held["text_to_image"]["mini"]
    assert r["split"] == "held_out" and r["queries"] == 20, {k: v for k, v in r.items() if k != "per_query"}
    assert {q["id"] for q in r["per_query"]} == {i for n, (i, _) in enumerate(DEMO_PAIRS[:80]) if n % 4 == 0}
    assert held["provenance"]["files"]["pairs"]["sha256"].startswith("sha256:") and held["provenance"]["seed"] == 0
    everything = _eval_cli(str(mini_collection.path), "--pairs", str(pairs), "--split", "all")
    assert everything["text_to_image"]["mini"]["queries"] == 80 and any(
        "not held-out" in w for w in everything["warnings"]
    )


def test_eval_warns_when_items_are_a_models_training_data(mini_collection, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Four drawings the mini heads were trained on: two under their package paths, two renamed
    # (found by their picture alone).
    coll = open_collection(tmp_path / "clipart", create=True)
    coll.index(str(MINI_TRAINING), model="mini")
    ids, _ = coll.vectors()
    got = eval_pairs(coll, [(i, "clip art") for i in ids])
    overlap = got["training_overlap"]
    assert overlap["checked"] == 4 and overlap["overlapping"] == 4 and "warning" in overlap, overlap
    # The shipped demo drawings are held-out ones: few are flagged (near-identical drawings only).
    demo = eval_pairs(mini_collection, DEMO_PAIRS)["training_overlap"]
    assert demo["checked"] == len(DEMO_PAIRS) and demo["share"] < 0.15, demo


def _cli(*args: str) -> str:
    from click.testing import CliRunner

    from vitrina.cli import cli

    run = CliRunner().invoke(cli, list(args))
    assert run.exit_code == 0, run.output
    return run.stdout


def test_compare_cli_ranks_models_with_a_paired_test_and_random_baselines(
    tmp_path: Path, tiny_clip: str, tiny_siglip: str, tiny_vit: str
) -> None:
    from tests.conftest import make_images

    make_images(tmp_path / "imgs", 16, seed=3)
    open_collection("cmp", create=True).index(str(tmp_path / "imgs"), model=tiny_clip)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(
                {"id": f"img{n:04d}.{'jpg' if n % 2 else 'png'}", "caption": f"a red map {n}", "split": "held_out"}
            )
            + "\n"
            for n in range(16)
        )
    )
    out = json.loads(_cli("compare", "cmp", "--models", f"{tiny_siglip},{tiny_vit}", "--space", "tiny-clip0", "--pairs", str(pairs), "--exact-image",
                          "--sample", "4", "--candidates", "8", "--json", "-q"))  # fmt: skip
    spaces = set(out["exact_image"])
    assert len(spaces) == 3 and len(out["text_to_image"]) == 2, out.keys()  # the ViT space: image evaluation only
    assert out["image_only_spaces"] and any("image-only" in w for w in out["warnings"])
    for r in out["exact_image"].values():
        assert (
            r["candidates"] == 8
            and r["random_weights"]
            and set(r["random_weights"]) == {"crop", "rotate", "colour", "print_through", "combined"}
        )
    test = out["paired"][0]
    assert test["queries"] == 16 and 0 < test["p_value"] <= 1 and test["a"] == "tiny-clip0"
    assert out["provenance"]["models"]["tiny-clip0"]["spec"] == tiny_clip


def test_classify_cli_tags_items_and_reports(mini_collection) -> None:  # type: ignore[no-untyped-def]
    out = json.loads(
        _cli(
            "classify", str(mini_collection.path), "--zero-shot", "map", "car", "fruit", "--name", "cli_kind", "--json"
        )
    )
    assert out["tagged"] == len(DEMO_PAIRS) and sum(out["counts"].values()) == len(DEMO_PAIRS)
    tagged = [mini_collection.item(i).tags["cli_kind"]["value"] for i, _ in DEMO_PAIRS[:20]]
    assert set(tagged) <= {"map", "car", "fruit"} and len(tagged) == 20


def test_captions_cli_prints_the_split_it_was_asked_for() -> None:
    from vitrina import Item

    open_collection("capcli", create=True).add_items(
        [
            Item(id=f"i{n}", image="x", source="t", metadata={"title": f"Plan of {town}", "date": "1850"})
            for n, town in enumerate(
                ["Bergen", "Oslo", "Trondheim", "Tromsø", "Bodø", "Stavanger", "Ålesund", "Hamar", "Molde", "Narvik"]
                * 2
            )
        ]
    )
    everything = [json.loads(line) for line in _cli("captions", "capcli").splitlines()]
    held = [
        json.loads(line)
        for line in _cli("captions", "capcli", "--split", "held_out", "--held-out-percent", "50").splitlines()
    ]
    assert len(everything) == 20 and held and all(r["split"] == "held_out" for r in held) and len(held) < 20
    assert everything[0]["caption"].startswith("Plan of Bergen from 1850")


def test_eval_writes_per_item_results_a_breakdown_and_a_safe_contact_sheet(tmp_path: Path, tiny_clip: str) -> None:
    import re

    from tests.conftest import make_images

    make_images(tmp_path / "imgs" / "north", 6, seed=1)
    make_images(tmp_path / "imgs" / "south", 6, seed=2)
    coll = open_collection("sheet", create=True)
    coll.index(str(tmp_path / "imgs"), model=tiny_clip)
    ids, _ = coll.vectors()
    pairs = tmp_path / "pairs.jsonl"
    hostile = '<script>alert(1)</script> map "x" & <img src=x onerror=alert(2)>'
    pairs.write_text(
        "".join(
            json.dumps({"id": i, "caption": f"{hostile} {n}", "split": "held_out"}) + "\n" for n, i in enumerate(ids)
        )
    )
    sheet = tmp_path / "out" / "sheet.html"
    out = _eval_cli("sheet", "--pairs", str(pairs), "--by", "folder", "--contact-sheet", str(sheet))
    r = out["text_to_image"][next(iter(out["text_to_image"]))]
    ranks = {q["id"]: q["rank"] for q in r["per_query"]}
    assert [x["best_rank"] for x in r["per_item"]] == sorted(ranks.values(), reverse=True) and r["never_found"] == sum(
        v >= 10 for v in ranks.values()
    )
    assert all(len(q["top"]) == 5 and (q["rank"] >= 5 or q["id"] in q["top"]) for q in r["per_query"])
    by = r["by"]
    assert set(by) == {"north", "south"} and by["north"]["queries"] == 6
    north = [ranks[i] for i in ids if i.startswith("north/")]
    assert by["north"]["mrr"] == pytest.approx(float(np.mean([1 / (x + 1) for x in north])), abs=1e-4)
    html = sheet.read_text()
    assert (
        "<script" not in html
        and "onerror=alert" not in html.replace("onerror=alert(2)&gt;", "")
        and "&lt;script&gt;" in html
    )
    assert "default-src 'none'" in html and len(re.findall(r'<img src="data:image/jpeg;base64,', html)) >= 6
    assert html.count("<tr class=") >= 1 and not re.search(
        r'(src|href)="(?!data:)', html
    )  # nothing loads from elsewhere


def test_eval_shows_progress_unless_quiet(mini_collection, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from vitrina.cli import cli

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": i, "caption": c}) + "\n" for i, c in DEMO_PAIRS[:30]))
    queries = tmp_path / "q.csv"
    queries.write_text("query,id\na car," + DEMO_PAIRS[0][0] + "\n")
    loud = CliRunner().invoke(
        cli, ["eval", str(mini_collection.path), "--pairs", str(pairs), "--queries", str(queries)]
    )
    assert (
        loud.exit_code == 0 and "mini: text→image: 30/30" in loud.stderr and "mini: judged queries: 1/1" in loud.stderr
    ), loud.stderr
    quiet = CliRunner().invoke(cli, ["eval", str(mini_collection.path), "--pairs", str(pairs), "-q"])
    assert quiet.exit_code == 0 and "30/30" not in quiet.stderr


def test_contact_sheet_needs_pairs() -> None:
    from click.testing import CliRunner

    from vitrina.cli import cli

    run = CliRunner().invoke(cli, ["eval", "nothing", "--exact-image", "--contact-sheet", "x.html"])
    assert run.exit_code == 2 and "--pairs" in run.output


# -- issue 27: measurements that cannot flatter, round two ---------------------------------------


def test_spaces_covering_different_items_are_compared_on_the_items_both_cover(
    tmp_path: Path, tiny_clip: str, tiny_siglip: str
) -> None:
    from tests.conftest import make_images
    from vitrina.errors import QueryError
    from vitrina.eval_run import EvalOptions, run_eval
    from vitrina.evaluate import paired_comparisons

    make_images(tmp_path / "imgs", 12, seed=5)
    coll = open_collection("partial", create=True)
    coll.index(str(tmp_path / "imgs"), model=tiny_clip)
    make_images(tmp_path / "more", 4, seed=6)
    for f in (tmp_path / "more").iterdir():
        f.rename(tmp_path / "imgs" / f"x{f.name}")
    coll.index(str(tmp_path / "imgs"), model=tiny_siglip)
    coll = open_collection("partial")
    spaces = [s.name for s in coll.spaces()]
    sizes = {s: len(coll.vectors(s)[0]) for s in spaces}
    assert sorted(sizes.values()) == [12, 16], sizes
    ids = coll.vectors(max(sizes, key=sizes.get))[0]  # type: ignore[arg-type]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"id": i, "caption": f"a map {n}", "split": "held_out"}) + "\n" for n, i in enumerate(ids))
    )
    results = run_eval(coll, None, EvalOptions(pairs=pairs, exact_image=True, sample=6, candidates=10, baseline=False))
    small, big = min(sizes, key=sizes.get), max(sizes, key=sizes.get)  # type: ignore[arg-type]
    assert results["candidate_set"]["items"] == 12 and results["candidate_set"]["dropped"] == {small: 0, big: 4}
    t2i = results["text_to_image"]
    assert t2i[small]["items"] == t2i[big]["items"] == 12 and t2i[big]["chance"] == t2i[small]["chance"]
    assert results["paired"][0]["queries"] == 12 and any(
        "cover different items" in w and "4 from" in w for w in results["warnings"]
    )
    assert {r["candidates"] for r in results["exact_image"].values()} == {10}
    assert len(results["paired_exact_image"]) == 5 and "All spaces evaluated on the 12 items" in markdown(results)
    # Figures ranked among different candidates are refused, naming the counts.
    unequal = {small: {**t2i[small], "items": 12}, big: {**t2i[big], "items": 16}}
    with pytest.raises(QueryError, match="12, .* 16"):
        paired_comparisons(unequal)


def test_wilson_intervals_behave_at_the_edges_and_small_samples_warn(mini_collection) -> None:  # type: ignore[no-untyped-def]
    from vitrina.evaluate import queries_needed, rank_intervals, wilson

    # Hand-computed Wilson intervals (z = 1.96): 0 of 3 -> [0, 0.5615]; 3 of 3 -> [0.4385, 1]; 5 of 10 -> [0.2366, 0.7634].
    assert wilson(0, 3) == [0.0, 0.5615] and wilson(3, 3) == [0.4385, 1.0] and wilson(5, 10) == [0.2366, 0.7634]
    ci = rank_intervals([20, 30, 40])
    assert ci["recall@10"] == [0.0, 0.5615] and ci["recall@1"][1] > 0.5 and ci["mrr"][1] > ci["mrr"][0]
    # 0 %: the width z^2 / (n + z^2) falls to 0.2 at n = 4 z^2 = 15.4, so 16 queries.
    assert queries_needed(0.0) == 16 and queries_needed(0.5) in range(90, 100)
    far = [(i, "nothing like it") for i, _ in DEMO_PAIRS[:3]]
    r = eval_pairs(mini_collection, far, check_training=False)
    assert r["ci95"]["recall@10"][1] - r["ci95"]["recall@10"][0] > 0.4, r["ci95"]
    assert any("only 3 queries" in w and "queries would narrow it" in w for w in r["warnings"]), r["warnings"]
    enough = eval_pairs(mini_collection, DEMO_PAIRS, check_training=False)["warnings"]
    assert not [w for w in enough if "narrow it" in w] and len(enough) == 1 and "share 10 captions" in enough[0], enough


def test_paired_test_is_paired_exact_and_its_interval_agrees_with_it() -> None:
    from vitrina.evaluate import paired_test

    # Every query a little better with b, but the queries differ wildly: only a paired test sees it.
    a = [1, 9, 2, 19, 3, 49, 1, 99, 2, 4]
    b = [x - 1 for x in a]
    t = paired_test(a, b)
    assert t["p_value"] == pytest.approx(2 / 2**10, abs=1e-4) and t["significant"] and t["ci95"][0] > 0, t
    # An unpaired (two-sample) permutation test on the same figures sees nothing.
    ra, rb = 1 / (np.asarray(a) + 1), 1 / (np.asarray(b) + 1)
    both, rng = np.concatenate([ra, rb]), np.random.default_rng(0)
    perms = [rng.permutation(both) for _ in range(2000)]
    unpaired = np.mean([abs(p[10:].mean() - p[:10].mean()) >= abs(rb.mean() - ra.mean()) - 1e-12 for p in perms])
    assert unpaired > 0.2
    # Exact: six queries each better by 0.5 give p = 2/64; the same ranks, p = 1.
    assert paired_test([1] * 6, [0] * 6)["p_value"] == pytest.approx(2 / 64, abs=1e-4)
    same = paired_test(a, a)
    assert same["p_value"] == 1.0 and not same["significant"] and same["ci95"][0] <= 0 <= same["ci95"][1]
    # Three queries can never be significant: the interval spans everything, and a warning says so.
    three = paired_test([5, 5, 5], [0, 0, 0])
    assert three["ci95"] == [-1.0, 1.0] and not three["significant"] and "at least 6" in three["warning"]
    # The interval excludes 0 exactly when p < 0.05.
    rng = np.random.default_rng(1)
    for n in (8, 20, 60):
        for _ in range(15):
            x = rng.integers(0, 30, n)
            y = np.maximum(0, x + rng.integers(-6, 4, n))
            t = paired_test(x.tolist(), y.tolist())
            assert t["significant"] == (not t["ci95"][0] <= 0 <= t["ci95"][1]), t
            assert t["ci95"][1] > t["ci95"][0]  # never collapsed to a point


def test_chance_levels_are_hand_computed_and_reported() -> None:
    from vitrina.evaluate import chance

    c = chance(4)
    assert c == {"recall@1": 0.25, "recall@5": 1.0, "recall@10": 1.0, "mrr": round((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4, 4)}
    assert chance(200)["recall@10"] == 0.05
    r = {
        "recall@1": 0.5,
        "recall@10": 0.9,
        "mrr": 0.6,
        "queries": 10,
        "model": "m",
        "chance": {"recall@1": 0.0123, "recall@10": 0.1234, "mrr": 0.0456},
    }
    md = markdown({"text_to_image": {"s": r}})
    assert "1.2% / 12.3% / 0.046" in md, md


def test_random_baseline_is_freshly_initialised_not_the_model(tiny_clip: str, mini_collection) -> None:  # type: ignore[no-untyped-def]
    import torch

    from vitrina import get_embedder
    from vitrina.evaluate import baseline_seed, random_weights_embedder

    model = get_embedder(tiny_clip, device="cpu")
    # tiny_clip was initialised from torch seed 0; so was the old baseline with seed 0.
    assert baseline_seed(0, tiny_clip) not in (0, 1, 2) and baseline_seed(0, "a") != baseline_seed(0, "b")
    twin = random_weights_embedder(model, seed=0)
    ours, theirs = model.model.state_dict(), twin.model.state_dict()  # type: ignore[attr-defined]
    varied = [k for k, v in ours.items() if v.dtype.is_floating_point and v.numel() > 1 and v.std() > 0]
    same = [k for k in varied if torch.equal(ours[k], theirs[k])]
    assert varied and not same, same
    # mini: every tower re-initialised, not the pretrained towers with random heads.
    mini = mini_collection.embedder_for(mini_collection.space())
    rand = random_weights_embedder(mini, seed=0)
    pre, fresh = mini.towers.image_model.state_dict(), rand.towers.image_model.state_dict()
    assert not any(
        torch.equal(pre[k], fresh[k])
        for k in pre
        if pre[k].dtype.is_floating_point and pre[k].numel() > 1 and pre[k].std() > 0
    )
    image = Image.open(DEMO / DEMO_PAIRS[0][0]).convert("RGB")
    from vitrina.embedding import embed_images

    assert float(embed_images(mini, [image])[0] @ embed_images(rand, [image])[0]) < 0.9
    assert rand.fingerprint.revision != mini.fingerprint.revision


def test_exact_image_results_carry_a_paired_test_against_the_baseline(tmp_path: Path, tiny_clip: str) -> None:
    from tests.conftest import make_images

    make_images(tmp_path / "imgs", 10, seed=7)
    coll = open_collection("exactpaired", create=True)
    coll.index(str(tmp_path / "imgs"), model=tiny_clip)
    r = eval_exact_image(coll, sample=6, candidates=10, seed=2)
    for name in ("crop", "combined"):
        test = r["random_weights"][name]["paired"]
        assert test["queries"] == 6 and 0 < test["p_value"] <= 1 and "sign-flip" in test["test"]
    assert r["ci95" if "ci95" in r else "crop"]["ci95"]["recall@1"][1] > r["crop"]["top1"] or r["crop"]["top1"] == 1
    assert any("only 6 queries" in w for w in r["warnings"])
    assert "p = " in markdown({"exact_image": {"s": r}})


def test_finetune_never_trains_on_its_validation_slice_and_shows_chance_beside_it() -> None:
    from vitrina.finetune import MIN_VAL, split_pairs, validation_warning

    pairs = [
        {"id": f"i{n}", "caption": f"c{n}", "group": f"g{n // 3}", "split": "held_out" if n % 7 == 0 else "train"}
        for n in range(300)
    ]
    train, val, held = split_pairs(pairs, 20)
    assert val and train and held == sum(1 for p in pairs if p["split"] == "held_out")
    assert not {p["id"] for p in train} & {p["id"] for p in val}  # never trained on what validates it
    assert not {p["group"] for p in train} & {p["group"] for p in val}  # nor on the same group
    assert len(train) + len(val) + held == len(pairs)
    # 10 validation images: chance alone is recall@10 100 %, MRR 0.293.
    w = validation_warning(10)
    assert MIN_VAL > 10 and "recall@10 100%" in w and "MRR 0.293" in w


def test_queries_file_messages_name_the_reason(mini_collection, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from vitrina.errors import ConfigError
    from vitrina.evaluate import read_queries

    bad = tmp_path / "bad.csv"
    bad.write_text("query,id,relevance\na car,x,1\na map,y,high\n")
    with pytest.raises(ConfigError, match="line 3: relevance 'high' is not a number"):
        read_queries(bad)
    car = DEMO_PAIRS[0][0]
    r = eval_queries(mini_collection, [("a car", {car: 1}), ("nothing", {car: 0})])
    assert r["skipped_queries"] == ["nothing"] and any("relevance 0" in w for w in r["warnings"]), r["warnings"]
    assert not any("no judged item" in w for w in r["warnings"])
    md = markdown({"queries": {"s": {**r, "ndcg@10": 0.5, "p@10": 0.25}}})
    assert "| 0.500 | 25.0% |" in md, md


def test_items_sharing_a_caption_score_a_hit_on_each_other_and_are_reported(tmp_path: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    """Issue 27, defect 5: captions shared by several items (27 demo items in 10 groups) made each
    other's queries misses without a word."""
    from tests.conftest import make_images
    from tests.fakes import FAKE_SPEC
    from vitrina.evaluate import chance, chance_shared

    make_images(tmp_path / "imgs", 8, seed=5)
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC)
    ids, matrix = coll.vectors()
    same = ids[:3]
    pairs = [(same[0], "A red map"), (same[1], "a  red MAP"), (same[2], "a red map")] + [
        (i, f"map {n}") for n, i in enumerate(ids[3:])
    ]
    r = eval_pairs(coll, pairs, check_training=False)
    text = fake_embedder.embed_texts(["A red map", "a  red MAP", "a red map"])
    for q, row in enumerate(r["per_query"][:3]):
        scores = matrix @ text[q]
        group = [ids.index(i) for i in same]
        best = max(group, key=lambda n: scores[n])
        others = [n for n in range(len(ids)) if n not in group]
        assert row["hit"] == ids[best] and row["shares_caption"] == 3, row
        assert row["rank"] == sum(scores[n] >= scores[best] for n in others), row
    assert all("hit" not in row for row in r["per_query"][3:])
    assert r["duplicate_captions"]["captions"] == 1 and r["duplicate_captions"]["items"] == 3
    assert r["duplicate_captions"]["groups"][0]["ids"] == same
    assert any("3 items share 1 captions" in w for w in r["warnings"]), r["warnings"]
    # Chance with three targets among 8 for 3 queries and one for 5 (hand-computed).
    assert r["chance"]["recall@1"] == pytest.approx((3 * (1 - 5 / 8) + 5 / 8) / 8, abs=1e-4)
    assert chance_shared(8, [3])["mrr"] == pytest.approx(
        sum(math.comb(8 - j, 2) / math.comb(8, 3) / j for j in range(1, 7)), abs=1e-4
    )
    assert chance_shared(4, [2])["mrr"] == pytest.approx(0.5 + 1 / 6 + 1 / 18, abs=1e-4)
    assert chance_shared(4, [2])["recall@1"] == pytest.approx(0.5, abs=1e-4)
    assert chance_shared(10, [1]) == chance(10)


def test_finetune_refuses_a_tiny_validation_slice_unless_told(tmp_path: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    """Issue 27, defect 7: 108 training pairs gave a 10-image validation slice (recall@10 100 % by
    construction); below the minimum the run is refused, naming the size and the way out."""
    from click.testing import CliRunner

    from tests.conftest import make_images
    from tests.fakes import FAKE_SPEC
    from vitrina.cli import cli
    from vitrina.errors import QueryError
    from vitrina.finetune import FinetuneConfig, finetune, split_pairs

    make_images(tmp_path / "imgs", 40, seed=2)
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC)
    ids, _ = coll.vectors()
    pairs = [{"id": i, "caption": f"a map {n}", "split": "train"} for n, i in enumerate(ids)]
    size = len(split_pairs(pairs, 10)[1])
    assert 0 < size < 50
    with pytest.raises(QueryError) as refused:
        finetune(coll, pairs, tmp_path / "ft", config=FinetuneConfig(epochs=1))
    message = str(refused.value)
    assert (
        f"would have {size} images, fewer than the minimum of 50" in message and "--allow-small-validation" in message
    )
    assert "--min-val-images" in message and "--val-percent" in message and not (tmp_path / "ft").exists()
    with pytest.raises(QueryError, match="minimum of 60"):
        finetune(coll, pairs, tmp_path / "ft", config=FinetuneConfig(epochs=1, val_percent=90, min_val_images=60))
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    run = CliRunner().invoke(
        cli, ["finetune", str(coll.path), "--pairs", str(pairs_file), "--out", str(tmp_path / "ft")]
    )
    assert run.exit_code != 0 and f"would have {size} images" in run.output and "Traceback" not in run.output, (
        run.output
    )
    # Told to go ahead (or with no validation at all), it is not refused: it goes on to load the model.
    for extra in (["--allow-small-validation"], ["--min-val-images", str(size)], ["--val-percent", "0"]):
        run = CliRunner().invoke(
            cli, ["finetune", str(coll.path), "--pairs", str(pairs_file), "--out", str(tmp_path / "ft"), *extra]
        )
        assert "fewer than the minimum" not in run.output, (extra, run.output)


def test_captions_from_file_names_are_said_so_or_left_out(tmp_path: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    """Issue 27, defect 9: a folder collection's titles are its file names ("architetto francesco
    ro 01."): each row says where its caption came from, the CLI warns, and can leave them out."""
    from click.testing import CliRunner

    from tests.conftest import make_images
    from tests.fakes import FAKE_SPEC
    from vitrina import Item
    from vitrina.cli import cli

    make_images(tmp_path / "imgs", 3, seed=1)
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC)
    coll.add_items([Item(id="cat-1", image="x", source="t", metadata={"title": "Plan of Bergen", "date": "1850"})])
    rows = {r["id"]: r for r in captions(open_collection(tmp_path / "c"))}
    assert rows["cat-1"]["caption_from"] == "title" and len(rows) == 4
    assert all(r["caption_from"] == "file name" for i, r in rows.items() if i != "cat-1"), rows
    run = CliRunner().invoke(cli, ["captions", str(tmp_path / "c")])
    assert run.exit_code == 0 and "3 of 4 captions were built from file names" in run.stderr, run.stderr
    run = CliRunner().invoke(cli, ["captions", str(tmp_path / "c"), "--skip-file-names"])
    assert run.exit_code == 0 and [json.loads(line)["id"] for line in run.stdout.splitlines()] == ["cat-1"]
    assert "file names" not in run.stderr
