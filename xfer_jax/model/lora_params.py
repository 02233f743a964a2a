"""LoRA on the parameter dict: add fresh adapters to a base model, merge them into it, or drop them.

A stage that starts LoRA from a checkpoint without adapters, the merged export and the PEFT export all
move between two configs of the same shape: the base (`lora_rank` 0) and the one with adapters. These
functions map parameter dicts between them; they are pure, so they run under `jax.jit` on sharded arrays
as well as on host numpy arrays.
"""
import jax

from xfer_jax.model import lora
from xfer_jax.model.config import LlamaConfig


def base_config(cfg: LlamaConfig) -> LlamaConfig:
    """The same model without adapters (what a merged export or a PEFT base describes)."""
    return cfg.replace(lora_rank=0)


def is_adapter(name: str) -> bool:
    return name.endswith(("_lora_a", "_lora_b"))


def strip(params: dict) -> dict:
    """The base parameters (adapters dropped, nothing merged)."""
    return {**params, "layers": {n: w for n, w in params["layers"].items() if not is_adapter(n)}}


def merge(cfg: LlamaConfig, params: dict) -> tuple[LlamaConfig, dict]:
    """(base config, base params with W + (alpha/r)·A·B in every target): the same function, no adapters."""
    if not cfg.lora_rank:
        return cfg, params
    layers = params["layers"]
    merged = strip(params)
    for name in cfg.lora_targets:
        merged["layers"][name] = lora.merged_weight(cfg, name, layers[name], layers[f"{name}_lora_a"],
                                                    layers[f"{name}_lora_b"])
    return base_config(cfg), merged


def fresh_adapters(cfg: LlamaConfig, key: jax.Array) -> dict:
    """name -> a new adapter of `cfg` (A random, B zero: adding them changes no logit)."""
    specs = lora.lora_param_specs(cfg)
    return {name: lora.init_lora(jax.random.fold_in(key, i), shape, name)
            for i, (name, (shape, _)) in enumerate(sorted(specs.items()))}


def add_adapters(cfg: LlamaConfig, base: dict, key: jax.Array) -> dict:
    """`base` (a model without adapters) with fresh adapters of `cfg` beside its weights."""
    if any(is_adapter(n) for n in base["layers"]):
        raise ValueError("add_adapters takes a model without adapters; merge or strip the old ones first")
    return {**base, "layers": {**base["layers"], **fresh_adapters(cfg, key)}}

