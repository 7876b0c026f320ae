"""Tests for seg/data/reading.py: files read as stored (bit depth, RGB order, grey+alpha, palettes), hints, refusals."""

import numpy as np
import pytest
from conftest import ALPHA, GREY, la_png, palette_png, write_png
from PIL import Image

from seg.data.reading import channels_hint, png_colour_type, read_image, read_raw
from seg.errors import DataError

INDICES = np.array([[0, 1, 2], [2, 2, 0]], np.uint8)


# ------------------------------------------------------------------ png_colour_type


def test_png_colour_type_from_the_header(tmp_path):
    grey = np.zeros((2, 2), np.uint8)
    for mode, array, expected in [
        ("L", grey, 0),
        ("RGB", np.zeros((2, 2, 3), np.uint8), 2),
        ("P", grey, 3),
        ("LA", np.zeros((2, 2, 2), np.uint8), 4),
        ("RGBA", np.zeros((2, 2, 4), np.uint8), 6),
    ]:
        Image.fromarray(array, mode=mode).save(tmp_path / f"{mode}.png")
        assert png_colour_type(tmp_path / f"{mode}.png") == expected, mode
    Image.fromarray(grey).save(tmp_path / "m.tif")
    (tmp_path / "short.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a signature and no header
    for other in ("m.tif", "short.png", "missing.png", "."):  # not a PNG, cut short, missing, a folder
        assert png_colour_type(tmp_path / other) is None, other


# ------------------------------------------------------------------ read_raw


def test_16_bit_masks_keep_their_values(tmp_path):
    grey = np.array([[0, 300], [65535, 1]], np.uint16)
    path = write_png(tmp_path / "grey16.png", grey)
    assert png_colour_type(path) == 0
    raw = read_raw(path)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, grey)
    rgb = np.zeros((1, 2, 3), np.uint16)
    rgb[0, 0] = (1000, 2000, 65535)  # R, G, B
    path = write_png(tmp_path / "rgb16.png", rgb)
    assert png_colour_type(path) == 2
    raw = read_raw(path)
    assert raw.dtype == np.uint16 and raw.shape == (1, 2, 3)
    assert raw[0, 0].tolist() == [1000, 2000, 65535] and raw[0, 1].tolist() == [0, 0, 0]  # RGB order, not BGR


def test_rgba_masks_read_in_rgba_order(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :] = (10, 20, 30, 40)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "m.png")
    raw = read_raw(tmp_path / "m.png")
    assert raw.shape == (2, 2, 4) and raw[1, 1].tolist() == [10, 20, 30, 40]


def test_la_png_decodes_as_grey_and_alpha(tmp_path):
    path = la_png(tmp_path / "m.png")
    assert png_colour_type(path) == 4
    raw = read_raw(path)
    assert raw.shape == (2, 3, 2) and raw.dtype == np.uint8
    np.testing.assert_array_equal(raw[..., 0], GREY)
    np.testing.assert_array_equal(raw[..., 1], ALPHA)  # OpenCV alone would give a copy of the grey here


def test_palette_png_with_and_without_palette_indices(tmp_path):
    colours = palette_png(tmp_path / "colours.png", INDICES, [0, 0, 0, 200, 30, 30, 30, 200, 30])  # black red green
    greys = palette_png(tmp_path / "greys.png", INDICES, [0, 0, 0, 128, 128, 128, 255, 255, 255])
    for path in (colours, greys):  # with palette_indices: the indices, whatever the colours
        raw = read_raw(path, palette_indices=True)
        assert raw.dtype == np.uint8 and raw.shape == (2, 3)
        np.testing.assert_array_equal(raw, INDICES)
    # without: the colours, as a viewer shows them; one plane when every colour is an opaque grey
    raw = read_raw(colours)
    assert raw.shape == (2, 3, 3)
    assert raw[0].tolist() == [[0, 0, 0], [200, 30, 30], [30, 200, 30]]
    assert raw[1].tolist() == [[30, 200, 30], [30, 200, 30], [0, 0, 0]]
    np.testing.assert_array_equal(read_raw(greys), [[0, 128, 255], [255, 255, 0]])


def test_palette_png_with_transparency_reads_as_rgba_unless_every_pixel_is_opaque(tmp_path):
    black_clear = palette_png(tmp_path / "t.png", INDICES, [0, 0, 0, 200, 30, 30, 30, 200, 30], transparency=b"\0")
    raw = read_raw(black_clear)
    assert raw.shape == (2, 3, 4)
    assert raw[0].tolist() == [[0, 0, 0, 0], [200, 30, 30, 255], [30, 200, 30, 255]]
    np.testing.assert_array_equal(read_raw(black_clear, palette_indices=True), INDICES)
    # a tRNS chunk that leaves every pixel opaque: greys stay one plane
    opaque = palette_png(tmp_path / "o.png", INDICES, [0, 0, 0, 128, 128, 128, 255, 255, 255], transparency=b"\xff")
    np.testing.assert_array_equal(read_raw(opaque), [[0, 128, 255], [255, 255, 0]])


@pytest.mark.parametrize("palette_indices", [False, True])
def test_missing_and_corrupt_masks_are_refused_naming_the_file(tmp_path, palette_indices):
    whole = palette_png(tmp_path / "whole.png", INDICES, [0, 0, 0, 255, 255, 255, 9, 9, 9]).read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[:60])  # a palette PNG's header, then nothing
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for name in ("missing.png", "cut.png", "junk.png"):
        with pytest.raises(DataError) as err:
            read_raw(tmp_path / name, palette_indices=palette_indices)
        assert str(err.value) == f"{tmp_path / name}: cannot read the mask (missing, corrupt or not an image file)"


def test_channels_hint_names_what_the_file_probably_is(tmp_path):
    assert channels_hint(la_png(tmp_path / "la.png"), 2) == "a grey+alpha PNG: save it as grayscale without alpha"
    palette = palette_png(tmp_path / "p.png", INDICES, [0, 0, 0, 200, 30, 30, 30, 200, 30])
    assert channels_hint(palette, 3) == (
        "a palette PNG with colours: save it as grayscale, or use data.mask_format: index to read the palette indices"
    )
    rgb = write_png(tmp_path / "rgb.png", np.zeros((2, 2, 3), np.uint8))
    assert channels_hint(rgb, 3) == "a binary mask stored as RGB: save it as grayscale"


# ------------------------------------------------------------------ read_image


def test_read_image_gives_rgb_uint8_and_repeats_grey(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)  # red
    rgb[1, 2] = (0, 0, 200)  # blue
    image = read_image(write_png(tmp_path / "rgb.png", rgb))
    assert image.dtype == np.uint8 and image.shape == (2, 3, 3)
    np.testing.assert_array_equal(image, rgb)
    grey = np.array([[0, 7, 255]], np.uint8)
    image = read_image(write_png(tmp_path / "grey.png", grey))
    assert image.shape == (1, 3, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], grey)
    # 16 bits: uint8 all the same (OpenCV keeps the high byte: 256 -> 1, 65535 -> 255)
    image = read_image(write_png(tmp_path / "grey16.png", np.array([[0, 256, 65535]], np.uint16)))
    assert image.dtype == np.uint8 and image[..., 0].tolist() == [[0, 1, 255]]


def test_corrupt_or_missing_image_is_refused(tmp_path):
    path = tmp_path / "m.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="cannot read the image"):
        read_image(path)
    missing = tmp_path / "missing.png"
    with pytest.raises(DataError) as err:
        read_image(missing)
    assert str(err.value) == f"{missing}: cannot read the image (missing, corrupt or not an image file)"
