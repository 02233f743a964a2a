"""LoRA inside the model: low-rank adapters beside any of the seven projections, sharded like their weights.

Which projections may take one, their einsums and their input axes come from the family table (family.py).

With `cfg.lora_rank > 0`, each target projection W (our layout: input axes first, then output axes) gets
A [*in, r] and B [r, *out], stacked over layers like W; the layer computes x·W + (alpha/r)·(dropout(x)·A)·B.
A starts uniform(±1/sqrt(fan_in)) as PEFT's kaiming init does, B at zero, so an untrained adapter changes
nothing. A takes W's input-axis names and B its output-axis names, so adapters shard like their weights.
Adapters are always float32, whatever the base's param_dtype (a frozen bf16 base with fp32 adapters).
"""
import math

import jax
import jax.numpy as jnp

from xfer_jax.model import family


def _split(spec: str) -> tuple[str, str, str, str, str]:
    """(activation, weight, output, weight input letters, weight output letters) of a projection einsum."""
    lhs, out = spec.split("->")
    act, weight = lhs.split(",")
    w_in = "".join(c for c in weight if c in act)
    return act, weight, out, w_in, weight[len(w_in):]


def _einsum(cfg, name: str) -> str:
    return family.einsum(family.by_name(cfg)[name])


def lora_param_specs(cfg) -> dict:
    """name -> (shape, logical axes) of every adapter, from its base weight's (stacked) shape and axes."""
    specs, rows, base = {}, family.by_name(cfg), family.layer_specs(cfg)
    for name in cfg.lora_targets:
        (layers, *shape), (layers_axis, *axes) = base[name]
        n_in = rows[name].n_in
        specs[f"{name}_lora_a"] = ((layers, *shape[:n_in], cfg.lora_rank), (layers_axis, *axes[:n_in], "lora_rank"))
        specs[f"{name}_lora_b"] = ((layers, cfg.lora_rank, *shape[n_in:]), (layers_axis, "lora_rank", *axes[n_in:]))
    return specs


def init_lora(key, shape, name: str) -> jax.Array:
    if name.endswith("_lora_b"):
        return jnp.zeros(shape, jnp.float32)
    fan_in = math.prod(shape[1:-1])
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def project(cfg, w: dict, name: str, x: jax.Array, dropout_key=None) -> jax.Array:
    """x · W for projection `name` of one layer, plus its LoRA path when the model has one."""
    spec = _einsum(cfg, name)
    dtype = jnp.dtype(cfg.dtype)
    y = jnp.einsum(spec, x, w[name].astype(dtype))
    if f"{name}_lora_a" not in w:
        return y
    act, _, out, w_in, w_out = _split(spec)
    mid = "".join(c for c in act if c not in w_in) + "r"
    if dropout_key is not None and cfg.lora_dropout > 0:
        keep = jax.random.bernoulli(dropout_key, 1.0 - cfg.lora_dropout, x.shape)
        x = jnp.where(keep, x / (1.0 - cfg.lora_dropout), 0).astype(x.dtype)
    z = jnp.einsum(f"{act},{w_in}r->{mid}", x, w[f"{name}_lora_a"].astype(dtype))
    delta = jnp.einsum(f"{mid},r{w_out}->{out}", z, w[f"{name}_lora_b"].astype(dtype))
    return y + (cfg.lora_alpha / cfg.lora_rank) * delta


def merged_weight(cfg, name: str, weight, lora_a, lora_b):
    """W + (alpha/r)·A·B for stacked arrays [L, ...], in W's dtype (what export and merging write)."""
    _, wspec, _, w_in, w_out = _split(_einsum(cfg, name))
    delta = jnp.einsum(f"l{w_in}r,lr{w_out}->l{wspec}", jnp.asarray(lora_a, jnp.float32), jnp.asarray(lora_b, jnp.float32))
    return (jnp.asarray(weight, jnp.float32) + (cfg.lora_alpha / cfg.lora_rank) * delta).astype(weight.dtype)
