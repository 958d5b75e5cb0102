"""Palette pictures: colorize, overlay, save_grid."""

import numpy as np
import pytest
from PIL import Image

from data.visualize import colorize, legend, overlay, save_grid
from data.voc import voc_palette


def test_colorize():
    label = np.array([[0, 1], [15, 255]], np.uint8)
    rgb = colorize(label)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 1].tolist() == [128, 0, 0] and rgb[1, 1].tolist() == [224, 224, 192]
    assert np.array_equal(colorize(label.astype(np.int64)), rgb)  # int64 predictions work too
    with pytest.raises(ValueError, match="label map"):
        colorize(np.zeros((2, 2, 3)))


def test_overlay():
    image = np.full((2, 3, 3), 100, np.uint8)
    label = np.array([[0, 1, 255], [0, 15, 255]], np.uint8)
    out = overlay(image, label, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert out[0, 0].tolist() == [100, 100, 100], "background stays the image"
    assert out[0, 1].tolist() == [114, 50, 50]  # (100 + 128) / 2, (100 + 0) / 2
    assert out[0, 2].tolist() == [162, 162, 146]  # boundary colour (224, 224, 192) blended
    hidden = overlay(image, label, show_ignore=False)
    assert hidden[0, 2].tolist() == [100, 100, 100]
    assert np.array_equal(overlay(image, label, alpha=1.0)[1, 1], voc_palette()[15])
    with pytest.raises(ValueError, match="overlay"):
        overlay(image, label[:1])


def test_save_grid(tmp_path):
    a = np.full((10, 20, 3), 50, np.uint8)
    b = np.array([[0, 1], [2, 255]], np.uint8)
    path = save_grid([[a, b], [a]], tmp_path / "sub" / "grid.png", titles=["image", "mask"])
    grid = np.asarray(Image.open(path))
    assert grid.shape[2] == 3 and grid.shape[1] == 4 + 20 + 4 + 2 + 4
    assert grid.shape[0] == 12 + 4 + 10 + 4 + 10 + 4
    # The label map was colourised: its class-1 pixel shows VOC red.
    assert (grid.reshape(-1, 3) == [128, 0, 0]).all(axis=1).any()
    nested = save_grid([[a, a]], tmp_path / "nested.png", titles=[["x", "y"]])
    assert Image.open(nested).size == (4 + 20 + 4 + 20 + 4, 12 + 10 + 8)
    with pytest.raises(ValueError):
        save_grid([], tmp_path / "empty.png")


def test_legend():
    key = legend([0, 15, 255])
    assert key.dtype == np.uint8 and key.shape == (3 * 14, 150, 3)
    assert key[14 + 6, 6].tolist() == [192, 128, 128]  # person swatch
    assert key[2 * 14 + 6, 6].tolist() == [224, 224, 192]  # ignore swatch
    assert (key[:, 20:] < 128).any(), "names are drawn"
