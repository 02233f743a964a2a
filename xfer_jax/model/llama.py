"""LLaMA 1/2/3, Mistral, Qwen2 and Qwen3 in Flax NNX: RMSNorm, rotary embeddings (plain or Llama-3.1-scaled),
SwiGLU, grouped-query attention; Qwen2's q/k/v biases and Qwen3's per-head q/k RMSNorm (`_attention_inputs`).

Parameter names follow Hugging Face's (`embed_tokens`, `layers.q_proj`, ...), so conversion is a table,
not a puzzle: every parameter's shape, axes and HF name is a row of the family's table (`family.table`). q/k
projections keep HF's rotate-half RoPE layout: no permutation on import or export.
Every decoder-layer parameter is stacked on a leading `layers` axis and the layers run under `lax.scan`,
so compile time does not grow with depth. Each parameter carries its logical axis names in the
`logical_axes` metadata; `xfer_jax.parallel.rules` turns them into shardings.
"""
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from xfer_jax.model import family, lora
from xfer_jax.model.attention import attention, cache_visibility, cached_attention
from xfer_jax.model.decode_attention import decode_attention, supported as decode_attention_supported
from xfer_jax.model.config import LlamaConfig
from xfer_jax.parallel.rules import constrain

# remat="minimal" keeps what the backward cannot recompute without a weight matmul or attention: the attention
# inputs after RoPE, the fused kernel's output and softmax statistics, the residual stream after attention and the
# MLP's gate/up outputs. Norms, RoPE, SwiGLU, LoRA dropout and LoRA's rank-r products are recomputed (elementwise
# or tiny work), so a layer keeps about 40% of what it keeps without remat and no matmul runs twice.
MINIMAL_SAVED = ("query", "key", "value", "attn_residual", "mlp_gate", "mlp_up", "mlp_gate_up")
_FUSED_ATTENTION_FORWARD = ("dot_product_attention_fwd_wrapper", "dot_product_attention_fwd", "pallas_call")


def _fused_attention_forward(prim, *_, **__) -> bool:
    """Save the outputs of cuDNN's (or a Pallas kernel's) attention forward: its output and softmax statistics,
    which its backward reads. Training layers hold no other Pallas call."""
    return prim.name in _FUSED_ATTENTION_FORWARD


_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attn_out": jax.checkpoint_policies.save_only_these_names("attn_out"),
    "minimal": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.save_only_these_names(*MINIMAL_SAVED), _fused_attention_forward),
}


def _param(rngs: nnx.Rngs, cfg: LlamaConfig, row: family.Param) -> nnx.Param:
    """A parameter as HF initialises it: norms at 1, biases at 0, everything else normal(initializer_range)."""
    shape, dtype = row.shape(cfg), jnp.dtype(cfg.param_dtype)
    if row.kind in ("norm", "bias"):
        value = (jnp.ones if row.kind == "norm" else jnp.zeros)(shape, dtype)
    else:
        value = cfg.initializer_range * jax.random.normal(rngs.params(), shape, dtype)
    return nnx.Param(value, logical_axes=row.axes)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """HF LlamaRMSNorm: normalise in fp32, cast back, then scale."""
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return x32.astype(x.dtype) * weight.astype(x.dtype)


def rope_frequencies(cfg: LlamaConfig) -> np.ndarray:
    """RoPE's inverse frequencies [D/2], float32, bit for bit as transformers computes them (its
    `_compute_default_rope_parameters` and, for rope_type 'llama3', `_compute_llama3_parameters`), from the
    config alone: a constant under jit. The one place frequencies are made; training, the forward, KV-cache
    decoding and the decoding kernel all rotate by `rope_tables` over these.

    The power is taken in float64 and rounded (what torch's float32 pow gives; numpy's float32 pow is off by an
    ulp), and `c / x` is `reciprocal(x) * c` as torch evaluates a scalar over a tensor."""
    f32 = np.float32
    exponents = np.arange(0, cfg.head_dim, 2).astype(f32) / f32(cfg.head_dim)
    inv_freq = f32(1.0) / (np.float64(cfg.rope_theta) ** exponents.astype(np.float64)).astype(f32)
    if cfg.rope_type == "default":
        return inv_freq
    # llama3: wavelengths below original/high_freq_factor kept, above original/low_freq_factor divided by
    # `factor`, those between interpolated by how many turns they make in the original context.
    factor, low, high = f32(cfg.rope_factor), cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    context = cfg.rope_original_max_position_embeddings
    long_wavelength, short_wavelength = f32(context / low), f32(context / high)
    wavelength = np.reciprocal(inv_freq) * f32(2 * math.pi)
    scaled = np.where(wavelength > long_wavelength, inv_freq / factor, inv_freq)
    smooth = (np.reciprocal(wavelength) * f32(context) - f32(low)) / f32(high - low)
    smoothed = (f32(1) - smooth) * scaled / factor + smooth * scaled
    between = ~(wavelength < short_wavelength) & ~(wavelength > long_wavelength)
    return np.where(between, smoothed, scaled).astype(f32)


def rope_tables(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """cos/sin [B, T, D] in fp32 for the rotate-half layout (frequencies repeated over both halves);
    `inv_freq` from `rope_frequencies`."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, T, H, D]; rotate-half RoPE as HF LLaMA applies it."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def _normed(cfg: LlamaConfig, w: dict, norm: str, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """(what the projections after RMSNorm `norm` read, per-token factor [B, T] for their outputs or None). With
    the norm's weight folded into those projections (`params.fold_norms`, decoding) they read x itself and their
    outputs are scaled by rsqrt(mean(x²) + eps); otherwise the usual normed activations."""
    if norm in w:
        return rms_norm(x, w[norm], cfg.rms_norm_eps), None
    x32 = x.astype(jnp.float32)
    return x, jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1) + cfg.rms_norm_eps)


def _scaled(y: jax.Array, factor: jax.Array | None) -> jax.Array:
    return y if factor is None else (y * factor.reshape(factor.shape + (1,) * (y.ndim - 2))).astype(y.dtype)


def _attention_inputs(cfg: LlamaConfig, w: dict, q, k, v):
    """Qwen2's q/k/v biases (after the projection and its folded-norm factor) and Qwen3's RMSNorm over each q and k
    head (after that, before RoPE), as transformers orders them."""
    if cfg.qkv_bias:
        q, k, v = (y + w[f"{name}_bias"].astype(y.dtype) for y, name in zip((q, k, v), ("q_proj", "k_proj", "v_proj")))
    if cfg.qk_norm:
        q, k = rms_norm(q, w["q_norm"], cfg.rms_norm_eps), rms_norm(k, w["k_norm"], cfg.rms_norm_eps)
    return q, k, v


def decoder_layer(cfg: LlamaConfig, w: dict[str, jax.Array], x, cos, sin, segment_ids, key=None, cache=None):
    """One pre-norm LLaMA layer on x [B, T, E]; `w` holds this layer's (unstacked) weights and adapters.

    `key` drives LoRA dropout. `cache` = (k_all, v_all, layer, index, valid, visible) decodes against the whole KV
    cache [L, B, S, K, D]; the layer then returns (x, (k_all, v_all)) with this step's keys and values written
    into layer `layer` at slot `index`. Only the new slots are written, so a donated cache is updated in place.
    `visible` (int32 [B, S], or None) selects the fused attention of a single new token (decode_attention.py).
    """
    projections = family.layer_projections(cfg)
    keys = [None] * len(projections) if key is None else list(jax.random.split(key, len(projections)))
    proj = lambda name, h: lora.project(cfg, w, name, h, keys[projections.index(name)])  # noqa: E731

    groups = cfg.num_heads // cfg.num_kv_heads
    h, factor = _normed(cfg, w, "input_layernorm", x)
    if "qkv_proj" in w:  # one GEMM for q, k and v (see fuse_projections)
        qkv = constrain(jnp.einsum("bte,ekgd->btkgd", h, w["qkv_proj"]), ("batch", "seq", "act_kv_heads", None, None))
        # jnp.split, not indexing: its gradient is one concatenate, where slices' gradients are padded and added
        q, k, v = jnp.split(qkv, [groups, groups + 1], axis=3)
        q, k, v = q.reshape(*h.shape[:2], cfg.num_heads, cfg.head_dim), k.squeeze(3), v.squeeze(3)
        queries = qkv  # [B, T, K, G+2, D], query heads first: what decode_attention reads, without a copy
    else:
        q = constrain(proj("q_proj", h), ("batch", "seq", "act_heads", None))
        k = constrain(proj("k_proj", h), ("batch", "seq", "act_kv_heads", None))
        v = constrain(proj("v_proj", h), ("batch", "seq", "act_kv_heads", None))
        queries = q.reshape(*q.shape[:2], cfg.num_kv_heads, -1, cfg.head_dim)
    q, k, v = _scaled(q, factor), _scaled(k, factor), _scaled(v, factor)
    if cfg.qkv_bias or cfg.qk_norm:  # the kernel below would miss them on the raw queries: hand it these
        q, k, v = _attention_inputs(cfg, w, q, k, v)
        queries, factor = q.reshape(*q.shape[:2], cfg.num_kv_heads, groups, cfg.head_dim), None
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    q, k, v = checkpoint_name(q, "query"), checkpoint_name(k, "key"), checkpoint_name(v, "value")
    if cache is None:
        attn = attention(q, k, v, segment_ids, cfg.attention, block_size=cfg.attention_block_size,
                         max_segments=cfg.attention_max_segments)
    else:  # write this step's keys/values into layer `layer` of the whole cache (in place), attend over it
        k_all, v_all, layer, index, valid, visible = cache
        k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), (layer, 0, index, 0, 0))
        v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), (layer, 0, index, 0, 0))
        if visible is not None:
            # the kernel scales and rotates the raw queries itself; XLA drops the unused q above
            q_scale = jnp.ones(x.shape[:1], jnp.float32) if factor is None else factor[:, 0]
            attn = decode_attention(queries, groups, q_scale, cos, sin, k_all, v_all, layer, visible)
        else:
            attn = cached_attention(q, k_all[layer].astype(q.dtype), v_all[layer].astype(q.dtype), index, valid)
    attn = checkpoint_name(attn, "attn_out")
    x = checkpoint_name(x + constrain(proj("o_proj", attn), ("batch", "seq", "act_embed")), "attn_residual")

    h, factor = _normed(cfg, w, "post_attention_layernorm", x)
    if "gate_up_proj" in w:
        gate_up = constrain(jnp.einsum("bte,egf->btgf", h, w["gate_up_proj"]), ("batch", "seq", None, "act_mlp"))
        gate, up = (x.squeeze(2) for x in jnp.split(checkpoint_name(gate_up, "mlp_gate_up"), 2, axis=2))
    else:
        gate = checkpoint_name(constrain(proj("gate_proj", h), ("batch", "seq", "act_mlp")), "mlp_gate")
        up = checkpoint_name(constrain(proj("up_proj", h), ("batch", "seq", "act_mlp")), "mlp_up")
    mlp = jax.nn.silu(_scaled(gate, factor)) * _scaled(up, factor)
    x = x + constrain(proj("down_proj", mlp), ("batch", "seq", "act_embed"))
    return x if cache is None else (x, (k_all, v_all))


class KVCache(NamedTuple):
    """What decoding keeps between steps (a pytree: it passes through jit, donation and lax loops whole)."""
    keys: jax.Array  # [L, B, S, K, D]: every layer's keys, one slot per token
    values: jax.Array  # [L, B, S, K, D]
    next_slot: jax.Array  # int32 []: the slot the next token is written to (all rows alike: prompts are left-padded)
    filled: jax.Array  # bool [B, S]: the slot holds a real token (written, not padding)


def init_cache(cfg: LlamaConfig, batch: int, max_len: int, dtype=None) -> KVCache:
    """An empty KV cache of `max_len` slots per row, in `dtype` (the compute dtype by default)."""
    shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
    dtype = jnp.dtype(dtype or cfg.dtype)
    return KVCache(keys=jnp.zeros(shape, dtype), values=jnp.zeros(shape, dtype), next_slot=jnp.zeros((), jnp.int32),
                   filled=jnp.zeros((batch, max_len), bool))


class DecoderLayers(nnx.Module):
    """All decoder layers, parameters stacked on a leading `layers` axis, applied with `lax.scan`."""

    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        for row in family.table(cfg):
            if row.stacked:
                setattr(self, row.name, _param(rngs, cfg, row))
        if cfg.lora_rank:
            for name, (shape, axes) in lora.lora_param_specs(cfg).items():
                setattr(self, name, nnx.Param(lora.init_lora(rngs.params(), shape, name), logical_axes=axes))
        self.names = tuple(name for name in vars(self) if isinstance(getattr(self, name), nnx.Param))

    def _scan(self, body, x, keys):
        """`lax.scan` over layers (compile time flat in depth), or a Python loop when `scan_layers` is off
        (XLA then schedules across layers and keeps no stacked per-layer residual buffers)."""
        weights = compute_weights(self.cfg, {name: getattr(self, name)[...] for name in self.names})
        if self.cfg.remat != "none":
            body = jax.checkpoint(body, policy=_REMAT[self.cfg.remat], prevent_cse=False)
        if self.cfg.scan_layers:
            return jax.lax.scan(body, x, (weights, keys))[0]
        # Per-layer weights by jnp.split: the weight gradients then meet in one concatenate (indexing gives each
        # layer's gradient padded to the stacked shape, the pads summed in one many-operand fusion).
        pieces = {name: jnp.split(w, self.cfg.num_layers, axis=0) for name, w in weights.items()}
        for i in range(self.cfg.num_layers):
            layer = {name: ws[i].squeeze(0) for name, ws in pieces.items()}
            x, _ = body(x, (layer, None if keys is None else keys[i]))
        return x

    def __call__(self, x, positions, segment_ids, dropout_key=None):
        cfg = self.cfg
        cos, sin = rope_tables(positions, rope_frequencies(cfg))
        keys = None if dropout_key is None else jax.random.split(dropout_key, cfg.num_layers)

        def body(x, inputs):
            w, key = inputs
            return decoder_layer(cfg, w, x, cos, sin, segment_ids, key), None

        return self._scan(body, x, keys)

    def decode(self, x, positions, cache: KVCache, layer_weights: list[dict]) -> tuple[jax.Array, KVCache]:
        """Layers over the whole KV cache, passed from layer to layer so each writes only its new slots
        (`next_slot` is left for the caller to advance).

        `layer_weights` (from `params.unstack_layers`) stand in for the stacked parameters, one buffer per
        layer and matrix: batch-1 decoding is a matrix-vector product per weight, and XLA reads a slice of a
        stacked array either through a copy or through a slower fused GEMM."""
        cfg = self.cfg
        cos, sin = rope_tables(positions, rope_frequencies(cfg))
        k_all, v_all, index, valid = cache.keys, cache.values, cache.next_slot, cache.filled
        visible = None
        if cfg.decode_attention == "pallas" and decode_attention_supported(x.shape[1], cfg):
            visible = cache_visibility(index, valid, 1)[:, 0].astype(jnp.int32)
        for layer, w in enumerate(layer_weights):
            x, (k_all, v_all) = decoder_layer(cfg, w, x, cos, sin, None,
                                              cache=(k_all, v_all, layer, index, valid, visible))
        return x, cache._replace(keys=k_all, values=v_all)


def compute_weights(cfg: LlamaConfig, weights: dict) -> dict:
    """Stacked layer weights as the layers consume them. Base weights are cast to the compute dtype once, before
    the layers: GEMMs then take plain bf16 operands (no cast fused into each GEMM) and FSDP gathers half the
    bytes; adapters stay fp32. Projections are fused when `cfg.fuse_projections`."""
    weights = {name: w if "_lora_" in name else w.astype(cfg.dtype) for name, w in weights.items()}
    return fuse_projections(cfg, weights) if cfg.fuse_projections else weights


def fuse_projections(cfg: LlamaConfig, weights: dict) -> dict:
    """Stacked layer weights with q/k/v as one [L, E, K, G+2, D] matrix (each kv head's G query heads, then its
    key and its value) and gate/up as one [L, E, 2, F]: one GEMM instead of three and two, which reads the
    normed activations once, keeps the skinny k/v GEMMs out, and sums one input gradient instead of adding
    three. The new axes sit inside the kv-head and mlp axes, so tensor-parallel shards stay local — when the
    tensor axis divides the kv heads; otherwise (MQA on tensor=2) q/k/v run replicated over it: turn
    `fuse_projections` off there. Projections with LoRA adapters stay separate (adapters apply per projection)."""
    adapted = set(cfg.lora_targets) if cfg.lora_rank else set()
    weights = dict(weights)
    if not adapted & {"q_proj", "k_proj", "v_proj"}:
        q, k, v = weights.pop("q_proj"), weights.pop("k_proj"), weights.pop("v_proj")
        layers, embed, kv_heads, head_dim = k.shape
        q = q.reshape(layers, embed, kv_heads, cfg.num_heads // kv_heads, head_dim)
        weights["qkv_proj"] = constrain(jnp.concatenate([q, k[:, :, :, None], v[:, :, :, None]], axis=3),
                                        ("layers", "embed", "kv_heads", None, "head_dim"))
    if not adapted & {"gate_proj", "up_proj"}:
        weights["gate_up_proj"] = constrain(jnp.stack([weights.pop("gate_proj"), weights.pop("up_proj")], axis=2),
                                            ("layers", "embed", None, "mlp"))
    return weights


class Llama(nnx.Module):
    """LlamaForCausalLM (and Mistral/Qwen2/Qwen3ForCausalLM, by cfg.family): tokens [B, T] -> logits [B, T, V] (fp32)."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        for row in family.table(cfg):  # in table order, which fixes the order of the random draws
            if not row.stacked:
                setattr(self, row.name, _param(rngs, cfg, row))
            elif "layers" not in vars(self):
                self.layers = DecoderLayers(cfg, rngs)  # every stacked row, where the first of them stands

    def embed(self, tokens) -> jax.Array:
        x = jnp.take(self.embed_tokens[...], tokens, axis=0).astype(jnp.dtype(self.cfg.dtype))
        return constrain(x, ("batch", "seq", "act_embed"))

    def hidden_states(self, tokens, positions=None, segment_ids=None, dropout_key=None):
        """Final-normed hidden states [B, T, E] in the compute dtype (what the loss and LM head consume)."""
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        x = self.layers(self.embed(tokens), positions, segment_ids, dropout_key)
        return rms_norm(x, self.norm[...], self.cfg.rms_norm_eps)

    def logits(self, h: jax.Array) -> jax.Array:
        logits = jnp.einsum("bte,ev->btv", h, self.output_matrix().astype(h.dtype))
        return constrain(logits, ("batch", "seq", "act_vocab")).astype(jnp.float32)

    def decode(self, tokens, positions, cache: KVCache, layer_weights: list[dict],
               token_valid=None) -> tuple[jax.Array, KVCache]:
        """Logits [B, T, V] for T new tokens at cache slots next_slot..next_slot+T-1, and the updated cache.

        `positions` are the tokens' RoPE positions (left-padded prompts count from their first real token);
        `token_valid` [B, T] marks real tokens (padding is never attended to); `layer_weights`: see
        `DecoderLayers.decode`."""
        if token_valid is None:
            token_valid = jnp.ones(tokens.shape, bool)
        index = cache.next_slot
        cache = cache._replace(filled=jax.lax.dynamic_update_slice(cache.filled, token_valid, (0, index)))
        x, cache = self.layers.decode(self.embed(tokens), positions, cache, layer_weights)
        h = rms_norm(x, self.norm[...], self.cfg.rms_norm_eps)
        return self.logits(h), cache._replace(next_slot=index + tokens.shape[1])

    def output_matrix(self) -> jax.Array:
        """The [E, V] output projection (the transposed embedding when tied)."""
        return self.embed_tokens[...].T if self.cfg.tie_word_embeddings else self.lm_head[...]

    def __call__(self, tokens, positions=None, segment_ids=None, dropout_key=None):
        return self.logits(self.hidden_states(tokens, positions, segment_ids, dropout_key))
