"""colorize / overlay / side_by_side / save_png."""

import numpy as np
import pytest
from PIL import Image

from kseg.inference import colorize, overlay, save_png, side_by_side

PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
LABELS = np.array([[0, 1, 2], [255, 1, 0]], np.int32)


def test_colorize_exact_colours():
    out = colorize(LABELS, PALETTE)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 2].tolist() == [0, 0, 255]
    assert out[1, 0].tolist() == [0, 0, 0]  # ignore -> black
    with pytest.raises(ValueError, match=r"\[3\]"):
        colorize(np.array([[3]]), PALETTE)


def test_overlay_alpha_blend():
    image = np.full((2, 3, 3), 100, np.uint8)
    out = overlay(image, LABELS, PALETTE, alpha=0.25)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [139, 75, 75]  # 0.75 * 100 + 0.25 * 255 = 138.75
    assert out[1, 0].tolist() == [100, 100, 100]  # ignore: image unchanged
    float_image = np.full((2, 3, 3), 100.4, np.float32)
    np.testing.assert_array_equal(overlay(float_image, LABELS, PALETTE, alpha=0.25), out)
    np.testing.assert_array_equal(overlay(image, LABELS, PALETTE, alpha=0.0), image)
    with pytest.raises(ValueError, match="sizes differ"):
        overlay(image, LABELS[:1], PALETTE)


def test_side_by_side():
    image = np.zeros((2, 3, 3), np.uint8)
    strip = side_by_side(image, LABELS, np.zeros_like(LABELS), PALETTE, alpha=1.0)
    assert strip.shape == (2, 9, 3) and strip.dtype == np.uint8
    expected = colorize(LABELS, PALETTE) * (LABELS != 255)[..., None]  # ignore: image (0)
    np.testing.assert_array_equal(strip[:, 3:6], expected)
    assert strip[0, 6:].tolist() == [[255, 0, 0]] * 3


def test_save_png(tmp_path):
    save_png(LABELS, str(tmp_path / "a" / "pal.png"), palette=PALETTE)
    img = Image.open(tmp_path / "a" / "pal.png")
    assert img.mode == "P"
    np.testing.assert_array_equal(np.asarray(img), LABELS)
    assert np.asarray(img.convert("RGB"))[0, 1].tolist() == [0, 255, 0]
    save_png(LABELS, str(tmp_path / "grey.png"))
    assert Image.open(tmp_path / "grey.png").mode == "L"
    rgb = colorize(LABELS, PALETTE)
    save_png(rgb, str(tmp_path / "rgb.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rgb.png")), rgb)
    with pytest.raises(ValueError, match="0, 255"):
        save_png(np.array([[300]]), str(tmp_path / "bad.png"))
