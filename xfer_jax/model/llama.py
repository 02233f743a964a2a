"""LLaMA-1/2 in Flax NNX: RMSNorm, rotary embeddings, SwiGLU, grouped-query attention.

Parameter names follow Hugging Face's (`embed_tokens`, `layers.q_proj`, ...), so conversion is a table,
not a puzzle. q/k projections keep HF's rotate-half RoPE layout: no permutation on import or export.
Every decoder-layer parameter is stacked on a leading `layers` axis and the layers run under `lax.scan`,
so compile time does not grow with depth. Each parameter carries its logical axis names in the
`logical_axes` metadata; `xfer_jax.parallel.rules` turns them into shardings.
"""
import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from xfer_jax.model.attention import attention
from xfer_jax.model.config import LlamaConfig
from xfer_jax.parallel.rules import constrain

# name -> (shape from config, logical axes); all but the norms use normal(initializer_range) init.
def layer_param_specs(cfg: LlamaConfig) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    L, E, F = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
    H, K, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    return {
        "input_layernorm": ((L, E), ("layers", "norm")),
        "q_proj": ((L, E, H, D), ("layers", "embed", "heads", "head_dim")),
        "k_proj": ((L, E, K, D), ("layers", "embed", "kv_heads", "head_dim")),
        "v_proj": ((L, E, K, D), ("layers", "embed", "kv_heads", "head_dim")),
        "o_proj": ((L, H, D, E), ("layers", "heads", "head_dim", "embed")),
        "post_attention_layernorm": ((L, E), ("layers", "norm")),
        "gate_proj": ((L, E, F), ("layers", "embed", "mlp")),
        "up_proj": ((L, E, F), ("layers", "embed", "mlp")),
        "down_proj": ((L, F, E), ("layers", "mlp", "embed")),
    }


NORMS = ("input_layernorm", "post_attention_layernorm")

_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attn_out": jax.checkpoint_policies.save_only_these_names("attn_out"),
}


def _param(rngs: nnx.Rngs, cfg: LlamaConfig, shape, axes, ones: bool = False) -> nnx.Param:
    dtype = jnp.dtype(cfg.param_dtype)
    if ones:
        value = jnp.ones(shape, dtype)
    else:
        value = cfg.initializer_range * jax.random.normal(rngs.params(), shape, dtype)
    return nnx.Param(value, logical_axes=axes)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """HF LlamaRMSNorm: normalise in fp32, cast back, then scale."""
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return x32.astype(x.dtype) * weight.astype(x.dtype)


def rope_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin [B, T, D] in fp32 for the rotate-half layout (frequencies repeated over both halves)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, T, H, D]; rotate-half RoPE as HF LLaMA applies it."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def decoder_layer(cfg: LlamaConfig, w: dict[str, jax.Array], x, cos, sin, segment_ids):
    """One pre-norm LLaMA layer on x [B, T, E]; `w` holds this layer's (unstacked) weights."""
    dtype = jnp.dtype(cfg.dtype)
    cast = lambda name: w[name].astype(dtype)  # noqa: E731

    h = rms_norm(x, w["input_layernorm"], cfg.rms_norm_eps)
    q = constrain(jnp.einsum("bte,ehd->bthd", h, cast("q_proj")), ("batch", "seq", "act_heads", None))
    k = constrain(jnp.einsum("bte,ekd->btkd", h, cast("k_proj")), ("batch", "seq", "act_kv_heads", None))
    v = constrain(jnp.einsum("bte,ekd->btkd", h, cast("v_proj")), ("batch", "seq", "act_kv_heads", None))
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    attn = attention(q, k, v, segment_ids, cfg.attention)
    attn = checkpoint_name(attn, "attn_out")
    x = x + constrain(jnp.einsum("bthd,hde->bte", attn, cast("o_proj")), ("batch", "seq", "act_embed"))

    h = rms_norm(x, w["post_attention_layernorm"], cfg.rms_norm_eps)
    gate = constrain(jnp.einsum("bte,ef->btf", h, cast("gate_proj")), ("batch", "seq", "act_mlp"))
    up = constrain(jnp.einsum("bte,ef->btf", h, cast("up_proj")), ("batch", "seq", "act_mlp"))
    x = x + constrain(jnp.einsum("btf,fe->bte", jax.nn.silu(gate) * up, cast("down_proj")), ("batch", "seq", "act_embed"))
    return x


class DecoderLayers(nnx.Module):
    """All decoder layers, parameters stacked on a leading `layers` axis, applied with `lax.scan`."""

    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        for name, (shape, axes) in layer_param_specs(cfg).items():
            setattr(self, name, _param(rngs, cfg, shape, axes, ones=name in NORMS))

    def __call__(self, x, positions, segment_ids):
        cfg = self.cfg
        cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta)
        weights = {name: getattr(self, name)[...] for name in layer_param_specs(cfg)}

        def body(x, w):
            return decoder_layer(cfg, w, x, cos, sin, segment_ids), None

        if cfg.remat != "none":
            body = jax.checkpoint(body, policy=_REMAT[cfg.remat], prevent_cse=False)
        x, _ = jax.lax.scan(body, x, weights)
        return x


class Llama(nnx.Module):
    """LlamaForCausalLM: tokens [B, T] -> logits [B, T, V] (fp32)."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed_tokens = _param(rngs, cfg, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"))
        self.layers = DecoderLayers(cfg, rngs)
        self.norm = _param(rngs, cfg, (cfg.hidden_size,), ("norm",), ones=True)
        if not cfg.tie_word_embeddings:
            self.lm_head = _param(rngs, cfg, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"))

    def hidden_states(self, tokens, positions=None, segment_ids=None):
        """Final-normed hidden states [B, T, E] in the compute dtype (what the loss and LM head consume)."""
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        x = jnp.take(self.embed_tokens[...], tokens, axis=0).astype(jnp.dtype(self.cfg.dtype))
        x = constrain(x, ("batch", "seq", "act_embed"))
        x = self.layers(x, positions, segment_ids)
        return rms_norm(x, self.norm[...], self.cfg.rms_norm_eps)

    def output_matrix(self) -> jax.Array:
        """The [E, V] output projection (the transposed embedding when tied)."""
        return self.embed_tokens[...].T if self.cfg.tie_word_embeddings else self.lm_head[...]

    def __call__(self, tokens, positions=None, segment_ids=None):
        h = self.hidden_states(tokens, positions, segment_ids)
        logits = jnp.einsum("bte,ev->btv", h, self.output_matrix().astype(h.dtype))
        return constrain(logits, ("batch", "seq", "act_vocab")).astype(jnp.float32)
