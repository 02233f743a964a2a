"""LoRA vs full fine-tuning on synthetic tokens: step time, tokens/s, peak memory, what trains, optimizer state.

    python tools/bench_lora.py --shape llama2_7b --mode lora --param_dtype bfloat16 --batch_size 1 --seq_len 2048 --remat full
    python tools/bench_lora.py --shape llama2_7b --mode full --param_dtype bfloat16 --moment_dtype bfloat16 ...

One mode per process, so the peak memory the device reports belongs to that mode alone. It builds the
trainer's own state and compiled step (train/setup.py: the optimizer over trained parameters only, LoRA
dropout included) on random weights, times `--steps` steps after `--warmup`, and
prints one line plus a JSON record. Modes: full (everything trains), lora (adapters only; a bf16
`--param_dtype` gives the frozen-bf16-base / fp32-adapter set-up), lora_embed (+ embed_tokens, lm_head).
MFU uses the trainer's full-training FLOP formula; a frozen base skips its weight gradients (~1/3 of them).
"""
import argparse
import json

import jax

from xfer_jax.cli_args import add_flag
from xfer_jax.model.config import LORA_TARGETS
from xfer_jax.model.shapes import SHAPES, get_shape
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.parallel.placement import Placement
from xfer_jax.perf import bench
from xfer_jax.train import metrics

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
    add_flag(p, "--batch_size", "--batch", type=int, default=1, help="rows per device")
    add_flag(p, "--seq_len", "--seq", type=int, default=2048)
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
                     remat=args.remat, attention=args.attention, max_position_embeddings=max(args.seq_len, 2048), **lora)


def run(args) -> dict:
    mesh = mesh_lib.make_mesh(mesh_lib.parse_axis_sizes(args.mesh))
    cfg = model_config(args)
    optim_cfg = bench.optim_config(args)
    rows = args.batch_size * mesh.size
    timing = bench.time_train_step(cfg, Placement(mesh), bench.synthetic_batch(rows, args.seq_len, cfg.vocab_size, 0),
                                   optim_cfg=optim_cfg, loss_chunk=args.loss_chunk, warmup=args.warmup,
                                   steps=args.steps, trainable=tuple(TRAINABLE[args.mode]))
    seconds, memory = timing["step_s"], timing["memory"]
    return {
        "shape": args.shape, "mode": args.mode, "rank": 0 if args.mode == "full" else args.rank,
        "param_dtype": args.param_dtype, "dtype": args.dtype, "remat": args.remat, "batch_per_device": args.batch_size,
        "seq": args.seq_len, "devices": mesh.size, "device_kind": jax.devices()[0].device_kind,
        "compile_s": timing["compile_s"], "step_s": seconds, "loss": timing["loss"], **timing["sizes"],
        **metrics.throughput(cfg, args.seq_len, rows * args.seq_len, seconds, mesh.size), **metrics.memory_gb(),
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
