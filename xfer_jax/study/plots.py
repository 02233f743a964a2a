"""PNG figures of the demo and the study (matplotlib, no display needed).

Per-token losses of different vocabularies are not comparable, so loss curves get one panel per run;
cross-run comparisons are drawn in bits per character.
"""
from __future__ import annotations

import math
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from xfer_jax.study.training import metrics  # noqa: E402
from xfer_jax.train.curves import draw_panel  # noqa: E402


def loss_curves(runs: dict[str, str], path: pathlib.Path, title: str = "") -> pathlib.Path:
    """One panel per run: the training loss at every logged step and each held-out language's loss."""
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (label, run_dir) in zip(axes.flat, runs.items()):
        draw_panel(ax, metrics(run_dir))
        ax.set_title(label, fontsize=10)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    return _save(fig, path, title)


def series(panels: dict[str, dict[str, list[tuple[float, float]]]], path: pathlib.Path, *, xlabel: str,
           ylabel: str, title: str = "", xscale: str = "symlog") -> pathlib.Path:
    """Side-by-side panels, each {line label: [(x, y), ...]}: e.g. bits per character against tokens."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (name, lines) in zip(axes.flat, panels.items()):
        for label, points in lines.items():
            points = sorted(points)
            ax.plot([x for x, _ in points], [y for _, y in points], "o-", label=label, markersize=4)
        if xscale == "symlog":
            finite = [x for lines_ in lines.values() for x, _ in lines_ if x > 0]
            ax.set_xscale("symlog", linthresh=min(finite) if finite else 1.0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path, title)


def _save(fig, path: pathlib.Path, title: str) -> pathlib.Path:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
