"""Causal, segment-aware grouped-query attention.

Packed rows hold several documents; `segment_ids` (0 = padding, 1.. = document) keep every query inside its
own document. `IMPLS` maps the config's `attention` name to a kernel with one signature, so faster kernels
(cuDNN, Pallas) slot in beside the `xla` reference, which materialises the [T, S] scores: exact and simple,
for tests and small runs, never for long-sequence training. `splash` is the Pallas TPU kernel
(model/splash_attention.py); `auto` (the default) picks by backend (`resolve`). `choose` is the one place that
decides which kernel serves a call: one that cannot (its shape or dtype limits) falls back to `xla`, logged.
"""
import functools
import logging
import math

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


def cudnn_attention(q, k, v, segment_ids, max_segments: int = 0):
    """cuDNN's fused flash attention (GPU only), causal. Packed rows: with `max_segments` > 0, cuDNN's packed
    (ragged) layout — each document a segment given by its offset and length, so no [T, S] mask is read and no
    cross-document tile is computed — for rows of at most that many segments (trailing padding counts as one; a
    row with more takes the dense path, chosen at run time); else a dense same-segment mask. Padding positions
    attend among themselves in both paths (the reference's rule: same segment id); their loss weight is 0."""
    if segment_ids is None:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
    dense = lambda q, k, v, seg: jax.nn.dot_product_attention(  # noqa: E731
        q, k, v, mask=(seg[:, :, None] == seg[:, None, :])[:, None], is_causal=True, implementation="cudnn")
    if not max_segments:
        return dense(q, k, v, segment_ids)
    filled = _pad_as_segment(segment_ids)  # the same mask: padding still sees only padding
    fits = jnp.max(filled) <= max_segments
    return jax.lax.cond(fits, functools.partial(_cudnn_packed, max_segments=max_segments), dense, q, k, v, filled)


def _pad_as_segment(segment_ids: jax.Array) -> jax.Array:
    """Padding (id 0, at the end of a row as the packer leaves it) as one more segment: every position then
    belongs to a segment, so cuDNN's backward never reads the statistics of a row it did not compute."""
    last = jnp.max(segment_ids, axis=1, keepdims=True)
    return jnp.where(segment_ids == 0, last + 1, segment_ids)


def segment_layout(segment_ids: jax.Array, max_segments: int) -> tuple[jax.Array, jax.Array]:
    """(lengths [B, M], offsets [B, M + 1]) of the segments 1..M of each row, -1 past a row's last one, as cuDNN's
    packed layout takes them. Segments must be contiguous and numbered in order (the packer's rows:
    data/packing.py); padding must come first through `_pad_as_segment`."""
    ids = jnp.arange(1, max_segments + 1, dtype=segment_ids.dtype)
    member = segment_ids[:, :, None] == ids  # [B, T, M]
    lengths = jnp.sum(member, axis=1, dtype=jnp.int32)
    starts = jnp.argmax(member, axis=1).astype(jnp.int32)
    present = lengths > 0
    offsets = jnp.where(present, starts, -1)
    pad = jnp.full((segment_ids.shape[0], 1), -1, jnp.int32)
    return jnp.where(present, lengths, -1), jnp.concatenate([offsets, pad], axis=1)


def _cudnn_packed(q, k, v, filled, *, max_segments: int):
    """`filled`: segment ids with the padding as a segment (`_pad_as_segment`)."""
    from jax._src.cudnn import fused_attention_stablehlo as cudnn  # the packed layout is not in jax.nn yet

    lengths, offsets = segment_layout(filled, max_segments)
    out = cudnn.dot_product_attention(q, k, v, None, None, lengths, lengths, offsets, offsets,
                                      scale=1.0 / math.sqrt(q.shape[-1]), mask_type=cudnn.MaskType.PADDING_CAUSAL)
    return out.astype(q.dtype)


def splash_attention(q, k, v, segment_ids, block_size: int = splash.DEFAULT_BLOCK):
    """The Pallas splash kernel (model/splash_attention.py); shapes must pass `splash.unsupported`."""
    return splash.splash_attention(q, k, v, segment_ids, block_size=block_size)


def _cudnn_unsupported(q_shape, k_shape, dtype, block_size, backend) -> str | None:
    if backend != "gpu":
        return f"cuDNN attention needs an NVIDIA GPU (the backend is {backend})"
    if jnp.dtype(dtype).name not in ("bfloat16", "float16"):
        return f"cuDNN flash attention takes bfloat16 or float16, not {jnp.dtype(dtype).name} (model.dtype)"
    d, limit = q_shape[-1], 256 if _hopper_or_later() else 128
    if d > limit or d % 8:
        return f"head_dim {d}: cuDNN takes a multiple of 8 up to {limit} on this card"
    return None


def _hopper_or_later() -> bool:
    capability = getattr(jax.devices()[0], "compute_capability", "0")
    return float(capability) >= 9.0


def _splash_unsupported(q_shape, k_shape, dtype, block_size, backend) -> str | None:
    return splash.unsupported(q_shape, k_shape, block_size)


IMPLS = {"xla": xla_attention, "cudnn": cudnn_attention, "splash": splash_attention}
UNSUPPORTED = {"cudnn": _cudnn_unsupported, "splash": _splash_unsupported}  # why a kernel cannot serve a call
AUTO = {"gpu": "cudnn", "tpu": "splash"}  # attention="auto" by backend; anything else (CPU) takes "xla"


def resolve(impl: str, backend: str | None = None) -> str:
    """The kernel a config's `attention` asks for: "auto" → cuDNN on GPU, splash on TPU, xla elsewhere."""
    if impl != "auto":
        return impl
    return AUTO.get(backend or jax.default_backend(), "xla")


def choose(impl: str, q_shape, k_shape, dtype, *, block_size: int = splash.DEFAULT_BLOCK,
           backend: str | None = None) -> tuple[str, str | None]:
    """(the kernel that runs for these shapes, why it is not the one `impl` asks for; None when it is).

    The one decision: a kernel that cannot serve the call (a head_dim, a sequence that is not a multiple of its
    tile, float32 on cuDNN) hands it to the `xla` reference, and the reason is logged (`attention`) and shown
    in the run log and `xfer bench` records (`describe`)."""
    backend = backend or jax.default_backend()
    wanted = resolve(impl, backend)
    if wanted not in IMPLS:
        raise ValueError(f"attention implementation {impl!r} is not available; choose one of {sorted(IMPLS)} or auto")
    reason = UNSUPPORTED[wanted](q_shape, k_shape, dtype, block_size, backend) if wanted in UNSUPPORTED else None
    return ("xla", reason) if reason else (wanted, None)


def describe(cfg, batch: int, seq: int, backend: str | None = None) -> str:
    """The kernel a train step of [batch, seq] runs under `cfg`, in words ("auto → cudnn", "cudnn → xla: ...")."""
    q, k = (batch, seq, cfg.num_heads, cfg.head_dim), (batch, seq, cfg.num_kv_heads, cfg.head_dim)
    kernel, reason = choose(cfg.attention, q, k, cfg.dtype, block_size=cfg.attention_block_size, backend=backend)
    asked = resolve(cfg.attention, backend)
    head = cfg.attention if cfg.attention == asked else f"{cfg.attention} → {asked}"
    if reason:
        return f"{head} → xla ({reason})"
    if kernel == "splash" and (backend or jax.default_backend()) != "tpu":
        return f"{head} (Pallas interpret mode off TPU: exact but slow)"
    return head


_LOGGED: set = set()  # what `attention` has already said about a (kernel, shapes) call


def _say_once(key, message: str) -> None:
    if key not in _LOGGED:
        _LOGGED.add(key)
        logging.getLogger(__name__).warning(message)


def attention(q, k, v, segment_ids, impl: str = "xla", *, block_size: int = splash.DEFAULT_BLOCK,
              max_segments: int = 0):
    """`block_size`: the splash kernel's q/kv tile (capped to the sequence); `max_segments`: cuDNN's packed
    layout for rows of at most that many documents (`cudnn_attention`); each kernel ignores the other's."""
    kernel, reason = choose(impl, q.shape, k.shape, q.dtype, block_size=block_size)
    key = (impl, tuple(q.shape), tuple(k.shape), q.dtype.name, block_size)
    if reason:
        _say_once(key, f"attention={impl!r}: {reason}; q {tuple(q.shape)}, k {tuple(k.shape)} run the xla "
                       f"reference instead")
    elif kernel == "splash" and jax.default_backend() != "tpu":
        _say_once(key, "attention='splash' off TPU runs the kernel in Pallas interpret mode: exact but slow "
                       "(tests and CPU checks); use attention='auto' for this machine's fast kernel")
    if kernel == "splash":
        return splash_attention(q, k, v, segment_ids, block_size)
    if kernel == "cudnn":
        return cudnn_attention(q, k, v, segment_ids, max_segments)
    return IMPLS[kernel](q, k, v, segment_ids)
