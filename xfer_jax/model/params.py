"""The model as data: parameters are a plain nested dict of arrays, the same tree the checkpoint stores.

`Llama` (NNX) defines the computation; these helpers split it into a cached graph definition plus a
`params` dict, so training, conversion and evaluation pass around pure pytrees and call `apply`.
"""
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from xfer_jax.model import family
from xfer_jax.model.config import LlamaConfig
from xfer_jax.model.llama import Llama, compute_weights


@functools.lru_cache(maxsize=32)
def _split_abstract(cfg: LlamaConfig):
    model = nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0)))
    return nnx.split(model)


def logical_axes(cfg: LlamaConfig) -> dict:
    """Nested dict of logical axis-name tuples, one per parameter."""
    _, state = _split_abstract(cfg)
    return nnx.to_pure_dict(
        jax.tree.map(lambda v: v.replace(v.get_metadata()["logical_axes"]), state,
                     is_leaf=lambda x: isinstance(x, nnx.Variable))
    )


def abstract_params(cfg: LlamaConfig) -> dict:
    """Nested dict of ShapeDtypeStruct, one per parameter (no memory allocated)."""
    _, state = _split_abstract(cfg)
    return nnx.to_pure_dict(state)


def init_params(cfg: LlamaConfig, seed: int = 0) -> dict:
    """Random parameters as HF initialises them (normal(initializer_range), norms at 1)."""
    return nnx.to_pure_dict(nnx.state(Llama(cfg, rngs=nnx.Rngs(seed)), nnx.Param))


def bind(cfg: LlamaConfig, params: dict) -> Llama:
    """A `Llama` whose parameters are `params` (works under jit: no copies, no initialisation)."""
    graphdef, state = _split_abstract(cfg)
    state = jax.tree.map(lambda x: x, state)  # a fresh State to fill, the cached one stays abstract
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


def unstack_layers(cfg: LlamaConfig, params: dict) -> list[dict]:
    """The decoder weights as one dict per layer, every matrix its own buffer (a copy), base weights in the
    compute dtype, q/k/v and gate/up fused when `cfg.fuse_projections` (fewer kernels per token), adapters in
    fp32, the RMSNorm weights folded into the matrices after them (`fold_norms`): what
    `Llama.decode(..., layer_weights=...)` reads at full bandwidth."""
    return _unstack(params["layers"], cfg=cfg)


@functools.partial(jax.jit, static_argnames="cfg")
def _unstack(layers: dict, *, cfg: LlamaConfig) -> list[dict]:
    layers = compute_weights(cfg, fold_norms(cfg, layers))
    return [{name: w[i] for name, w in layers.items()} for i in range(cfg.num_layers)]


def fold_norms(cfg: LlamaConfig, layers: dict) -> dict:
    """Stacked layer weights with each RMSNorm's weight multiplied into the rows (input axis) of the matrices that
    read the normed activations, and the norm weights removed: norm(x)·W = rsqrt(mean(x²) + eps)·(x·(diag(g)·W)).
    `decoder_layer` then runs the projection on x itself and scales its output by the per-token factor, which XLA
    fuses into the next kernel: a decoding step loses two elementwise kernels a layer. Multiplied in fp32, stored
    in each matrix's dtype. Which matrices read which norm is the family table's `norm` column; their LoRA A
    matrices are folded too (the adapter path is linear). Qwen3's q_norm/k_norm normalise a projection's output
    per head, which no matrix can absorb: no row points at them, so they stay (and run after the factor)."""
    layers = dict(layers)
    for norm, names in family.norm_folds(cfg).items():
        gain = layers.pop(norm).astype(jnp.float32)  # [L, E]
        for key in [k for name in names for k in (name, f"{name}_lora_a") if k in layers]:
            w = layers[key]
            layers[key] = (w.astype(jnp.float32) * gain.reshape(gain.shape + (1,) * (w.ndim - 2))).astype(w.dtype)
    return layers


def apply(cfg: LlamaConfig, params: dict, tokens, positions=None, segment_ids=None, dropout_key=None) -> jax.Array:
    """logits [B, T, V] fp32 for token ids [B, T]; `dropout_key` turns on LoRA dropout (training)."""
    return bind(cfg, params)(jnp.asarray(tokens), positions, segment_ids, dropout_key)
