"""A loaded model: a checkpoint's parameters on one device or any mesh, and what they compute.

    model = forward.load("ckpts/base", mesh=mesh)    # mesh optional
    logits = model.logits(token_ids)                 # [B, T, V] numpy fp32

Every caller that runs a checkpoint (tests, `xfer eval`, `xfer serve`, the study, `xfer parity`) loads it
here, and every such model holds a `Placement` (mesh + rules): it traces inside `placement.context()`, puts
host batches on the batch axes with `placement.put` and brings results back with `placement.to_host`.

Which tokenizer belongs to a checkpoint has one answer too (`tokenizer_for`): `--tokenizer` if given, else
the checkpoint's own tokenizer (`tokenizer.json` or `tokenizer.model`: import and export carry it), else the
tokenizer the trainer was configured with (recorded in the checkpoint's meta). `load_with_tokenizer` loads
both and checks them.

`logprobs` reduces on device: evaluation never needs the full [B, T, V] logits on the host (2 GB for one
8×2048 batch of a 32k vocabulary). The held-out loss sums are the training objective's own eval step and so
live with the evaluation (`xfer_jax.eval.scoring.loss_sums`: this room may not import the trainer).
"""
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from xfer_jax import checkpoint, paths
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.model import params as model_params
from xfer_jax.model.config import LlamaConfig
from xfer_jax.model.sharding import param_shardings
from xfer_jax.parallel import rules as rules_lib
from xfer_jax.parallel.placement import Placement


# Module-level jits with the config static: every LoadedModel over the same shapes shares the compiled code.
@functools.partial(jax.jit, static_argnames="cfg")
def _logits(params, tokens, positions, segment_ids, *, cfg):
    return model_params.apply(cfg, params, tokens, positions, segment_ids)


@functools.partial(jax.jit, static_argnames=("cfg", "greedy"))
def _logprobs(params, tokens, query_pos, query_tok, *, cfg, greedy=False):
    model = model_params.bind(cfg, params)
    picked = jnp.take_along_axis(model.hidden_states(tokens), query_pos[..., None], axis=1)  # [B, K, E]
    logp = jax.nn.log_softmax(model.logits(picked), axis=-1)
    chosen = jnp.take_along_axis(logp, query_tok[..., None], axis=-1)[..., 0]
    return (chosen, jnp.argmax(logp, axis=-1) == query_tok) if greedy else chosen


@dataclasses.dataclass
class LoadedModel:
    cfg: LlamaConfig
    params: dict
    placement: Placement = dataclasses.field(default_factory=lambda: Placement(None))

    def __post_init__(self):
        if self.placement.mesh is None and any(isinstance(x, np.ndarray) for x in jax.tree.leaves(self.params)):
            # Parameters in host memory go to the device once, here, not at every call.
            self.params = jax.device_put(self.params)

    def logits(self, tokens, positions=None, segment_ids=None) -> np.ndarray:
        """[B, T, V] (or [T, V] for [T] ids) fp32 logits as numpy, on every process."""
        tokens = np.asarray(tokens, np.int32)
        if tokens.ndim == 1:
            return self.logits(tokens[None], positions, segment_ids)[0]
        ids = [None if x is None else self.placement.put(np.asarray(x, np.int32), ("batch", "seq"))
               for x in (tokens, positions, segment_ids)]
        with self.placement.context():
            out = _logits(self.params, *ids, cfg=self.cfg)
        return self.placement.to_host(out)

    def logprobs(self, tokens: np.ndarray, query_pos: np.ndarray, query_tok: np.ndarray, greedy: bool = False):
        """log p(query_tok[b, k] | tokens[b, :query_pos[b, k] + 1]) as [B, K] float32, the LM head computed only
        at the queried positions (causal: padding after them changes nothing). Every process holds the rows.
        `greedy`: (log p, [B, K] bool: is query_tok the most likely token there), lm-eval's `is_greedy`."""
        with self.placement.context():
            out = _logprobs(self.params, *(self.placement.put(np.asarray(a, np.int32))
                                           for a in (tokens, query_pos, query_tok)), cfg=self.cfg, greedy=greedy)
        return tuple(map(self.placement.to_host, out)) if greedy else self.placement.to_host(out)


def load(ckpt_dir: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None, rules=None, step: int | None = None,
         **run_overrides) -> LoadedModel:
    """Restore a checkpoint's parameters (sharded by `rules` when a mesh is given) for inference."""
    placement = Placement(mesh, tuple(rules or rules_lib.DEFAULT_RULES))
    if mesh is None:
        cfg, params = checkpoint.load_params(ckpt_dir, step=step, **run_overrides)
        return LoadedModel(cfg, params, placement)  # on the device once (LoadedModel puts host arrays there)
    meta = checkpoint.read_meta(ckpt_dir, step)
    cfg = LlamaConfig.from_dict(meta["model"]).replace(**run_overrides)
    shardings = param_shardings(cfg, mesh, placement.rules)
    cfg, params = checkpoint.load_params(ckpt_dir, step=step, shardings=shardings, **run_overrides)
    return LoadedModel(cfg, params, placement)


def logits(ckpt_dir, tokens, **kwargs) -> np.ndarray:
    """One-shot: load DIR and return logits for `tokens` ([T] or [B, T] ids)."""
    return load(ckpt_dir, **kwargs).logits(tokens)


def tokenizer_for(ckpt_dir, tokenizer: str | os.PathLike | None = None) -> Tokenizer:
    """`tokenizer` if given (a .model, a tokenizer.json or a directory holding either), else the checkpoint's own
    (checkpoint.tokenizer_path: tokenizer.json, else tokenizer.model), else the one its trainer was configured with."""
    if tokenizer:
        return Tokenizer.load(tokenizer)
    own = checkpoint.tokenizer_path(ckpt_dir)
    if own is not None:
        return Tokenizer.load(own)
    trained_with = checkpoint.read_meta(ckpt_dir).get("config", {}).get("data", {}).get("tokenizer")
    if trained_with and paths.path(trained_with, "data.tokenizer").exists():
        return Tokenizer.load(trained_with)
    raise FileNotFoundError(
        f"{ckpt_dir} holds no tokenizer.model or tokenizer.json and its meta names no existing data.tokenizer "
        f"({trained_with!r}); pass --tokenizer PATH/tokenizer.model (or PATH/tokenizer.json)")


def load_with_tokenizer(ckpt_dir, *, mesh: jax.sharding.Mesh | None = None, tokenizer=None, dtype: str | None = None,
                        param_dtype: str | None = None) -> tuple[LoadedModel, Tokenizer]:
    """The checkpoint's model (sharded over `mesh` when given) and its tokenizer, checked against each other
    (what every `xfer eval` kind, `xfer serve` and the study load). A None dtype keeps the checkpoint's."""
    overrides = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v}
    tok = tokenizer_for(ckpt_dir, tokenizer)
    model = load(ckpt_dir, mesh=mesh, **overrides)
    if tok.vocab_size > model.cfg.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} pieces but {ckpt_dir}'s vocabulary has "
                         f"{model.cfg.vocab_size} rows: wrong --tokenizer for this checkpoint?")
    return model, tok
