"""LoRA in the trainer: every stage's adapters are its own, decided by its config.

A stage config sets `model.lora_rank` (0 or absent: no adapters), `model.lora_alpha`, `model.lora_dropout`
and `model.lora_targets`. Starting from `init_from`, adapters the checkpoint carries are merged into its
weights first (as Chinese-LLaMA merges its pretraining LoRA before instruction tuning with a new one), then
the stage's fresh adapters are added: A random, B = 0, so the first step sees exactly the logits of the
model it starts from. Which parameters train is still `train.trainable` / `train.frozen`; the report below
says what that costs. Resuming a stage restores its own checkpoint, adapters included, and never re-inits.
"""
import jax
import numpy as np

from xfer_jax import checkpoint
from xfer_jax.model import lora_params
from xfer_jax.model.config import LlamaConfig
from xfer_jax.model.sharding import param_shardings
from xfer_jax.train.optim import param_path, split_trainable

LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")  # a stage's own (train/setup.model_config)
_ADAPTER_STREAM, _DROPOUT_STREAM = 0, 1


def initial_params(init_from: str, cfg: LlamaConfig, mesh, rules, seed: int, **run) -> dict:
    """`cfg`'s parameters from `init_from` (same shape; its adapters merged, `cfg`'s added), sharded on `mesh`.

    `run` (dtype, param_dtype, ...) is how to restore the stored arrays, as `checkpoint.load_params` takes it."""
    stored_model = LlamaConfig.from_dict(checkpoint.read_meta(init_from)["model"])
    stored = cfg.replace(**{f: getattr(stored_model, f) for f in LORA_FIELDS})
    _, params = checkpoint.load_params(init_from, shardings=param_shardings(stored, mesh, rules), **run)
    if not (stored.lora_rank or cfg.lora_rank):
        return params
    if stored.lora_rank:
        print(f"merging the rank-{stored.lora_rank} adapters of {init_from} into its weights")
    if cfg.lora_rank:
        print(f"adding rank-{cfg.lora_rank} adapters (alpha {cfg.lora_alpha}) on {', '.join(cfg.lora_targets)}")

    def convert(p):
        _, base = lora_params.merge(stored, p)
        key = jax.random.fold_in(jax.random.key(seed), _ADAPTER_STREAM)
        return lora_params.add_adapters(cfg, base, key) if cfg.lora_rank else base

    return jax.jit(convert, out_shardings=param_shardings(cfg, mesh, rules), donate_argnums=0)(params)


def dropout_key(cfg: LlamaConfig, seed: int) -> jax.Array | None:
    """The key each step folds its step number into for LoRA dropout; None without dropout.

    A function of the seed alone, so a resumed run draws the same masks as one that never stopped."""
    if not (cfg.lora_rank and cfg.lora_dropout > 0):
        return None
    return jax.random.fold_in(jax.random.key(seed), _DROPOUT_STREAM)


def trainable_paths(mask: dict) -> list[str]:
    """'layers/q_proj_lora_a', 'embed_tokens', ...: the trained parameters, as the checkpoint meta records them."""
    return [param_path(path) for path, trained in jax.tree_util.tree_flatten_with_path(mask)[0] if trained]


def state_report(abstract_state: dict, mask: dict) -> dict:
    """Parameter counts and bytes of the parameters and of the optimizer state (which covers trained ones only)."""
    trainable, _ = split_trainable(abstract_state["params"], mask)
    count = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))  # noqa: E731
    nbytes = lambda tree: int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree)))  # noqa: E731
    return {"params": count(abstract_state["params"]), "trainable_params": count(trainable),
            "param_bytes": nbytes(abstract_state["params"]), "opt_state_bytes": nbytes(abstract_state["opt_state"])}


def format_report(r: dict) -> str:
    share = r["trainable_params"] / max(r["params"], 1)
    return (f"parameters {r['params']:,} ({r['param_bytes'] / 1e9:.3f} GB), trained {r['trainable_params']:,} "
            f"({share:.2%}); optimizer state {r['opt_state_bytes'] / 1e9:.3f} GB")
