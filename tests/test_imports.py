"""Bring your embeddings: importers (LoC trio, clip-retrieval, parquet, npy), export round trips,
crash-safe resumption, the declared model, bad files, and loc.gov enrichment on loopback."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.conftest import make_images
from tests.heritage_server import HeritageServer
from vitrina import open_collection
from vitrina.cli import cli
from vitrina.embedding import get_embedder
from vitrina.errors import ConfigError, ModelUnavailable, QueryError, SourceError, SpaceMismatch
from vitrina.http import Fetcher
from vitrina.importers import ParquetReader, export_space, import_vectors, loc_iiif_id, open_reader
from vitrina.records import ModelFingerprint

CLIP = "hf:openai/clip-vit-base-patch32"  # not on this machine: declared, not loadable


def loc_url(n: int) -> str:
    return (
        f"https://tile.loc.gov/image-services/iiif/service:gmd:gmd370:g3701:g3701s:ct{n:06d}/full/2000,/0/default.jpg"
    )


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def loc_files(
    folder: Path, vectors: np.ndarray, urls: list[str] | None = None, with_csv: bool = True
) -> tuple[Path, Path, Path]:
    """The paper's trio exactly as its scripts write them: torch.save of a float tensor and of a list of URLs."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    urls = urls if urls is not None else [loc_url(n) for n in range(len(vectors))]
    torch.save(torch.from_numpy(vectors), folder / "beto.pt")
    torch.save(urls, folder / "beto_idx.pt")
    with (folder / "p1_map_file_list.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["p1_item_id", "file_url", "resource_url", "segment_num"])
        for n in range(len(vectors)) if with_csv else ():
            w.writerow(
                [
                    f"http://www.loc.gov/item/{2000000 + n}/",
                    loc_url(n).replace("2000,", "pct:25"),
                    f"https://www.loc.gov/resource/g3701s.ct{n:06d}/",
                    n % 2,
                ]
            )
    return folder / "beto.pt", folder / "beto_idx.pt", folder / "p1_map_file_list.csv"


def test_loc_trio_with_csv_join_imports_under_a_declared_model(tmp_path: Path) -> None:
    vectors = unit_rows(10, 512) * 3.0  # not unit length: the importer normalises
    beto, idx, table = loc_files(tmp_path / "loc", vectors)
    coll = open_collection("locmaps", create=True)
    seen = []
    report = import_vectors(
        coll,
        open_reader("loc-beto", [str(beto), str(idx)], csv_path=str(table)),
        model=CLIP,
        chunk=4,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert (report.imported, report.bad, report.verified, report.rows) == (10, 0, False, 10)
    assert seen == [(4, 10), (8, 10), (10, 10)]
    space = coll.space()
    assert (
        space.name == "clip-vit-base-patch32"
        and space.live == 10
        and space.fingerprint.provisional
        and space.fingerprint.dim == 512
    )
    item = coll.item("service:gmd:gmd370:g3701:g3701s:ct000003")
    assert (
        item.image
        == "https://tile.loc.gov/image-services/iiif/service:gmd:gmd370:g3701:g3701s:ct000003/full/full/0/default.jpg"
    )
    assert (
        item.metadata["resource_url"] == "https://www.loc.gov/resource/g3701s.ct000003/"
        and item.metadata["segment_num"] == 1
    )
    assert (
        item.metadata["p1_item_id"] == "http://www.loc.gov/item/2000003/"
        and item.metadata["file_url"] == loc_url(3)
        and item.status == "ok"
    )
    ids, stored = coll.vectors()
    assert np.allclose(stored[ids.index(item.id)], vectors[3] / 3.0, atol=1e-6)
    # Searching by an item's stored vector needs no model; a text query needs the declared one.
    assert coll.search(image=item.id, limit=1, include_self=True)[0].id == item.id
    hits = coll.search_vectors(vectors[7], limit=1)[0]
    assert hits[0].id.endswith("ct000007") and hits[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ModelUnavailable):
        coll.search("maps with sea monsters")
    # Re-running the finished import is a no-op; --restart upserts every row again, exactly once each.
    again = import_vectors(coll, open_reader("loc-beto", [str(beto), str(idx)], csv_path=str(table)), model=CLIP)
    assert again.already_done and again.imported == 0
    redo = import_vectors(
        coll, open_reader("loc-beto", [str(beto), str(idx)], csv_path=str(table)), model=CLIP, restart=True
    )
    assert redo.imported == 10 and coll.space().live == 10 and len(coll) == 10
    assert loc_iiif_id(loc_url(5)) == "service:gmd:gmd370:g3701:g3701s:ct000005"


def test_declared_model_is_checked_at_import_or_pinned_at_the_first_query(tmp_path: Path, tiny_clip: str) -> None:
    real = get_embedder(tiny_clip).fingerprint  # 24 dims
    beto, idx, _ = loc_files(tmp_path / "a", unit_rows(6, real.dim))
    coll = open_collection("pinned", create=True)
    report = import_vectors(coll, open_reader("loc-beto", [str(beto), str(idx)]), model=tiny_clip, load_model=False)
    assert not report.verified and coll.space().fingerprint.provisional
    hits = coll.search("old map", limit=3)  # loads the declared model: same spec, same dimension
    assert len(hits) == 3
    assert open_collection("pinned").space().fingerprint == real  # its real revision is now recorded
    # Loaded at import, a model whose dimension disagrees is refused before anything is stored.
    wrong, wrong_idx, _ = loc_files(tmp_path / "b", unit_rows(6, 512))
    with pytest.raises(ConfigError, match="512 dimensions but .* makes 24"):
        import_vectors(
            open_collection("wrong", create=True),
            open_reader("loc-beto", [str(wrong), str(wrong_idx)]),
            model=tiny_clip,
        )
    # Not loaded at import: the dimension is still read from the checkpoint's config (issue 28).
    late = open_collection("late", create=True)
    with pytest.raises(ConfigError, match="512 dimensions but .* makes 24"):
        import_vectors(late, open_reader("loc-beto", [str(wrong), str(wrong_idx)]), model=tiny_clip, load_model=False)
    # Where it cannot be read, the first query finds out, and says which model made what.
    from vitrina.records import Item

    with late.writer():
        late.add_items([Item(id="x", image="x.jpg", fingerprint="1", source="t")])
        late.import_vectors(
            ["x"], unit_rows(1, 512), fingerprint=ModelFingerprint(tiny_clip, "unverified", 512, "unverified")
        )
    with pytest.raises(SpaceMismatch, match="not yet verified"):
        late.search("old map")
    with pytest.raises(ConfigError, match="--model"):
        import_vectors(late, open_reader("loc-beto", [str(wrong), str(wrong_idx)]))
    # The fingerprint rule: a provisional one matches only the same spec and dimension.
    prov = ModelFingerprint(tiny_clip, "unverified", 24, "unverified")
    assert prov.compatible(real) and real.compatible(prov)
    assert not prov.compatible(ModelFingerprint("hf:other/model", "abc", 24, real.preprocessing))


class Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/vitrina-test-pwned")


def test_bad_loc_files_are_refused_or_reported(tmp_path: Path) -> None:
    import torch

    coll = open_collection("bad", create=True)
    # Length mismatch: the rows cannot be paired, so nothing is imported.
    beto, idx, _ = loc_files(tmp_path / "len", unit_rows(10, 512), urls=[loc_url(n) for n in range(9)])
    with pytest.raises(SourceError, match="10 rows but beto_idx lists 9 URLs"):
        open_reader("loc-beto", [str(beto), str(idx)])
    # A pickle that runs code when loaded: refused by weights_only, and the code never runs.
    MARKER.unlink(missing_ok=True)
    torch.save(Evil(), tmp_path / "evil.pt")
    with pytest.raises(SourceError, match="will not unpickle") as e:
        open_reader("loc-beto", [str(tmp_path / "evil.pt"), str(idx)])
    assert e.value.reason == "unsafe_pickle" and not MARKER.exists()
    torch.save(torch.zeros(5), tmp_path / "flat.pt")
    with pytest.raises(SourceError, match=r"one float tensor \[N, D\]"):
        open_reader("loc-beto", [str(tmp_path / "flat.pt"), str(idx)])
    # NaN, infinite and zero rows, a duplicate URL, an empty URL: reported with their row, the rest imported.
    vectors = unit_rows(10, 512)
    vectors[2, 7] = np.nan
    vectors[5] = 0
    vectors[6, 0] = np.inf
    urls = [loc_url(n) for n in range(10)]
    urls[8], urls[9] = loc_url(1), " "
    beto, idx, _ = loc_files(tmp_path / "nan", vectors, urls=urls)
    report = import_vectors(coll, open_reader("loc-beto", [str(beto), str(idx)]), model=CLIP, chunk=3)
    assert report.imported == 5 and report.bad == 5
    reasons = {b["row"]: b["reason"] for b in report.bad_rows}
    assert reasons == {2: "not finite (NaN or infinity)", 5: "zero vector", 6: "not finite (NaN or infinity)", 8: "duplicate id (first at row 1)",
                       9: "empty URL in beto_idx"}  # fmt: skip
    assert coll.space().live == 5 and "service:gmd:gmd370:g3701:g3701s:ct000002" not in coll
    # Collection.import_vectors: strict by default, or a callable told about each bad row.
    ids = ["service:gmd:gmd370:g3701:g3701s:ct000000", "nobody", "service:gmd:gmd370:g3701:g3701s:ct000003"]
    rows = unit_rows(3, 512)
    rows[2] = np.nan
    fp = coll.space().fingerprint
    with pytest.raises(QueryError, match="not items"):
        coll.import_vectors(ids, rows, fingerprint=fp)
    told: list[tuple[int, str, str]] = []
    coll.import_vectors(ids, rows, fingerprint=fp, on_bad=lambda *b: told.append(b))
    assert told == [(2, ids[2], "not finite (NaN or infinity)"), (1, "nobody", "not an item of the collection")]


def clip_retrieval_folder(root: Path, shards: list[np.ndarray]) -> Path:
    """clip-retrieval's output: img_emb/img_emb_K.npy (float16) and metadata/metadata_K.parquet."""
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    row = 0
    for k, emb in enumerate(shards):
        np.save(root / "img_emb" / f"img_emb_{k}.npy", emb.astype(np.float16))
        n = len(emb)
        table = pa.table({"image_path": [f"{row + i:09d}.jpg" for i in range(n)], "caption": [f"a map of harbour {row + i}" for i in range(n)],
                          "url": [f"https://example.org/img/{row + i}.jpg" for i in range(n)], "key": [f"{row + i:09d}" for i in range(n)],
                          "width": list(range(n)), "exif": [None] * n})  # fmt: skip
        pq.write_table(table, root / "metadata" / f"metadata_{k}.parquet")
        row += n
    return root


def test_clip_retrieval_parquet_and_npy_layouts(tmp_path: Path) -> None:
    vectors = unit_rows(12, 64, seed=3)
    folder = clip_retrieval_folder(tmp_path / "cr", [vectors[:7], vectors[7:]])
    coll = open_collection("laion", create=True)
    report = import_vectors(coll, open_reader("clip-retrieval", [str(folder)]), model="hf:example/clip-64", chunk=5)
    assert (report.imported, report.bad) == (12, 0)
    item = coll.item("000000009")
    assert (
        item.image == "https://example.org/img/9.jpg"
        and item.metadata["caption"] == "a map of harbour 9"
        and item.metadata["width"] == 2
    )
    hit = coll.search_vectors(vectors[9], limit=1)[0][0]
    assert hit.id == "000000009" and hit.score == pytest.approx(1.0, abs=2e-3)  # float16 on disk
    bad = clip_retrieval_folder(tmp_path / "cr-bad", [vectors[:7], vectors[7:]])
    pq.write_table(
        pq.read_table(bad / "metadata" / "metadata_1.parquet").slice(0, 4), bad / "metadata" / "metadata_1.parquet"
    )
    with pytest.raises(SourceError, match="img_emb_1.npy has 5 vectors but metadata_1.parquet has 4 rows"):
        open_reader("clip-retrieval", [str(bad)])

    # A parquet file with a list vector column: a null and a short vector are bad rows.
    lists = [list(map(float, v)) for v in vectors[:6]]
    lists[1], lists[4] = None, lists[4][:10]
    path = tmp_path / "hf.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(6)], "embedding": lists, "title": [f"Plate {i}" for i in range(6)],
                             "image": [b"\x89PNG"] * 6, "url": [f"https://example.org/{i}.jpg" for i in range(6)]}), path)  # fmt: skip
    got = import_vectors(
        coll, open_reader("parquet", [str(path)], id_column="id"), model="hf:example/clip-64", space="hf", chunk=4
    )
    assert got.imported == 4 and {b["row"]: b["reason"] for b in got.bad_rows} == {
        1: "no vector",
        4: "10 dimensions, expected 64",
    }
    assert coll.item("r5").metadata == {"title": "Plate 5"} and coll.item("r5").image == "https://example.org/5.jpg"
    fixed = tmp_path / "fixed.parquet"
    pq.write_table(
        pa.table({"key": ["f0", "f1"], "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[:2].ravel()), 64)}),
        fixed,
    )
    assert ParquetReader(fixed).dim == 64
    assert (
        import_vectors(coll, open_reader("parquet", [str(fixed)]), model="hf:example/clip-64", space="hf").imported == 2
    )
    with pytest.raises(ConfigError, match="no column 'nope'"):
        open_reader("parquet", [str(path)], id_column="nope")

    # Plain npy + an ids file; an object array is never unpickled; a length mismatch is refused.
    np.save(tmp_path / "v.npy", vectors[:3])
    (tmp_path / "ids.csv").write_text(
        "id,url,title\na,https://example.org/a.jpg,A\nb,https://example.org/b.jpg,B\nc,,C\n"
    )
    assert (
        import_vectors(
            coll,
            open_reader("npy", [str(tmp_path / "v.npy"), str(tmp_path / "ids.csv")]),
            model="hf:example/clip-64",
            space="npy",
        ).imported
        == 3
    )
    assert coll.item("b").metadata == {"title": "B"} and coll.item("b").image == "https://example.org/b.jpg"
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SourceError, match="will not unpickle"):
        open_reader("npy", [str(tmp_path / "obj.npy"), str(tmp_path / "ids.csv")])
    (tmp_path / "ids.txt").write_text("a\nb\n")
    with pytest.raises(SourceError, match="3 vectors but ids.txt has 2 ids"):
        open_reader("npy", [str(tmp_path / "v.npy"), str(tmp_path / "ids.txt")])


def test_export_then_import_gives_the_same_search_results(tmp_path: Path, tiny_clip: str) -> None:
    images = make_images(tmp_path / "scans", 10)
    coll = open_collection("original", create=True)
    coll.index(str(tmp_path / "scans"), model=tiny_clip)
    queries = [("map with a ship", None), (None, str(images[3]))]

    def results(c):  # type: ignore[no-untyped-def]
        return [
            [(h.id, round(h.score, 5)) for h in c.search(text or (), image or (), limit=5)] for text, image in queries
        ]

    before = results(coll)
    export_space(coll, tmp_path / "out.parquet", format="parquet")
    export_space(coll, tmp_path / "cr", format="clip-retrieval", shard_rows=4)
    assert sorted(p.name for p in (tmp_path / "cr" / "img_emb").iterdir()) == [
        "img_emb_0.npy",
        "img_emb_1.npy",
        "img_emb_2.npy",
    ]
    info = json.loads(pq.read_schema(tmp_path / "out.parquet").metadata[b"vitrina"])
    assert info["fingerprint"]["spec"] == tiny_clip and info["rows"] == 10
    for kind, path in (("parquet", tmp_path / "out.parquet"), ("clip-retrieval", tmp_path / "cr")):
        copy = open_collection(f"copy-{kind}", create=True)
        report = import_vectors(copy, open_reader(kind, [str(path)]))  # the model comes with the file
        assert report.imported == 10 and report.verified
        assert copy.space().fingerprint == coll.space().fingerprint
        assert results(copy) == before, kind
        original = coll.item(before[0][0][0])
        assert copy.item(original.id).metadata == original.metadata and copy.item(original.id).image == original.image


def test_a_killed_import_resumes_exactly_once(tmp_path: Path) -> None:
    vectors = unit_rows(20, 32, seed=5)
    beto, idx, table = loc_files(tmp_path / "loc", vectors)
    base = [
        sys.executable,
        "-m",
        "vitrina",
        "import",
        "loc-beto",
        str(beto),
        str(idx),
        "--csv",
        str(table),
        "-c",
        "killed",
        "-m",
        CLIP,
        "--no-load-model",
        "--chunk",
        "3",
        "-q",
        "--json",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    for fault in ("after_vector_write:2", "after_commit:2"):  # killed before one chunk's commit, then just after one
        assert subprocess.run(base, env={**env, "VITRINA_FAULT": fault}, capture_output=True).returncode == 137
    done = subprocess.run(base, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["resumed_at"] == 9 and report["imported"] == 11  # three chunks were committed by the killed runs
    coll = open_collection("killed")
    space = coll.space()
    assert space.live == 20 and space.rows == 20 and len(coll) == 20  # every row exactly once, no dead rows
    assert coll.info(check=True)["problems"] == []
    ids, stored = coll.vectors()
    assert np.allclose(stored[ids.index("service:gmd:gmd370:g3701:g3701s:ct000011")], vectors[11], atol=1e-6)


def test_imported_items_can_be_reembedded_with_another_model(tmp_path: Path, tiny_clip: str, tiny_siglip: str) -> None:
    paths = make_images(tmp_path / "imgs", 4)
    np.save(tmp_path / "v.npy", unit_rows(4, 24))
    (tmp_path / "ids.txt").write_text("".join(f"{p}\n" for p in paths))
    coll = open_collection("mixed", create=True)
    assert (
        import_vectors(
            coll, open_reader("npy", [str(tmp_path / "v.npy"), str(tmp_path / "ids.txt")]), model=tiny_clip
        ).imported
        == 4
    )
    report = coll.index(model=tiny_siglip, space="siglip")
    assert report.embedded == 4 and not report.failed
    assert {s.name: s.live for s in coll.spaces()} == {"tiny-clip0": 4, "siglip": 4} or sorted(
        s.live for s in coll.spaces()
    ) == [4, 4]
    assert coll.search(image=str(paths[2]), space="siglip", limit=1)[0].id == str(paths[2])


def test_enrichment_from_loc_gov_records_stops_at_429_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VITRINA_ALLOW_PRIVATE_URLS", "1")
    with HeritageServer() as server:
        for n in range(3):

            def record(query: dict, n: int = n) -> dict:
                sp = int(query["sp"][0])
                assert query["fo"] == ["json"]
                return {"item": {"title": f"[Map of Boston harbor {n}]: from an actual survey", "date": f"177{n}", "location": ["boston", "massachusetts"],
                                 "subject_headings": ["Boston Harbor (Mass.)--Maps"], "notes": ["Scale 1:12,000.", "Call number G3764"],
                                 "original_format": ["map"]}, "segment": sp}  # fmt: skip

            server.docs[f"/resource/g3701s.ct{n:06d}/"] = record
        vectors = unit_rows(3, 16)
        beto, idx, table = loc_files(tmp_path / "loc", vectors)
        text = table.read_text().replace("https://www.loc.gov", server.url)
        table.write_text(text + "")
        coll = open_collection("enrich", create=True)
        import_vectors(coll, open_reader("loc-beto", [str(beto), str(idx)], csv_path=str(table)), model=CLIP)
        from vitrina.enrich import enrich

        first = server.docs["/resource/g3701s.ct000000/"]({"sp": ["1"], "fo": ["json"]})
        server.faults["/resource/g3701s.ct000001/"] = [(429, {"Retry-After": "3600"}, b"Too many requests")]
        server.faults["/resource/g3701s.ct000000/"] = [
            (200, {"Content-Type": "application/json"}, json.dumps(first).encode())
        ]
        fetch = Fetcher(cache_dir=tmp_path / "cache", allow_private=True, requests_per_second=0)
        report = enrich(coll, "locgov", fetcher=fetch)
        assert report.interrupted and "429" in report.message and report.enriched == 1 and report.requests == 2
        fetch.close()
        assert server.requests("/resource/") == [
            "/resource/g3701s.ct000000/?fo=json&sp=1",
            "/resource/g3701s.ct000001/?fo=json&sp=2",
        ]
        with Fetcher(cache_dir=tmp_path / "cache", allow_private=True, requests_per_second=0) as fetch:
            again = enrich(coll, "locgov", fetcher=fetch)
        assert (again.enriched, again.already, again.interrupted, again.requests) == (2, 1, False, 2)
        times = [t for t, p in server.log if p.startswith("/resource/")][-2:]
        assert times[1] - times[0] >= 0.95  # loc.gov's pace: one request per second
    item = coll.item("service:gmd:gmd370:g3701:g3701s:ct000002")
    assert item.metadata["caption"] == (
        "Map of Boston harbor 2 from 1772, in Massachusetts. From an actual survey. Scale 1:12,000."
    )
    assert (
        item.metadata["subject"] == ["Boston Harbor (Mass.)--Maps"]
        and item.metadata["enriched"] == "locgov"
        and item.status == "ok"
    )
    assert coll.space().live == 3 and coll.space().rows == 3  # metadata changed, vectors kept
    # A later re-import keeps what enrichment added.
    import_vectors(coll, open_reader("loc-beto", [str(beto), str(idx)], csv_path=str(table)), model=CLIP, restart=True)
    assert coll.item(item.id).metadata["caption"] == item.metadata["caption"]


def test_cli_import_export_and_exit_codes(tmp_path: Path) -> None:
    vectors = unit_rows(5, 32)
    vectors[3] = np.nan
    beto, idx, table = loc_files(tmp_path / "loc", vectors)
    runner = CliRunner()
    out = runner.invoke(
        cli,
        [
            "import",
            "loc-beto",
            str(beto),
            str(idx),
            "--csv",
            str(table),
            "-c",
            "cli",
            "-m",
            CLIP,
            "-q",
            "--bad-rows",
            str(tmp_path / "bad.jsonl"),
        ],
    )
    assert out.exit_code == 3, out.output
    assert (
        "4 vectors imported of 5 rows, 1 refused" in out.output
        and "row 3" in out.output
        and "Model not loaded here" in out.output
    )
    assert json.loads((tmp_path / "bad.jsonl").read_text()) == {
        "row": 3,
        "id": "service:gmd:gmd370:g3701:g3701s:ct000003",
        "reason": "not finite (NaN or infinity)",
    }
    again = runner.invoke(
        cli, ["import", "loc-beto", str(beto), str(idx), "--csv", str(table), "-c", "cli", "-m", CLIP, "--json"]
    )
    assert again.exit_code == 3 and json.loads(again.stdout)["already_done"]
    exported = runner.invoke(cli, ["export", "cli", "--format", "clip-retrieval", str(tmp_path / "out"), "--json"])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["rows"] == 4 and (tmp_path / "out" / "vitrina.json").exists()
    refused = runner.invoke(cli, ["export", "cli", "--format", "clip-retrieval", str(tmp_path / "out")])
    assert refused.exit_code == 1 and "not an empty folder" in refused.output
    missing = runner.invoke(cli, ["import", "npy", str(beto), "--ids", str(idx), "-c", "cli", "-m", CLIP])
    assert missing.exit_code == 1 and "Error" in missing.output
    plain = runner.invoke(cli, ["import", "loc-beto", str(beto), str(idx), "-c", "nocsv", "-m", CLIP, "-q"])
    assert plain.exit_code == 3
    nothing = runner.invoke(cli, ["enrich", "nocsv", "locgov", "--json"])  # no resource_url: nothing to ask loc.gov
    assert (
        nothing.exit_code == 0
        and json.loads(nothing.stdout)["without_resource"] == 4
        and json.loads(nothing.stdout)["requests"] == 0
    )
