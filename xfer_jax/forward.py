"""Logits for token ids from a checkpoint, on one device or any mesh: what tests and `xfer eval` call.

    model = forward.load("ckpts/base", mesh=mesh)    # mesh optional
    logits = model.logits(token_ids)                 # [B, T, V] numpy fp32
"""
import dataclasses
import pathlib

import jax
import numpy as np
from jax.sharding import NamedSharding

from xfer_jax import checkpoint
from xfer_jax.model import params as model_params
from xfer_jax.model.config import LlamaConfig
from xfer_jax.parallel import rules as rules_lib
from xfer_jax.parallel.sharding import param_shardings


@dataclasses.dataclass
class LoadedModel:
    cfg: LlamaConfig
    params: dict
    mesh: jax.sharding.Mesh | None = None
    rules: tuple = rules_lib.DEFAULT_RULES

    def __post_init__(self):
        self._apply = jax.jit(lambda p, t, pos, seg: model_params.apply(self.cfg, p, t, pos, seg))

    def logits(self, tokens, positions=None, segment_ids=None) -> np.ndarray:
        tokens = np.asarray(tokens, np.int32)
        if tokens.ndim == 1:
            return self.logits(tokens[None], positions, segment_ids)[0]
        if self.mesh is None:
            return np.asarray(self._apply(self.params, tokens, positions, segment_ids))
        with jax.set_mesh(self.mesh), rules_lib.use_rules(self.rules):
            batch_spec = rules_lib.spec_for(("batch", "seq"), tokens.shape, dict(self.mesh.shape))
            put = lambda x: None if x is None else jax.device_put(np.asarray(x, np.int32), NamedSharding(self.mesh, batch_spec))  # noqa: E731
            return np.asarray(self._apply(self.params, put(tokens), put(positions), put(segment_ids)))


def load(ckpt_dir: str | pathlib.Path, *, mesh: jax.sharding.Mesh | None = None, rules=None, step: int | None = None,
         **run_overrides) -> LoadedModel:
    """Restore a checkpoint's parameters (sharded by `rules` when a mesh is given) for inference."""
    rules = tuple(rules or rules_lib.DEFAULT_RULES)
    if mesh is None:
        cfg, params = checkpoint.load_params(ckpt_dir, step=step, **run_overrides)
        return LoadedModel(cfg, jax.device_put(params))  # on the device once, not copied at every call
    meta = checkpoint.read_meta(ckpt_dir, step)
    cfg = LlamaConfig.from_dict(meta["model"]).replace(**run_overrides)
    cfg, params = checkpoint.load_params(ckpt_dir, step=step, shardings=param_shardings(cfg, mesh, rules), **run_overrides)
    return LoadedModel(cfg, params, mesh, rules)


def logits(ckpt_dir, tokens, **kwargs) -> np.ndarray:
    """One-shot: load DIR and return logits for `tokens` ([T] or [B, T] ids)."""
    return load(ckpt_dir, **kwargs).logits(tokens)
