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
from xfer_jax.parallel.rules import constrain
from xfer_jax.train.optim import merge_trainable, split_trainable


def _nll_and_log_z(h: jax.Array, w_out: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-token -log p(target) and log Z from hidden states, logits in fp32 for this slice only.

    The matmul runs in the compute dtype and its result is upcast, so the backward matmuls take a
    compute-dtype cotangent too (an fp32 one would turn both into fp32 GEMMs)."""
    logits = jnp.einsum("bte,ev->btv", h, w_out.astype(h.dtype)).astype(jnp.float32)
    logits = constrain(logits, ("batch", "seq", "act_vocab"))
    log_z = jax.nn.logsumexp(logits, axis=-1)
    return log_z - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0], log_z


def token_losses(h, w_out, targets, chunk: int):
    """Cross-entropy per token. With `chunk` > 0 the sequence is cut into chunks whose logits are computed,
    used and recomputed in the backward pass one at a time: the [B, T, V] fp32 logits never exist at once."""
    t = h.shape[1]
    if not chunk or chunk >= t or t % chunk:
        return _nll_and_log_z(h, w_out, targets)
    n = t // chunk
    hs = h.reshape(h.shape[0], n, chunk, h.shape[2]).swapaxes(0, 1)
    ts = targets.reshape(targets.shape[0], n, chunk).swapaxes(0, 1)
    body = jax.checkpoint(lambda _, x: (None, _nll_and_log_z(x[0], w_out, x[1])), prevent_cse=False)
    _, (nll, log_z) = jax.lax.scan(body, None, (hs, ts))
    return nll.swapaxes(0, 1).reshape(targets.shape), log_z.swapaxes(0, 1).reshape(targets.shape)


def loss_sums(cfg: LlamaConfig, params: dict, batch: dict, z_loss: float, num_langs: int, loss_chunk: int = 0,
              dropout_key=None) -> dict:
    """Weighted sums (not means) of the loss terms over a batch, per language too."""
    model = model_params.bind(cfg, params)
    # A batch without segment_ids holds one sequence per row: plain causal attention, no mask to build.
    h = model.hidden_states(batch["tokens"], batch["positions"], batch.get("segment_ids"), dropout_key)
    nll, log_z = token_losses(h, model.output_matrix(), batch["targets"], loss_chunk)
    w = batch["loss_weights"].astype(jnp.float32)
    lang = jax.nn.one_hot(batch["lang"], num_langs, dtype=jnp.float32) * w[..., None]
    return {
        "nll": jnp.sum(nll * w),
        "z": z_loss * jnp.sum(log_z * log_z * w),
        "weight": jnp.sum(w),
        "lang_nll": jnp.einsum("btl,bt->l", lang, nll),
        "lang_weight": jnp.sum(lang, axis=(0, 1)),
    }


def _gradients(cfg, trainable, frozen, batch, accum: int, z_loss: float, num_langs: int, loss_chunk: int, key=None):
    """Gradients of the summed objective and the summed loss terms, over `accum` micro-batches."""
    def objective(tr, mb, k):
        sums = loss_sums(cfg, merge_trainable(tr, frozen), mb, z_loss, num_langs, loss_chunk, k)
        return sums["nll"] + sums["z"], sums

    grad_fn = jax.grad(objective, has_aux=True)
    if accum == 1:
        return grad_fn(trainable, batch, key)
    # Micro-batch i takes rows i, i+accum, ...: every device holds a share of every micro-batch.
    micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1), batch)

    keys = None if key is None else jax.random.split(key, accum)

    def body(carry, inputs):
        grads, sums = grad_fn(trainable, *inputs)
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

    zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                             jax.eval_shape(lambda: loss_sums(cfg, merge_trainable(trainable, frozen),
                                                              jax.tree.map(lambda x: x[0], micro), z_loss, num_langs,
                                                              loss_chunk)))
    zero_grads = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable)
    (grads, sums), _ = jax.lax.scan(body, (zero_grads, zero_sums), (micro, keys))
    return grads, sums


def train_step(state: dict, batch: dict, *, cfg: LlamaConfig, tx: optax.GradientTransformation, schedule,
               mask: dict, accum: int = 1, z_loss: float = 0.0, num_langs: int = 1, loss_chunk: int = 0,
               dropout_key=None) -> tuple[dict, dict]:
    """One update. LoRA dropout draws from `dropout_key` folded with the step: a resumed run draws the same masks."""
    trainable, frozen = split_trainable(state["params"], mask)
    key = None if dropout_key is None else jax.random.fold_in(dropout_key, state["step"])
    grads, sums = _gradients(cfg, trainable, frozen, batch, accum, z_loss, num_langs, loss_chunk, key)
    weight = jnp.maximum(sums["weight"], 1.0)
    # Gradients reach the optimizer in each parameter's own dtype (fp32 master weights keep fp32 gradients).
    grads = jax.tree.map(lambda g, p: (g.astype(jnp.float32) / weight).astype(p.dtype), grads, trainable)
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
