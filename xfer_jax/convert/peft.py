"""A checkpoint's LoRA adapters in PEFT's format: what `peft.PeftModel.from_pretrained(base, DIR)` loads.

    DIR/adapter_config.json        peft_type LORA, r, lora_alpha (PEFT scales by lora_alpha / r), lora_dropout,
                                   target_modules, modules_to_save
    DIR/adapter_model.safetensors  base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight [r, in],
                                   ....lora_B.weight [out, r]; base_model.model.model.embed_tokens.weight and
                                   base_model.model.lm_head.weight when those were trained (modules_to_save)

Our adapters are A [L, *in, r] and B [L, r, *out]; per layer PEFT wants A^T [r, prod(in)] and B^T [prod(out), r]
(o_proj's input is heads·head_dim flattened, as in HF's o_proj weight): the transpose-and-reshape rule the base
weights follow (`hf.to_hf`). What was trained comes from the checkpoint meta's `trainable` list, which the
trainer writes. The adapter is only exact on the base it was trained on: when more than adapters and
embeddings were trained, the base must be written too (`base_out`: the checkpoint's weights without adapters).
"""
import contextlib
import json
import math
import os

import numpy as np

from xfer_jax import checkpoint, paths
from xfer_jax.convert import hf
from xfer_jax.convert.safetensors_io import write_shard
from xfer_jax.model import family, lora_params

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."  # PEFT's name of a module = this + its HF name
# What modules_to_save can carry besides the adapters: the model's top-level matrices (embedding, LM head).
SAVABLE = {p.name: PREFIX + p.hf_name() for p in family.LLAMA if not p.stacked and p.kind != "norm"}


def adapter_config(cfg, modules_to_save: list[str], base_model: str | None) -> dict:
    """adapter_config.json: the LoraConfig fields a plain LoRA sets (PEFT fills in the rest with its defaults)."""
    alpha = int(cfg.lora_alpha) if float(cfg.lora_alpha).is_integer() else cfg.lora_alpha
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": cfg.lora_rank, "lora_alpha": alpha, "lora_dropout": cfg.lora_dropout,
        "target_modules": list(cfg.lora_targets), "modules_to_save": modules_to_save or None,
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "use_rslora": False, "use_dora": False, "layers_to_transform": None, "layers_pattern": None,
        "rank_pattern": {}, "alpha_pattern": {},
    }


def tensor_plan(cfg, params: dict, modules_to_save: list[str]) -> list[tuple]:
    """(PEFT name, shape, dtype, function producing the array) for every tensor of the adapter file."""
    plan, rows = [], family.by_name(cfg)
    for i in range(cfg.num_layers):
        for name in cfg.lora_targets:
            module = PREFIX + rows[name].hf_name(i).removesuffix(".weight")
            a, b = params["layers"][f"{name}_lora_a"], params["layers"][f"{name}_lora_b"]
            n_in = rows[name].n_in
            plan.append((f"{module}.lora_A.weight", (cfg.lora_rank, math.prod(a.shape[1:-1])), a.dtype,
                         lambda a=a, i=i, n=n_in: hf.to_hf(a[i], n)))
            plan.append((f"{module}.lora_B.weight", (math.prod(b.shape[2:]), cfg.lora_rank), b.dtype,
                         lambda b=b, i=i: hf.to_hf(b[i], 1)))
    for name in modules_to_save:
        n_in = rows[name].n_in
        plan.append((SAVABLE[name], hf.hf_shape(params[name].shape, n_in), params[name].dtype,
                     lambda name=name, n=n_in: hf.to_hf(params[name], n)))
    return plan


def trained_modules(meta: dict, ckpt_dir) -> tuple[list[str], list[str]]:
    """(modules_to_save, other trained base weights) from the meta's `trainable` list."""
    if "trainable" not in meta:
        raise ValueError(f"{ckpt_dir}: the checkpoint meta does not say which parameters were trained; "
                         f"pass modules_to_save (CLI: --modules_to_save embed_tokens,lm_head or --modules_to_save '')")
    trained = [p.split("/")[-1] for p in meta["trainable"]]
    return ([m for m in SAVABLE if m in trained],
            [t for t in trained if t not in SAVABLE and not lora_params.is_adapter(t)])


def orbax_to_peft(ckpt_dir, out_dir, *, step: int | None = None, base_out=None,
                  modules_to_save: list[str] | None = None, base_model: str | None = None, overwrite: bool = False,
                  log=print) -> paths.Path:
    """Write the adapters of `ckpt_dir` as a PEFT LoRA directory; with `base_out`, the base as an HF directory too.

    Non-empty output directories are refused unless `overwrite` (checked first, before the load); every check
    runs before anything is written, and each directory is built beside its target and swapped in whole (on an
    object store: built on local disk and uploaded, adapter_config.json / config.json last)."""
    base_out = base_out or None
    check_outputs(ckpt_dir, out_dir, base_out, overwrite)
    cfg, params = checkpoint.load_params(ckpt_dir, step=step)
    if not cfg.lora_rank:
        raise ValueError(f"{ckpt_dir} has no LoRA adapters (lora_rank 0): export it with `xfer convert orbax-to-hf`")
    meta = checkpoint.read_meta(ckpt_dir, step)
    if modules_to_save is None:
        modules_to_save, others = trained_modules(meta, ckpt_dir)
        if others and base_out is None:
            raise ValueError(
                f"{ckpt_dir}: base weights were trained too ({', '.join(sorted(set(others))[:4])}, ...), so the "
                f"adapter is exact only on this checkpoint's own base: pass --base_out DIR to write it, or export merged "
                f"weights with `xfer convert orbax-to-hf --merge_lora`")
    savable = sorted(set(SAVABLE) & set(params))
    unknown = sorted(set(modules_to_save) - set(savable))
    if unknown:
        raise ValueError(f"modules_to_save {unknown}: this model's savable modules are {savable}")
    plan = tensor_plan(cfg, params, modules_to_save)
    producers = {name: produce for name, _, _, produce in plan}
    specs = [(name, shape, np.dtype(dtype)) for name, shape, dtype, _ in plan]
    write_base = None if base_out is None else hf.hf_writer(
        lora_params.base_config(cfg), lora_params.strip(params), tokenizer=checkpoint.tokenizer_path(ckpt_dir), log=log)
    config = adapter_config(cfg, modules_to_save, base_model or (base_out and os.fspath(paths.path(base_out, "--base_out"))))
    with contextlib.ExitStack() as stack:  # both built first, then swapped in one after the other
        base_tmp = base_out and stack.enter_context(paths.replace_dir(base_out, overwrite, "--base_out"))
        tmp = stack.enter_context(paths.replace_dir(out_dir, overwrite, "--out"))
        nbytes = write_shard(tmp / ADAPTER_WEIGHTS, specs, lambda name: producers[name]())
        paths.write_text(tmp / ADAPTER_CONFIG, json.dumps(config, indent=2) + "\n")
        base_summary = None if write_base is None else write_base(base_tmp)
    if base_summary:
        log(f"wrote {base_out}: base model, {base_summary}")
    log(f"wrote {out_dir}: PEFT LoRA adapter, rank {cfg.lora_rank} on {', '.join(cfg.lora_targets)}, "
        f"modules_to_save {modules_to_save or 'none'}, {nbytes / 1e6:.1f} MB")
    return paths.path(out_dir, "--out")


def check_outputs(ckpt_dir, out_dir, base_out, overwrite: bool) -> None:
    """--out and --base_out: empty or --overwrite, and apart from each other and from --ckpt (replacing one
    must never delete another)."""
    hf.check_output(out_dir, "--out", overwrite)
    paths.check_apart(out_dir, {"--ckpt": ckpt_dir, "--base_out": base_out}, "--out")
    if base_out is not None:
        hf.check_output(base_out, "--base_out", overwrite)
        paths.check_apart(base_out, {"--ckpt": ckpt_dir, "--out": out_dir}, "--base_out")
