"""Regions: boxes of large images with their own vectors, collapsed to one hit per item.

Real images, a real store, the numpy embedder (tests/fakes.py: an image's vector is a projection
of its 8x8 thumbnail, so a crop equal to a cut box scores 1.0 against that box's vector)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitrina import open_collection
from vitrina.regions import RegionPolicy, grid_boxes, parse_detail
from vitrina.store import SCHEMA_VERSION

from tests.fakes import FAKE_SPEC


def make_pages(folder: Path, n: int, size: tuple[int, int] = (300, 200), seed: int = 3) -> list[Path]:
    """Large-ish pages of blocky random colour: every grid tile looks different."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        blocks = rng.integers(0, 256, (size[1] // 25, size[0] // 25, 3), dtype=np.uint8)
        path = folder / f"page{i:02d}.png"
        Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST).save(path)
        paths.append(path)
    return paths


def test_grid_boxes_cover_the_image_and_follow_its_aspect() -> None:
    boxes = grid_boxes(4000, 1000, 2, 0.25)
    assert all(w == h == 500 for _, _, w, h in boxes)
    xs, ys = sorted({b[0] for b in boxes}), sorted({b[1] for b in boxes})
    assert xs[0] == 0 and xs[-1] + 500 == 4000 and ys[0] == 0 and ys[-1] + 500 == 1000
    assert len(xs) > 3 * len(ys)  # a long strip gets more tiles along its length
    policy = RegionPolicy("auto")
    assert policy.boxes(800, 600) == []  # small: whole image only
    big = policy.boxes(6000, 4000)
    assert 0 < len(big) <= policy.cap and len(set(big)) == len(big)
    assert all(x + w <= 6000 and y + h <= 4000 for x, y, w, h in big)
    capped = RegionPolicy("auto", cap=5).boxes(6000, 4000)
    assert len(capped) == 5 and set(capped) <= set(big)
    assert parse_detail("https://x.org/c/1#xywh=1,2,3,4") == ("https://x.org/c/1", (1, 2, 3, 4))
    assert parse_detail("plain.jpg") is None


def test_regions_are_indexed_collapsed_and_located(tmp_path: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    pages = make_pages(tmp_path / "imgs", 5)
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    report = coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC, regions="grid")
    policy = RegionPolicy("grid")
    per_page = len(policy.boxes(300, 200))
    assert report.embedded == 5 and report.regions == 5 * per_page and not report.failed
    assert coll._store.schema_version() == SCHEMA_VERSION == 7
    # A tile of page 3 finds page 3, once, with that tile as its region.
    x, y, w, h = policy.boxes(300, 200)[4]
    detail = tmp_path / "detail.png"
    Image.open(pages[3]).crop((x, y, x + w, y + h)).save(detail)
    hits = coll.search(image=str(detail), limit=5)
    assert [h.id for h in hits][0] == "page03.png" and len({h.id for h in hits}) == len(hits) == 5
    assert hits.total_considered == 5
    top = hits[0]
    assert top.region is not None and (top.region.x, top.region.y, top.region.w, top.region.h) == (x, y, w, h)
    assert top.score == pytest.approx(1, abs=1e-5) and top.to_dict()["region"]["w"] == w
    # Paging counts items; the whole image still answers for an item ("more like this" by id).
    assert [h.id for h in coll.search(image=str(detail), limit=2, offset=2)] == [h.id for h in hits][2:4]
    whole = coll.search(image=str(pages[1]), limit=1)[0]
    assert whole.id == "page01.png" and whole.region is None
    # The store is consistent and a second run has nothing to do.
    assert coll.info(check=True)["problems"] == []
    assert coll.index(regions="grid").embedded == 0


def test_a_changed_image_is_cut_again_and_off_drops_regions(tmp_path: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    pages = make_pages(tmp_path / "imgs", 3)
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC, regions="grid")
    n = coll._store.region_count(coll._store.space().name)
    make_pages(tmp_path / "new", 1, seed=9)[0].replace(pages[0])
    again = coll.index(str(tmp_path / "imgs"))  # the recorded policy applies
    assert again.embedded == 1 and again.regions == n // 3
    space = coll._store.space().name
    assert coll._store.region_count(space) == n and coll.info(check=True)["problems"] == []
    coll._store.compact(space, force=True)
    assert coll.info(check=True)["problems"] == []
    x, y, w, h = RegionPolicy("grid").boxes(300, 200)[2]
    detail = tmp_path / "d.png"
    Image.open(pages[0]).crop((x, y, x + w, y + h)).save(detail)
    top = coll.search(image=str(detail), limit=1)[0]
    assert (
        top.id == "page00.png"
        and top.region is not None
        and top.region.x == x
        and top.score == pytest.approx(1, abs=1e-5)
    )
    coll.index(regions="off")
    assert coll._store.region_count(space) == 0 and coll.search(image=str(detail), limit=1)[0].region is None
