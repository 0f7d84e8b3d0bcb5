"""Plotting helpers shared by the report's figures: matplotlib on the Agg backend, PNGs written atomically."""
from __future__ import annotations

from pathlib import Path

from graphs.atomic import atomic_file


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)



def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def tick_labels(ax, labels: list[str], rotation: int = 90, max_labels: int = 60, colors=None):
    n = len(labels)
    step = max(1, -(-n // max_labels))
    idx = list(range(0, n, step))
    if colors and step > 1:  # highlighted labels (removed blocks) are always shown
        idx = sorted(set(idx) | {i for i, c in enumerate(colors) if c})
    ax.set_xticks(idx)
    ax.set_xticklabels([labels[i] for i in idx], rotation=rotation, fontsize=7 if n > 20 else 8,
                       ha="center" if rotation == 90 else "right")
    if colors:
        for tick, i in zip(ax.get_xticklabels(), idx):
            if colors[i]:
                tick.set_color(colors[i])
    return step


def finish(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Labels, title, legend and grid as every line figure has them; then the PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return path
