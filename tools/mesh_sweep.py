"""Compare mesh-scaling sweeps: merge `xfer sweep` CSVs from several machines, redraw the plots, and print
the best mesh per (model shape, batch, device kind, device count) as a Markdown table.

    python tools/mesh_sweep.py runs/sweep_cpu/sweep.csv runs/sweep_h100/sweep.csv runs/sweep_v5p/sweep.csv \
        --out runs/sweep_all

Why a separate tool: a sweep runs where the devices are (a laptop, a GPU node, a TPU pod slice) and writes
one CSV there; the scaling question spans them. Plots go per device kind (MFU and tokens/s are not
comparable across chips on one axis): OUT/<kind>/throughput.png and OUT/<kind>/mfu.png.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from xfer_jax.perf import plots, sweep


def best_rows(rows: list[dict]) -> list[dict]:
    """The fastest successful mesh (tokens/s) for each shape, batch, device kind and device count."""
    best: dict[tuple, dict] = {}
    for r in rows:
        if r["status"] != "ok":
            continue
        key = (r["shape"], r["batch_size"], r["device_kind"], r["devices"])
        if key not in best or r["tokens_per_s"] > best[key]["tokens_per_s"]:
            best[key] = r
    return [best[k] for k in sorted(best)]


def markdown(rows: list[dict]) -> str:
    lines = ["| shape | batch | device | devices | best mesh | tokens/s | tokens/s/device | TFLOP/s/device | MFU | "
             "step ms | XLA GB/device | plan GB/device |", "|" + "---|" * 12]
    for r in rows:
        mfu = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
        xla = "n/a" if r["xla_args_gb"] is None else f"{r['xla_args_gb'] + r['xla_temp_gb']:.3f}"
        lines.append(f"| {r['shape']} | {r['batch_size']} | {r['device_kind']} | {r['devices']} | {r['mesh']} | "
                     f"{r['tokens_per_s']:,.0f} | {r['tokens_per_s_per_device']:,.0f} | {r['tflops_per_device']:.3f} | "
                     f"{mfu} | {r['step_s'] * 1e3:.1f} | {xla} | {r['plan_total_gb']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csvs", nargs="+", type=pathlib.Path, help="sweep.csv files written by `xfer sweep`")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/sweep_all"))
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.csvs if not p.is_file()]
    if missing:
        print(f"mesh_sweep: no such file: {', '.join(missing)} (run `xfer sweep --out DIR` first)", file=sys.stderr)
        return 2
    rows = [r for path in args.csvs for r in sweep.read_csv(path)]
    sweep.write_csv(rows, args.out / "sweep.csv")
    for kind in sorted({r["device_kind"] for r in rows if r["status"] == "ok"}):  # plan-only rows have no kind
        folder = args.out / kind.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        plots.plot([r for r in rows if r["device_kind"] == kind], folder)
    print(markdown(best_rows(rows)))
    print(f"\nmerged {len(rows)} rows -> {args.out / 'sweep.csv'}; plots per device kind under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
