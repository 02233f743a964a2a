"""The pure train step: loss over packed batches, gradient accumulation, clipping, AdamW, NaN guard.

State is a plain dict {step, params, opt_state, skipped}; `params` is the full parameter dict (the layout
of every checkpoint), `opt_state` covers only the trainable part (see optim.split_trainable).

Loss: mean token cross-entropy over targets with weight > 0 (padding, document ends and prompt tokens
carry weight 0), plus optional z-loss `z · log²Z`. With k micro-batches the step sums weighted losses and
weights over all of them before dividing, so it equals one batch k times larger.
"""
import functools

import jax
import jax.numpy as jnp
import optax

from xfer_jax.model import params as model_params
from xfer_jax.model.config import LlamaConfig
from xfer_jax.train.optim import merge_trainable, split_trainable


def loss_sums(cfg: LlamaConfig, params: dict, batch: dict, z_loss: float, num_langs: int) -> dict:
    """Weighted sums (not means) of the loss terms over a batch, per language too."""
    logits = model_params.apply(cfg, params, batch["tokens"], batch["positions"], batch["segment_ids"])
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, batch["targets"][..., None], axis=-1)[..., 0]
    nll = log_z - target_logit
    w = batch["loss_weights"].astype(jnp.float32)
    lang = jax.nn.one_hot(batch["lang"], num_langs, dtype=jnp.float32) * w[..., None]
    return {
        "nll": jnp.sum(nll * w),
        "z": z_loss * jnp.sum(log_z * log_z * w),
        "weight": jnp.sum(w),
        "lang_nll": jnp.einsum("btl,bt->l", lang, nll),
        "lang_weight": jnp.sum(lang, axis=(0, 1)),
    }


def _gradients(cfg, trainable, frozen, batch, accum: int, z_loss: float, num_langs: int):
    """Gradients of the summed objective and the summed loss terms, over `accum` micro-batches."""
    def objective(tr, mb):
        sums = loss_sums(cfg, merge_trainable(tr, frozen), mb, z_loss, num_langs)
        return sums["nll"] + sums["z"], sums

    grad_fn = jax.grad(objective, has_aux=True)
    if accum == 1:
        return grad_fn(trainable, batch)
    micro = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)

    def body(carry, mb):
        grads, sums = grad_fn(trainable, mb)
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

    zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                             jax.eval_shape(lambda: loss_sums(cfg, merge_trainable(trainable, frozen),
                                                              jax.tree.map(lambda x: x[0], micro), z_loss, num_langs)))
    zero_grads = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable)
    (grads, sums), _ = jax.lax.scan(body, (zero_grads, zero_sums), micro)
    return grads, sums


def train_step(state: dict, batch: dict, *, cfg: LlamaConfig, tx: optax.GradientTransformation, schedule,
               mask: dict, accum: int = 1, z_loss: float = 0.0, num_langs: int = 1) -> tuple[dict, dict]:
    trainable, frozen = split_trainable(state["params"], mask)
    grads, sums = _gradients(cfg, trainable, frozen, batch, accum, z_loss, num_langs)
    weight = jnp.maximum(sums["weight"], 1.0)
    grads = jax.tree.map(lambda g: g.astype(jnp.float32) / weight, grads)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], trainable)
    new_trainable = optax.apply_updates(trainable, updates)
    loss = sums["nll"] / weight
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(sums["z"])
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    new_state = {
        "step": state["step"] + 1,
        "params": merge_trainable(keep(new_trainable, trainable), frozen),
        "opt_state": keep(opt_state, state["opt_state"]),
        "skipped": state["skipped"] + (~finite).astype(jnp.int32),
    }
    metrics = {
        "loss": loss,
        "z_loss": sums["z"] / weight,
        "grad_norm": grad_norm,
        "lr": schedule(state["step"]),
        "tokens": sums["weight"],
        "finite": finite,
        "lang_loss": sums["lang_nll"] / jnp.maximum(sums["lang_weight"], 1.0),
        "lang_tokens": sums["lang_weight"],
    }
    return new_state, metrics


def eval_step(params: dict, batch: dict, *, cfg: LlamaConfig, num_langs: int = 1) -> dict:
    """Summed held-out loss terms (the caller divides after summing over batches)."""
    return loss_sums(cfg, params, batch, 0.0, num_langs)


def compile_train_step(state_shardings, batch_sharding, **kwargs):
    """`train_step` under jit with explicit in/out shardings; the old state's buffers are donated."""
    return jax.jit(functools.partial(train_step, **kwargs), in_shardings=(state_shardings, batch_sharding),
                   out_shardings=(state_shardings, None), donate_argnums=0)
