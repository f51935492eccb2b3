"""Regions: boxes of large images with their own vectors, collapsed to one hit per item.

Real images, a real store, the numpy embedder (tests/fakes.py: an image's vector is a projection
of its 8x8 thumbnail, so a crop equal to a cut box scores 1.0 against that box's vector)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fakes import FAKE_SPEC
from vitrina import open_collection
from vitrina.regions import RegionPolicy, grid_boxes, parse_detail
from vitrina.store import SCHEMA_VERSION


def make_pages(folder: Path, n: int, size: tuple[int, int] = (300, 200), seed: int = 3, block: int = 25,
               stem: str = "page") -> list[Path]:  # fmt: skip
    """Large-ish pages of blocky random colour (``block``-pixel blocks): every grid tile looks different."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        blocks = rng.integers(0, 256, (size[1] // block, size[0] // block, 3), dtype=np.uint8)
        path = folder / f"{stem}{i:02d}.png"
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
    assert coll._store.schema_version() == SCHEMA_VERSION >= 7
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


# -- collapse: every index gives the reference answer ---------------------------------------------

DIM, N = 16, 240


@pytest.fixture(scope="module")
def region_world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Items with random whole-image vectors; a third of them with 1-6 random region vectors."""
    from vitrina import Item, ModelFingerprint
    from vitrina.store import RegionBatch

    fp = ModelFingerprint(spec="hf:test/random", revision="r1", dim=DIM, preprocessing="none")
    coll = open_collection(tmp_path_factory.mktemp("regions") / "c", create=True)
    rng = np.random.default_rng(7)
    items = [Item(id=f"i{i:03d}", image=f"/x/{i}.jpg", fingerprint="1", source="s", metadata={"kind": "abc"[i % 3], "n": str(i)})
             for i in range(N)]  # fmt: skip
    whole = rng.standard_normal((N, DIM)).astype(np.float32)
    whole /= np.linalg.norm(whole, axis=1, keepdims=True)
    rows: dict[str, list[np.ndarray]] = {it.id: [whole[k]] for k, it in enumerate(items)}
    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    with coll.writer():
        coll.add_items(items)
        coll.import_vectors([it.id for it in items], whole, fingerprint=fp, space="random")
    store = coll._store
    with coll.writer() as w:
        ws = w._store if hasattr(w, "_store") else store
        for start in range(0, N, 60):  # a few batches, like an indexing run
            owners, bx, vecs = [], [], []
            for it in items[start : start + 60]:
                if int(it.id[1:]) % 3 == 0:
                    for r in range(int(rng.integers(1, 7))):
                        v = rng.standard_normal(DIM).astype(np.float32)
                        v /= np.linalg.norm(v)
                        owners.append(it.id)
                        bx.append((r, r, 10, 10))
                        vecs.append(v)
                        rows[it.id].append(v)
                        boxes.setdefault(it.id, []).append((r, r, 10, 10))
            batch = RegionBatch(items=[(it.id, "1") for it in items[start : start + 60]], owners=owners, boxes=bx,
                                vectors=np.stack(vecs), cut="test")  # fmt: skip
            ws.add_vectors("random", [], np.zeros((0, DIM), np.float32), regions=batch)
    return coll, items, rows, boxes


def _reference(rows, items, q, kinds, exclude, limit, offset, min_score, contains=""):  # type: ignore[no-untyped-def]
    scored = []
    for it in items:
        if kinds and it.metadata["kind"] not in kinds:
            continue
        if contains not in it.metadata["n"]:
            continue
        scored.append((max(float(v @ q) for v in rows[it.id]), it.id))
    considered = len(scored)  # as the index protocol counts: before exclusions
    scored = [(s, i) for s, i in scored if i not in exclude]
    scored.sort(reverse=True)
    scored = [(s, i) for s, i in scored if min_score is None or s >= min_score]
    return [i for _, i in scored[offset : offset + limit]], considered


_QDRANT: dict[str, object] = {}  # the local mode locks its folder: one client per test module


@pytest.fixture(scope="module", autouse=True)
def _close_qdrant():  # type: ignore[no-untyped-def]
    yield
    for index in _QDRANT.values():
        index.client.close()  # type: ignore[attr-defined]
    _QDRANT.clear()


def _qdrant_index(coll, store):  # type: ignore[no-untyped-def]
    """The space synced to Qdrant's local mode (region rows are points of their own), once."""
    pytest.importorskip("qdrant_client")
    from vitrina.index.qdrant import QdrantIndex, sync

    target = f"qdrant:{coll.path / 'qdrant'}#random"
    if target not in _QDRANT:
        sp = store.space("random")
        report = sync(store, "random", target, batch=50)
        assert report.new == report.points == sp.live == N + store.region_count("random")
        again = sync(store, "random", target)
        assert again.new == again.changed == again.removed == 0 and again.unchanged == sp.live
        _QDRANT[target] = QdrantIndex(store, "random", target)
    return _QDRANT[target]


@pytest.mark.parametrize("kind", ["exact", "ann", "qdrant"])
def test_collapse_agrees_with_the_reference(region_world, kind: str) -> None:  # type: ignore[no-untyped-def]
    from vitrina.filters import Filter
    from vitrina.index.ann import AnnIndex, AnnParams
    from vitrina.index.ann_build import build_ann
    from vitrina.region_search import RegionIndex, collapsing

    coll, items, rows, boxes = region_world
    store = coll._store
    if kind == "exact":
        index = collapsing(coll.index_for("random"), store, "random")
    elif kind == "qdrant":
        index = collapsing(_qdrant_index(coll, store), store, "random")
    else:
        params = AnnParams(structure="hnsw", codes="fp16", m=8, ef_search=64, oversample=2, min_candidates=10,
                           exact_below=0, selective=0.0)  # fmt: skip
        path = coll.path / "regions-test.ann"
        if not path.exists():
            build_ann(store, "random", params, path=path)
        index = collapsing(AnnIndex(store, "random", params, path=path), store, "random")  # type: ignore[arg-type]
    assert isinstance(index, RegionIndex) and index.count() == N
    assert len(index.matrix()[0]) == N and np.allclose(index.vectors(["i003"])["i003"], rows["i003"][0])
    rng = np.random.default_rng(11)
    agree = total = 0
    for trial in range(40):
        q = rng.standard_normal(DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        kinds = [["a"], ["b", "c"], []][trial % 3]
        filters = [Filter("kind", "=", kinds[0])] if len(kinds) == 1 else [Filter("kind", "!=", "a")] if kinds else []
        contains = "1" if trial % 4 == 2 else ""  # a substring filter: resolved in the store, sent as item rids
        if contains:
            filters.append(Filter("n", "~", contains))
        exclude = {f"i{3 * trial:03d}"} if trial % 2 else set()
        limit, offset = [(10, 0), (5, 5), (20, 3), (N, 0)][trial % 4]  # N: every item (rows asked again)
        min_score = 0.3 if trial % 5 == 0 else None
        m = index.search(q[None], filters=filters, exclude=[exclude], limit=limit, offset=offset, min_score=min_score)[
            0
        ]
        want, considered = _reference(rows, items, q, kinds, exclude, limit, offset, min_score, contains)
        assert m.considered == considered and len(set(m.ids)) == len(m.ids)
        if kind in ("exact", "qdrant"):  # Qdrant's local mode searches exhaustively
            assert m.ids == want
            for i, s in zip(m.ids, m.scores):
                region = m.regions.get(i)  # type: ignore[attr-defined]
                best_region = max((float(v @ q) for v in rows[i][1:]), default=-2.0)
                assert (region is not None) == (best_region >= float(rows[i][0] @ q))
                if region is not None:
                    assert (
                        region.score == pytest.approx(s, abs=1e-5)
                        and (region.x, region.y, region.w, region.h) in boxes[i]
                    )
        agree += len(set(m.ids) & set(want))
        total += len(want)
    assert agree >= 0.9 * total


def test_a_detail_of_an_indexed_item_finds_it_first(tmp_path: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    make_pages(tmp_path / "imgs", 6)
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC, regions="grid")
    x, y, w, h = RegionPolicy("grid").boxes(300, 200)[7]
    hits = coll.search(image=f"page04.png#xywh={x},{y},{w},{h}", limit=3)
    assert hits[0].id == "page04.png" and hits[0].region is not None and (hits[0].region.x, hits[0].region.y) == (x, y)
    assert hits[0].score == pytest.approx(1, abs=1e-5)
    from vitrina import QueryError

    with pytest.raises(QueryError, match="outside"):
        coll.search(image="page02.png#xywh=900,900,10,10")


def test_a_killed_region_run_resumes_with_every_region_embedded_once(tmp_path: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    make_pages(tmp_path / "imgs", 6)
    path = tmp_path / "c"
    coll = open_collection(path, create=True, embedder=fake_embedder)
    coll.ingest(str(tmp_path / "imgs"))
    coll.close()
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
    code = (
        "from tests.fakes import FakeEmbedder, FAKE_SPEC; from vitrina import open_collection; "
        f"open_collection({str(path)!r}, embedder=FakeEmbedder()).index(model=FAKE_SPEC, regions='grid', batch_size=8)"
    )
    for fault in ("after_vector_write:2", "before_commit:3", "after_commit:2"):
        run = subprocess.run([sys.executable, "-c", code], env={**env, "VITRINA_FAULT": fault}, cwd=root, timeout=120)
        assert run.returncode == 137
    coll = open_collection(path, embedder=fake_embedder)
    done = coll.index(model=FAKE_SPEC)  # the recorded policy: grid
    per_page = len(RegionPolicy("grid").boxes(300, 200))
    store = coll._store
    sp = store.space()
    assert done.embedded == 6 - 1 - 2 - 2 and coll.info(check=True)["problems"] == []
    assert store.region_count(sp.name) == 6 * per_page and sp.rows == sp.live == 6 * (1 + per_page)
    rids = list(store.rids_of([f"page{i:02d}.png" for i in range(6)]).values())
    boxes = [r.box for r in store.regions_of(sp.name, rids)]
    assert len(boxes) == 6 * per_page and all(boxes.count(b) == 6 for b in set(boxes))


def test_the_api_gives_a_hit_its_region_and_an_image_of_it(tmp_path: Path, fake_embedder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from vitrina import embedding
    from vitrina.service import create_app

    monkeypatch.setitem(embedding._CACHE, (FAKE_SPEC, None, None), fake_embedder)  # the service loads "its model"

    pages = make_pages(tmp_path / "imgs", 4)
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC, regions="grid")
    coll.close()
    x, y, w, h = RegionPolicy("grid").boxes(300, 200)[5]
    with TestClient(create_app(tmp_path / "c"), raise_server_exceptions=False) as client:
        # The item term reuses page02's whole vector: no model needed; page02 itself is left out.
        body = client.get("/api/search", params={"item": "page02.png", "limit": 4}).json()
        assert body["considered"] == 4 and len({h["id"] for h in body["hits"]}) == len(body["hits"]) == 3
        with_region = [h for h in body["hits"] if h["region"]]
        assert with_region, body
        r = with_region[0]["region"]
        assert r["target"].endswith(f"#xywh={r['x']},{r['y']},{r['w']},{r['h']}") and r["image"].startswith(
            "/api/regions?"
        )
        got = client.get(r["image"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
        crop = client.get("/api/regions", params={"id": "page01.png", "xywh": f"{x},{y},{w},{h}", "size": 64})
        from io import BytesIO

        shown = np.asarray(Image.open(BytesIO(crop.content)).convert("RGB").resize((4, 4)), float)
        want = np.asarray(Image.open(pages[1]).crop((x, y, x + w, y + h)).convert("RGB").resize((4, 4)), float)
        assert np.abs(shown - want).mean() < 12  # the right part of the right image
        assert client.get("/api/regions", params={"id": "page01.png", "xywh": "9000,9000,5,5"}).status_code == 400
        assert client.get("/api/regions", params={"id": "nope", "xywh": "1,1,5,5"}).status_code == 404
        # A detail of an item as the item term: that item comes first, at that region.
        found = client.get("/api/search", params={"item": f"page01.png#xywh={x},{y},{w},{h}", "limit": 2}).json()
        assert found["hits"][0]["id"] == "page01.png" and found["hits"][0]["region"]["x"] == x


def test_a_qdrant_copy_of_a_space_with_regions_finds_the_detail(tmp_path: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("qdrant_client")
    from vitrina.index.qdrant import sync

    pages = make_pages(tmp_path / "imgs", 5)
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC, regions="grid")
    space = coll._store.space().name
    target = f"qdrant:{tmp_path / 'q'}#pages"
    report = sync(coll._store, space, target)
    per_page = len(RegionPolicy("grid").boxes(300, 200))
    assert report.points == 5 * (1 + per_page)
    coll.close()
    x, y, w, h = RegionPolicy("grid").boxes(300, 200)[6]
    detail = tmp_path / "detail.png"
    Image.open(pages[2]).crop((x, y, x + w, y + h)).save(detail)
    remote = open_collection(tmp_path / "c", embedder=fake_embedder, index=target)
    try:
        hits = remote.search(image=str(detail), limit=5)
        assert [h.id for h in hits][0] == "page02.png" and len({h.id for h in hits}) == len(hits) == 5
        assert hits.total_considered == 5 and hits[0].region is not None
        assert (hits[0].region.x, hits[0].region.y, hits[0].region.w) == (x, y, w)
        assert [h.id for h in remote.search(image=str(detail), limit=2, offset=1)] == [h.id for h in hits][1:3]
    finally:
        remote.index_for().client.close()  # type: ignore[attr-defined]
        remote.close()


# -- proposals: boxes found in the image itself ---------------------------------------------------


def map_like(size: tuple[int, int], blob: tuple[int, int, int] | None, seed: int = 5) -> Image.Image:
    """Paper with a graticule, a wandering line and lettering; ``blob`` (x, y, side): a dense drawing."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.asarray([236, 226, 202], np.float32) + rng.normal(0, 5, (h, w, 1))
    page = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(page)
    for x in range(50, w, w // 6):
        d.line([(x, 0), (x + 20, h)], fill=(140, 120, 100), width=2)
    for y in range(40, h, h // 5):
        d.line([(0, y), (w, y - 15)], fill=(140, 120, 100), width=2)
    pts = [(float(x), h / 2 + 80 * np.sin(x / 90)) for x in range(0, w, 8)]
    d.line(pts, fill=(60, 50, 40), width=3)
    for _ in range(25):
        x, y = rng.uniform(0, w - 120), rng.uniform(0, h - 20)
        for k in range(6):
            d.rectangle([x + 14 * k, y, x + 14 * k + 9, y + 14], outline=(60, 50, 40), width=2)
    if blob:
        bx, by, side = blob
        for k in range(12):  # a dense drawing: nested filled shapes in ink and colour
            r = side / 2 * (1 - k / 13)
            c = (bx + side / 2, by + side / 2)
            d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=(200, 40, 30) if k % 2 else (40, 30, 30))
    return page


def test_proposals_frame_a_dense_drawing_among_map_lines() -> None:
    from vitrina.proposals import propose

    page = map_like((2000, 1500), (1300, 250, 220))
    boxes = propose(page, 8)
    assert 0 < len(boxes) <= 8 and all(w == h for _, _, w, h in boxes)  # square: the model centre-crops
    assert all(x >= 0 and y >= 0 and x + w <= 2000 and y + h <= 1500 for x, y, w, h in boxes)
    x, y, w, h = boxes[0]  # the best one frames the drawing, snugly
    assert x <= 1300 and y <= 250 and x + w >= 1520 and y + h >= 470 and w <= 2 * 220
    blank = propose(map_like((2000, 1500), None), 8)
    assert all(not (b[0] <= 1300 and b[1] <= 250 and b[0] + b[2] >= 1520) for b in blank[:1])


def test_auto_cuts_proposals_and_a_coarse_grid_within_the_cap(tmp_path: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    policy = RegionPolicy.parse("auto")
    assert policy.proposals > 0 and policy.key.startswith(f"p{policy.proposals}+grid:2:")
    page = map_like((1200, 900), (700, 150, 160))
    boxes = policy.boxes(1200, 900, page)
    grid = grid_boxes(1200, 900, 2, policy.overlap)
    assert set(grid) <= set(boxes) and len(boxes) <= policy.cap and len(boxes) > len(grid)
    assert policy.boxes(1200, 900) == grid  # no image to look in: the grid alone
    (tmp_path / "imgs").mkdir()
    page.save(tmp_path / "imgs" / "map.png")
    map_like((600, 400), (100, 100, 80)).save(tmp_path / "imgs" / "small.png")
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    report = coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC, regions="auto")
    assert report.embedded == 2 and report.regions == len(boxes)  # the small image is not cut
    store = coll._store
    cut = [r.box for r in store.regions_of(store.space().name, list(store.rids_of(["map.png"]).values()))]
    assert sorted(cut) == sorted(boxes)
    assert any(x <= 700 and y <= 150 and x + w >= 860 and y + h >= 310 and w < 400 for x, y, w, h in cut)


def test_iiif_images_are_cut_from_an_overview_and_image_api_regions_never_the_master(
    tmp_path: Path, fake_embedder, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from tests.heritage_server import HeritageServer
    from vitrina.http import Fetcher

    monkeypatch.setenv("VITRINA_ALLOW_PRIVATE_URLS", "1")  # the "remote" host is on loopback
    fake_embedder.min_side = 224  # as a real model: the overview and the regions are asked at its size
    page = map_like((2400, 1800), (1500, 300, 90))  # a small drawing: its proposal is fetched as a region
    with (
        HeritageServer() as server,
        Fetcher(cache_dir=tmp_path / "cache", allow_private=True, requests_per_second=0) as fetcher,
    ):
        big = server.add_image("map", page)
        small = server.add_image("small", map_like((600, 400), None))
        listing = tmp_path / "urls.txt"
        listing.write_text(f"{big}/full/full/0/default.jpg\n{small}/full/full/0/default.jpg\n")
        coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
        report = coll.index(f"urls:{listing}", model=FAKE_SPEC, regions="auto", fetcher=fetcher)
        assert report.embedded == 2 and not report.failed, report.to_dict()
        asked = [p for p in server.requests("/iiif/") if not p.endswith("info.json")]
    store = coll._store
    sp = store.space()
    rids = store.rids_of([it.id for it in coll.iter_items()])
    boxes = [r.box for r in store.regions_of(sp.name, list(rids.values()))]
    assert store.region_count(sp.name) == report.regions and store.items_with_regions(sp.name) == 1
    assert not any("/full/full/" in p or "/full/max/" in p for p in asked)  # never the master
    overview = [p for p in asked if "/iiif/map/full/" in p]
    assert len(overview) == 1  # one overview of the large image: whole, tiles and most proposals come from it
    regions = [p.split("/iiif/map/")[1].split("/") for p in asked if "/iiif/map/" in p and "/iiif/map/full/" not in p]
    assert regions  # the small boxes: Image API regions, at about the model's size (never upscaled)
    assert all(int(size.rstrip(",")) <= max(224, int(box.split(",")[2])) for box, size, *_ in regions)
    assert len(rids) == 2 and len(boxes) == report.regions
    assert any(x <= 1500 and y <= 300 and x + w >= 1590 and y + h >= 390 and w < 300 for x, y, w, h in boxes)


def test_a_fused_search_gives_a_hit_the_region_a_detail_matched(tmp_path: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    pages = make_pages(tmp_path / "imgs", 5)
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC, regions="grid")
    x, y, w, h = RegionPolicy("grid").boxes(300, 200)[4]
    detail = tmp_path / "detail.png"
    Image.open(pages[3]).crop((x, y, x + w, y + h)).save(detail)
    # CLIP (the detail) fused with keywords (file names are indexed words): page03 is first on both sides.
    hits = coll.search(image=str(detail), keywords="page03", limit=5)
    top = hits[0]
    assert top.id == "page03.png" and top.snippet  # a fused hit: scored by both sides
    assert top.region is not None and (top.region.x, top.region.y, top.region.w, top.region.h) == (x, y, w, h)
    assert top.region.score == pytest.approx(1, abs=1e-5)  # the region's CLIP score, not the fused one
    # An item whose whole image gave its CLIP score has no region, fused or not.
    whole = coll.search(image=str(pages[1]), keywords="page01", limit=1)[0]
    assert whole.id == "page01.png" and whole.region is None
