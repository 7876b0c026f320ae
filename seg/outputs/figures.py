"""What every matplotlib figure of seg shares when it is written to disk."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, path: str | Path, title: str | None = None, dpi: int = 110) -> Path:
    """Title, tight layout, write ``path`` (creating its folder) as PNG, close the figure."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
