"""Shared fixtures: tiny random CLIP / SigLIP checkpoints saved to disk and loaded through the
same ``from_pretrained`` path as a hub model, real images, and an isolated $VITRINA_HOME."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).parent / "data"
WORDS = "a an the of with and map maps sea monster monsters ship ships harbour colour grayscale old chart city river coast drawing photograph page blank book red blue green cat dog bird tree house".split()


def _tokenizer(max_length: int):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["<pad>", "<unk>", "<s>", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
    ), len(vocab)


def build_tiny_clip(path: Path) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(0)
    tokenizer, vocab_size = _tokenizer(16)
    config = CLIPConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "max_position_embeddings": 16, "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32, "patch_size": 4},
        projection_dim=24,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def build_tiny_siglip(
    path: Path,
    *,
    tokenizer=None,
    vocab_size: int = 0,
    text_length: int = 16,
    special_ids: dict | None = None,
    seed: int = 1,
) -> Path:  # type: ignore[no-untyped-def]
    """A tiny random SigLIP; by default with the small English word tokenizer, or with
    ``tokenizer`` (its ``vocab_size``, ``text_length`` positions and ``special_ids``)."""
    import torch
    from transformers import SiglipConfig, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    if tokenizer is None:
        tokenizer, vocab_size = _tokenizer(text_length)
    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "max_position_embeddings": text_length, "projection_size": 32, **(special_ids or {})},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32, "patch_size": 4},
    )  # fmt: skip
    SiglipModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def build_tiny_vit(path: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTModel
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(2)
    ViTModel(
        ViTConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=4,
        )
    ).save_pretrained(path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    return "hf:" + str(build_tiny_clip(tmp_path_factory.mktemp("tiny-clip")))


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory: pytest.TempPathFactory) -> str:
    return "hf:" + str(build_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip")))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> str:
    return "hf:" + str(build_tiny_vit(tmp_path_factory.mktemp("tiny-vit")))


@pytest.fixture(autouse=True)
def vitrina_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("VITRINA_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("VITRINA_MODEL", raising=False)
    monkeypatch.setenv(
        "VITRINA_NO_DAEMON", "1"
    )  # no query services left behind (tests/test_query_service.py turns them on)
    return home


def make_images(folder: Path, n: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> list[Path]:
    """n distinct real image files: smooth random colour fields, saved as JPEG and PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        path = folder / (f"img{i:04d}.jpg" if i % 2 else f"img{i:04d}.png")
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    """A folder of real images: the heritage fixtures, scikit-image samples and generated ones."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in os.listdir(DATA / "images"):
        shutil.copy(DATA / "images" / name, folder / name)
    make_images(folder / "generated", 12)
    return folder


DEMO = Path(__file__).resolve().parent.parent / "src" / "vitrina" / "demo" / "openclipart"


@pytest.fixture(scope="session")
def mini_collection(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The shipped held-out drawings indexed with the offline mini model (once per test run)."""
    import json

    from vitrina import open_collection

    coll = open_collection(tmp_path_factory.mktemp("mini") / "demo", create=True)
    report = coll.index(str(DEMO), model="mini")
    captions = (DEMO / "captions.jsonl").read_text().splitlines()
    assert report.embedded == len(captions) and not report.failed
    assert json.loads(captions[0])["id"]
    return coll


@pytest.fixture
def fake_embedder():  # type: ignore[no-untyped-def]
    """A numpy embedder (tests/fakes.py): query logic without a torch model."""
    from tests.fakes import FakeEmbedder

    return FakeEmbedder()
