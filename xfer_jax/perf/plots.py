"""Plots of an `xfer sweep` (and of merged sweeps, tools/mesh_sweep.py): OUT/throughput.png, OUT/mfu.png.

matplotlib is imported only when a plot is drawn (the `sweep` extra).
"""
from __future__ import annotations

import pathlib


def _bars(ax, ok: list[dict], key: str, label: str) -> None:
    """One bar per (mesh, shape, batch): the per-device figure against the mesh shape."""
    series = sorted({(r["shape"], r["batch_size"]) for r in ok})
    meshes = sorted({(r["devices"], r["mesh"]) for r in ok})
    width = 0.8 / len(series)
    for i, (shape, batch) in enumerate(series):
        value = {r["mesh"]: r[key] for r in ok if (r["shape"], r["batch_size"]) == (shape, batch)}
        xs = [j for j, (_, m) in enumerate(meshes) if m in value]
        ax.bar([x + i * width for x in xs], [value[meshes[x][1]] for x in xs], width, label=f"{shape} b{batch}")
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(meshes))], [f"{m}\n({n})" for n, m in meshes],
                  fontsize=8)
    ax.set_xlabel("mesh data×fsdp×tensor (devices)")
    ax.set_ylabel(label)


def _scaling(ax, ok: list[dict], key: str, label: str, ideal: bool) -> None:
    """One line per (shape, batch): the best mesh at each device count; dashed: linear from the smallest."""
    for shape, batch in sorted({(r["shape"], r["batch_size"]) for r in ok}):
        best: dict[int, float] = {}
        for r in ok:
            if (r["shape"], r["batch_size"]) == (shape, batch) and r[key] is not None:
                best[r["devices"]] = max(best.get(r["devices"], 0.0), r[key])
        counts = sorted(best)
        line = ax.plot(counts, [best[n] for n in counts], "o-", label=f"{shape} b{batch}")[0]
        if ideal and len(counts) > 1:
            ax.plot(counts, [best[counts[0]] * n / counts[0] for n in counts], "--", color=line.get_color(), alpha=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("devices")
    ax.set_ylabel(label)


def plot(rows: list[dict], out: pathlib.Path) -> list[pathlib.Path]:
    """throughput.png and mfu.png: per device against mesh shape (left), total against device count (right).

    MFU needs a known peak (train/metrics.py PEAK_FLOPS); without one (CPU) mfu.png shows TFLOP/s per
    device instead and says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return []
    if any(r["mfu"] is not None for r in ok):
        efficiency = ("mfu", "MFU", "mfu", "MFU (best mesh)", False)
    else:
        efficiency = ("tflops_per_device", "TFLOP/s per device (MFU n/a: peak unknown)", "tflops_per_device",
                      "TFLOP/s per device (best mesh)", False)
    figures = {"throughput.png": ("tokens_per_s_per_device", "tokens/s per device", "tokens_per_s",
                                  "tokens/s (best mesh; dashed: linear)", True),
               "mfu.png": efficiency}
    paths = []
    for name, (left_key, left_label, right_key, right_label, ideal) in figures.items():
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
        _bars(left, ok, left_key, left_label)
        _scaling(right, ok, right_key, right_label, ideal)
        for ax in (left, right):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{ok[0]['device_kind']}, seq {ok[0]['seq_len']}, {ok[0]['dtype']} compute, remat {ok[0]['remat']}")
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    return paths
