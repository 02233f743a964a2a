"""Parameter shardings from the logical-axis rules, and parameters created or placed with them.

Here, beside the parameters, rather than in parallel/: the rules (parallel/rules.py) know only axis names and
meshes, the model knows which parameters carry which names (family.py), so parallel/ imports no model code.
"""
import jax

from xfer_jax.model import params as model_params
from xfer_jax.model.config import LlamaConfig
from xfer_jax.parallel.rules import Rules, named_shardings


def param_shardings(cfg: LlamaConfig, mesh: jax.sharding.Mesh, rules: Rules | None = None) -> dict:
    """NamedSharding for every parameter, decided by `rules` (the config's table)."""
    return named_shardings(model_params.logical_axes(cfg), model_params.abstract_params(cfg), mesh, rules)


def init_sharded(cfg: LlamaConfig, mesh: jax.sharding.Mesh, seed: int = 0, rules: Rules | None = None) -> dict:
    """Random parameters created directly in their shards (never whole on one device)."""
    shardings = param_shardings(cfg, mesh, rules)
    return jax.jit(lambda: model_params.init_params(cfg, seed), out_shardings=shardings)()
