"""What evaluation adds to a loaded model: held-out loss sums computed on device, and padded-shape buckets.

`loss_sums` is the training objective's own eval step (`train.step.eval_step`) over a packed batch, reduced on
device, so perplexity and the trainer's held-out loss are one computation; it lives here, not on
`forward.LoadedModel`, because the forward room may not import the trainer. `bucket` picks the padded lengths
that choice scoring and generation compile for.
"""
import functools
import math

import jax
import numpy as np

from xfer_jax import forward
from xfer_jax.data import pipeline
from xfer_jax.train import step as step_lib


def bucket(length: int, minimum: int = 32) -> int:
    """Round up to 2^k or 1.5·2^k (at least `minimum`): at most 33% padding, two compiled shapes per octave."""
    size = max(minimum, 1 << max(0, math.ceil(math.log2(max(length, 1)))))
    return size * 3 // 4 if size * 3 // 4 >= max(length, minimum) else size


# A module-level jit with the config static: every model over the same shapes shares the compiled code.
@functools.partial(jax.jit, static_argnames="cfg")
def _loss_sums(params, batch, *, cfg):
    return step_lib.eval_step(params, batch, cfg=cfg)


def loss_sums(model: forward.LoadedModel, batch: dict[str, np.ndarray]) -> tuple[float, float]:
    """(summed NLL in nats, summed target weight) of a packed batch holding this process's rows."""
    placement = model.placement
    with placement.context():
        if placement.mesh is not None:
            batch = pipeline.to_device(batch, placement.batch_sharding(batch["tokens"].shape))
        sums = _loss_sums(model.params, batch, cfg=model.cfg)
    return float(placement.to_host(sums["nll"])), float(placement.to_host(sums["weight"]))
