"""Tests for seg/outputs/figures.py: save_figure writes a PNG (figsize x dpi pixels), creates the folder, closes."""

import matplotlib.pyplot as plt
from PIL import Image

from seg.outputs.figures import save_figure


def test_save_figure_writes_a_png_creates_the_folder_and_closes_the_figure(tmp_path):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    path = tmp_path / "new" / "deeper" / "plot.png"
    assert save_figure(fig, str(path), title="A title", dpi=50) == path  # a str in, the Path out
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (150, 100)  # 3 x 2 in at 50 dpi
    assert fig.get_suptitle() == "A title"
    assert not plt.fignum_exists(fig.number)  # closed: pyplot keeps no reference


def test_save_figure_defaults_and_no_title(tmp_path):
    fig = plt.figure(figsize=(1, 1))
    path = save_figure(fig, tmp_path / "plot.png")
    with Image.open(path) as image:
        assert image.size == (110, 110)  # dpi 110
    assert fig.get_suptitle() == "" and not plt.fignum_exists(fig.number)
    save_figure(plt.figure(figsize=(2, 1)), path, dpi=10)  # an existing file is overwritten
    with Image.open(path) as image:
        assert image.size == (20, 10)
