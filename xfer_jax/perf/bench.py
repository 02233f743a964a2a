"""`xfer bench`: time the real train step (the one `xfer train` runs) on synthetic tokens.

Prints step time, tokens/s per device, TFLOP/s per device, MFU (formula in xfer_jax/train/metrics.py) and
peak memory, and appends one JSON object to a JSONL file (docs/benchmarks.jsonl by default) in the schema the
peer scripts use, so the comparison table can be regenerated. The flags are in perf/cli.py.

    xfer bench --shape tinyllama_1b --batch_size 8 --seq_len 2048 --attention cudnn --dtype bfloat16
"""
import datetime
import json
import pathlib
import statistics
import sys
import time

import jax
import numpy as np

from xfer_jax.model.shapes import get_shape
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.parallel.placement import Placement
from xfer_jax.train import checks, metrics, optim, setup as setup_lib


def synthetic_batch(rows: int, seq: int, vocab: int, packed: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, size=(rows, seq), dtype=np.int32)
    if packed:
        bounds = np.sort(rng.choice(np.arange(1, seq), size=packed - 1, replace=False))
        segment = np.searchsorted(bounds, np.arange(seq), side="right").astype(np.int32) + 1
        starts = np.concatenate([[0], bounds])
        positions = (np.arange(seq) - starts[segment - 1]).astype(np.int32)
    else:
        segment, positions = np.ones(seq, np.int32), np.arange(seq, dtype=np.int32)
    batch = {"tokens": tokens, "targets": np.roll(tokens, -1, axis=1), "positions": np.tile(positions, (rows, 1)),
             "loss_weights": np.ones((rows, seq), np.float32), "lang": np.zeros((rows, seq), np.int32)}
    if packed:
        batch["segment_ids"] = np.tile(segment, (rows, 1))
    return batch


def time_train_step(cfg, placement: Placement, host_batch: dict, *, optim_cfg, grad_accum: int = 1,
                    loss_chunk: int = 0, warmup: int = 3, steps: int = 10, profile: str = "",
                    trainable: tuple[str, ...] = ()) -> dict:
    """Build the trainer's state and compiled step (train/setup.py, as `xfer train` does: parameters matching
    `trainable` train, all when empty; LoRA dropout on), then time `steps` steps after `warmup` on one fixed
    batch. Shared by `xfer bench`, `xfer sweep` and tools/bench_lora.py."""
    total = warmup + steps
    built = setup_lib.build(cfg, placement, optim_cfg=optim_cfg, total_steps=total,
                            batch_shape=host_batch["tokens"].shape, trainable=trainable)
    with placement.context():
        state = built.fresh_state(seed=0)
        batch = built.put_batch(host_batch)
        step = built.train_step(accum=grad_accum, loss_chunk=loss_chunk, seed=0)
        t0 = time.perf_counter()
        compiled = step.lower(state, batch).compile()
        compile_s = time.perf_counter() - t0
        times = []
        for i in range(total):
            t0 = time.perf_counter()
            state, m = compiled(state, batch)
            jax.block_until_ready(m)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        if profile:
            with jax.profiler.trace(profile, create_perfetto_trace=True):
                for _ in range(3):
                    state, m = compiled(state, batch)
                jax.block_until_ready(m)
    return {"compile_s": compile_s, "step_s": statistics.median(times), "step_s_min": min(times),
            "loss": float(m["loss"]), "memory": compiled.memory_analysis(), "sizes": built.sizes}


def model_config(args):
    """The LlamaConfig `xfer bench` times: the shape (its own vocabulary unless --vocab_size) with the run flags."""
    extra = {"vocab_size": args.vocab_size} if args.vocab_size else {}
    return get_shape(args.shape, dtype=args.dtype, param_dtype=args.param_dtype, remat=args.remat,
                     attention=args.attention, max_position_embeddings=max(args.seq_len, 2048),
                     scan_layers=not args.no_scan, fuse_projections=not args.no_fuse, **extra)


def plan(args) -> dict:
    """--plan: the point's checks and the memory planner's bytes per device (perf/planner.py), no device touched.
    A mesh with a -1 axis takes this machine's devices; a mesh of fixed sizes may be any size."""
    from xfer_jax.perf import planner
    from xfer_jax.parallel.rules import DEFAULT_RULES

    sizes = mesh_lib.parse_axis_sizes(args.mesh)
    count = jax.device_count() if -1 in sizes.values() else int(np.prod(list(sizes.values())))
    mesh_sizes = mesh_lib.resolve_axis_sizes(sizes, count)
    cfg = model_config(args)
    rows = args.batch_size * count  # rows per device × devices: divisible by any batch axes, as in `run`
    memory = planner.plan_memory(cfg, mesh_sizes, DEFAULT_RULES, batch_size=rows, seq_len=args.seq_len,
                                 loss_chunk=args.loss_chunk, moment_dtypes=(args.moment_dtype, None))
    return {"shape": args.shape, "params_b": round(cfg.num_params() / 1e9, 3), "vocab_size": cfg.vocab_size,
            "rope_type": cfg.rope_type, "mesh": mesh_sizes, "devices": count, "batch": args.batch_size,
            "seq": args.seq_len, "dtype": cfg.dtype, "param_dtype": cfg.param_dtype, "remat": cfg.remat,
            **{k: round(v, 2) for k, v in memory.as_row().items()}}


def run(args) -> dict:
    """One benchmark from the parsed `xfer bench` flags → the JSONL record."""
    mesh = mesh_lib.make_mesh(mesh_lib.parse_axis_sizes(args.mesh))
    cfg = model_config(args)
    rows = args.batch_size * mesh.size
    checks.check_run(cfg, dict(mesh.shape), batch_size=rows, seq_len=args.seq_len, steps=args.steps)
    optim_cfg = optim.default_optim_config()
    optim_cfg.moment_dtype = args.moment_dtype
    timing = time_train_step(cfg, Placement(mesh), synthetic_batch(rows, args.seq_len, cfg.vocab_size, args.packed),
                             optim_cfg=optim_cfg, loss_chunk=args.loss_chunk, warmup=args.warmup, steps=args.steps,
                             profile=args.profile)
    seconds = timing["step_s"]
    fig = metrics.throughput(cfg, args.seq_len, rows * args.seq_len, seconds, mesh.size)
    mem = metrics.memory_gb()
    device = jax.devices()[0]
    return {
        "system": "ours", "shape": args.shape, "card": device.device_kind, "devices": mesh.size,
        "batch": args.batch_size, "seq": args.seq_len, "tokens_per_s_per_device": round(fig["tokens_per_s_per_device"]),
        "tflops_per_device": round(fig["tflops_per_device"], 1),
        "mfu": None if fig["mfu"] is None else round(fig["mfu"], 3),
        "peak_mem_gb": round(mem.get("peak_mem_gb", mem.get("host_rss_gb", 0.0)), 1),
        "step_time_s": round(seconds, 4), "compile_s": round(timing["compile_s"], 1), "loss": timing["loss"],
        "date": str(datetime.date.today()), "versions": f"jax {jax.__version__}",
        "command": "xfer bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
        "notes": ", ".join(x for x in (f"mesh {dict(mesh.shape)}", f"attention {args.attention}", f"remat {args.remat}",
                                       "unrolled" if args.no_scan else "scan",
                                       "unfused" if args.no_fuse else "fused", f"loss_chunk {args.loss_chunk}",
                                       f"packed {args.packed}", args.notes) if x),
    }


def report(args) -> int:
    """Run the benchmark, print its line and JSON, append it to --jsonl (--plan: print the plan, run nothing)."""
    if args.plan:
        result = plan(args)
        print(f"{args.shape} ({result['params_b']}B parameters, vocabulary {result['vocab_size']:,}, rope "
              f"{result['rope_type']}) batch {args.batch_size}x{args.seq_len} per device on {result['devices']} "
              f"devices {result['mesh']}: planned {result['plan_total_gb']} GB per device (parameters "
              f"{result['plan_params_gb']}, gradients {result['plan_grads_gb']}, optimizer {result['plan_opt_gb']}, "
              f"activations {result['plan_act_gb']})")
        print(json.dumps(result))
        return 0
    result = run(args)
    mfu = "n/a" if result["mfu"] is None else f"{result['mfu']:.1%}"
    print(f"{args.shape} batch {args.batch_size}x{args.seq_len} on {result['devices']} x {result['card']}: "
          f"{result['step_time_s'] * 1e3:.1f} ms/step | {result['tokens_per_s_per_device']:,} tok/s/dev | "
          f"{result['tflops_per_device']} TFLOP/s/dev | MFU {mfu} | peak {result['peak_mem_gb']} GB | "
          f"compile {result['compile_s']} s | loss {result['loss']:.3f}")
    if args.jsonl:
        path = pathlib.Path(args.jsonl)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(result) + "\n")
    print(json.dumps(result))
    return 0
