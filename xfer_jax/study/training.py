"""The stages that make checkpoints: a random base of any shape, training runs, vocabulary extension.

A base of a shape that is not in the table of named shapes (the GPU study's ≈100M model: `small` with
hidden 768, 12 layers, 12 heads) is written once as a randomly initialised checkpoint and trained from
there (`init_from`), so the trainer needs no notion of shape overrides. Every stage returns a small JSON
result: where its checkpoint is, and for training runs the steps, tokens, final loss and wall time read
back from the run's own metrics.jsonl (the trainer's summary is empty when it resumed at the last step).
"""
from __future__ import annotations

import json
import pathlib
import time

import jax

from xfer_jax import checkpoint
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.model import params as model_params
from xfer_jax.model.shapes import get_shape
from xfer_jax.train.loop import train
from xfer_jax.vocab.resize import ExtendOptions, extend


SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                "max_position_embeddings")


def random_base(out: pathlib.Path, *, tokenizer, spec) -> dict:
    """OUT/ckpt: `spec.model.shape` with `spec.model.overrides`, the tokenizer's vocabulary and bos/eos ids (the
    shape's 1 and 2 are LLaMA-2's; Llama-3's are 128,000 and its eos), random weights."""
    tokenizer = Tokenizer.load(tokenizer)
    ids = {k: i for k, i in (("bos_token_id", tokenizer.bos_id), ("eos_token_id", tokenizer.eos_id)) if i >= 0}
    cfg = get_shape(spec.model.shape, vocab_size=tokenizer.vocab_size, **{**ids, **dict(spec.model.overrides)})
    params = jax.device_get(jax.jit(lambda: model_params.init_params(cfg, spec.seed))())
    ckpt = checkpoint.save(out / "ckpt", cfg, params, tokenizer=tokenizer, overwrite=True)
    total = sum(int(a.size) for a in jax.tree.leaves(params))
    return {"ckpt": str(ckpt), "params": total, "params_without_embedding": total - int(params["embed_tokens"].size),
            "model": {k: v for k, v in cfg.to_dict().items() if k in SHAPE_FIELDS}}


def metrics(run_dir) -> list[dict]:
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def run_training(out: pathlib.Path, config) -> dict:
    """train(config) with OUT as its run directory (resumes from OUT/ckpt when a crash left one there)."""
    config.train.out_dir = str(out)
    t0 = time.perf_counter()
    train(config)
    seconds = time.perf_counter() - t0
    records = metrics(out)
    last = records[-1]
    evals = {k: v for k, v in last.items() if k.startswith("eval/")}
    tokens = config.train.steps * config.data.batch_size * config.data.seq_len
    return {"ckpt": str(out / "ckpt"), "run_dir": str(out), "steps": config.train.steps, "tokens": tokens,
            "seconds": seconds, "wall_tokens_per_s": tokens / seconds, "step_tokens_per_s": last["tokens_per_s"],
            "loss": last["loss"], **evals}


def extended(out: pathlib.Path, *, ckpt, base_tokenizer, merged_tokenizer, init: str, seed: int) -> dict:
    """OUT/ckpt: CKPT grown to the merged vocabulary, new rows set by `init` (xfer vocab extend)."""
    path = extend(ckpt, merged_tokenizer, out / "ckpt", ExtendOptions(strategy=init, seed=seed),
                  base_tokenizer=base_tokenizer, overwrite=True)
    meta = checkpoint.read_meta(path)["vocab_extend"]
    return {"ckpt": str(path), "init": init, "old_vocab": meta["old_vocab_size"], "new_vocab": meta["new_vocab_size"]}
