"""AdamW with warmup + cosine/linear decay, a weight-decay mask, clipping, and freezing by pattern.

Freezing happens before the optimizer sees anything: `split_trainable` cuts the parameter dict into the
trainable part (what is differentiated and optimised, the only part with optimizer state) and the frozen
rest, by regular expressions over parameter paths such as `layers/q_proj` or `embed_tokens`.
"""
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax


def param_path(path) -> str:
    """'layers/q_proj' for the key path of params['layers']['q_proj']."""
    return "/".join(str(getattr(k, "key", k)) for k in path)


def path_mask(params: dict, patterns: Sequence[str]) -> dict:
    """True for every parameter whose path matches one of `patterns` (re.search)."""
    compiled = [re.compile(p) for p in patterns]
    return jax.tree_util.tree_map_with_path(lambda path, _: any(c.search(param_path(path)) for c in compiled), params)


def trainable_mask(params: dict, trainable: Sequence[str], frozen: Sequence[str]) -> dict:
    """Trainable = matches `trainable` (everything when empty) and not `frozen`; unknown patterns are errors."""
    paths = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for pattern in [*trainable, *frozen]:
        if not any(re.search(pattern, p) for p in paths):
            raise ValueError(f"train.trainable/train.frozen pattern {pattern!r} matches no parameter; "
                             f"parameters are: {', '.join(paths)}")
    keep = path_mask(params, trainable) if trainable else jax.tree.map(lambda _: True, params)
    drop = path_mask(params, frozen)
    mask = jax.tree.map(lambda k, d: bool(k and not d), keep, drop)
    if not any(jax.tree.leaves(mask)):
        raise ValueError("train.trainable/train.frozen leave no parameter to train")
    return mask


def split_trainable(params: dict, mask: dict) -> tuple[dict, dict]:
    """(trainable, frozen): the same dict shape, with None where a leaf belongs to the other side."""
    trainable = jax.tree.map(lambda p, m: p if m else None, params, mask)
    frozen = jax.tree.map(lambda p, m: None if m else p, params, mask)
    return trainable, frozen


def merge_trainable(trainable: dict, frozen: dict) -> dict:
    return jax.tree.map(lambda t, f: f if t is None else t, trainable, frozen, is_leaf=lambda x: x is None)


def learning_rate(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to `lr`, then cosine or linear decay to `lr * end_lr_ratio` at `total_steps`."""
    warmup = int(optim.warmup_steps if optim.warmup_steps >= 1 else optim.warmup_steps * total_steps)
    decay_steps = max(1, total_steps - warmup)
    end = optim.lr * optim.end_lr_ratio
    if optim.schedule == "cosine":
        decay = optax.cosine_decay_schedule(optim.lr, decay_steps, alpha=optim.end_lr_ratio)
    elif optim.schedule == "linear":
        decay = optax.linear_schedule(optim.lr, end, decay_steps)
    elif optim.schedule == "constant":
        decay = optax.constant_schedule(optim.lr)
    else:
        raise ValueError(f"optim.schedule={optim.schedule!r}; choose cosine, linear or constant")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, optim.lr, warmup), decay], [warmup])


def decay_mask(trainable: dict, decay_embeddings: bool) -> dict:
    """Weight decay on matrices only: never on norms or biases; on embed_tokens only if asked (lm_head always)."""
    def decays(path, leaf):
        name = param_path(path)
        if leaf is None or "norm" in name or name.endswith("_bias"):
            return False
        return decay_embeddings or not name.startswith("embed_tokens")
    return jax.tree_util.tree_map_with_path(decays, trainable)


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int, trainable: dict) -> optax.GradientTransformation:
    moment_dtype = jnp.dtype(optim.moment_dtype)  # explicit, so bf16 parameters still keep fp32 first moments
    parts = []
    if optim.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim.clip_norm))
    parts.append(optax.adamw(
        learning_rate(optim, total_steps), b1=optim.b1, b2=optim.b2, eps=optim.eps, mu_dtype=moment_dtype,
        weight_decay=optim.weight_decay, mask=decay_mask(trainable, optim.decay_embeddings),
    ))
    return optax.chain(*parts)


def default_optim_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        lr=3e-4, warmup_steps=0.05, schedule="cosine", end_lr_ratio=0.1, weight_decay=0.1, b1=0.9, b2=0.95,
        eps=1e-8, clip_norm=1.0, decay_embeddings=False, moment_dtype="float32",
    ))
