"""Choosing the next token from logits: greedy, or sampled with temperature, top-k and top-p, after a
repetition penalty — in the order and with the semantics of transformers' logits processors, so a setting
means the same here as in `model.generate`.

The knobs are traced scalars, not static arguments: every sampling setting (and every request of `xfer serve`)
runs the same compiled step. Greedy or sampled is the one static choice: greedy decoding never pays for the
vocabulary sort that top-k/top-p need, and the step holds no `lax.cond`, whose predicate the GPU runtime
reads back on the host every step, stalling the dispatch of the next one.
"""
import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How to decode. temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "stop", tuple(self.stop))
        checks = [
            (self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
            (self.temperature >= 0, "temperature must be >= 0 (0 = greedy)"),
            (self.top_k >= 0, "top_k must be >= 0 (0 = off)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1] (1 = off)"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0 (1 = off)"),
            (all(self.stop), "stop strings must be non-empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}; got {self}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def knobs(self) -> dict[str, jax.Array]:
        """The traced part of the setting."""
        return {"temperature": jnp.float32(self.temperature), "top_k": jnp.int32(self.top_k),
                "top_p": jnp.float32(self.top_p), "repetition_penalty": jnp.float32(self.repetition_penalty)}


def penalize(logits: jax.Array, seen: jax.Array, penalty: jax.Array) -> jax.Array:
    """CTRL's repetition penalty as transformers applies it: a seen token's logit is divided by the penalty
    when positive, multiplied when negative (prompt tokens count as seen)."""
    return jnp.where(seen, jnp.where(logits > 0, logits / penalty, logits * penalty), logits)


def filter_logits(logits: jax.Array, temperature, top_k, top_p) -> jax.Array:
    """Temperature, then top-k, then top-p (nucleus); filtered-out tokens get -inf. logits [B, V]."""
    logits = logits / temperature
    ordered = -jnp.sort(-logits, axis=-1)  # descending
    vocab = logits.shape[-1]
    k = jnp.clip(top_k, 1, vocab)
    kth = jnp.take_along_axis(ordered, jnp.broadcast_to(k - 1, (logits.shape[0], 1)), axis=-1)
    kth = jnp.where(top_k > 0, kth, -jnp.inf)
    ordered = jnp.where(ordered >= kth, ordered, -jnp.inf)
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of the more likely tokens
    kept = jnp.sum(before < top_p, axis=-1, keepdims=True)  # always >= 1
    floor = jnp.take_along_axis(ordered, kept - 1, axis=-1)
    return jnp.where((logits >= kth) & (logits >= floor), logits, -jnp.inf)


def choose(logits: jax.Array, seen: jax.Array, key: jax.Array, knobs: dict, greedy: bool) -> jax.Array:
    """Next token ids [B] from logits [B, V]: the most likely one when `greedy` (static), else a sample."""
    logits = penalize(logits.astype(jnp.float32), seen, knobs["repetition_penalty"])
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits, knobs["temperature"], knobs["top_k"], knobs["top_p"])
    return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
