"""Causal, segment-aware grouped-query attention.

Packed rows hold several documents; `segment_ids` (0 = padding, 1.. = document) keep every query inside its
own document. `IMPLS` maps the config's `attention` name to a kernel with one signature, so faster kernels
(cuDNN, Pallas) slot in beside the `xla` reference, which materialises the [T, S] scores: exact and simple,
for tests and small runs, never for long-sequence training. `splash` is the Pallas TPU kernel
(model/splash_attention.py); `auto` picks by backend (`resolve`).
"""
import logging

import jax
import jax.numpy as jnp

from xfer_jax.model import splash_attention as splash


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


_FELL_BACK: set = set()  # (q shape, k shape, block) already logged as sent to the reference


def splash_attention(q, k, v, segment_ids, block_size: int = splash.DEFAULT_BLOCK):
    """The Pallas splash kernel (model/splash_attention.py); a shape it cannot serve runs the `xla` reference,
    logged once per shape."""
    reason = splash.unsupported(q.shape, k.shape, block_size)
    if reason is None:
        return splash.splash_attention(q, k, v, segment_ids, block_size=block_size)
    key = (tuple(q.shape), tuple(k.shape), block_size)
    if key not in _FELL_BACK:
        _FELL_BACK.add(key)
        logging.getLogger(__name__).warning("attention='splash': %s; q %s, k %s run the xla reference instead",
                                            reason, tuple(q.shape), tuple(k.shape))
    return xla_attention(q, k, v, segment_ids)


IMPLS = {"xla": xla_attention, "cudnn": cudnn_attention, "splash": splash_attention}
AUTO = {"gpu": "cudnn", "tpu": "splash"}  # attention="auto" by backend; anything else (CPU) takes "xla"


def resolve(impl: str, backend: str | None = None) -> str:
    """The kernel a config's `attention` names: "auto" → cuDNN on GPU, splash on TPU, xla elsewhere."""
    if impl != "auto":
        return impl
    return AUTO.get(backend or jax.default_backend(), "xla")


def attention(q, k, v, segment_ids, impl: str = "xla", *, block_size: int = splash.DEFAULT_BLOCK):
    """`block_size`: the splash kernel's q/kv tile (capped to the sequence); the other kernels ignore it."""
    impl = resolve(impl)
    if impl not in IMPLS:
        raise ValueError(f"attention implementation {impl!r} is not available; choose one of {sorted(IMPLS)}")
    if impl == "splash":
        return splash_attention(q, k, v, segment_ids, block_size)
    return IMPLS[impl](q, k, v, segment_ids)
