"""LoRA vs full fine-tuning on synthetic tokens: step time, tokens/s, peak memory, what trains, optimizer state.

    python tools/bench_lora.py --shape llama2_7b --mode lora --param_dtype bfloat16 --batch 1 --seq 2048 --remat full
    python tools/bench_lora.py --shape llama2_7b --mode full --param_dtype bfloat16 --moment_dtype bfloat16 ...

One mode per process, so the peak memory the device reports belongs to that mode alone. It builds the
trainer's own state (train/state.py, the optimizer over trained parameters only) and compiled step
(train/step.py, LoRA dropout included) on random weights, times `--steps` steps after `--warmup`, and
prints one line plus a JSON record. Modes: full (everything trains), lora (adapters only; a bf16
`--param_dtype` gives the frozen-bf16-base / fp32-adapter set-up), lora_embed (+ embed_tokens, lm_head).
MFU uses the trainer's full-training FLOP formula; a frozen base skips its weight gradients (~1/3 of them).
"""
import argparse
import json
import statistics
import time

import jax
import numpy as np
from jax.sharding import NamedSharding

from xfer_jax.data.pipeline import to_device
from xfer_jax.model import params as model_params
from xfer_jax.model.config import LORA_TARGETS
from xfer_jax.model.shapes import SHAPES, get_shape
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.parallel import rules as rules_lib
from xfer_jax.parallel.sharding import init_sharded, param_shardings
from xfer_jax.train import lora_setup, metrics, optim, state as state_lib, step as step_lib

TRAINABLE = {"full": [], "lora": [r"_lora_[ab]$"], "lora_embed": [r"_lora_[ab]$", "^embed_tokens$", "^lm_head$"]}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    p.add_argument("--vocab_size", type=int, default=32000)
    p.add_argument("--mode", default="lora", choices=sorted(TRAINABLE))
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--targets", default=",".join(LORA_TARGETS))
    p.add_argument("--batch", type=int, default=1, help="rows per device")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--mesh", default="fsdp=-1", help="e.g. data=1,fsdp=-1,tensor=1")
    p.add_argument("--dtype", default="bfloat16", help="compute dtype")
    p.add_argument("--param_dtype", default="float32", help="dtype of the stored weights (the frozen base for LoRA)")
    p.add_argument("--moment_dtype", default="float32", help="AdamW first-moment dtype")
    p.add_argument("--remat", default="none")
    p.add_argument("--attention", default="xla")
    p.add_argument("--loss_chunk", type=int, default=0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    return p


def model_config(args):
    lora = {} if args.mode == "full" else dict(lora_rank=args.rank, lora_alpha=args.alpha, lora_dropout=args.dropout,
                                               lora_targets=tuple(args.targets.split(",")))
    return get_shape(args.shape, vocab_size=args.vocab_size, dtype=args.dtype, param_dtype=args.param_dtype,
                     remat=args.remat, attention=args.attention, max_position_embeddings=max(args.seq, 2048), **lora)


def synthetic_batch(rows: int, seq: int, vocab: int) -> dict:
    tokens = np.random.default_rng(0).integers(0, vocab, size=(rows, seq), dtype=np.int32)
    return {"tokens": tokens, "targets": np.roll(tokens, -1, axis=1), "segment_ids": np.ones_like(tokens),
            "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), tokens.shape).copy(),
            "loss_weights": np.ones(tokens.shape, np.float32), "lang": np.zeros_like(tokens)}


def run(args) -> dict:
    mesh = mesh_lib.make_mesh({k: int(v) for k, v in (kv.split("=") for kv in args.mesh.split(",") if kv)})
    cfg = model_config(args)
    abstract = model_params.abstract_params(cfg)
    mask = optim.trainable_mask(abstract, TRAINABLE[args.mode], [])
    optim_cfg = optim.default_optim_config()
    optim_cfg.moment_dtype = args.moment_dtype
    tx = optim.make_optimizer(optim_cfg, 1000, optim.split_trainable(abstract, mask)[0])
    shardings = state_lib.state_shardings(param_shardings(cfg, mesh), abstract, tx, mask, mesh)
    sizes = lora_setup.state_report(state_lib.abstract_state(abstract, tx, mask, shardings), mask)
    rows = args.batch * mesh.size
    batch_sharding = NamedSharding(mesh, rules_lib.spec_for(("batch", "seq"), (rows, args.seq), dict(mesh.shape)))
    with jax.set_mesh(mesh), rules_lib.use_rules(rules_lib.DEFAULT_RULES):
        params = init_sharded(cfg, mesh, seed=0)
        state = jax.jit(lambda p: state_lib.new_state(p, tx, mask), out_shardings=shardings, donate_argnums=0)(params)
        batch = to_device(synthetic_batch(rows, args.seq, cfg.vocab_size), batch_sharding)
        step = step_lib.compile_train_step(shardings, batch_sharding, cfg=cfg, tx=tx, mask=mask,
                                           schedule=optim.learning_rate(optim_cfg, 1000), loss_chunk=args.loss_chunk,
                                           dropout_key=lora_setup.dropout_key(cfg, 0))
        start = time.perf_counter()
        compiled = step.lower(state, batch).compile()
        compile_s = time.perf_counter() - start
        times = []
        for i in range(args.warmup + args.steps):
            start = time.perf_counter()
            state, m = compiled(state, batch)
            loss = float(m["loss"])
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    memory = compiled.memory_analysis()
    return {
        "shape": args.shape, "mode": args.mode, "rank": 0 if args.mode == "full" else args.rank,
        "param_dtype": args.param_dtype, "dtype": args.dtype, "remat": args.remat, "batch_per_device": args.batch,
        "seq": args.seq, "devices": mesh.size, "device_kind": jax.devices()[0].device_kind, "compile_s": compile_s,
        "step_s": seconds, "loss": loss, **sizes,
        **metrics.throughput(cfg, args.seq, rows * args.seq, seconds, mesh.size), **metrics.memory_gb(),
        "compiled_temp_gb": None if memory is None else memory.temp_size_in_bytes / 1e9,
    }


def main() -> None:
    r = run(parser().parse_args())
    mem = r.get("peak_mem_gb", r.get("host_rss_gb"))
    print(f"{r['shape']} {r['mode']} (rank {r['rank']}, params {r['param_dtype']}): {r['step_s'] * 1e3:.1f} ms/step, "
          f"{r['tokens_per_s']:,.0f} tok/s, peak memory {mem:.2f} GB, trained {r['trainable_params']:,} of "
          f"{r['params']:,}, optimizer state {r['opt_state_bytes'] / 1e9:.3f} GB")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
