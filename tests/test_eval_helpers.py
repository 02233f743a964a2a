"""Helpers for the evaluation tests (no tests here): random checkpoints made with numpy, which costs no compile."""
import numpy as np

from xfer_jax import checkpoint
from xfer_jax.model import params as model_params
from xfer_jax.model.shapes import get_shape


def random_checkpoint(path, tokenizer=None, seed: int = 0, **shape):
    """A `tiny`-shaped checkpoint (overrides in `shape`) with random normal weights, norms at 1."""
    cfg = get_shape("tiny", **shape)
    rng = np.random.RandomState(seed)
    params = {k: v for k, v in model_params.abstract_params(cfg).items()}

    def fill(name, a):
        if "norm" in name:
            return np.ones(a.shape, a.dtype)
        return (cfg.initializer_range * rng.standard_normal(a.shape)).astype(a.dtype)

    params = {k: ({n: fill(n, a) for n, a in v.items()} if isinstance(v, dict) else fill(k, v))
              for k, v in params.items()}
    checkpoint.save(path, cfg, params, tokenizer=tokenizer, overwrite=True)
    return path
