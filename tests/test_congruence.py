"""Every search index gives the answers the reference semantics give (model-free).

Random unit vectors, messy metadata (dates like "ca. 1820" and "1754-03-02", lists, nested lists,
missing keys, case variants, tags overriding metadata), a few hundred random filters over every
operator, offsets, exclusions and minimum scores: each index implementation must return exactly
what a brute-force numpy search with ``vitrina.filters.matches`` returns. New implementations
join ``INDEXES``; approximate ones will assert recall bounds instead of equality.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from vitrina import Collection, Filter, Item, ModelFingerprint, QueryError, open_collection
from vitrina.filters import MAX_FILTERS, item_values, matches
from vitrina.index import SearchIndex

DIM = 24
N = 300
FP = ModelFingerprint(spec="hf:test/random", revision="r1", dim=DIM, preprocessing="none")


def _ann(structure: str, codes: str) -> Callable[[Collection], SearchIndex]:
    """An approximate index built into its own file, searched with the fallbacks to exact search
    turned off and few candidates, so that the index itself is what the suite measures."""

    def make(coll: Collection) -> SearchIndex:
        from vitrina.index.ann import AnnIndex, AnnParams
        from vitrina.index.ann_build import build_ann

        params = AnnParams(
            structure=structure,
            codes=codes,
            nlist=16,
            nprobe=4,
            m=8,
            ef_search=16,
            oversample=2,
            min_candidates=10,
            exact_below=0,
            selective=0.0,
        )
        path = coll.path / f"test-{structure}-{codes}.ann"
        if not path.exists():
            build_ann(coll._store, "random", params, path=path)
        return AnnIndex(coll._store, "random", params, path=path)  # type: ignore[return-value]

    return make


def _qdrant(coll: Collection) -> SearchIndex:
    """A Qdrant copy in the client's local mode (a folder; no server can run here), synced once."""
    return _synced(coll, f"qdrant:{coll.path / 'qdrant'}#random")


def _qdrant_edge(coll: Collection) -> SearchIndex:
    """A Qdrant copy in Qdrant's own engine, in this process (qdrant-edge-py), with payload indexes.
    In memory-backed /dev/shm where there is one: the engine syncs every index it creates to disk
    (0.2-0.5 s each on this machine's disk, 10 ms in memory), and the copy has 3 indexes per key."""
    pytest.importorskip("qdrant_edge")
    shm = Path("/dev/shm")
    if coll.path not in _EDGE_FOLDERS:
        if shm.is_dir() and os.access(shm, os.W_OK):
            _EDGE_FOLDERS[coll.path] = Path(tempfile.mkdtemp(prefix="vitrina-edge-", dir=shm))
            atexit.register(shutil.rmtree, _EDGE_FOLDERS[coll.path], True)
        else:
            _EDGE_FOLDERS[coll.path] = coll.path / "edge"
    return _synced(coll, f"qdrant+edge://{_EDGE_FOLDERS[coll.path]}#random")


_EDGE_FOLDERS: dict[Path, Path] = {}


def _synced(coll: Collection, target: str) -> SearchIndex:
    pytest.importorskip("qdrant_client")
    from vitrina.index.qdrant import QdrantIndex, sync

    if target not in _OPEN:  # the local mode locks its folder: one client per test module
        report = sync(coll._store, "random", target)
        assert (report.new, report.points) == (N, N)
        _OPEN[target] = QdrantIndex(coll._store, "random", target)
    return _OPEN[target]


_OPEN: dict[str, SearchIndex] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_qdrant_copies() -> Iterator[None]:
    """The module's Qdrant clients, closed when it ends (not left to interpreter exit, where
    qdrant-client's own close fails noisily)."""
    yield
    for index in _OPEN.values():
        index.close()  # type: ignore[attr-defined]
    _OPEN.clear()


INDEXES: dict[str, Callable[[Collection], SearchIndex]] = {
    "exact": lambda coll: coll.index_for(),
    "qdrant-local": _qdrant,
    "qdrant-edge": _qdrant_edge,
    "ann-ivf-sq8": _ann("ivf", "sq8"),
    "ann-hnsw-fp16": _ann("hnsw", "fp16"),
    "ann-ivf-pq4": _ann("ivf", "pq4"),
}
RECALL = {"ann-ivf-sq8": 0.9, "ann-hnsw-fp16": 0.9, "ann-ivf-pq4": 0.9}  # measured bounds for the approximate ones

DATES = [
    "1650",
    "1700-05-01",
    "[1754?]",
    "1799",
    "1800",
    "ca. 1820",
    None,
    "1910",
    1755,
    1800.5,
    "15. September 1859",
    "1750-1760",
    "",
    "undated",
    "-50",
    "2e3",
]
PLACES = [
    "Boston",
    "boston",
    "BOSTON",
    "London",
    "Paris",
    "Oslo",
    "Bergen",
    "Trondheim",
    "Ålesund",
    "ÅLESUND",
    None,
    ["Boston", "Paris"],
    ["Oslo", ["Bergen"]],
    [],
]
SUBJECTS = [
    ["maps", "sea monsters"],
    ["maps"],
    [],
    ["charts"],
    "maps",
    None,
    ["Maps", ["nested", ["deeper"]]],
    ["sea monsters"],
    [None, "maps"],
    [1, 2, 3],
]


def _metadata(rng: random.Random, i: int) -> dict:
    md = {"title": f"Map {i} of {rng.choice(['Boston', 'the sea', 'Norway', 'Bergen harbour'])}"}
    for key, choices in (("date", DATES), ("place", PLACES), ("subjects", SUBJECTS)):
        if rng.random() < 0.9:
            md[key] = rng.choice(choices)
    if rng.random() < 0.3:
        md["sheets"] = rng.randint(0, 12)
    if rng.random() < 0.2:
        md["coloured"] = rng.random() < 0.5
    if i % 97 == 0:  # hostile values: a string that looks like nested JSON, and a really nested list
        md["date"] = "[" * 5000
        md["subjects"] = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
    return md


WORDS = [
    "hval",
    "Hvalfangst",
    "Bergen",
    "bergensk",
    "Ålesund",
    "alesund",
    "storm",
    "skip",
    "kart",
    "kyst",
    "fyr",
    "Trondheim",
    "whale",
    "ship",
    "<b>",
    "1850",
]


def _context(rng: random.Random, i: int) -> str:
    """OCR-like text: a few words of a small vocabulary (so that keyword queries match many items
    with many ties), sometimes none."""
    return f"page {i} " + " ".join(rng.choice(WORDS) for _ in range(rng.choice([0, 1, 3, 8])))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    rng = random.Random(5)
    path = tmp_path_factory.mktemp("congruence") / "c"
    coll = open_collection(path, create=True)
    items = [Item(id=f"item-{i:04d}", image=f"/data/{i}.jpg", fingerprint="1", source=f"folder:/data/{i % 3}", metadata=_metadata(rng, i), context=_context(rng, i))
             for i in range(N)]  # fmt: skip
    vectors = np.random.default_rng(1).standard_normal((N, DIM)).astype(np.float32)
    with coll.writer():
        coll.add_items(items)
        coll.import_vectors([it.id for it in items], vectors, fingerprint=FP, space="random")
        # Re-embed a tenth of the items (their old rows become dead) and tag some of them.
        again = list(range(0, N, 10))
        vectors[again] = np.random.default_rng(2).standard_normal((len(again), DIM))
        coll.import_vectors([items[i].id for i in again], vectors[again], fingerprint=FP, space="random")
        coll.set_tags(
            "place", "test", [(items[i].id, rng.choice(["Trondheim", "boston"]), 0.9) for i in range(0, N, 7)]
        )
        coll.set_tags("kind", "test", [(items[i].id, rng.choice(["map", "blank"]), 0.5) for i in range(0, N, 2)])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    stored = {it.id: it for it in coll.items([it.id for it in items]).values()}
    tags = {i: {name: t["value"] for name, t in coll.item(i).tags.items()} for i in stored}
    return coll, [it.id for it in items], unit, stored, tags


def _random_filter(rng: random.Random) -> Filter:
    key = rng.choice(
        ["date", "date", "place", "place", "subjects", "sheets", "coloured", "title", "kind", "nokey", "id", "source"]
    )
    op = rng.choice(["=", "!=", "<", "<=", ">", ">=", "~"])
    operands = {
        "date": ["1700", "1754", "1800", "1820", "1800.5", "ca", "1859", "", "-50", "2000", "[", "undated"],
        "place": ["boston", "Boston", "ålesund", "Paris", "o", "L", "Trondheim"],
        "subjects": ["maps", "MAPS", "deep", "nested", "2", "sea"],
        "sheets": ["0", "3", "7.0", "12", "x"],
        "coloured": ["true", "false", "1", "0"],
        "title": ["map 1", "Boston", "harbour", "Map 10"],
        "kind": ["map", "blank"],
        "nokey": ["1", "x"],
        "id": ["item-0001", "item-01", "ITEM-0002"],
        "source": ["folder:/data/1", "data/2"],
    }[key]
    return Filter(key, op, rng.choice(operands))


def _reference(
    world, query: np.ndarray, filters: list[Filter], exclude: set[str], limit: int, offset: int, min_score: float | None
):  # type: ignore[no-untyped-def]
    coll, ids, unit, stored, tags = world
    keep = []
    for n, i in enumerate(ids):
        it = stored[i]
        if all(
            matches(item_values(i, it.source, it.image, it.context, it.metadata, tags[i], f.key), f) for f in filters
        ):
            keep.append(n)
    considered = len(keep)
    scores = unit[keep] @ query
    order = [keep[k] for k in np.argsort(-scores, kind="stable")]
    ranked = [(ids[n], float(unit[n] @ query)) for n in order if ids[n] not in exclude]
    ranked = [(i, s) for i, s in ranked[offset : offset + limit] if min_score is None or s >= min_score]
    return ranked, considered


@pytest.mark.parametrize("kind", sorted(INDEXES))
def test_filters_paging_and_exclusions_agree_with_the_reference(world, kind: str) -> None:  # type: ignore[no-untyped-def]
    coll, ids, unit, _, _ = world
    index = INDEXES[kind](coll)
    rng = random.Random(11)
    nprng = np.random.default_rng(3)
    nonempty = found = wanted = 0
    for trial in range(300):
        filters = [_random_filter(rng) for _ in range(rng.choice([0, 1, 1, 1, 2, 3]))]
        queries = nprng.standard_normal((rng.choice([1, 1, 3]), DIM)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        limit, offset = rng.choice([1, 5, 10, 50, 400]), rng.choice([0, 0, 3, 40])
        min_score = rng.choice([None, None, 0.0, 0.3])
        exclude = [set(rng.sample(ids, rng.choice([0, 0, 2, 20]))) for _ in queries]
        got = index.search(queries, filters=filters, exclude=exclude, limit=limit, offset=offset, min_score=min_score)
        assert len(got) == len(queries)
        for q, m, ex in zip(queries, got, exclude):
            want, considered = _reference(world, q, filters, ex, limit, offset, min_score)
            context = f"trial {trial}: filters {[str(f) for f in filters]}, limit {limit}, offset {offset}, min_score {min_score}"
            assert m.considered == considered, context
            nonempty += bool(m.ids)
            if kind not in RECALL:
                assert m.ids == [i for i, _ in want], context
                np.testing.assert_allclose(m.scores, [s for _, s in want], atol=1e-5, err_msg=context)
                continue
            # Approximate: every hit passes the filters and is not excluded, its score is the exact
            # cosine, hits are ranked by it, and most of the reference's hits are found.
            allowed, _ = _reference(world, q, filters, ex, N, 0, None)
            exact_scores = dict(allowed)
            assert set(m.ids) <= set(exact_scores), context
            np.testing.assert_allclose(m.scores, [exact_scores[i] for i in m.ids], atol=1e-5, err_msg=context)
            assert m.scores == sorted(m.scores, reverse=True), context
            assert min_score is None or all(sc >= min_score for sc in m.scores), context
            found += len(set(m.ids) & {i for i, _ in want}) if offset == 0 else len(want)
            wanted += len(want)
    assert nonempty > 200  # the random filters are not all trivially empty
    if kind in RECALL:
        assert found / wanted >= RECALL[kind], f"recall {found / wanted:.3f}"


@pytest.mark.parametrize("kind", sorted(INDEXES))
def test_stored_vectors_and_counts(world, kind: str) -> None:  # type: ignore[no-untyped-def]
    coll, ids, unit, _, _ = world
    index = INDEXES[kind](coll)
    assert index.count() == N
    got = index.vectors(["item-0010", "item-0011", "no-such-item"])
    assert set(got) == {"item-0010", "item-0011"}
    np.testing.assert_allclose(got["item-0010"], unit[10], atol=1e-6)  # the re-embedded vector, not the dead one
    all_ids, matrix = coll.vectors()
    assert sorted(all_ids) == sorted(ids)
    np.testing.assert_allclose(matrix[all_ids.index("item-0020")], unit[20], atol=1e-6)


def test_collection_search_speaks_the_same_language(world) -> None:  # type: ignore[no-untyped-def]
    coll, ids, unit, _, _ = world
    q = unit[42]
    hits = coll.search_vectors(q, where=["date>=1700", "place!=paris"], limit=7)[0]
    want, considered = _reference(
        world, q, [Filter.parse("date>=1700"), Filter.parse("place!=paris")], set(), 7, 0, None
    )
    assert [h.id for h in hits] == [i for i, _ in want] and hits.total_considered == considered
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    by_item = coll.search(image="item-0042", limit=3)  # the item's stored vector, the item itself left out
    assert "item-0042" not in [h.id for h in by_item]
    assert [h.id for h in by_item] == [i for i, _ in _reference(world, q, [], {"item-0042"}, 3, 0, None)[0]]


def test_query_size_is_capped(world) -> None:  # type: ignore[no-untyped-def]
    coll = world[0]
    with pytest.raises(QueryError, match=f"at most {MAX_FILTERS}"):
        coll.search_vectors(world[2][0], where=[f"date>={1000 + i}" for i in range(MAX_FILTERS + 1)])
    with pytest.raises(QueryError, match="at most 32"):
        coll.search(image=[f"item-{i:04d}" for i in range(40)])


def test_queries_run_with_a_numpy_embedder(tmp_path: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import make_images
    from tests.fakes import FAKE_SPEC

    make_images(tmp_path / "imgs", 6)
    coll = open_collection(tmp_path / "c", create=True, embedder=fake_embedder)
    assert coll.index(str(tmp_path / "imgs"), model=FAKE_SPEC).embedded == 6
    hits = coll.search(image=str(tmp_path / "imgs" / "img0003.jpg"), limit=2)
    assert hits[0].id == "img0003.jpg" and hits[0].score == pytest.approx(1, abs=1e-5)
    assert coll.search("anything", limit=6).total_considered == 6
    # An item whose id is a URL (a IIIF canvas, say) is used by its stored vector, never fetched.
    canvas = "https://example.org/iiif/book/canvas/1"
    coll.add_items([Item(id=canvas, image=str(tmp_path / "imgs" / "img0003.jpg"), fingerprint="1", source="test")])
    coll.index()
    by_id = coll.search(image=canvas, limit=7)
    assert (
        canvas not in [h.id for h in by_id]
        and by_id[0].id == "img0003.jpg"
        and by_id[0].score == pytest.approx(1, abs=1e-5)
    )


def _reference_fusion(
    clip: list[tuple[str, float]], words: list[tuple[str, float]], w: float, method: str
) -> list[tuple[str, float]]:
    """The fusions as the docs state them (index/keyword.py), written again here."""
    fused: dict[str, float] = {}
    if method == "rrf":
        for ranked, share in ((clip, 1 - w), (words, w)):
            for r, (i, _) in enumerate(ranked, start=1):
                fused[i] = fused.get(i, 0.0) + share * 61 / (60 + r)
    else:
        lo, hi = (min(s for _, s in clip), max(s for _, s in clip)) if clip else (0.0, 0.0)
        for i, s in clip:
            fused[i] = (1 - w) * ((s - lo) / (hi - lo) if hi > lo else 1.0)
        best = max((s for _, s in words), default=0.0)
        for i, s in words:
            fused[i] = fused.get(i, 0.0) + w * (s / best if best > 0 else 1.0)
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))


@pytest.mark.parametrize("kind", sorted(k for k in INDEXES if k not in RECALL))
def test_keyword_and_fused_search_agree_with_the_reference(world, kind: str) -> None:  # type: ignore[no-untyped-def]
    """Keyword-only and fused rankings under random filters, paging, minimum scores and an excluded
    query item: the keyword ranking filtered by the reference semantics, fused with the reference
    CLIP ranking by the documented formulas, then paged. The CLIP side is each exact index."""
    from vitrina.index.keyword import DEPTH, KeywordIndex
    from vitrina.query import Query, Term

    coll, ids, unit, stored, tags = world
    coll._indexes["random"] = INDEXES[kind](coll)
    unfiltered = KeywordIndex(coll._store)
    rng = random.Random(23)
    nonempty = 0
    for trial in range(150):
        filters = [_random_filter(rng) for _ in range(rng.choice([0, 0, 1, 1, 2]))]
        words = " ".join(
            rng.choice(WORDS + ["berg*", "hval*", "ÅLESUND", "nothing"]) for _ in range(rng.choice([1, 1, 2, 3]))
        )
        limit, offset = rng.choice([1, 5, 10, 50, 400]), rng.choice([0, 0, 3, 40])
        method, w = rng.choice(["rrf", "weighted"]), rng.choice([None, 0.3, 0.5, 0.8, 1.0])
        start = rng.randrange(N)
        keyword_only = rng.random() < 0.3
        terms = () if keyword_only else (Term(ids[start], 1.0, "image"),)
        min_score = rng.choice([None, None, 0.2, 0.5]) if not keyword_only else rng.choice([None, 1.0])
        query = Query(
            terms=terms,
            filters=tuple(filters),
            keywords=words,
            keyword_weight=w,
            fusion=method,
            limit=limit,
            offset=offset,
            min_score=min_score,
        )
        got = coll.run([query], space="random")[0]
        context = f"trial {trial}: {words!r} {method} w={w} filters {[str(f) for f in filters]}, limit {limit}, offset {offset}, min_score {min_score}"

        allowed = {i for i in ids if all(matches(item_values(i, stored[i].source, stored[i].image, stored[i].context, stored[i].metadata, tags[i], f.key), f)
                                         for f in filters)}  # fmt: skip
        exclude = set() if keyword_only else {ids[start]}
        full = unfiltered.ranking(words)
        kw = [(i, s) for i, s in zip(full.ids, full.scores) if i in allowed and i not in exclude]
        if keyword_only:
            want = kw
            assert got.total_considered == len(allowed), context
        else:
            clip, considered = _reference(world, unit[start], filters, exclude, DEPTH, 0, None)
            want = _reference_fusion(clip, kw[:DEPTH], Query.DEFAULT_KEYWORD_WEIGHT if w is None else w, method)
            assert got.total_considered == considered, context
        want = [(i, s) for i, s in want[offset : offset + limit] if min_score is None or s >= min_score]
        assert [h.id for h in got] == [i for i, _ in want], context
        np.testing.assert_allclose([h.score for h in got], [s for _, s in want], rtol=1e-6, atol=1e-6, err_msg=context)
        assert [h.rank for h in got] == list(range(offset + 1, offset + 1 + len(got))), context
        nonempty += bool(got)
        for h in got:  # a hit that matched a word shows it marked in its snippet
            if h.id in dict(kw):
                assert any(matched for _, matched in h.snippet), context
    assert nonempty > 100
    coll._indexes.clear()


@pytest.mark.parametrize("kind", ["qdrant-local", "qdrant-edge"])
def test_substring_filters_go_to_qdrant_as_a_match_not_an_id_list(world, kind: str) -> None:  # type: ignore[no-untyped-def]
    """``~`` is a substring condition in Qdrant (one clause whatever it matches), not the list of
    every matching item's rid; broad ones (all 300 items) and narrow ones agree with the reference."""
    coll, ids, unit, _, _ = world
    index = INDEXES[kind](coll)
    for text in [
        "title~map",
        "id~item",
        "context~e",
        "title~OF B",
        "place~SUND",
        "subjects~deep",
        "date~",
        "title~zzz",
    ]:
        f = Filter.parse(text)
        translated = index.translate([f])  # type: ignore[attr-defined]
        assert "MatchSubstring" in repr(translated) and "MatchAny" not in repr(translated), text
        for q in unit[[3, 77]]:
            got = index.search(q[None], filters=[f], limit=400)[0]
            want, considered = _reference(world, q, [f], set(), 400, 0, None)
            assert got.considered == considered and got.ids == [i for i, _ in want], text
    assert _reference(world, unit[0], [Filter.parse("title~map")], set(), 400, 0, None)[1] == N
