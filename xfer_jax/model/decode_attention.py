"""A decoding step's attention as one GPU kernel (Pallas on Triton) plus a small join.

At batch 1 a decoding step is bound by reading the weights, and XLA spent about 19 µs a layer of the LLaMA-2-7B
shape on attention: the query's RoPE and six small kernels (scores, max, exp, sum, weighting, reduction), each
paying a launch and a ramp-up. Here one program per (row, kv head, chunk of cache slots) rotates its query heads,
reads that chunk of the layer's keys and values straight from the stacked cache [L, B, S, K, D], and writes the
chunk's softmax statistics; XLA then joins the chunks (flash-decoding's split). About 7 µs + 2 µs a layer on an
H200 (docs/benchmarks.md). Chunks rather than one program per head, because one head's slots are too few bytes
to keep the memory system busy from a single SM (that version took 24 µs).

Only for one new token per row (T = 1); the prompt's prefill keeps `attention.cached_attention`. Off GPU it runs
in Pallas' interpreter (slow; for tests).
"""
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

_NEG = -1e30  # finite "minus infinity": a chunk with no visible slot gets weight exp(_NEG - max) = 0, not NaN


def _chunk(slots: int, group: int, head_dim: int) -> int:
    """Cache slots per program: a power of two dividing `slots`, at most 32, and small enough that the
    [group, chunk, head_dim] products stay in registers. Small chunks make many programs, so the whole GPU
    reads; on an H200 (LLaMA-2-7B shape, 384 slots) chunks of 16/32/64/128 gave 71.8/71.6/68.7/68.9% of the
    bandwidth limit for the whole decoding step."""
    chunk = 32
    while chunk > 1 and (slots % chunk or group * chunk * head_dim > 16384):
        chunk //= 2
    return chunk


def _kernel(q_ref, q_scale_ref, cos_ref, sin_ref, k_ref, v_ref, mask_ref, top_ref, total_ref, acc_ref, *,
            layer: int, group: int, chunk: int, scale: float):
    """One (row, kv head, chunk of slots): softmax statistics and weighted values of that chunk. The query heads
    come un-rotated and get RoPE here, by halves (rotate-half: lo' = lo·cos − hi·sin, hi' = hi·cos + lo·sin)."""
    row, head, part = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    half = k_ref.shape[-1] // 2
    lo, hi, heads = pl.ds(0, half), pl.ds(half, half), pl.ds(0, group)
    slots = pl.ds(pl.multiple_of(part * chunk, chunk), chunk)
    cos, sin = cos_ref[row, :][None, :], sin_ref[row, :][None, :]  # [1, D/2]
    q_lo, q_hi = q_ref[row, 0, head, heads, lo].astype(jnp.float32), q_ref[row, 0, head, heads, hi].astype(jnp.float32)
    scale = scale * q_scale_ref[row]
    q_lo, q_hi = (q_lo * cos - q_hi * sin) * scale, (q_hi * cos + q_lo * sin) * scale  # [G, D/2]
    k_lo = k_ref[layer, row, slots, head, lo].astype(jnp.float32)  # [chunk, D/2]
    k_hi = k_ref[layer, row, slots, head, hi].astype(jnp.float32)
    v = v_ref[layer, row, slots, head, :].astype(jnp.float32)  # [chunk, D]
    scores = (jnp.sum(q_lo[:, None, :] * k_lo[None, :, :], axis=-1)
              + jnp.sum(q_hi[:, None, :] * k_hi[None, :, :], axis=-1))  # [G, chunk]
    scores = jnp.where(mask_ref[row, slots][None, :] != 0, scores, _NEG)
    top = jnp.max(scores, axis=-1)
    weights = jnp.exp(scores - top[:, None])
    top_ref[row, head, part] = top
    total_ref[row, head, part] = jnp.sum(weights, axis=-1)
    acc_ref[row, head, part] = jnp.sum(weights[:, :, None] * v[None, :, :], axis=1)


def supported(new_tokens: int, cfg) -> bool:
    """Whether the kernel takes this step: one new token a row, power-of-two head groups and head size (Triton's
    block shapes)."""
    group, head_dim = cfg.num_heads // cfg.num_kv_heads, cfg.head_dim
    return new_tokens == 1 and group & (group - 1) == 0 and head_dim & (head_dim - 1) == 0


def decode_attention(queries: jax.Array, group: int, q_scale: jax.Array, cos: jax.Array, sin: jax.Array,
                     k_all: jax.Array, v_all: jax.Array, layer: int, visible: jax.Array) -> jax.Array:
    """Attention of one new token a row, RoPE on the queries included.

    queries [B, 1, K, ≥G, D]: each kv head's `group` query heads *before* RoPE, first along axis 3 — the fused q/k/v
    projection's output as it is (its key and value rows after them are not read), so no copy is made;
    q_scale [B] multiplies each row's queries (the RMSNorm factor when the norm weights are folded, `fold_norms`);
    cos, sin [B, 1, D] the new token's rotary tables (`llama.rope_tables`: the model's own frequencies, plain or
    llama3-scaled; the kernel reads their first halves and computes none itself);
    k_all, v_all the whole cache [L, B, S, K, D];
    `visible` [B, S] int32, nonzero where the new token may attend (filled, valid slots up to its own).
    Returns [B, 1, H, D] like `cached_attention` on RoPE'd queries."""
    batch, kv_heads, head_dim = queries.shape[0], k_all.shape[3], k_all.shape[4]
    slots = k_all.shape[2]
    chunk = _chunk(slots, group, head_dim)
    parts = slots // chunk
    stats = jax.ShapeDtypeStruct((batch, kv_heads, parts, group), jnp.float32)
    top, total, acc = pl.pallas_call(
        functools.partial(_kernel, layer=layer, group=group, chunk=chunk, scale=head_dim ** -0.5),
        out_shape=(stats, stats, jax.ShapeDtypeStruct((batch, kv_heads, parts, group, head_dim), jnp.float32)),
        grid=(batch, kv_heads, parts), interpret=jax.default_backend() != "gpu",
        compiler_params=pltriton.CompilerParams(num_warps=4, num_stages=1),
    )(queries, q_scale.astype(jnp.float32), cos[:, 0, : head_dim // 2], sin[:, 0, : head_dim // 2], k_all, v_all, visible)
    weight = jnp.exp(top - top.max(axis=2, keepdims=True))  # the chunks' softmaxes joined
    out = (weight[..., None] * acc).sum(2) / (weight * total).sum(2)[..., None]
    return out.astype(queries.dtype).reshape(batch, 1, kv_heads * group, head_dim)
