"""load_image: every bad or odd image either decodes to correct RGB or fails with a reason."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitrina import ImageError, load_image

DATA = Path(__file__).parent / "data" / "images"


def reason_of(source) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ImageError) as info:
        load_image(source)
    return info.value.reason


def test_corrupt_truncated_and_non_images_fail_with_reasons(tmp_path: Path) -> None:
    good = (DATA / "book-page-poulpes.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (tmp_path / "text.jpg").write_text("<html>login page</html>")
    (tmp_path / "empty.png").write_bytes(b"")
    assert reason_of(tmp_path / "truncated.jpg") == "truncated"
    assert reason_of(tmp_path / "text.jpg") == "unreadable_image"
    assert reason_of(tmp_path / "empty.png") == "unreadable_image"
    assert reason_of(tmp_path / "missing.png") == "not_found"


def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    # 30000 x 30000 black 1-bit PNG: ~100 KB on disk, 900 megapixels if decoded.
    path = tmp_path / "bomb.png"
    Image.new("1", (30000, 30000)).save(path)
    started = time.process_time()
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert info.value.reason == "too_large"
    assert "megapixels" in str(info.value) and "bomb.png" in str(info.value)
    assert time.process_time() - started < 5  # refused before decoding, not after


def test_huge_jpeg_scan_is_decoded_at_reduced_size(tmp_path: Path) -> None:
    path = tmp_path / "map.jpg"
    Image.new("RGB", (12000, 10000), (200, 180, 150)).save(path, quality=70)  # 120 megapixels
    image = load_image(path, min_side=448)
    assert min(image.size) >= 448
    assert image.size[0] * image.size[1] <= 12000 * 10000 / 16  # decoded at 1/4 per side or less
    assert image.getpixel((10, 10)) == pytest.approx((200, 180, 150), abs=3)


def test_modes_become_faithful_rgb(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (20, 20), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "cmyk.jpg")
    assert load_image(tmp_path / "cmyk.jpg").getpixel((10, 10)) == pytest.approx((255, 0, 0), abs=8)

    grey16 = Image.fromarray(np.full((20, 20), 32768, np.uint16))  # mid-grey, 16 bits
    grey16.save(tmp_path / "grey16.png")
    assert load_image(tmp_path / "grey16.png").getpixel((5, 5)) == pytest.approx((128, 128, 128), abs=1)

    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    assert load_image(tmp_path / "pal.png").getpixel((1, 1)) == (255, 255, 255)  # transparent -> white

    rgba = Image.new("RGBA", (20, 20), (0, 0, 255, 0))
    rgba.save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "rgba.png").getpixel((1, 1)) == (255, 255, 255)

    la = Image.new("LA", (20, 20), (0, 255))
    la.save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").getpixel((1, 1)) == (0, 0, 0)

    bilevel = Image.new("1", (20, 20), 1)
    bilevel.save(tmp_path / "one.tif")
    assert load_image(tmp_path / "one.tif").mode == "RGB"


def test_animated_gif_uses_the_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    assert load_image(tmp_path / "anim.gif").getpixel((8, 8)) == pytest.approx((255, 0, 0), abs=2)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    shown = load_image(tmp_path / "rotated.jpg")
    assert shown.size == (20, 40)
    assert shown.getpixel((10, 5))[0] > 200  # the white half is now on top


def test_formats_outside_the_allow_list_and_odd_shapes(tmp_path: Path) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "icon.ico")
    assert reason_of(tmp_path / "icon.ico") == "unsupported_format"
    Image.new("RGB", (5000, 20)).save(tmp_path / "sliver.png")
    assert reason_of(tmp_path / "sliver.png") == "bad_dimensions"


def test_bytes_and_streams_are_accepted() -> None:
    data = (DATA / "manuscript-page.jpg").read_bytes()
    assert load_image(data).mode == "RGB"
    assert load_image(io.BytesIO(data)).size == load_image(DATA / "manuscript-page.jpg").size
