"""Batch-1 greedy decoding speed of a model shape, as a share of the memory-bandwidth limit.

At batch 1 a decoding step is a matrix-vector product per weight matrix: every weight is read once per new
token, and so is the KV cache, while the arithmetic is negligible. The fastest possible step therefore takes
(bytes read per step) ÷ (HBM bandwidth); this script times the compiled one-token step that `xfer eval generate`
uses (xfer_jax.eval.generate.Generator, random weights, no checkpoint needed) and reports tokens/s and the
share of that limit it reaches.

Bytes per step: every parameter except the input embedding (one row of it is read; a tied embedding is read
whole as the LM head), plus the whole allocated KV cache (the step attends over all its slots, masked).

    python tools/bench_decode.py --shape llama2_7b                      # GPU: bf16, bandwidth from the device
    python tools/bench_decode.py --shape tiny --dtype float32 --bandwidth_tbs 0.02 --new_tokens 32   # CPU smoke
"""
import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from xfer_jax.eval.generate import Generator
from xfer_jax.eval.sampling import Sampling
from xfer_jax.forward import LoadedModel
from xfer_jax.model import params as model_params
from xfer_jax.model.config import DECODE_ATTENTION_IMPLS
from xfer_jax.model.shapes import SHAPES, get_shape

# HBM bandwidth (TB/s) by device_kind substring, most specific first (NVIDIA data sheets, SXM unless named).
BANDWIDTH_TBS = (("H200", 4.8), ("H100 PCIe", 2.0), ("H100 NVL", 3.9), ("H100", 3.35), ("A100", 2.0))


def default_bandwidth(device_kind: str) -> float | None:
    return next((tbs for name, tbs in BANDWIDTH_TBS if name in device_kind), None)


def random_params(cfg) -> dict:
    """Random normal weights (norms at 1) made on the device. Values do not change the speed; RBG keys compile
    several times faster than the default threefry ones, which matters on CPU."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(model_params.abstract_params(cfg))

    def make():
        return jax.tree.unflatten(tree, [
            jnp.ones(a.shape, a.dtype) if "norm" in jax.tree_util.keystr(path)
            else cfg.initializer_range * jax.random.normal(jax.random.key(i, impl="rbg"), a.shape, a.dtype)
            for i, (path, a) in enumerate(leaves)])

    return jax.jit(make)()


def bytes_per_step(cfg, params: dict, batch: int, cache_len: int) -> tuple[int, int]:
    """(weight bytes, KV-cache bytes) read by one decoding step."""
    weights = sum(leaf.nbytes for leaf in jax.tree.leaves(params))
    if not cfg.tie_word_embeddings:
        weights -= params["embed_tokens"].nbytes - params["embed_tokens"].nbytes // cfg.vocab_size
    itemsize = np.dtype(jax.numpy.dtype(cfg.dtype)).itemsize
    kv = 2 * cfg.num_layers * batch * cache_len * cfg.num_kv_heads * cfg.head_dim * itemsize
    return weights, kv


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="llama2_7b", choices=sorted(SHAPES))
    p.add_argument("--dtype", default="bfloat16", help="parameter and compute dtype")
    p.add_argument("--vocab_size", type=int, help="override the shape's vocabulary (e.g. 49953 for an extended one)")
    p.add_argument("--no_fuse", action="store_true", help="separate q/k/v and gate/up matrices (fuse_projections off)")
    p.add_argument("--decode_attention", default="auto", choices=("auto",) + DECODE_ATTENTION_IMPLS,
                   help="attention of a new token (auto: the Pallas kernel on one GPU, else XLA)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt_len", type=int, default=128)
    p.add_argument("--new_tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the fastest counts")
    p.add_argument("--bandwidth_tbs", type=float, help="HBM bandwidth in TB/s (default from the device kind: "
                   + ", ".join(f"{n} {b}" for n, b in BANDWIDTH_TBS) + ")")
    p.add_argument("--json", help="also write the result to this file")
    p.add_argument("--profile", help="write a Perfetto trace of 16 decoding steps to this directory "
                   "(summarise with tools/trace_summary.py DIR --steps 16 [--sequence 40])")
    args = p.parse_args(argv)

    device = jax.devices()[0]
    bandwidth = args.bandwidth_tbs or default_bandwidth(device.device_kind)
    overrides = {"vocab_size": args.vocab_size} if args.vocab_size else {}
    cfg = get_shape(args.shape, dtype=args.dtype, param_dtype=args.dtype, fuse_projections=not args.no_fuse, **overrides)
    params = random_params(cfg)
    weights, kv = bytes_per_step(cfg, params, args.batch, args.prompt_len + args.new_tokens)
    generator = Generator(LoadedModel(cfg, params), eos_id=-1, batch_size=args.batch,  # -1: never stops early
                          release_model=True, decode_attention=args.decode_attention)
    sampling = Sampling(max_new_tokens=args.new_tokens)
    prompts = [list(np.random.RandomState(i).randint(3, cfg.vocab_size, args.prompt_len)) for i in range(args.batch)]
    compile_s = generator.warm_up(args.prompt_len, sampling)

    prefill, per_step = [], []
    for repeat in range(args.repeats):
        t0 = time.perf_counter()
        state = generator.prefill(prompts, args.prompt_len, sampling, jax.random.PRNGKey(repeat))
        jax.block_until_ready(state["token"])
        t1 = time.perf_counter()
        for _ in range(args.new_tokens - 1):
            state = generator.step(state, sampling)
        jax.block_until_ready(state["token"])
        prefill.append(t1 - t0)
        per_step.append((time.perf_counter() - t1) / (args.new_tokens - 1))

    if args.profile:
        with jax.profiler.trace(args.profile, create_perfetto_trace=True):
            for _ in range(16):
                state = generator.step(state, sampling)
            jax.block_until_ready(state["token"])

    step_s = min(per_step)
    result = {
        "device": device.device_kind, "shape": args.shape, "fused": not args.no_fuse,
        "decode_attention": generator.cfg.decode_attention,
        "dtype": args.dtype, "parameters": cfg.num_params(),
        "batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "compile_s": compile_s,
        "prefill_s": min(prefill), "step_ms": step_s * 1e3, "tokens_per_s": args.batch / step_s,
        "weight_gb_per_step": weights / 1e9, "kv_gb_per_step": kv / 1e9, "bandwidth_tbs": bandwidth,
        "achieved_tbs": (weights + kv) / step_s / 1e12,
    }
    if bandwidth:
        limit_s = (weights + kv) / (bandwidth * 1e12)
        result.update(limit_step_ms=limit_s * 1e3, limit_tokens_per_s=args.batch / limit_s,
                      share_of_limit=limit_s / step_s,
                      share_of_limit_weights_only=weights / (bandwidth * 1e12) / step_s)
    print(f"{args.shape} ({cfg.num_params() / 1e6:,.1f}M params, {args.dtype}) on {device.device_kind}, batch "
          f"{args.batch}, prompt {args.prompt_len}, {args.new_tokens} new tokens, {generator.cfg.decode_attention} attention")
    print(f"  step {result['step_ms']:.3f} ms → {result['tokens_per_s']:.1f} tokens/s; reads "
          f"{result['weight_gb_per_step']:.3f} GB weights + {result['kv_gb_per_step']:.3f} GB KV per step "
          f"({result['achieved_tbs']:.3f} TB/s)")
    if bandwidth:
        print(f"  limit at {bandwidth} TB/s: {result['limit_step_ms']:.3f} ms/step → share of limit "
              f"{result['share_of_limit']:.1%} (weights only: {result['share_of_limit_weights_only']:.1%})")
    else:
        print(f"  no bandwidth known for {device.device_kind!r}: pass --bandwidth_tbs for the share of the limit")
    print(f"  prefill {result['prefill_s'] * 1e3:.1f} ms; compile {compile_s:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
