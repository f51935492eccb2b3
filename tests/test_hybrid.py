"""Keyword search over item text, its fusion with CLIP, snippets, and pruning (issue #14)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.words_world import build
from vitrina import Item, ModelFingerprint, QueryError, open_collection
from vitrina.cli import cli
from vitrina.evaluate_modes import eval_modes
from vitrina.store import SCHEMA_VERSION

DATA = Path(__file__).parent / "data"
FP = ModelFingerprint(spec="hf:test/random", revision="r1", dim=8, preprocessing="none")


@pytest.fixture(scope="module")
def words(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return build(tmp_path_factory.mktemp("words") / "w", seed=0)


def test_fusion_beats_words_alone_and_pictures_alone(words) -> None:  # type: ignore[no-untyped-def]
    coll, judged = words
    r = eval_modes(coll, judged)
    assert r["queries"] == 12
    for metric in ("ndcg@10", "p@10"):
        assert r["fused"][metric] > r["clip"][metric] and r["fused"][metric] > r["keyword"][metric], r
    # The two sides each miss a kind of relevant item: pictured-but-unnamed, named-but-faint.
    whale = dict(judged)["whale"]
    clip = {h.id for h in coll.search("whale", limit=12)}
    words_only = {h.id for h in coll.search(keywords="whale", limit=12)}
    assert not {f"whale-C{i}" for i in range(4)} & words_only and {f"whale-C{i}" for i in range(4)} <= clip
    assert {f"whale-B{i}" for i in range(4)} <= words_only
    assert set(whale) == {f"whale-{k}{i}" for k in "ABC" for i in range(4)}


def test_a_language_the_model_does_not_know_works_through_the_words(words) -> None:  # type: ignore[no-untyped-def]
    coll, _ = words
    # Updating an item's text (the ingest path) re-indexes it: the old words go, the new ones come.
    old = coll.item("whale-C0")
    coll.add_items([Item(id=old.id, image=old.image, fingerprint=old.fingerprint, source=old.source, metadata={"title": "Hvalfangst ved Ålesund"},
                         context="Hvalen <b>blåste</b> & dukket; [hval] ved kysten")])  # fmt: skip
    assert "whale-C0" not in {h.id for h in coll.search(keywords="plate", limit=500)}
    assert [h.id for h in coll.search(keywords="hval", limit=3)] == ["whale-C0"]  # CLIP does not know Norwegian
    assert "whale-C0" not in {h.id for h in coll.search("hval", limit=20)}
    assert coll.search(keywords="ALESUND", limit=3)[0].id == "whale-C0"  # case and diacritics folded
    assert coll.search(keywords="hvalf*", limit=3)[0].id == "whale-C0"  # prefix
    hit = coll.search("hval", keywords="hval", limit=1)[0]
    assert hit.id == "whale-C0"
    marked = [t for t, m in hit.snippet if m]
    assert marked and all(t.lower() == "hval" for t in marked)
    assert "".join(t for t, _ in hit.snippet).count("<b>") <= 1  # raw text, markup is the page's business
    with pytest.raises(QueryError, match="No words"):
        coll.search(keywords="*** ---")
    with pytest.raises(QueryError, match="between 0"):
        coll.search("whale", keyword_weight=1.5)


def test_a_release_1_collection_gets_its_text_indexed_and_kept_in_step(tmp_path: Path) -> None:
    path = tmp_path / "v1"
    shutil.copytree(DATA / "v1-collection", path)
    coll = open_collection(path)
    assert coll.info()["schema_version"] == SCHEMA_VERSION
    assert {h.id for h in coll.search(keywords="monsters", limit=20)} == {"m00", "m07"}  # subjects of existing items
    first = coll.search(keywords="map 3", limit=20)
    assert first[0].id == "m03" and first.total_considered == len(coll)
    coll._store.remove_missing(coll.item("m03").source, keep={i.id for i in coll.iter_items()} - {"m03"})
    assert "m03" not in {h.id for h in coll.search(keywords="3", limit=20)}


def _tagged(tmp_path: Path):  # type: ignore[no-untyped-def]
    coll = open_collection(tmp_path / "c", create=True)
    items = [Item(id=f"p{i:02d}", image=f"/x/{i}.jpg", fingerprint="1", source="t", metadata={"title": f"Page {i} of Bergen"}, context="blank" if i % 4 == 0 else "a whale")
             for i in range(20)]  # fmt: skip
    with coll.writer():
        coll.add_items(items)
        coll.import_vectors(
            [it.id for it in items],
            np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32),
            fingerprint=FP,
            space="r",
        )
        coll.set_tags(
            "kind", "probe:test", [(it.id, "blank" if i % 4 == 0 else "picture", 0.9) for i, it in enumerate(items)]
        )
    return coll, items


def test_prune_hides_reversibly_and_deletes_for_good(tmp_path: Path) -> None:
    coll, items = _tagged(tmp_path)
    runner = CliRunner()
    c = str(coll.path)
    out = runner.invoke(cli, ["prune", c, "--where", "kind=blank", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"action": "hide", "matched": 5, "changed": 5}
    blank = {f"p{i:02d}" for i in range(0, 20, 4)}
    hits = coll.search(image="p01", keywords="bergen", limit=50)
    assert not blank & {h.id for h in hits} and hits.total_considered == 15  # hidden items are not considered
    assert not blank & {h.id for h in coll.search(keywords="bergen", limit=50)}
    assert blank <= {h.id for h in coll.search(keywords="bergen", limit=50, include_hidden=True)}
    assert blank == {h.id for h in coll.search(keywords="bergen", where=["hidden=true"], limit=50, include_hidden=True)}
    assert json.loads(runner.invoke(cli, ["info", c, "--json"]).output)["pruned"] == {
        "hidden": 5,
        "deleted": 0,
        "bytes_saved": 0,
    }
    assert "5 hidden" in runner.invoke(cli, ["info", c]).output
    out = runner.invoke(cli, ["prune", c, "--unhide", "--json"])
    assert json.loads(out.output)["changed"] == 5
    assert blank <= {h.id for h in coll.search(keywords="bergen", limit=50)}
    assert runner.invoke(cli, ["prune", c]).exit_code != 0  # never a whole collection
    out = runner.invoke(cli, ["prune", c, "--where", "kind=blank", "--delete", "--json"])
    assert json.loads(out.output)["deleted"] == 5, out.output
    assert len(coll) == 15 and coll.index_for().count() == 15
    assert not blank & {h.id for h in coll.search(keywords="blank", limit=50, include_hidden=True)}
    coll.add_items(items)  # a later ingest does not bring them back
    assert len(coll) == 15
    info = coll.info()
    assert info["pruned"]["deleted"] == 5 and info["spaces"][0]["dead_rows"] == 0  # compacted


def test_cli_keyword_and_fused_search(tmp_path: Path) -> None:
    coll, _ = _tagged(tmp_path)
    runner = CliRunner()
    out = runner.invoke(cli, ["search", str(coll.path), "--keywords", "whale", "-n", "3", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert len(data["hits"]) == 3 and data["hits"][0]["snippet"] == [
        {"text": "a ", "match": False},
        {"text": "whale", "match": True},
    ]
    out = runner.invoke(
        cli,
        ["search", str(coll.path), "--image", "p01", "--keywords", "whale", "--fusion", "rrf", "-n", "20", "--json"],
    )
    hits = json.loads(out.output)["hits"]
    assert hits and max(h["score"] for h in hits) <= 1.0 and "p01" not in {h["id"] for h in hits}
    out = runner.invoke(cli, ["search", str(coll.path), "--keywords", "bergen", "-n", "2"])
    assert out.exit_code == 0 and "Bergen" in out.output


MULTILINGUAL = ["a map of the coast with a whale", "kart over kysten med en hval ved Ålesund", "Karte der Küste mit einem Wal", "carte de la côte avec une baleine",
                "海岸の地図と鯨", "карта побережья с китом", "mapa del litoral con una ballena"]  # fmt: skip


def build_tiny_multilingual_siglip(path: Path) -> Path:
    """A tiny SigLIP shaped like google/siglip-base-patch16-256-multilingual: a byte-level
    subword tokenizer (any script, no unknown tokens, case kept, as Gemma's) instead of a small
    English word list, 64 text positions; random weights, saved and loaded like a hub checkpoint."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import build_tiny_siglip

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(MULTILINGUAL * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A <eos>", special_tokens=[("<eos>", tok.token_to_id("<eos>"))]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", model_max_length=64)
    return build_tiny_siglip(path, tokenizer=tokenizer, vocab_size=tok.get_vocab_size(), text_length=64, seed=3,
                             special_ids={"bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 0})  # fmt: skip


def test_a_multilingual_siglip_loads_through_hf_and_fuses_with_words(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from tests.conftest import make_images
    from vitrina.embedding import get_embedder

    spec = "hf:" + str(build_tiny_multilingual_siglip(tmp_path / "ml-siglip"))
    embedder = get_embedder(spec)
    assert embedder.fingerprint.dim == 32 and embedder.text_length == 64  # type: ignore[attr-defined]
    vectors = embedder.embed_texts(MULTILINGUAL)
    assert np.isfinite(vectors).all() and len({v.tobytes() for v in vectors.round(5)}) == len(
        MULTILINGUAL
    )  # every script its own tokens
    assert (
        embedder.tokenizer.decode(embedder.tokenizer("hval ved Ålesund 鯨")["input_ids"], skip_special_tokens=True)
        == "hval ved Ålesund 鯨"
    )  # type: ignore[attr-defined]
    make_images(tmp_path / "imgs", 6)
    coll = open_collection(tmp_path / "c", create=True)
    assert coll.index(str(tmp_path / "imgs"), model=spec).embedded == 6
    page = coll.item("img0003.jpg")
    coll.add_items(
        [
            Item(
                id=page.id,
                image=page.image,
                fingerprint=page.fingerprint,
                source=page.source,
                context="Hvalfangst ved Ålesund, 1850",
            )
        ]
    )
    assert (
        coll.search("hval ved Ålesund", keywords="hval*", keyword_weight=0.8, limit=1)[0].id == "img0003.jpg"
    )  # random weights: the words decide
    assert coll.search(keywords="ålesund 1850", limit=6)[0].id == "img0003.jpg"


def test_eval_cli_shows_the_three_modes_side_by_side(words, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import vitrina.collection

    coll, judged = words
    monkeypatch.setattr(
        vitrina.collection, "get_embedder", lambda spec: coll.embedder_for()
    )  # the test world's query embedder
    queries = tmp_path / "judged.csv"
    queries.write_text(
        "query,id,relevance\n" + "".join(f"{q},{i},1\n" for q, rel in judged for i in rel), encoding="utf-8"
    )
    out = CliRunner().invoke(cli, ["eval", str(coll.path), "--queries", str(queries), "--modes", "--json", "-q"])
    assert out.exit_code == 0, out.output
    modes = json.loads(out.output)["modes"]["words"]
    assert modes["fused"]["ndcg@10"] > max(modes["clip"]["ndcg@10"], modes["keyword"]["ndcg@10"])
    assert (
        modes["clip"]["ndcg@10"] == json.loads(out.output)["queries"]["words"]["ndcg@10"]
    )  # the same CLIP run as plain --queries
    text = CliRunner().invoke(cli, ["eval", str(coll.path), "--queries", str(queries), "--modes", "-q"]).output
    assert "| fused |" in text and "| keyword |" in text
