"""Embedders load through the real transformers path and prepare pixels exactly like the
checkpoint's own image processor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitrina import ConfigError, ModalityError, ModelUnavailable, get_embedder, load_image
from vitrina.embedding import embed_images, normalise_spec
from vitrina.embedding.preprocess import Preprocess

DATA = Path(__file__).parent / "data" / "images"


def processor_pixels(model_dir: str, image: Image.Image) -> np.ndarray:
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(model_dir.removeprefix("hf:"), use_fast=False)
    return np.asarray(processor(images=image, return_tensors="np")["pixel_values"][0])


@pytest.mark.parametrize("fixture", ["tiny_clip", "tiny_siglip", "tiny_vit"])
@pytest.mark.parametrize("size", [(1456, 2184), (300, 97), (33, 33)])
def test_preprocessing_matches_the_checkpoint_processor(
    fixture: str, size: tuple[int, int], request: pytest.FixtureRequest
) -> None:
    model_dir = request.getfixturevalue(fixture)
    image = load_image(DATA / "book-page-poulpes.jpg").resize(size)
    ours = Preprocess.from_file(Path(model_dir.removeprefix("hf:")) / "preprocessor_config.json")(image)
    theirs = processor_pixels(model_dir, image)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_reduced_jpeg_decoding_keeps_the_embedding(tiny_clip: str, tmp_path: Path) -> None:
    big = load_image(DATA / "book-page-poulpes.jpg").resize((4368, 6552))  # a 28-megapixel scan
    big.save(tmp_path / "scan.jpg", quality=92)
    embedder = get_embedder(tiny_clip)
    full = embed_images(embedder, [load_image(tmp_path / "scan.jpg")])[0]
    reduced_image = load_image(tmp_path / "scan.jpg", min_side=embedder.min_side)
    assert reduced_image.size[0] < 4368  # really decoded smaller
    reduced = embed_images(embedder, [reduced_image])[0]
    assert float(full @ reduced) > 0.995


@pytest.mark.parametrize("fixture", ["tiny_clip", "tiny_siglip"])
def test_vectors_are_unit_float32_and_fingerprinted(fixture: str, request: pytest.FixtureRequest) -> None:
    spec = request.getfixturevalue(fixture)
    embedder = get_embedder(spec)
    texts = embedder.embed_texts(["a map with sea monsters", "a red ship", ""])
    images = embed_images(
        embedder, [load_image(DATA / "manuscript-page.jpg"), load_image(DATA / "book-page-poulpes.jpg")]
    )
    for vectors in (texts, images):
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert texts.shape[1] == images.shape[1] == embedder.fingerprint.dim
    assert not np.allclose(texts[0], texts[1])
    fp = embedder.fingerprint
    assert fp.spec == spec and fp.revision.startswith("sha256:") and "resize" in fp.preprocessing
    # A batch gives the same vectors as one at a time.
    np.testing.assert_allclose(embedder.embed_texts(["a red ship"])[0], texts[1], atol=1e-5)


def test_vit_is_image_only(tiny_vit: str) -> None:
    embedder = get_embedder(tiny_vit)
    assert embed_images(embedder, [load_image(DATA / "manuscript-page.jpg")]).shape == (1, 32)
    with pytest.raises(ModalityError, match="image-only"):
        embedder.embed_texts(["a map"])


def test_specs_and_offline_hub_model_errors(tmp_path: Path) -> None:
    assert normalise_spec("openai/clip-vit-base-patch32") == "hf:openai/clip-vit-base-patch32"
    assert normalise_spec(str(tmp_path)) == f"hf:{tmp_path}"
    with pytest.raises(ConfigError, match="Known backends"):
        get_embedder("onnx:something")
    # HF_HUB_OFFLINE=1 (set for every test): the default model is not cached, the error says what to do.
    with pytest.raises(ModelUnavailable, match="--model mini"):
        get_embedder("hf:openai/clip-vit-base-patch32")


def test_model_dir_changes_change_the_fingerprint(tiny_clip: str, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_clip.removeprefix("hf:"), copy)
    config = json.loads((copy / "config.json").read_text())
    config["logit_scale_init_value"] = 1.0
    (copy / "config.json").write_text(json.dumps(config))
    assert get_embedder(f"hf:{copy}").fingerprint.revision != get_embedder(tiny_clip).fingerprint.revision


def test_a_checkpoint_saved_with_processor_config_json_loads_and_embeds_the_same(
    tiny_clip: str, tmp_path: Path
) -> None:
    """transformers 5's CLIPProcessor.save_pretrained writes processor_config.json, with the image
    processor settings under "image_processor", and no preprocessor_config.json."""
    import shutil

    from transformers import CLIPProcessor

    original = Path(tiny_clip.removeprefix("hf:"))
    saved = tmp_path / "saved"
    shutil.copytree(original, saved)
    (saved / "preprocessor_config.json").unlink()
    CLIPProcessor.from_pretrained(original).save_pretrained(saved)
    if (saved / "preprocessor_config.json").exists():  # an older transformers: write what newer ones do
        nested = {
            "image_processor": json.loads((saved / "preprocessor_config.json").read_text()),
            "processor_class": "CLIPProcessor",
        }
        (saved / "processor_config.json").write_text(json.dumps(nested))
        (saved / "preprocessor_config.json").unlink()
    assert "image_processor" in json.loads((saved / "processor_config.json").read_text())
    assert not (saved / "preprocessor_config.json").exists()

    ours, theirs = get_embedder(f"hf:{saved}"), get_embedder(tiny_clip)
    assert (
        ours.fingerprint.preprocessing == theirs.fingerprint.preprocessing
        and ours.fingerprint.dim == theirs.fingerprint.dim
    )
    images = [load_image(DATA / "manuscript-page.jpg"), load_image(DATA / "book-page-poulpes.jpg").resize((300, 97))]
    np.testing.assert_allclose(embed_images(ours, images), embed_images(theirs, images), atol=1e-6)
    np.testing.assert_allclose(ours.embed_texts(["a red ship"]), theirs.embed_texts(["a red ship"]), atol=1e-6)
    # The torch-free preprocessing reads either file, and still matches the checkpoint's own processor.
    assert Preprocess.from_file(saved / "processor_config.json") == Preprocess.from_file(
        original / "preprocessor_config.json"
    )
    np.testing.assert_allclose(ours.preprocess(images[1]), processor_pixels(f"hf:{saved}", images[1]), atol=1e-4)
