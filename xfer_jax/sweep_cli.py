"""`xfer sweep`: time the train step over meshes × model shapes × batch sizes; CSV + plots (or plan only).

    xfer sweep --shapes tinyllama_1b --device_counts 1,2,4,8 --batch_sizes 8 --seq_len 2048 --out runs/sweep
    xfer sweep --shapes tiny --meshes 8x1x1,1x8x1,2x2x2 --seq_len 128 --cpu_devices 8      # laptop, simulated
    xfer sweep --plan --shapes llama2_7b --meshes 1x256x1,4x64x1,1x64x4 --batch_sizes 256 --device_memory_gb 95

Meshes are data×fsdp×tensor; --device_counts takes every such factorisation of each count. --plan prints
and writes the memory planner's per-device estimate for every point without touching a device, so the
meshes may be larger than this machine. Under several JAX processes (launch/) every point must use all
devices; process 0 writes the files. Writes OUT/sweep.csv, OUT/throughput.png and OUT/mfu.png
(matplotlib, the `sweep` extra).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys


def _csv(cast):
    return lambda text: [cast(x) for x in text.split(",") if x]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="xfer sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=_csv(str), default=["tiny"], help="model shapes (configs/models.py names)")
    p.add_argument("--meshes", type=_csv(str), default=[], help="data x fsdp x tensor, e.g. 8x1x1,2x2x2")
    p.add_argument("--device_counts", type=_csv(int), default=[], help="every mesh of each device count")
    p.add_argument("--batch_sizes", type=_csv(int), default=[8], help="global batch sizes (rows)")
    p.add_argument("--seq_len", type=int, default=2048)
    p.add_argument("--dtype", default="bfloat16", help="compute dtype")
    p.add_argument("--param_dtype", default="float32")
    p.add_argument("--remat", default="none", help="none | full | dots | dots_no_batch | save_attn_out")
    p.add_argument("--attention", default="xla", help="xla | cudnn")
    p.add_argument("--vocab_size", type=int, default=0, help="0: the shape's own")
    p.add_argument("--grad_accum", type=int, default=1)
    p.add_argument("--loss_chunk", type=int, default=0, help="train.loss_chunk")
    p.add_argument("--steps", type=int, default=5, help="timed steps per point (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    p.add_argument("--plan", action="store_true", help="memory plan only: no device is used")
    p.add_argument("--device_memory_gb", type=float, default=0.0, help="for plan_fits; 0: the device's own limit")
    p.add_argument("--cpu_devices", type=int, default=0, help="simulate this many CPU devices (set before JAX starts)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/sweep"))
    p.add_argument("--no_plots", action="store_true")
    args = p.parse_args(argv)
    if bool(args.meshes) == bool(args.device_counts):
        p.error("give exactly one of --meshes (e.g. 8x1x1,2x2x2) or --device_counts (e.g. 1,2,4,8)")
    return args


def simulate_cpu_devices(count: int) -> None:
    """XLA reads the device count when JAX's CPU backend starts, so this must run before anything uses JAX."""
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}".strip()
    os.environ["JAX_PLATFORMS"] = "cpu"


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


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.cpu_devices:
        simulate_cpu_devices(args.cpu_devices)
    from xfer_jax.parallel.launch import maybe_initialize_distributed

    maybe_initialize_distributed()
    import jax

    if args.cpu_devices and jax.device_count() != args.cpu_devices * jax.process_count():
        print(f"xfer sweep: --cpu_devices {args.cpu_devices} came too late (JAX already started with "
              f"{jax.local_device_count()} devices); set XLA_FLAGS=--xla_force_host_platform_device_count="
              f"{args.cpu_devices} before starting Python", file=sys.stderr)
        return 2

    from xfer_jax import sweep

    try:
        meshes = [sweep.parse_mesh(m) for m in args.meshes] or sweep.meshes_for(args.device_counts)
        settings = sweep.Settings(seq_len=args.seq_len, dtype=args.dtype, param_dtype=args.param_dtype, remat=args.remat,
                                  attention=args.attention, vocab_size=args.vocab_size, grad_accum=args.grad_accum,
                                  loss_chunk=args.loss_chunk, steps=args.steps, warmup=args.warmup,
                                  device_memory_gb=args.device_memory_gb)
        points = sweep.grid(args.shapes, meshes, args.batch_sizes)
        for shape in args.shapes:
            sweep.model_config(shape, settings)  # unknown shape / dtype / remat: fail before the first point
    except (ValueError, KeyError) as e:
        print(f"xfer sweep: {e}", file=sys.stderr)
        return 2
    lead = jax.process_index() == 0
    rows = []
    for i, point in enumerate(points, 1):
        rows.append(sweep.run_point(point, settings, plan_only=args.plan))
        if lead:  # the CSV grows point by point: a sweep stopped early keeps what it measured
            print(f"[{i}/{len(points)}] {sweep.format_row(rows[-1])}", flush=True)
            sweep.write_csv(rows, args.out / "sweep.csv")
    if not lead:
        return 0
    print(f"xfer sweep: {len(rows)} points -> {args.out / 'sweep.csv'}")
    if not args.plan and not args.no_plots:
        try:
            paths = plot(rows, args.out)
        except ImportError:
            print("xfer sweep: plots skipped: matplotlib is not installed (pip install matplotlib, or the `sweep` "
                  "extra); the CSV is complete", file=sys.stderr)
        else:
            print(f"xfer sweep: plots {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
