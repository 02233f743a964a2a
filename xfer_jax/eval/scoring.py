"""Numbers from a loaded model on one device or any mesh, computed on device: loss sums and chosen log-probs.

Evaluation never needs the full [B, T, V] logits on the host (2 GB for one 8×2048 batch of a 32k vocabulary),
so the jitted functions here reduce on device: `loss_sums` for perplexity, `logprobs` for the log-probability
of chosen tokens at chosen positions (exam answers), computing the LM head only at those positions.
"""
import contextlib
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from xfer_jax import forward
from xfer_jax.data import pipeline
from xfer_jax.model import params as model_params
from xfer_jax.parallel import rules as rules_lib
from xfer_jax.train import step as step_lib


def bucket(length: int, minimum: int = 32) -> int:
    """Round up to 2^k or 1.5·2^k (at least `minimum`): at most 33% padding, two compiled shapes per octave."""
    size = max(minimum, 1 << max(0, math.ceil(math.log2(max(length, 1)))))
    return size * 3 // 4 if size * 3 // 4 >= max(length, minimum) else size


# Module-level jits with the config static: every Runner over the same shapes shares the compiled code.
@functools.partial(jax.jit, static_argnames="cfg")
def _loss_sums(params, batch, *, cfg):
    return step_lib.eval_step(params, batch, cfg=cfg)


@functools.partial(jax.jit, static_argnames="cfg")
def _logprobs(params, tokens, query_pos, query_tok, *, cfg):
    model = model_params.bind(cfg, params)
    picked = jnp.take_along_axis(model.hidden_states(tokens), query_pos[..., None], axis=1)  # [B, K, E]
    logp = jax.nn.log_softmax(model.logits(picked), axis=-1)
    return jnp.take_along_axis(logp, query_tok[..., None], axis=-1)[..., 0]


def _replicated(x: jax.Array) -> jax.Array:
    """Every process can read a result once it is replicated (small results only)."""
    if x.is_fully_addressable or x.is_fully_replicated:
        return x
    return jax.jit(lambda a: a, out_shardings=NamedSharding(x.sharding.mesh, PartitionSpec()))(x)


class Runner:
    """A LoadedModel plus the placement rules: batches go onto the mesh's batch axes, results come back whole."""

    def __init__(self, model: forward.LoadedModel):
        self.model, self.cfg, self.mesh = model, model.cfg, model.mesh
        if self.mesh is None and any(isinstance(x, np.ndarray) for x in jax.tree.leaves(model.params)):
            # forward.load without a mesh leaves the parameters in host memory: move them to the device once
            # (in the model, so every Runner shares them), not at every call.
            model.params = jax.device_put(model.params)

    @contextlib.contextmanager
    def context(self):
        """The mesh and rules every traced function must see (nothing to set on one device)."""
        if self.mesh is None:
            yield
            return
        with jax.set_mesh(self.mesh), rules_lib.use_rules(self.model.rules):
            yield

    def batch_sharding(self, shape) -> NamedSharding | None:
        if self.mesh is None:
            return None
        spec = rules_lib.spec_for(("batch",) + (None,) * (len(shape) - 1), shape, dict(self.mesh.shape),
                                  self.model.rules)
        return NamedSharding(self.mesh, spec)

    def put(self, array: np.ndarray):
        """A host array every process holds whole → a global array split over the batch axes."""
        sharding = self.batch_sharding(array.shape)
        return array if sharding is None else jax.device_put(array, sharding)

    def loss_sums(self, batch: dict[str, np.ndarray]) -> tuple[float, float]:
        """(summed NLL in nats, summed target weight) of a packed batch holding this process's rows."""
        with self.context():
            if self.mesh is not None:
                batch = pipeline.to_device(batch, self.batch_sharding(batch["tokens"].shape))
            sums = _loss_sums(self.model.params, batch, cfg=self.cfg)
        return float(_replicated(sums["nll"])), float(_replicated(sums["weight"]))

    def logprobs(self, tokens: np.ndarray, query_pos: np.ndarray, query_tok: np.ndarray) -> np.ndarray:
        """log p(query_tok[b, k] | tokens[b, :query_pos[b, k] + 1]) as [B, K] float32 (causal: padding after the
        queried positions changes nothing)."""
        with self.context():
            out = _logprobs(self.model.params, *(self.put(np.asarray(a, np.int32))
                                                 for a in (tokens, query_pos, query_tok)), cfg=self.cfg)
        return np.asarray(_replicated(out))
