"""Causal, segment-aware grouped-query attention.

Packed rows hold several documents; `segment_ids` (0 = padding, 1.. = document) keep every query inside its
own document. `IMPLS` maps the config's `attention` name to a kernel with one signature, so faster kernels
(cuDNN, Pallas) slot in beside the `xla` reference, which materialises the [T, S] scores: exact and simple,
for tests and small runs, never for long-sequence training.
"""
import jax
import jax.numpy as jnp


def attention_mask(segment_ids: jax.Array | None, q_len: int, kv_len: int) -> jax.Array:
    """Boolean [B|1, 1, T, S]: query t sees key s iff s <= t (aligned at the end) and both share a segment."""
    causal = jnp.arange(q_len)[:, None] + (kv_len - q_len) >= jnp.arange(kv_len)[None, :]
    mask = causal[None, None]
    if segment_ids is not None:
        q_seg = segment_ids[:, -q_len:]
        same = q_seg[:, :, None] == segment_ids[:, None, :]
        mask = mask & same[:, None]
    return mask


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """q [B, T, H, D]; k, v [B, S, K, D] with H a multiple of K; mask [B|1, 1, T, S]; returns [B, T, H, D]."""
    b, t, h, d = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, h // kv_heads, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(d).astype(jnp.float32)
    scores = jnp.where(mask[:, :, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


def xla_attention(q, k, v, segment_ids):
    return masked_attention(q, k, v, attention_mask(segment_ids, q.shape[1], k.shape[1]))


def cache_visibility(index, valid: jax.Array, new_tokens: int) -> jax.Array:
    """Boolean [B, T, S] over a KV cache of S slots: new token t (at slot index + t) sees the filled, valid slots
    s <= index + t."""
    causal = jnp.arange(valid.shape[1])[None, :] <= index + jnp.arange(new_tokens)[:, None]
    return causal[None] & valid[:, None, :]


def cached_attention(q, k_cache, v_cache, index, valid):
    """Decoding against a KV cache: the new tokens q [B, T, H, D] attend as `cache_visibility` says."""
    return masked_attention(q, k_cache, v_cache, cache_visibility(index, valid, q.shape[1])[:, None])


def cudnn_attention(q, k, v, segment_ids):
    """cuDNN's fused flash attention (GPU only): causal, plus a dense same-segment mask for packed rows."""
    mask = None if segment_ids is None else (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True, implementation="cudnn")


IMPLS = {"xla": xla_attention, "cudnn": cudnn_attention}


def attention(q, k, v, segment_ids, impl: str = "xla"):
    if impl not in IMPLS:
        raise ValueError(f"attention implementation {impl!r} is not available; choose one of {sorted(IMPLS)}")
    return IMPLS[impl](q, k, v, segment_ids)
