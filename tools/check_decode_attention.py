"""The one-kernel decoding attention (xfer_jax/model/decode_attention.py) against XLA's `cached_attention` on the
device at hand, in bf16 at real shapes, with its time per call. On GPU this checks the Triton-compiled kernel that
the CPU suite can only run through Pallas' interpreter.

    python3 tools/check_decode_attention.py
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from xfer_jax.model.attention import cache_visibility, cached_attention
from xfer_jax.model.decode_attention import decode_attention
from xfer_jax.model.config import LlamaConfig
from xfer_jax.model.llama import apply_rope, rope_frequencies, rope_tables

# batch, heads, kv heads, head size, cache slots, layers, the new token's slot
CASES = [(1, 32, 32, 128, 384, 4, 200), (4, 32, 4, 64, 2064, 2, 1500), (2, 32, 32, 128, 400, 2, 399)]


def check(batch, heads, kv_heads, head_dim, slots, layers, index, layer=1):
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    group = heads // kv_heads
    q = jax.random.normal(kq, (batch, 1, heads, head_dim), jnp.bfloat16)
    k_all = jax.random.normal(kk, (layers, batch, slots, kv_heads, head_dim), jnp.bfloat16)
    v_all = jax.random.normal(kv, (layers, batch, slots, kv_heads, head_dim), jnp.bfloat16)
    valid = np.zeros((batch, slots), bool)
    valid[:, 5:index + 1], valid[0, :index + 1] = True, True  # rows after the first are left-padded
    valid = jnp.asarray(valid)
    visible = cache_visibility(index, valid, 1)[:, 0].astype(jnp.int32)
    inv_freq = rope_frequencies(LlamaConfig(hidden_size=heads * head_dim, num_heads=heads, num_kv_heads=kv_heads))
    cos, sin = rope_tables(jnp.full((batch, 1), index), inv_freq)
    fused = jnp.concatenate([q.reshape(batch, 1, kv_heads, group, head_dim),
                             jnp.zeros((batch, 1, kv_heads, 2, head_dim), q.dtype)], axis=3)
    ones = jnp.ones((batch,), jnp.float32)
    kernel = jax.jit(lambda *a: decode_attention(a[0], group, ones, *a[1:], layer, visible))
    args = (fused, cos, sin, k_all, v_all)
    out = kernel(*args).astype(jnp.float32)
    ref = cached_attention(apply_rope(q.astype(jnp.float32), cos, sin), k_all[layer].astype(jnp.float32),
                           v_all[layer].astype(jnp.float32), index, valid)
    kernel(*args).block_until_ready()
    start = time.perf_counter()
    for _ in range(100):
        result = kernel(*args)
    result.block_until_ready()
    per_call = (time.perf_counter() - start) / 100
    print(f"batch {batch}, heads {heads}/{kv_heads}, head {head_dim}, {slots} slots: max |error| "
          f"{float(jnp.abs(out - ref).max()):.2e} (outputs up to {float(jnp.abs(ref).max()):.2f}), "
          f"{per_call * 1e6:.1f} µs a call with dispatch")


if __name__ == "__main__":
    print(jax.devices()[0].device_kind)
    for case in CASES:
        check(*case)
