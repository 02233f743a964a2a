"""Train state {step, params, opt_state, skipped}: creation, and the sharding of every leaf.

Optimizer moments shard exactly like the parameters they track (`optax.tree_utils.tree_map_params`
finds them inside any optax state); counters and other scalars are replicated.
"""
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from xfer_jax.train.optim import split_trainable


def new_state(params: dict, tx: optax.GradientTransformation, mask: dict) -> dict:
    trainable, _ = split_trainable(params, mask)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(trainable),
            "skipped": jnp.zeros((), jnp.int32)}


def state_shardings(param_shardings: dict, abstract_params: dict, tx: optax.GradientTransformation, mask: dict,
                    mesh: jax.sharding.Mesh) -> dict:
    replicated = NamedSharding(mesh, PartitionSpec())
    trainable_abstract, _ = split_trainable(abstract_params, mask)
    trainable_shardings, _ = split_trainable(param_shardings, mask)
    abstract_opt = jax.eval_shape(tx.init, trainable_abstract)
    opt_shardings = optax.tree_utils.tree_map_params(
        tx, lambda _, sharding: sharding, abstract_opt, trainable_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: x is None,
    )
    return {"step": replicated, "params": param_shardings, "opt_state": opt_shardings, "skipped": replicated}


def abstract_state(abstract_params: dict, tx: optax.GradientTransformation, mask: dict, shardings: dict) -> dict:
    """ShapeDtypeStructs with shardings: the restore target for a checkpointed state."""
    shapes = jax.eval_shape(lambda p: new_state(p, tx, mask), abstract_params)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)
