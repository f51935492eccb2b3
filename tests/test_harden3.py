"""Hardening, round three (issue 28): odd ids, null ids, wrong dimensions, truncated files,
messages instead of tracebacks. Each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vitrina import open_collection
from vitrina.importers import import_vectors, open_reader
from vitrina.records import Item

DECLARED = "hf:example/clip-64"  # declared, never loaded


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- 2. ids with control characters ---------------------------------------------------------------


def test_ids_with_control_characters_are_bad_rows_with_a_clear_reason(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", unit_rows(5, 64))
    rows = [{"id": "ok-1"}, {"id": "two\nlines"}, {"id": "tab\there"}, {"id": "nul\x00"}, {"id": "ok-2"}]
    (tmp_path / "ids.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    coll = open_collection("odd-ids", create=True)
    report = import_vectors(
        coll, open_reader("npy", [str(tmp_path / "v.npy"), str(tmp_path / "ids.jsonl")]), model=DECLARED
    )
    assert report.imported == 2 and report.bad == 3
    reasons = {b["row"]: b["reason"] for b in report.bad_rows}
    assert "control character (U+000A)" in reasons[1] and "U+0009" in reasons[2] and "U+0000" in reasons[3]
    assert sorted(i.id for i in coll.iter_items()) == ["ok-1", "ok-2"]


def _collection_with_odd_ids(tmp_path: Path, model: str) -> Any:
    """A collection that already holds an id with a newline (written before ids were checked)."""
    from vitrina.embedding import get_embedder
    from vitrina.layout import build_map

    coll = open_collection(tmp_path / "odd", create=True)
    ids = ["plain", "two\nlines", "tab\there", "last"]
    fp = get_embedder(model).fingerprint
    with coll.writer():
        coll.add_items(Item(id=i, image=f"{n}.jpg", fingerprint="1", source="t", metadata={"kind": "k" + str(n % 2)})
                       for n, i in enumerate(ids))  # fmt: skip
        coll.import_vectors(ids, unit_rows(4, fp.dim), fingerprint=fp, space="v")
    build_map(coll, method="pca")
    return coll, ids


def test_one_odd_id_cannot_take_the_map_down(tmp_path: Path, tiny_clip: str) -> None:
    from fastapi.testclient import TestClient

    from vitrina.layout import read_map
    from vitrina.service import create_app

    coll, ids = _collection_with_odd_ids(tmp_path, tiny_clip)
    assert read_map(coll.path / "spaces" / "v.map").ids == ids
    with TestClient(create_app(str(coll.path)), raise_server_exceptions=False) as client:
        assert client.get("/api/map").status_code == 200
        colours = client.get("/api/map/colours", params={"key": "kind"})
        assert colours.status_code == 200 and len(colours.json()["codes"]) == 4
        # A damaged map file is reported as stale (rebuild it), not a 500.
        path = coll.path / "spaces" / "v.map"
        path.write_bytes(path.read_bytes()[:-3])
        r = client.get("/api/map")
        assert r.status_code == 409 and "vitrina map" in r.json()["error"]["message"]


# -- 7. null ids --------------------------------------------------------------------------------


def test_a_null_id_is_a_bad_row_not_row_n(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = unit_rows(3, 64)
    pq.write_table(pa.table({"id": ["row0", None, "b"], "embedding": [list(map(float, v)) for v in vectors]}),
                   tmp_path / "t.parquet")  # fmt: skip
    coll = open_collection("null-ids", create=True)
    report = import_vectors(coll, open_reader("parquet", [str(tmp_path / "t.parquet")]), model=DECLARED)
    assert report.imported == 2 and report.bad == 1
    assert report.bad_rows[0]["row"] == 1 and "empty (null)" in report.bad_rows[0]["reason"]
    assert sorted(i.id for i in coll.iter_items()) == ["b", "row0"]
    # Without an id column at all, rows are still named by their position.
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "ids.csv").write_text("title\nA\nB\nC\n")
    plain = open_collection("no-id-column", create=True)
    assert (
        import_vectors(
            plain, open_reader("npy", [str(tmp_path / "v.npy"), str(tmp_path / "ids.csv")]), model=DECLARED
        ).imported
        == 3
    )


# -- 5. messages, not tracebacks --------------------------------------------------------------------


def test_deeply_nested_json_metadata_is_kept_as_text_not_a_recursion_error(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    fine = json.dumps({"title": "Folio", "box": [[1, 2], [3, 4]]})
    vectors = unit_rows(2, 64)
    pq.write_table(pa.table({"id": ["deep", "fine"], "embedding": [list(map(float, v)) for v in vectors], "metadata": [deep, fine]}),
                   tmp_path / "t.parquet")  # fmt: skip
    coll = open_collection("deep-json", create=True)
    assert import_vectors(coll, open_reader("parquet", [str(tmp_path / "t.parquet")]), model=DECLARED).imported == 2
    assert coll.item("deep").metadata == {"metadata": deep}
    assert coll.item("fine").metadata == {"title": "Folio", "box": [[1, 2], [3, 4]]}


def cli(*args: str) -> Any:
    from click.testing import CliRunner

    from vitrina.cli import cli as vitrina

    return CliRunner().invoke(vitrina, list(args))


def test_serving_a_space_the_model_cannot_answer_is_a_message(tmp_path: Path, tiny_clip: str) -> None:
    from vitrina.embedding import get_embedder

    real = get_embedder(tiny_clip).fingerprint
    wrong = type(real)(spec=real.spec, revision="unverified", dim=real.dim + 8, preprocessing="unverified")
    coll = open_collection("wrong-dim", create=True)
    with coll.writer():
        coll.add_items([Item(id="a", image="a.jpg", fingerprint="1", source="t")])
        coll.import_vectors(["a"], unit_rows(1, real.dim + 8), fingerprint=wrong)
    run = cli("serve", "wrong-dim", "--get", "/healthz")
    assert (
        run.exit_code == 1
        and "Traceback" not in run.output
        and run.exception is None
        or isinstance(run.exception, SystemExit)
    )
    assert f"{real.dim + 8} dims" in run.output and "Search with the same model" in run.output


def test_sync_to_an_unreachable_or_non_qdrant_target_is_a_message(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_client")
    import http.server
    import threading

    coll = open_collection("to-sync", create=True)
    np.save(tmp_path / "v.npy", unit_rows(2, 64))
    (tmp_path / "ids.txt").write_text("a\nb\n")
    import_vectors(coll, open_reader("npy", [str(tmp_path / "v.npy"), str(tmp_path / "ids.txt")]), model=DECLARED)
    run = cli("sync", "to-sync", "qdrant+http://127.0.0.1:9/x")
    assert run.exit_code == 1 and "cannot be reached" in run.output and "Start Qdrant" in run.output
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = cli("sync", "to-sync", f"qdrant+http://127.0.0.1:{server.server_port}/x")
    finally:
        server.shutdown()
        server.server_close()
    assert run.exit_code == 1 and "not a Qdrant server" in run.output, run.output


# -- 6. wrong dimensions ----------------------------------------------------------------------------


def test_vectors_of_another_dimension_are_refused_without_loading_the_model(tmp_path: Path, tiny_clip: str) -> None:
    from vitrina.embedding import get_embedder

    dim = get_embedder(tiny_clip).fingerprint.dim
    np.save(tmp_path / "v.npy", unit_rows(3, dim + 8))
    (tmp_path / "ids.txt").write_text("a\nb\nc\n")
    reader = lambda: open_reader("npy", [str(tmp_path / "v.npy"), str(tmp_path / "ids.txt")])  # noqa: E731
    fresh = open_collection("fresh", create=True)
    with pytest.raises(Exception, match=f"have {dim + 8} dimensions but .* makes {dim}"):
        import_vectors(fresh, reader(), model=tiny_clip, load_model=False)  # read from the checkpoint's config
    assert len(fresh) == 0
    # A space already holds this model's vectors at another dimension: refused before any item is written.
    held = open_collection("held", create=True)
    np.save(tmp_path / "ok.npy", unit_rows(1, 64))
    (tmp_path / "ok.txt").write_text("z\n")
    import_vectors(held, open_reader("npy", [str(tmp_path / "ok.npy"), str(tmp_path / "ok.txt")]), model=DECLARED)
    with pytest.raises(Exception, match="Nothing was imported"):
        import_vectors(held, reader(), model=DECLARED, load_model=False)
    assert len(held) == 1
    from vitrina.importers.common import declared_dim

    assert declared_dim("mini") == 256


# -- 8. truncated .npy --------------------------------------------------------------------------------


def test_a_truncated_npy_says_it_is_truncated(tmp_path: Path) -> None:
    from vitrina.errors import SourceError

    np.save(tmp_path / "whole.npy", unit_rows(100, 64))
    data = (tmp_path / "whole.npy").read_bytes()
    (tmp_path / "half.npy").write_bytes(data[: len(data) // 2])
    (tmp_path / "claims.npy").write_bytes(data.replace(b"(100, 64)", b"(10000000, 64)"))
    (tmp_path / "ids.txt").write_text("".join(f"i{n}\n" for n in range(100)))
    for name, promised in (("half.npy", "100 x 64"), ("claims.npy", "10,000,000 x 64")):
        with pytest.raises(SourceError) as info:
            open_reader("npy", [str(tmp_path / name), str(tmp_path / "ids.txt")])
        assert info.value.reason == "bad_file" and "truncated" in str(info.value) and promised in str(info.value)
        assert "Python objects" not in str(info.value)


# -- 10. negative weighted terms on the command line ---------------------------------------------------


@pytest.mark.parametrize(
    "term", ["-0.5:a tree", "-0.5:hat", "-0.5:ink", "-0.5:kid", "-0.5:night", "-0.5:whale", "-2:wn", "-.5:hi"]
)
def test_negative_weighted_terms_are_terms_not_options(term: str, mini_vectors: str) -> None:
    run = cli("search", mini_vectors, "old map", term, "-n", "3", "--json")
    assert run.exit_code == 0, run.output
    out = json.loads(run.output)
    assert out["query"]["terms"] == ["old map", term] and out["query"]["limit"] == 3
    assert out["query"]["keywords"] == "" and out["query"]["alpha"] is None and not out["query"]["where"]


@pytest.fixture
def mini_vectors(tmp_path: Path, tiny_clip: str) -> str:
    from tests.conftest import make_images

    make_images(tmp_path / "scans", 4)
    open_collection("weighted", create=True).index(str(tmp_path / "scans"), model=tiny_clip)
    return "weighted"


# -- 11. private addresses ----------------------------------------------------------------------------


def test_a_refused_private_address_names_the_setting_and_not_the_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.heritage_server import HeritageServer
    from vitrina.errors import ImageError, SourceError
    from vitrina.http import fetch_bytes

    monkeypatch.delenv("VITRINA_ALLOW_PRIVATE_URLS", raising=False)
    with HeritageServer() as server:
        server.docs["/manifest.json"] = {
            "@context": "http://iiif.io/api/presentation/2/context.json",
            "@type": "sc:Manifest",
        }
        coll = open_collection("private", create=True)
        with pytest.raises(SourceError) as info:
            coll.ingest(f"iiif:{server.url}/manifest.json")
        message = str(info.value)
        assert info.value.reason == "url_rejected" and "VITRINA_ALLOW_PRIVATE_URLS=1" in message
        assert "Check that it is a IIIF manifest" not in message
        with pytest.raises(ImageError, match="VITRINA_ALLOW_PRIVATE_URLS=1"):
            fetch_bytes(f"{server.url}/x.jpg")
        with pytest.raises(ImageError) as scheme:
            fetch_bytes("file:///etc/passwd")
        assert "VITRINA_ALLOW_PRIVATE_URLS" not in str(scheme.value)  # not a private-address matter
        run = cli("ingest", f"iiif:{server.url}/manifest.json", "--collection", "private")
        assert run.exit_code != 0 and "VITRINA_ALLOW_PRIVATE_URLS=1" in run.output


# -- 4. map colours: one query, only real keys ------------------------------------------------------


def test_map_colours_come_from_one_query_and_unknown_keys_cost_nothing(tmp_path: Path, tiny_clip: str) -> None:
    from fastapi.testclient import TestClient

    from vitrina.layout import map_colours, read_map
    from vitrina.service import create_app, explore

    coll, ids = _collection_with_odd_ids(tmp_path, tiny_clip)
    with coll.writer():
        coll.set_tags("kind", "probe:kind@test", [("last", "Tagged", 0.9)])  # a tag replaces its key's value
    ids = read_map(coll.path / "spaces" / "v.map").ids
    colours = map_colours(open_collection(coll.path), "kind", ids)
    assert colours is not None
    shown = [None if c < 0 else colours["values"][c] for c in colours["codes"]]
    assert dict(zip(ids, shown)) == {"plain": "k0", "two\nlines": "k1", "tab\there": "k0", "last": "Tagged"}
    assert map_colours(coll, "no-such-key", ids) is None
    explore._COLOURS.clear()
    with TestClient(create_app(str(coll.path)), raise_server_exceptions=False) as client:
        for n in range(20):  # a crawler's random keys: refused, and none of them fills the cache
            r = client.get("/api/map/colours", params={"key": f"junk{n}"})
            assert r.status_code == 404 and r.json()["error"]["code"] == "no_such_key"
        assert not explore._COLOURS
        assert client.get("/api/map/colours", params={"key": "kind"}).json()["codes"] == colours["codes"]
        assert len(explore._COLOURS) == 1


# -- 3. one-letter prefix keywords --------------------------------------------------------------------


def test_short_prefixes_are_refused_with_the_fix(tmp_path: Path, tiny_clip: str) -> None:
    from fastapi.testclient import TestClient

    from vitrina.errors import QueryError
    from vitrina.index.keyword import match_expression
    from vitrina.service import create_app

    assert match_expression("berg* a") == '"berg"* OR "a"'
    with pytest.raises(QueryError, match="at least 3 characters before the \\*.*'a\\*', 'bo\\*'"):
        match_expression("a* bo* berg*")
    coll, _ = _collection_with_odd_ids(tmp_path, tiny_clip)
    with TestClient(create_app(str(coll.path)), raise_server_exceptions=False) as client:
        worst = " ".join(f"{chr(97 + n % 26)}*" for n in range(32))
        r = client.get("/api/search", params={"keywords": worst})
        assert r.status_code == 400 and "at least 3 characters" in r.json()["error"]["message"]
