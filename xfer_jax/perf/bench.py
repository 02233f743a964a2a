"""`xfer bench`: time the real train step (the one `xfer train` runs) on synthetic tokens.

Prints step time, tokens/s per device, TFLOP/s per device, MFU (formula in xfer_jax/train/metrics.py) and
peak memory, and appends one JSON object to a JSONL file (docs/benchmarks.jsonl by default) in the schema the
peer scripts use, so the comparison table can be regenerated. The flags are in perf/cli.py.

    xfer bench --shape tinyllama_1b --batch_size 8 --seq_len 2048 --attention cudnn --dtype bfloat16
"""
import datetime
import json
import statistics
import sys
import time

import jax
import numpy as np

from xfer_jax import paths
from xfer_jax.model import attention as attention_lib
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
    """The LlamaConfig `xfer bench` times: the shape (its own vocabulary and depth unless --vocab_size /
    --num_layers) with the run flags."""
    extra = {"vocab_size": args.vocab_size} if args.vocab_size else {}
    if args.num_layers:
        extra["num_layers"] = args.num_layers
    return get_shape(args.shape, dtype=args.dtype, param_dtype=args.param_dtype, remat=args.remat,
                     attention=args.attention, attention_max_segments=args.max_segments,
                     max_position_embeddings=max(args.seq_len, 2048),
                     scan_layers=not args.no_scan, fuse_projections=not args.no_fuse, **extra)


def optim_config(args):
    """The trainer's AdamW with `--moment_dtype` for its first moment."""
    optim_cfg = optim.default_optim_config()
    optim_cfg.moment_dtype = args.moment_dtype
    return optim_cfg


def global_rows(batch_size: int, mesh_sizes: dict) -> int:
    """--batch_size is rows per device; the `sequence` axis's devices share each row (context parallelism), so
    every device holds batch_size × seq_len / sequence tokens."""
    return batch_size * int(np.prod(list(mesh_sizes.values()))) // mesh_sizes.get("sequence", 1)


def plan(args) -> dict:
    """--plan: the point's checks and the memory planner's bytes per device (perf/planner.py), no device touched.
    A mesh with a -1 axis takes this machine's devices; a mesh of fixed sizes may be any size. With --chip the
    plan is for that accelerator (its backend picks the attention kernel) and adds the step time it projects
    at --assume_mfu of the chip's peak and whether the plan fits its memory."""
    from xfer_jax.perf import chips, planner
    from xfer_jax.parallel.rules import DEFAULT_RULES

    chip = chips.get_chip(args.chip) if args.chip else None
    sizes = mesh_lib.parse_axis_sizes(args.mesh)
    count = jax.device_count() if -1 in sizes.values() else int(np.prod(list(sizes.values())))
    mesh_sizes = mesh_lib.resolve_axis_sizes(sizes, count)
    cfg = model_config(args)
    rows = global_rows(args.batch_size, mesh_sizes)  # divisible by any batch axes, as in `run`
    checks.check_run(cfg, mesh_sizes, batch_size=rows, seq_len=args.seq_len, steps=args.steps, planned=True)
    backend = chip.backend if chip else None
    memory = planner.plan_memory(cfg, mesh_sizes, DEFAULT_RULES, batch_size=rows, seq_len=args.seq_len,
                                 loss_chunk=args.loss_chunk, moment_dtypes=(args.moment_dtype, None), backend=backend)
    result = {"shape": args.shape, "params_b": round(cfg.num_params() / 1e9, 3), "vocab_size": cfg.vocab_size,
              "rope_type": cfg.rope_type, "mesh": mesh_sizes, "devices": count, "batch": args.batch_size,
              "seq": args.seq_len, "dtype": cfg.dtype, "param_dtype": cfg.param_dtype, "remat": cfg.remat,
              "attention": attention_lib.describe(cfg, rows, args.seq_len, backend),
              **{k: round(v, 2) for k, v in memory.as_row().items()}}
    if chip:
        step = chips.projected_step_s(cfg.flops_per_token(args.seq_len), rows * args.seq_len, count, chip,
                                      args.assume_mfu)
        result.update(chip=chip.name, chip_memory_gb=chip.memory_gb, plan_fits=memory.total / 1e9 <= chip.memory_gb,
                      assume_mfu=args.assume_mfu, projected_step_s=round(step, 4),
                      projected_tokens_per_s_per_device=round(rows * args.seq_len / step / count))
    return result


def compile_only(args) -> dict:
    """--compile_only: lower and compile the real train step for the mesh on abstract arrays (nothing is
    allocated: any model fits), and set the compiler's memory per device beside the planner's."""
    from xfer_jax.perf import planner

    mesh = mesh_lib.make_mesh(mesh_lib.parse_axis_sizes(args.mesh))
    cfg = model_config(args)
    rows = global_rows(args.batch_size, dict(mesh.shape))
    checks.check_run(cfg, dict(mesh.shape), batch_size=rows, seq_len=args.seq_len, steps=args.steps)
    placement = Placement(mesh)
    built = setup_lib.build(cfg, placement, optim_cfg=optim_config(args), total_steps=args.steps,
                            batch_shape=(rows, args.seq_len))
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=built.batch_sharding)
             for k, v in synthetic_batch(rows, args.seq_len, cfg.vocab_size, args.packed).items()}
    t0 = time.perf_counter()
    with placement.context():
        compiled = built.train_step(loss_chunk=args.loss_chunk).lower(built.abstract_state, batch).compile()
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    plan_gb = planner.plan_memory(cfg, dict(mesh.shape), placement.rules, batch_size=rows, seq_len=args.seq_len,
                                  loss_chunk=args.loss_chunk, moment_dtypes=(args.moment_dtype, None)).total / 1e9
    xla_gb = None if mem is None else (mem.argument_size_in_bytes + mem.temp_size_in_bytes) / 1e9
    return {"shape": args.shape, "layers": cfg.num_layers, "mesh": dict(mesh.shape), "rows": rows,
            "seq": args.seq_len, "attention": attention_lib.describe(cfg, rows, args.seq_len),
            "compile_s": round(seconds, 1), "xla_args_plus_temp_gb": None if xla_gb is None else round(xla_gb, 3),
            "plan_total_gb": round(plan_gb, 3)}


def run(args) -> dict:
    """One benchmark from the parsed `xfer bench` flags → the JSONL record."""
    mesh = mesh_lib.make_mesh(mesh_lib.parse_axis_sizes(args.mesh))
    cfg = model_config(args)
    rows = global_rows(args.batch_size, dict(mesh.shape))
    checks.check_run(cfg, dict(mesh.shape), batch_size=rows, seq_len=args.seq_len, steps=args.steps)
    optim_cfg = optim_config(args)
    timing = time_train_step(cfg, Placement(mesh), synthetic_batch(rows, args.seq_len, cfg.vocab_size, args.packed),
                             optim_cfg=optim_cfg, loss_chunk=args.loss_chunk, warmup=args.warmup, steps=args.steps,
                             profile=args.profile)
    seconds = timing["step_s"]
    fig = metrics.throughput(cfg, args.seq_len, rows * args.seq_len, seconds, mesh.size)
    mem = metrics.memory_gb()
    device = jax.devices()[0]
    return {
        "system": "ours", "shape": args.shape, "card": device.device_kind, "devices": mesh.size,
        "batch": args.batch_size, "seq": args.seq_len, "attention": args.attention,
        "kernel": attention_lib.describe(cfg, rows, args.seq_len), "tokens_per_s_per_device": round(fig["tokens_per_s_per_device"]),
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
              f"devices {result['mesh']}, attention {result['attention']}: planned {result['plan_total_gb']} GB per "
              f"device (parameters {result['plan_params_gb']}, gradients {result['plan_grads_gb']}, optimizer "
              f"{result['plan_opt_gb']}, activations {result['plan_act_gb']}, update {result['plan_update_gb']})")
        if args.chip:
            print(f"on {result['devices']} x {result['chip']} ({result['chip_memory_gb']} GB each): "
                  f"{'fits' if result['plan_fits'] else 'does NOT fit'}; projected {result['projected_step_s']} s/step, "
                  f"{result['projected_tokens_per_s_per_device']:,} tok/s/device at {result['assume_mfu']:.0%} MFU")
        print(json.dumps(result))
        return 0
    if args.compile_only:
        result = compile_only(args)
        print(f"{args.shape} ({result['layers']} layers) {result['rows']}x{result['seq']} on mesh {result['mesh']}, "
              f"attention {result['attention']}: compiled in {result['compile_s']} s; XLA arguments + temporaries "
              f"{result['xla_args_plus_temp_gb']} GB per device, planned {result['plan_total_gb']} GB")
        print(json.dumps(result))
        return 0
    result = run(args)
    mfu = "n/a" if result["mfu"] is None else f"{result['mfu']:.1%}"
    print(f"{args.shape} batch {args.batch_size}x{args.seq_len} on {result['devices']} x {result['card']}: "
          f"{result['step_time_s'] * 1e3:.1f} ms/step | {result['tokens_per_s_per_device']:,} tok/s/dev | "
          f"{result['tflops_per_device']} TFLOP/s/dev | MFU {mfu} | peak {result['peak_mem_gb']} GB | "
          f"compile {result['compile_s']} s | loss {result['loss']:.3f}")
    if args.jsonl and jax.process_index() == 0:  # on a pod every worker ran the step; one writes the row
        paths.append_jsonl(args.jsonl, result)  # a gs:// path works: a pod's row lands in the bucket
    print(json.dumps(result))
    return 0
