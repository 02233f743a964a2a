"""`xfer bench` and `xfer sweep`: the perf verbs' flags (snake_case; old spellings parse, hidden from --help).

    xfer bench --shape tinyllama_1b --batch_size 8 --seq_len 2048 --attention cudnn --dtype bfloat16
    xfer sweep --shapes tinyllama_1b --device_counts 1,2,4,8 --batch_sizes 8 --seq_len 2048 --out runs/sweep
    xfer sweep --shapes tiny --meshes 8x1x1,1x8x1,2x2x2 --seq_len 128 --cpu_devices 8      # laptop, simulated
    xfer sweep --plan --shapes llama2_7b --meshes 1x256x1,4x64x1,1x64x4 --batch_sizes 256 --device_memory_gb 95

`xfer bench` times the train step for one shape and mesh (perf/bench.py); `xfer sweep` over meshes × model
shapes × batch sizes (perf/sweep.py), writing CSV + plots (perf/plots.py). `xfer sweep` imports JAX only
after its flags are read: --cpu_devices must reach XLA before it starts.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

from xfer_jax.cli_args import add_flag
from xfer_jax.errors import run_verb

BENCH_DOC = """`xfer bench`: time the real train step (the one `xfer train` runs) on synthetic tokens.

Prints step time, tokens/s per device, TFLOP/s per device, MFU and peak memory, and appends one JSON record
to --jsonl (the schema the peer scripts use; tools/bench_table.py makes the table); `kernel` names the attention
that ran. --batch_size is rows per device: the global batch is batch_size × devices / sequence (the sequence
axis's devices share each row).

    xfer bench --shape tinyllama_1b --batch_size 8 --seq_len 2048 --dtype bfloat16
    xfer bench --shape llama3_1_8b --batch_size 1 --seq_len 8192 --mesh fsdp=8 --remat full --plan
    xfer bench --shape llama3_1_8b --batch_size 1 --seq_len 32768 --mesh fsdp=64,sequence=4 --remat full --plan --chip v5p
    xfer bench --shape llama3_1_8b --num_layers 2 --batch_size 1 --seq_len 32768 --mesh fsdp=2,sequence=4 --compile_only
"""

SWEEP_DOC = """`xfer sweep`: time the train step over meshes × model shapes × batch sizes; CSV + plots (or plan only).

Meshes are data×fsdp×tensor[×sequence] (2x1x1x4: context parallelism over 4); --device_counts takes every
data×fsdp×tensor factorisation of each count. --plan prints and writes the memory planner's per-device estimate
for every point without touching a device, so the meshes may be larger than this machine (--chip v5p plans for
that accelerator: its attention kernel and memory). Under several JAX processes (launch/) every point must use all
devices; process 0 writes the files. Writes OUT/sweep.csv, OUT/throughput.png and OUT/mfu.png
(matplotlib, the `sweep` extra).
"""


def _csv(cast):
    return lambda text: [cast(x) for x in text.split(",") if x]


def bench_parser() -> argparse.ArgumentParser:
    from xfer_jax.model.shapes import SHAPES

    p = argparse.ArgumentParser(prog="xfer bench", description=BENCH_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    p.add_argument("--vocab_size", type=int, default=0, help="0: the shape's own (llama3_1_8b: 128,256)")
    add_flag(p, "--batch_size", "--batch", type=int, default=8, help="rows per device")
    add_flag(p, "--seq_len", "--seq", type=int, default=2048)
    p.add_argument("--mesh", default="fsdp=-1", help="e.g. data=1,fsdp=-1,tensor=1 (sequence=N: context parallelism)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--param_dtype", default="float32")
    p.add_argument("--remat", default="none")
    p.add_argument("--no_scan", action="store_true", help="unroll the layers instead of lax.scan")
    p.add_argument("--no_fuse", action="store_true", help="separate q/k/v and gate/up GEMMs (fuse_projections off)")
    p.add_argument("--attention", default="auto", help="auto (cuDNN on GPU, splash on TPU, xla on CPU) | xla | cudnn "
                   "| splash; the record's `kernel` says which ran")
    p.add_argument("--num_layers", type=int, default=0, help="0: the shape's own depth")
    p.add_argument("--loss_chunk", type=int, default=0)
    p.add_argument("--moment_dtype", default="float32", help="AdamW first-moment dtype")
    p.add_argument("--packed", type=int, default=0, help="documents per row (segment ids); 0: one causal sequence")
    p.add_argument("--max_segments", type=int, default=32, help="model.attention_max_segments: cuDNN's packed layout "
                   "for rows of at most this many documents (0: a dense same-document mask)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--jsonl", default="docs/benchmarks.jsonl", help="append the result here ('' to skip)")
    p.add_argument("--notes", default="")
    p.add_argument("--profile", default="", help="write a Perfetto trace of 3 timed steps to this directory")
    p.add_argument("--plan", action="store_true", help="print the memory planner's GB per device and stop (no "
                   "compile; a mesh of fixed sizes, e.g. fsdp=8, need not exist here)")
    p.add_argument("--chip", default="", help="with --plan: plan for this accelerator (v4, v5e, v5p, v6e, a100, h100, "
                   "h200): its kernel, whether it fits, the projected step time")
    p.add_argument("--assume_mfu", type=float, default=0.5, help="with --plan --chip: the MFU the projection assumes")
    p.add_argument("--compile_only", action="store_true", help="lower and compile the step on abstract arrays "
                   "(nothing allocated) and print the compiler's memory beside the plan")
    return p


def bench_main(argv: list[str]) -> int:
    args = bench_parser().parse_args(argv)
    from xfer_jax.parallel.launch import maybe_initialize_distributed

    if not args.plan:
        maybe_initialize_distributed()  # a pod's workers (XFER_DISTRIBUTED=auto) time one step together
    from xfer_jax.perf import bench

    return run_verb("xfer bench", lambda: bench.report(args))


main = bench_main  # the package's first verb: `python -m xfer_jax.perf.cli` is `xfer bench`


def parse_sweep_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="xfer sweep", description=SWEEP_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=_csv(str), default=["tiny"], help="model shapes (configs/models.py names)")
    p.add_argument("--meshes", type=_csv(str), default=[], help="data x fsdp x tensor [x sequence], e.g. 8x1x1,2x2x2,2x1x1x4")
    p.add_argument("--device_counts", type=_csv(int), default=[], help="every mesh of each device count")
    p.add_argument("--batch_sizes", type=_csv(int), default=[8], help="global batch sizes (rows)")
    p.add_argument("--seq_len", type=int, default=2048)
    p.add_argument("--dtype", default="bfloat16", help="compute dtype")
    p.add_argument("--param_dtype", default="float32")
    p.add_argument("--remat", default="none", help="none | full | dots | dots_no_batch | save_attn_out | minimal")
    p.add_argument("--attention", default="auto", help="auto | xla | cudnn | splash (Pallas TPU; interpreted elsewhere)")
    p.add_argument("--vocab_size", type=int, default=0, help="0: the shape's own")
    p.add_argument("--grad_accum", type=int, default=1)
    p.add_argument("--loss_chunk", type=int, default=0, help="train.loss_chunk")
    p.add_argument("--steps", type=int, default=5, help="timed steps per point (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    p.add_argument("--plan", action="store_true", help="memory plan only: no device is used")
    p.add_argument("--device_memory_gb", type=float, default=0.0, help="for plan_fits; 0: the device's own limit")
    p.add_argument("--chip", default="", help="with --plan: plan for this accelerator (perf/chips.py: v5p, h100, ...)")
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


def sweep_main(argv: list[str]) -> int:
    args = parse_sweep_args(argv)
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

    from xfer_jax.perf import plots, sweep

    from xfer_jax.perf import chips

    try:
        chip = chips.get_chip(args.chip) if args.chip else None
        meshes = [sweep.parse_mesh(m) for m in args.meshes] or sweep.meshes_for(args.device_counts)
        settings = sweep.Settings(seq_len=args.seq_len, dtype=args.dtype, param_dtype=args.param_dtype, remat=args.remat,
                                  attention=args.attention, vocab_size=args.vocab_size, grad_accum=args.grad_accum,
                                  loss_chunk=args.loss_chunk, steps=args.steps, warmup=args.warmup,
                                  device_memory_gb=args.device_memory_gb or (chip.memory_gb if chip else 0.0),
                                  backend=chip.backend if chip else None)
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
            paths = plots.plot(rows, args.out)
        except ImportError:
            print("xfer sweep: plots skipped: matplotlib is not installed (pip install matplotlib, or the `sweep` "
                  "extra); the CSV is complete", file=sys.stderr)
        else:
            print(f"xfer sweep: plots {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
