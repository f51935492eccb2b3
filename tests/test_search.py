"""Query behaviour a user relies on: self-match, alpha ends, negative terms, filters, paging."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_images
from vitrina import Collection, Item, QueryError, SpaceMismatch, open_collection
from vitrina.query import Query, parse_term
from vitrina.store import resolve_collection


@pytest.fixture
def coll(scans: Path, tiny_clip: str) -> Collection:
    c = open_collection("maps", create=True)
    report = c.index(str(scans), model=tiny_clip)
    assert report.embedded == 14 and not report.failed
    return c


def ids(hits) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.id for h in hits]


def test_an_indexed_image_finds_itself_first(coll: Collection, scans: Path) -> None:
    for name in ("book-page-poulpes.jpg", "generated/img0003.jpg", "generated/img0006.png"):
        hits = coll.search(image=str(scans / name), limit=3)
        assert hits[0].id == name
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[1].score < hits[0].score


def test_query_by_item_id_reuses_its_vector_and_leaves_it_out(coll: Collection, scans: Path) -> None:
    by_file = coll.search(image=str(scans / "manuscript-page.jpg"), limit=5)
    by_id = coll.search(image="manuscript-page.jpg", limit=4)
    assert "manuscript-page.jpg" not in ids(by_id)
    assert ids(by_id) == ids(by_file)[1:]
    np.testing.assert_allclose([h.score for h in by_id], [h.score for h in by_file][1:], atol=1e-5)
    with_self = coll.search(image="manuscript-page.jpg", limit=1, include_self=True)
    assert with_self[0].id == "manuscript-page.jpg"


def test_alpha_ends_reproduce_text_only_and_image_only(coll: Collection, scans: Path) -> None:
    n = len(coll)
    text_only = coll.search("old map with sea monsters", limit=n)
    image_only = coll.search(image=str(scans / "generated/img0005.jpg"), limit=n)
    at_zero = coll.search("old map with sea monsters", image=str(scans / "generated/img0005.jpg"), alpha=0.0, limit=n)
    at_one = coll.search("old map with sea monsters", image=str(scans / "generated/img0005.jpg"), alpha=1.0, limit=n)
    assert ids(at_zero) == ids(text_only)
    assert ids(at_one) == ids(image_only)
    np.testing.assert_allclose([h.score for h in at_zero], [h.score for h in text_only], atol=1e-5)
    # alpha = 0.5 mixes the two unit vectors equally, so its ranking is that of text score + image score.
    middle = coll.search(
        "old map with sea monsters", image=str(scans / "generated/img0005.jpg"), alpha=0.5, limit=n, include_self=True
    )
    text_score = {h.id: h.score for h in text_only}
    image_score = {
        h.id: h.score for h in coll.search(image=str(scans / "generated/img0005.jpg"), limit=n, include_self=True)
    }
    summed = sorted(text_score, key=lambda i: -(text_score[i] + image_score[i]))
    assert ids(middle) == summed


def test_negative_terms_push_matching_items_down(coll: Collection) -> None:
    base = coll.search("harbour city", limit=len(coll))
    top = base[0].id
    pushed = coll.search("harbour city", image=[f"-1:{top}"], limit=len(coll), include_self=True)
    rank_before = ids(base).index(top)
    rank_after = ids(pushed).index(top)
    assert rank_after > rank_before
    assert pushed[rank_after].score < base[0].score
    # Weighted text terms: "2:x" counts twice as much as "x".
    assert (
        parse_term("2:ship").weight == 2.0
        and parse_term("-0.5:colour").weight == -0.5
        and parse_term("-colour").weight == -1.0
    )
    assert parse_term("C:/maps/a.jpg", "image").value == "C:/maps/a.jpg"


def test_terms_that_cancel_out_are_an_error(coll: Collection) -> None:
    with pytest.raises(QueryError, match="cancel"):
        coll.search(["ship", "-1:ship"])
    with pytest.raises(QueryError, match="empty"):
        coll.search()
    with pytest.raises(QueryError, match="not a file"):
        coll.search(image="no-such-thing.jpg")


def test_filters_on_metadata(tmp_path: Path, tiny_clip: str) -> None:
    coll = open_collection("dated", create=True)
    from tests.conftest import make_images

    paths = make_images(tmp_path / "imgs", 8)
    items = [
        Item(id=f"m{i}", image=str(p), fingerprint="1", source="test",
             metadata={"title": f"Map {i}", "date": d, "place": place, "subjects": subjects})
        for i, (p, d, place, subjects) in enumerate(zip(paths,
            ["1650", "1700-05-01", "1754?", "1799", "1800", "ca. 1820", None, "1910"],
            ["Boston", "boston", "London", "Paris", "Boston", "Rome", "Oslo", "Boston"],
            [["maps", "sea monsters"], ["maps"], [], ["charts"], ["maps"], [], ["maps"], ["sea monsters"]]))
    ]  # fmt: skip
    coll.add_items(items)
    coll.index(model=tiny_clip)

    def found(*where: str) -> set[str]:
        return set(ids(coll.search("map", where=list(where), limit=100)))

    assert found("date>=1700", "date<1800") == {"m1", "m2", "m3"}
    assert found("date>=1800") == {"m4", "m5", "m7"}  # "ca. 1820" compares as 1820
    assert found("place=Boston") == {"m0", "m1", "m4", "m7"}  # case-insensitive
    assert found("place!=boston") == {"m2", "m3", "m5", "m6"}
    assert found("subjects=sea monsters") == {"m0", "m7"}  # any element of a list
    assert found("title~map 3") == {"m3"}
    assert found("date>=1700", "place=boston") == {"m1", "m4", "m7"}
    hits = coll.search("map", where=["place=Boston"], limit=100)
    assert hits.total_considered == 4
    with pytest.raises(QueryError, match="KEY OP VALUE"):
        coll.search("map", where=["date between 1 and 2"])
    # Filter results are cached, but never stale: a new matching item shows up at once.
    extra = make_images(tmp_path / "extra", 1, seed=9)[0]
    coll.add_items(
        [Item(id="m8", image=str(extra), fingerprint="1", source="test", metadata={"date": "1750", "place": "Boston"})]
    )
    coll.index()
    assert found("date>=1700", "date<1800") == {"m1", "m2", "m3", "m8"}


def test_min_score_offset_limit_and_batches(coll: Collection) -> None:
    everything = coll.search("sea monster", limit=100)
    assert len(everything) == len(coll) == 14
    scores = [h.score for h in everything]
    assert scores == sorted(scores, reverse=True)
    page2 = coll.search("sea monster", limit=5, offset=5)
    assert ids(page2) == ids(everything)[5:10] and [h.rank for h in page2] == [6, 7, 8, 9, 10]
    cut = scores[6]
    above = coll.search("sea monster", min_score=cut, limit=100)
    assert ids(above) == ids(everything)[:7]
    queries = [
        Query.build("sea monster", limit=4),
        Query.build("a red ship", limit=4),
        Query.build(image="manuscript-page.jpg", limit=4),
    ]
    batch = coll.run(queries)
    assert [ids(h) for h in batch] == [
        ids(coll.search("sea monster", limit=4)),
        ids(coll.search("a red ship", limit=4)),
        ids(coll.search(image="manuscript-page.jpg", limit=4)),
    ]


def test_search_by_raw_vectors(coll: Collection) -> None:
    space = coll.space()
    all_ids, matrix = coll.vectors()
    stored = matrix[:3]
    results = coll.search_vectors(stored * 5.0, limit=2)  # any length: normalised first
    expected = all_ids[:3]
    assert [r[0].id for r in results] == expected and all(r[0].score == pytest.approx(1, abs=1e-5) for r in results)
    for bad in (
        np.zeros(space.fingerprint.dim),
        np.ones(space.fingerprint.dim + 1),
        np.full(space.fingerprint.dim, np.nan),
    ):
        with pytest.raises(QueryError, match="dimensions"):
            coll.search_vectors(bad)


def test_every_hit_carries_id_score_image_and_metadata(coll: Collection, scans: Path) -> None:
    hit = coll.search(image=str(scans / "book-page-poulpes.jpg"), limit=1)[0]
    d = hit.to_dict()
    assert d["id"] == "book-page-poulpes.jpg" and d["image"] == str(scans / "book-page-poulpes.jpg")
    assert d["metadata"]["title"] == "book-page-poulpes" and d["rank"] == 1
    html = coll.search(image=str(scans / "book-page-poulpes.jpg"), limit=2)._repr_html_()
    assert html.count("<img") == 2 and "data:image/jpeg;base64," in html


def test_a_query_from_another_model_is_refused(coll: Collection, tiny_siglip: str) -> None:
    from vitrina import get_embedder

    other = open_collection("maps", embedder=get_embedder(tiny_siglip))
    with pytest.raises(SpaceMismatch) as info:
        other.search("a map")
    message = str(info.value)
    assert "tiny-clip" in message and "tiny-siglip" in message
    with pytest.raises(SpaceMismatch, match="--space"):
        coll.index(model=tiny_siglip, space=coll.spaces()[0].name)


def test_two_models_side_by_side(coll: Collection, scans: Path, tiny_siglip: str) -> None:
    report = coll.index(model=tiny_siglip)
    assert report.embedded == 14 and report.space == "tiny-siglip" + report.space.removeprefix("tiny-siglip")
    spaces = [s.name for s in coll.spaces()]
    assert len(spaces) == 2
    for space in spaces:
        hits = open_collection("maps").search(image=str(scans / "manuscript-page.jpg"), space=space, limit=1)
        assert hits[0].id == "manuscript-page.jpg"


def test_a_long_lived_reader_follows_a_reembed_done_elsewhere(tmp_path: Path, tiny_clip: str) -> None:
    folder = tmp_path / "r"
    make_images(folder, 8)
    writer = open_collection("reembed", create=True)
    writer.index(str(folder), model=tiny_clip)
    for n, name in enumerate(("img0001.jpg", "img0004.png")):  # dead rows: a re-embed then renumbers every row
        Image.new("RGB", (50, 50), (200, 40 * n, 30)).save(folder / name)
        os.utime(folder / name, ns=(time.time_ns(), time.time_ns() + 10**9))
    writer.index(str(folder))
    reader = open_collection("reembed")  # like `vitrina serve`: opened and searching before the re-embed
    before = reader.search(image="img0001.jpg", limit=8)
    Collection(resolve_collection("reembed")).index(reembed=True)  # another Collection (as another process would)
    after = reader.search(image="img0001.jpg", limit=8)
    fresh = open_collection("reembed").search(image="img0001.jpg", limit=8)
    assert [h.id for h in after] == [h.id for h in fresh] == [h.id for h in before]
    assert [h.score for h in after] == pytest.approx([h.score for h in fresh], abs=1e-6)
    ids, vectors = reader.vectors()
    fresh_ids, fresh_vectors = open_collection("reembed").vectors()
    assert ids == fresh_ids and np.allclose(vectors, fresh_vectors)
