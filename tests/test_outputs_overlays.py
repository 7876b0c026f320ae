"""Tests for seg/outputs/overlays.py: overlays and overlay grids pixel by pixel, and the grid PNG."""

import numpy as np

from seg.outputs.overlays import PALETTE, overlay, overlay_grid, palette, save_overlay_grid

NAMES = ["cell", "speck"]


def test_overlay_blends_each_channel_in_its_colour():
    image = np.full((2, 2, 3), 100, np.uint8)
    masks = np.zeros((2, 2, 2), np.uint8)
    masks[0, 0, 0] = 1
    masks[1, 1, 1] = 1
    out = overlay(image, masks, alpha=0.5)
    # (0,0): 0.5 * 100 + 0.5 * PALETTE[0] = 50 + (15.5, 59.5, 90) -> rounded half to even
    assert out[0, 0].tolist() == np.rint(0.5 * 100 + 0.5 * PALETTE[0].astype(float)).astype(int).tolist()
    assert out[1, 1].tolist() == np.rint(0.5 * 100 + 0.5 * PALETTE[1].astype(float)).astype(int).tolist()
    assert out[0, 1].tolist() == [100, 100, 100]


def test_overlay_grid_layout_and_padding():
    big, small = np.zeros((4, 6, 3), np.uint8), np.full((2, 3), 7, np.uint8)  # grey accepted
    truth_big = np.ones((4, 6, 1), np.uint8)
    grid = overlay_grid(
        [big, small],
        [truth_big, np.zeros((2, 3, 1), np.uint8)],
        [np.zeros((4, 6, 1), np.uint8), np.zeros((2, 3, 1), np.uint8)],
        gap=2,
    )
    # 2 rows of height 4 + one gap of 2; 3 columns of width 6 + two gaps of 2
    assert grid.shape == (10, 22, 3) and grid.dtype == np.uint8
    assert grid[0, 0].tolist() == [0, 0, 0]  # row 0, image
    assert grid[0, 8].tolist() == np.rint(0.5 * PALETTE[0]).astype(int).tolist()  # row 0, truth overlay
    assert grid[0, 16].tolist() == [0, 0, 0]  # row 0, empty prediction
    assert grid[0, 6].tolist() == [255, 255, 255]  # gap
    assert grid[6, 0].tolist() == [7, 7, 7] and grid[9, 5].tolist() == [255, 255, 255]  # small image, padded


def test_save_overlay_grid_png(tmp_path):
    grid = overlay_grid(
        [np.zeros((8, 8, 3), np.uint8)], [np.ones((8, 8, 2), np.uint8)], [np.zeros((8, 8, 2), np.uint8)]
    )
    path = save_overlay_grid(grid, NAMES, tmp_path / "grid.png", title="t")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_every_class_gets_its_own_colour():
    for count in (1, 10, 11, 12, 40, 300):
        colours = palette(count)
        assert colours.shape == (count, 3) and len({tuple(c) for c in colours}) == count
    assert palette(11)[:10].tolist() == PALETTE.tolist()  # tab10 first

    def closest(colours):  # the smallest RGB distance between two of them
        c = colours.astype(float)
        distances = np.linalg.norm(c[:, None] - c[None], axis=2)
        return distances[~np.eye(len(c), dtype=bool)].min()

    # each colour added after tab10 lies at least as far from the others as tab10's closest pair
    assert closest(palette(30)) >= closest(PALETTE)
    image = np.zeros((1, 11, 3), np.uint8)
    masks = np.eye(11, dtype=np.uint8)[None]  # pixel c in class c: CamVid's 11 classes
    out = overlay(image, masks, alpha=1.0)
    assert len({tuple(pixel) for pixel in out[0].tolist()}) == 11  # the 11th no longer shares the first's colour
