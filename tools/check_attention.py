"""Check a fast attention kernel against the fp32 `xla` reference on packed, GQA inputs (run it on a GPU).

    python tools/check_attention.py --impl cudnn
    python tools/check_attention.py --impl cudnn --max_segments 16 --docs 16 --pad 100   # cuDNN's packed layout

Prints relative errors ‖fast − ref‖/‖ref‖ of the output and of dq/dk/dv, and forward+backward times, then
exits non-zero if an error exceeds --tol (bf16 operands land between 1e-3 and 1e-2).
"""
import argparse
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from xfer_jax.model.attention import IMPLS, cudnn_attention


def packed_segments(rng, batch, seq, docs, pad=0):
    """Rows of `docs` documents (ids 1.., in order), the last `pad` positions of odd rows padding (id 0)."""
    rows = []
    for r in range(batch):
        bounds = np.sort(rng.choice(np.arange(1, seq), size=docs - 1, replace=False))
        row = np.searchsorted(bounds, np.arange(seq), side="right") + 1
        if r % 2 and pad:
            row[-pad:] = 0
        rows.append(row)
    return jnp.asarray(np.stack(rows), jnp.int32)


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--impl", default="cudnn")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv_heads", type=int, default=4)
    p.add_argument("--head_dim", type=int, default=64)
    p.add_argument("--docs", type=int, default=4)
    p.add_argument("--pad", type=int, default=0, help="padding positions at the end of every other packed row")
    p.add_argument("--max_segments", type=int, default=0, help="cudnn: the packed layout for rows of <= this many")
    p.add_argument("--tol", type=float, default=1e-2)
    a = p.parse_args(argv)
    impls = dict(IMPLS)
    if a.max_segments:
        impls["cudnn"] = functools.partial(cudnn_attention, max_segments=a.max_segments)
    rng = np.random.default_rng(0)
    shape_q, shape_kv = (a.batch, a.seq, a.heads, a.head_dim), (a.batch, a.seq, a.kv_heads, a.head_dim)
    q, k, v, dout = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in (shape_q, shape_kv, shape_kv, shape_q))
    failed = False
    for segments in (None, packed_segments(rng, a.batch, a.seq, a.docs, a.pad)):
        weight = 1.0 if segments is None else (segments > 0)[:, :, None, None].astype(jnp.float32)
        # Every array is an argument, never a closed-over constant (XLA would constant-fold it for minutes).
        def loss(impl, dtype):
            return lambda q, k, v, seg, dout: jnp.sum(  # padding rows' outputs are never used (loss weight 0)
                impls[impl](q.astype(dtype), k.astype(dtype), v.astype(dtype), seg).astype(jnp.float32) * dout * weight)

        def out(impl, dtype):
            return jax.jit(lambda q, k, v, seg: impls[impl](q.astype(dtype), k.astype(dtype), v.astype(dtype), seg)
                           * weight)

        args = (q, k, v, segments, dout)
        ref_out, fast_out = out("xla", jnp.float32)(*args[:4]), out(a.impl, jnp.bfloat16)(*args[:4])
        ref_g = jax.jit(jax.grad(loss("xla", jnp.float32), argnums=(0, 1, 2)))(*args)
        fast_g = jax.jit(jax.grad(loss(a.impl, jnp.bfloat16), argnums=(0, 1, 2)))(*args)
        rel = lambda x, y: float(jnp.linalg.norm(x.astype(jnp.float32) - y) / jnp.linalg.norm(y))  # noqa: E731
        errors = {"out": rel(fast_out, ref_out), **{f"d{n}": rel(f, r) for n, f, r in zip("qkv", fast_g, ref_g)}}
        timings = {}
        for name, fn in (("xla-bf16", jax.jit(jax.grad(loss("xla", jnp.bfloat16), argnums=(0, 1, 2)))),
                         (a.impl, jax.jit(jax.grad(loss(a.impl, jnp.bfloat16), argnums=(0, 1, 2))))):
            jax.block_until_ready(fn(*args))
            t0 = time.perf_counter()
            for _ in range(10):
                grads = fn(*args)
            jax.block_until_ready(grads)
            timings[name] = (time.perf_counter() - t0) / 10 * 1e3
        kind = "causal" if segments is None else f"causal + {a.docs} packed documents per row, pad {a.pad}"
        if a.max_segments and segments is not None:
            kind += f", packed layout (max_segments {a.max_segments})"
        print(f"{a.impl} vs fp32 xla ({kind}): " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
              + " | fwd+bwd ms: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
        failed |= any(not (e <= a.tol) for e in errors.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
