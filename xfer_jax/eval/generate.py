"""KV-cache generation from token ids: batched, left-padded, two compiled functions per prompt length.

A batch of prompts is left-padded to one length P, so every prompt ends in the same cache slot and the
first new token of every row comes from the same position. `prefill` runs the whole prompt through
`Llama.decode` into a fresh cache (P + max_new_tokens slots, bucketed) and picks the first token; `step`
feeds one token per row and picks the next. Both are jitted with fixed shapes — P is the bucketed longest
prompt of the whole request, the batch is always `batch_size` rows (unused rows are inert) — so a prompt
file compiles them once. The step donates its state, so the cache's buffers are reused from step to step.

A row ends at the first of any of its end-of-sequence ids (Llama-3-Instruct has several: `stop_ids`), tested
on the device. The host looks at the output only every `check_every` steps (every row ended, or a stop string
decided by the caller's `stop_fn`), so dispatch stays ahead of the device between looks.
"""
import dataclasses
import functools
import logging
import time
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from xfer_jax import forward
from xfer_jax.eval.sampling import Sampling, choose
from xfer_jax.eval.scoring import bucket
from xfer_jax.model import params as model_params
from xfer_jax.model.decode_attention import supported as decode_attention_supported
from xfer_jax.model.llama import init_cache


@dataclasses.dataclass
class Result:
    tokens: list[int]  # new tokens, end-of-sequence excluded
    finish_reason: str  # "eos" | "stop" (the caller's stop_fn cut it) | "length"
    prompt_tokens: int


@dataclasses.dataclass
class Stats:
    prompts: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0  # tokens produced until each row finished (its end-of-sequence token counted)
    compile_s: float = 0.0  # first call of each compiled shape, on a dummy batch, kept out of the rates
    prefill_s: float = 0.0
    decode_s: float = 0.0

    def as_dict(self) -> dict:
        total = self.prefill_s + self.decode_s
        return {**dataclasses.asdict(self), "tokens_per_s": self.new_tokens / total if total else 0.0,
                "decode_tokens_per_s": max(self.new_tokens - self.prompts, 0) / self.decode_s if self.decode_s else 0.0,
                "prefill_tokens_per_s": self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0}


def stop_ids(tokenizer_eos: int, cfg) -> tuple[int, ...]:
    """The ids a reply ends on: the tokenizer's end-of-sequence and every one the model config names
    (`LlamaConfig.eos_token_ids`, e.g. Llama-3-Instruct's end of turn)."""
    return tuple(sorted({tokenizer_eos, *cfg.eos_token_ids}))


def _ends(token, eos):
    """Per row: is `token` [B] one of the end-of-sequence ids `eos` [K]?"""
    return (token[:, None] == eos[None, :]).any(axis=-1)


def _choose(logits, seen, key, knobs, vocab_size: int, greedy: bool):
    logits = jnp.where(jnp.arange(logits.shape[-1]) < vocab_size, logits, -jnp.inf)
    return choose(logits, seen, key, knobs, greedy)


# Module-level jits with the config static: every Generator over the same shapes shares the compiled code.
@functools.partial(jax.jit, static_argnames=("cfg", "vocab_size", "cache_dtype", "max_new", "greedy"))
def _prefill(params, layers, tokens, valid, active, knobs, key, *, cfg, vocab_size, cache_dtype, max_new, greedy):
    batch, length = tokens.shape
    model = model_params.bind(cfg, params)
    cache = init_cache(cfg, batch, length + max_new, cache_dtype)
    positions = jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0)
    logits, cache = model.decode(tokens, positions, cache, layers, valid)
    rows = jnp.arange(batch)[:, None]
    seen = jnp.zeros((batch, logits.shape[-1]), jnp.int32).at[rows, tokens].max(valid.astype(jnp.int32)) > 0
    key, sub = jax.random.split(key)
    token = _choose(logits[:, -1], seen, sub, knobs, vocab_size, greedy)
    return {"cache": cache, "token": token, "pos": positions[:, -1] + 1, "seen": seen.at[rows[:, 0], token].set(True),
            "done": ~active | _ends(token, knobs["eos"]), "t": jnp.int32(1), "key": key,
            "out": jnp.zeros((batch, max_new), jnp.int32).at[:, 0].set(token)}


@functools.partial(jax.jit, static_argnames=("cfg", "vocab_size", "greedy"), donate_argnames="state")
def _step(params, layers, state, knobs, *, cfg, vocab_size, greedy):
    model = model_params.bind(cfg, params)
    logits, cache = model.decode(state["token"][:, None], state["pos"][:, None], state["cache"], layers)
    key, sub = jax.random.split(state["key"])
    token = jnp.where(state["done"], 0, _choose(logits[:, 0], state["seen"], sub, knobs, vocab_size, greedy))
    rows = jnp.arange(token.shape[0])
    return {"cache": cache, "token": token, "pos": state["pos"] + 1, "seen": state["seen"].at[rows, token].set(True),
            "done": state["done"] | _ends(token, knobs["eos"]),
            "out": jax.lax.dynamic_update_slice(state["out"], token[:, None], (0, state["t"])),
            "t": state["t"] + 1, "key": key}


@functools.lru_cache(maxsize=16)
def _knobs(sampling: Sampling, eos_ids: tuple[int, ...]) -> dict:
    """The traced settings as device arrays, made once per setting rather than at every generated token."""
    return {**sampling.knobs(), "eos": jnp.asarray(eos_ids, jnp.int32)}


class Generator:
    """Batched KV-cache decoding for one loaded model. `vocab_size` (the tokenizer's) bounds the ids it may emit.

    It decodes from its own per-layer copy of the decoder weights (`params.unstack_layers`: batch-1 decoding
    is bandwidth-bound, and slices of the stacked arrays cost copies). With `release_model=True` the model's
    stacked layer weights are deleted once copied, so memory holds the weights once; the model can then only
    generate through this Generator.

    `decode_attention` picks how a new token attends to the cache (LlamaConfig.decode_attention); "auto" takes the
    one-kernel Pallas version on a single GPU and XLA's otherwise (a kernel call would be replicated on a mesh).

    `eos_id` is one end-of-sequence id or several (`stop_ids`); a row ends at the first of any of them."""

    def __init__(self, model: forward.LoadedModel, *, eos_id: int | Iterable[int], batch_size: int = 8,
                 vocab_size: int | None = None, check_every: int = 8, cache_dtype: str | None = None,
                 release_model: bool = False, decode_attention: str = "auto"):
        if decode_attention == "auto":
            one_device = model.placement.mesh is None or model.placement.mesh.size == 1
            decode_attention = "pallas" if one_device and jax.default_backend() == "gpu" else "xla"
        self.placement, self.cfg = model.placement, model.cfg.replace(decode_attention=decode_attention)
        if decode_attention == "pallas" and not decode_attention_supported(1, self.cfg):
            logging.getLogger(__name__).warning(
                "decode_attention='pallas': %d query heads per kv head and head_dim %d are not powers of two (the "
                "kernel's Triton blocks); decoding runs XLA's attention instead",
                self.cfg.num_heads // self.cfg.num_kv_heads, self.cfg.head_dim)
        with self.placement.context():
            self.layers = model_params.unstack_layers(model.cfg, model.params)
        self.params = {name: value for name, value in model.params.items() if name != "layers"}
        if release_model:
            for array in jax.tree.leaves(model.params["layers"]):
                array.delete()  # any later use of the model fails with JAX's "Array has been deleted"
        self.eos_ids = tuple(sorted({int(i) for i in ([eos_id] if np.ndim(eos_id) == 0 else eos_id)}))
        if not self.eos_ids:
            raise ValueError("Generator needs at least one end-of-sequence id")
        self.batch_size, self.check_every = batch_size, check_every
        self.vocab_size = vocab_size or model.cfg.vocab_size
        self.cache_dtype = cache_dtype
        self._compiled: set[tuple[int, int, bool]] = set()

    @staticmethod
    def capacity(sampling: Sampling) -> int:
        """New-token slots compiled for: max_new_tokens bucketed, so requests asking for 200 or 256 share code."""
        return bucket(sampling.max_new_tokens, 16)

    def _knobs(self, sampling: Sampling) -> dict:
        return _knobs(sampling, self.eos_ids)

    def prefill(self, prompts: list[list[int]], length: int, sampling: Sampling, key) -> dict:
        """Left-pad up to `batch_size` prompts to `length` and run them; returns the decoding state."""
        tokens = np.zeros((self.batch_size, length), np.int32)
        valid = np.zeros((self.batch_size, length), bool)
        for row, prompt in enumerate(prompts):
            tokens[row, length - len(prompt):], valid[row, length - len(prompt):] = prompt, True
        valid[len(prompts):, -1] = True  # unused rows: one inert token, finished from the start
        active = np.arange(self.batch_size) < len(prompts)
        with self.placement.context():
            put = self.placement.put
            return _prefill(self.params, self.layers, put(tokens), put(valid), put(active), self._knobs(sampling), key,
                            cfg=self.cfg, vocab_size=self.vocab_size, cache_dtype=self.cache_dtype,
                            max_new=self.capacity(sampling), greedy=sampling.greedy)

    def step(self, state: dict, sampling: Sampling) -> dict:
        with self.placement.context():
            return _step(self.params, self.layers, state, self._knobs(sampling), cfg=self.cfg,
                         vocab_size=self.vocab_size, greedy=sampling.greedy)

    # ---- host side ----
    def warm_up(self, length: int, sampling: Sampling) -> float:
        """Compile prefill and step for this prompt length (once) on a dummy batch; returns the seconds spent."""
        if (length, self.capacity(sampling), sampling.greedy) in self._compiled:
            return 0.0
        start = time.perf_counter()
        state = self.prefill([[0]], length, sampling, jax.random.PRNGKey(0))
        jax.block_until_ready(self.step(state, sampling)["token"])
        self._compiled.add((length, self.capacity(sampling), sampling.greedy))
        return time.perf_counter() - start

    def check_lengths(self, prompts: list[list[int]], max_new: int) -> None:
        limit = self.cfg.max_position_embeddings
        for i, prompt in enumerate(prompts):
            if not prompt:
                raise ValueError(f"prompt {i} is empty (no tokens)")
            if len(prompt) + max_new > limit:
                raise ValueError(f"prompt {i} has {len(prompt)} tokens; with max_new_tokens={max_new} it passes the "
                                 f"model's max_position_embeddings={limit}: shorten it or lower max_new_tokens")

    def run(self, prompts: list[list[int]], sampling: Sampling, stop_fn=None, progress: bool = False):
        """(one Result per prompt, Stats). `stop_fn(new_tokens)` returns how many tokens to keep once a stop
        condition (a stop string) holds, else None; such a row ends there."""
        self.check_lengths(prompts, sampling.max_new_tokens)
        length = bucket(max(len(p) for p in prompts), 16)
        results, stats = [], Stats(prompts=len(prompts), prompt_tokens=sum(map(len, prompts)))
        stats.compile_s = self.warm_up(length, sampling)
        starts = range(0, len(prompts), self.batch_size)
        for start in tqdm(starts, desc="generate", unit="batch", disable=not progress):
            batch = prompts[start:start + self.batch_size]
            key = jax.random.fold_in(jax.random.PRNGKey(sampling.seed), start)
            t0 = time.perf_counter()
            state = self.prefill(batch, length, sampling, key)
            jax.block_until_ready(state["token"])
            t1 = time.perf_counter()
            out = self._decode(state, sampling, len(batch), stop_fn)
            stats.prefill_s += t1 - t0
            stats.decode_s += time.perf_counter() - t1
            for row, prompt in enumerate(batch):
                results.append(self._result(out[row], stop_fn, len(prompt)))
                stats.new_tokens += len(results[-1].tokens) + (results[-1].finish_reason == "eos")
        return results, stats

    def _decode(self, state, sampling, rows, stop_fn):
        stopped = np.zeros(self.batch_size, bool)
        for t in range(1, sampling.max_new_tokens + 1):
            if t % self.check_every == 0 or t == sampling.max_new_tokens:
                done, out = self.placement.to_host(state["done"]), self.placement.to_host(state["out"])[:, :t]
                for r in range(rows if stop_fn is not None else 0):
                    if not (stopped[r] or done[r]) and stop_fn(self._until_eos(out[r])) is not None:
                        stopped[r] = True
                if (done | stopped).all() or t == sampling.max_new_tokens:
                    return out
            state = self.step(state, sampling)

    def _until_eos(self, row: np.ndarray) -> list[int]:
        ends = np.flatnonzero(np.isin(row, self.eos_ids))
        return row[: ends[0] if len(ends) else len(row)].tolist()

    def _result(self, row: np.ndarray, stop_fn, prompt_tokens: int) -> Result:
        tokens = self._until_eos(row)
        keep = stop_fn(tokens) if stop_fn is not None else None
        if keep is not None:
            return Result(tokens[:keep], "stop", prompt_tokens)
        return Result(tokens, "eos" if len(tokens) < len(row) else "length", prompt_tokens)

