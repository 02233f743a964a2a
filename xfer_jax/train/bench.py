"""`xfer bench`: time the real train step (the one `xfer train` runs) on synthetic tokens.

Prints step time, tokens/s per device, TFLOP/s per device, MFU (formula in xfer_jax/train/metrics.py) and
peak memory, and appends one JSON object to a JSONL file (docs/benchmarks.jsonl by default) in the schema the
peer scripts use, so the comparison table can be regenerated.

    xfer bench --shape tinyllama_1b --batch 8 --seq 2048 --attention cudnn --dtype bfloat16
"""
import argparse
import datetime
import json
import pathlib
import statistics
import sys
import time

import jax
import numpy as np
from jax.sharding import NamedSharding

from xfer_jax.errors import run_verb
from xfer_jax.model import params as model_params
from xfer_jax.model.shapes import SHAPES, get_shape
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.parallel import rules as rules_lib
from xfer_jax.parallel.sharding import init_sharded, param_shardings
from xfer_jax.train import lora_setup, metrics, optim, state as state_lib, step as step_lib


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xfer bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    p.add_argument("--vocab_size", type=int, default=32000)
    p.add_argument("--batch", type=int, default=8, help="rows per device")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--mesh", default="fsdp=-1", help="e.g. data=1,fsdp=-1,tensor=1")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--param_dtype", default="float32")
    p.add_argument("--remat", default="none")
    p.add_argument("--no_scan", action="store_true", help="unroll the layers instead of lax.scan")
    p.add_argument("--no_fuse", action="store_true", help="separate q/k/v and gate/up GEMMs (fuse_projections off)")
    p.add_argument("--attention", default="xla")
    p.add_argument("--loss_chunk", type=int, default=0)
    p.add_argument("--moment_dtype", default="float32", help="AdamW first-moment dtype")
    p.add_argument("--packed", type=int, default=0, help="documents per row (segment ids); 0: one causal sequence")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--jsonl", default="docs/benchmarks.jsonl", help="append the result here ('' to skip)")
    p.add_argument("--notes", default="")
    p.add_argument("--profile", default="", help="write a Perfetto trace of 3 timed steps to this directory")
    return p


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


def time_train_step(cfg, mesh, host_batch: dict, *, optim_cfg, rules=None, grad_accum: int = 1, loss_chunk: int = 0,
                    warmup: int = 3, steps: int = 10, profile: str = "", trainable: tuple[str, ...] = ()) -> dict:
    """Build the trainer's state and compiled step on `mesh` exactly as `xfer train` does (parameters matching
    `trainable` train, all when empty; LoRA dropout on), then time `steps` steps after `warmup` on one fixed
    batch. Shared by `xfer bench`, `xfer sweep` and tools/bench_lora.py."""
    rules = tuple(rules or rules_lib.DEFAULT_RULES)
    abstract = model_params.abstract_params(cfg)
    mask = optim.trainable_mask(abstract, list(trainable), [])
    total = warmup + steps
    tx = optim.make_optimizer(optim_cfg, total, optim.split_trainable(abstract, mask)[0])
    shardings = state_lib.state_shardings(param_shardings(cfg, mesh, rules), abstract, tx, mask, mesh)
    sizes = lora_setup.state_report(state_lib.abstract_state(abstract, tx, mask, shardings), mask)
    rows, seq = host_batch["tokens"].shape
    batch_sharding = NamedSharding(mesh, rules_lib.spec_for(("batch", "seq"), (rows, seq), dict(mesh.shape), rules))
    with jax.set_mesh(mesh), rules_lib.use_rules(rules):
        state = jax.jit(lambda p: state_lib.new_state(p, tx, mask), out_shardings=shardings)(
            init_sharded(cfg, mesh, 0, rules))
        batch = {k: jax.device_put(v, batch_sharding) for k, v in host_batch.items()}
        step = step_lib.compile_train_step(shardings, batch_sharding, cfg=cfg, tx=tx, mask=mask, accum=grad_accum,
                                           schedule=optim.learning_rate(optim_cfg, total), loss_chunk=loss_chunk,
                                           dropout_key=lora_setup.dropout_key(cfg, 0))
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
            "loss": float(m["loss"]), "memory": compiled.memory_analysis(), "sizes": sizes}


def run(args) -> dict:
    mesh = mesh_lib.make_mesh(mesh_lib.parse_axis_sizes(args.mesh))
    cfg = get_shape(args.shape, vocab_size=args.vocab_size, dtype=args.dtype, param_dtype=args.param_dtype,
                    remat=args.remat, attention=args.attention, max_position_embeddings=max(args.seq, 2048),
                    scan_layers=not args.no_scan, fuse_projections=not args.no_fuse)
    rows = args.batch * mesh.size
    optim_cfg = optim.default_optim_config()
    optim_cfg.moment_dtype = args.moment_dtype
    timing = time_train_step(cfg, mesh, synthetic_batch(rows, args.seq, cfg.vocab_size, args.packed),
                             optim_cfg=optim_cfg, loss_chunk=args.loss_chunk, warmup=args.warmup, steps=args.steps,
                             profile=args.profile)
    seconds = timing["step_s"]
    fig = metrics.throughput(cfg, args.seq, rows * args.seq, seconds, mesh.size)
    mem = metrics.memory_gb()
    device = jax.devices()[0]
    return {
        "system": "ours", "shape": args.shape, "card": device.device_kind, "devices": mesh.size, "batch": args.batch,
        "seq": args.seq, "tokens_per_s_per_device": round(fig["tokens_per_s_per_device"]),
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


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return run_verb("xfer bench", lambda: report(args))


def report(args) -> int:
    """Run the benchmark, print its line and JSON, append it to --jsonl."""
    result = run(args)
    mfu = "n/a" if result["mfu"] is None else f"{result['mfu']:.1%}"
    print(f"{args.shape} batch {args.batch}x{args.seq} on {result['devices']} x {result['card']}: "
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
