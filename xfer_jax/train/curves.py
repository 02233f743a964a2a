"""The loss curve where people look: OUT/curves.png, redrawn at each held-out evaluation and at the end of a run.

One panel (two with the English-retention guard on: its mixture weights at each check): the training loss at
every logged step (faint), its exponential moving average (smoothed), and each held-out language's loss as points. Drawn with matplotlib when it is installed (the `sweep`/`test` extras); without
it the run says so once and goes on. The PNG is written atomically through the path helper, so it works in a
bucket too. `draw_panel` is also what the study's and the demo's multi-run figures draw in each panel.
"""
from __future__ import annotations

import io
import logging

from xfer_jax import paths

COLOURS = ("#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3")
_SAID = []  # whether the missing-matplotlib line was logged


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average, debiased at the start (as TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out


def draw_panel(ax, records: list[dict], smooth: float = 0.0) -> None:
    """Train loss (smoothed when `smooth` > 0) and held-out losses per language on one matplotlib axis."""
    steps, losses = [r["step"] for r in records if "loss" in r], [r["loss"] for r in records if "loss" in r]
    if smooth:
        ax.plot(steps, losses, color="#4C72B0", alpha=0.25, linewidth=0.8)
        ax.plot(steps, smoothed(losses, smooth), label="train (smoothed)", color="#4C72B0")
    else:
        ax.plot(steps, losses, label="train", color="#4C72B0")
    langs = sorted({k.split("/")[1] for r in records for k in r if k.startswith("eval/") and k.endswith("/loss")})
    for lang, colour in zip(langs, COLOURS):
        points = [(r["step"], r[f"eval/{lang}/loss"]) for r in records if f"eval/{lang}/loss" in r]
        ax.plot(*zip(*points), "o--", label=f"held-out {lang}", color=colour, markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def write_curves(records: list[dict], target, title: str = "") -> bool:
    """Draw `records` (metrics.jsonl's) to `target` (a PNG path or URL); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _SAID:
            _SAID.append(True)
            logging.getLogger(__name__).warning("curves.png skipped: matplotlib is not installed (pip install "
                                                "matplotlib); metrics.jsonl and TensorBoard have the numbers")
        return False
    guarded = sorted({k.split("/")[-1] for r in records for k in r if k.startswith("guard/weight/")})
    fig, axes = plt.subplots(1, 2 if guarded else 1, figsize=(12.0 if guarded else 6.4, 4.0), squeeze=False)
    draw_panel(axes[0, 0], records, smooth=0.9)
    if title:
        axes[0, 0].set_title(title, fontsize=10)
    if guarded:  # the English-retention guard's mixture weights at each check (train/guard.py)
        ax = axes[0, 1]
        for lang, colour in zip(guarded, COLOURS):
            points = [(r["step"], r[f"guard/weight/{lang}"]) for r in records if f"guard/weight/{lang}" in r]
            ax.plot(*zip(*points), "o-", label=lang, color=colour, markersize=3, drawstyle="steps-post")
        ax.set_xlabel("step")
        ax.set_ylabel("mixture weight")
        ax.set_title("guard: mixture weights", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    paths.write_bytes(target, buffer.getvalue())
    return True
