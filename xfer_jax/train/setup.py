"""What a train step needs, built once for `xfer train`, `xfer bench`, `xfer sweep` and tools/bench_lora.py.

`model_config` turns a config's `model` section into the LlamaConfig (the named shape, or `init_from`'s
checkpoint, `.replace`d by every other `model.*` key). `build` turns that config and a Placement into a
`TrainSetup`: trainable mask, optimizer and schedule, the sharding of every state leaf, the abstract state
(the restore target), the batch sharding, and from there fresh states and the compiled train step. Trace and
run what it returns inside `placement.context()`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import optax

from xfer_jax import checkpoint
from xfer_jax.model import params as model_params
from xfer_jax.model.config import LlamaConfig
from xfer_jax.model.shapes import get_shape
from xfer_jax.parallel.placement import Placement
from xfer_jax.model.sharding import init_sharded, param_shardings
from xfer_jax.train import lora_setup, optim, state as state_lib, step as step_lib

SECTION_ONLY = ("shape", "vocab_size")  # config.model keys that pick the shape rather than set a field
BATCH_AXES = ("batch", "seq")  # logical axes of every [rows, seq_len] batch array


def model_config(model: Mapping, *, init_from: str = "", tokenizer_size: int = 0) -> LlamaConfig:
    """The named shape `model.shape` (vocabulary: `model.vocab_size`, else `tokenizer_size`, else the shape's
    own), or with `init_from` the checkpoint's shape, then `.replace(**model)` for every other key.

    LoRA fields the section leaves out take LlamaConfig's defaults (no adapters), never the checkpoint's: a
    stage's adapters are its own. With `init_from` the checkpoint decides the shape, so a `model.*` key that
    is neither a run field (checkpoint.RUN_FIELDS) nor a LoRA field is refused by name."""
    fields = {f.name: f for f in dataclasses.fields(LlamaConfig)}
    changes = {k: v for k, v in model.items() if k not in SECTION_ONLY}
    for key in changes:
        if key not in fields:
            valid = [*SECTION_ONLY, *(f for f in fields if f not in SECTION_ONLY)]
            raise ValueError(f"model.{key} is not a model setting; valid: {', '.join(valid)}")
    lora_defaults = {f: fields[f].default for f in lora_setup.LORA_FIELDS}
    if init_from:
        shape_keys = [k for k in changes if k not in (*checkpoint.RUN_FIELDS, *lora_setup.LORA_FIELDS)]
        if model.get("vocab_size"):
            shape_keys.insert(0, "vocab_size")
        if shape_keys:
            given = ", ".join(f"model.{k}={model[k]!r}" for k in shape_keys)
            raise ValueError(f"{given}: init_from={init_from} decides the model's shape; drop the key, or train "
                             f"without init_from (run fields may change: {', '.join(checkpoint.RUN_FIELDS)})")
        base = LlamaConfig.from_dict(checkpoint.read_meta(init_from)["model"])
    else:
        vocab = model.get("vocab_size") or tokenizer_size
        base = get_shape(model["shape"], **({"vocab_size": vocab} if vocab else {}))
    cfg = base.replace(**{**lora_defaults, **changes})
    if tokenizer_size > cfg.vocab_size:
        raise ValueError(f"data.tokenizer has {tokenizer_size} pieces but the model's vocabulary is "
                         f"{cfg.vocab_size}; extend the model (`xfer vocab extend`) or set model.vocab_size")
    return cfg


@dataclasses.dataclass
class TrainSetup:
    """The pieces of one train step on one placement (see `build`)."""

    cfg: LlamaConfig
    placement: Placement
    mask: dict  # True for every trained parameter
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    state_shardings: dict
    abstract_state: dict  # ShapeDtypeStructs with shardings: the restore target
    batch_sharding: jax.sharding.NamedSharding
    sizes: dict  # lora_setup.state_report: parameter and optimizer-state counts and bytes

    @property
    def mesh(self) -> jax.sharding.Mesh:
        return self.placement.mesh

    def new_state(self, params: dict) -> dict:
        """A step-0 state around `params` (optimizer state zero), every leaf in its sharding."""
        with self.placement.context():
            create = jax.jit(lambda p: state_lib.new_state(p, self.tx, self.mask), out_shardings=self.state_shardings)
            return create(params)

    def fresh_state(self, seed: int, init_from: str = "") -> dict:
        """A step-0 state: random parameters from `seed` created in their shards, or `init_from`'s (its adapters
        merged, this config's fresh ones added; lora_setup.initial_params)."""
        mesh, rules = self.placement.mesh, self.placement.rules
        with self.placement.context():
            if init_from:
                run = {f: getattr(self.cfg, f) for f in checkpoint.RUN_FIELDS}
                params = lora_setup.initial_params(init_from, self.cfg, mesh, rules, seed, **run)
            else:
                params = init_sharded(self.cfg, mesh, seed, rules)
            return self.new_state(params)

    def train_step(self, *, accum: int = 1, z_loss: float = 0.0, num_langs: int = 1, loss_chunk: int = 0,
                   seed: int = 0):
        """The jitted `step.train_step` (state donated); LoRA dropout, if any, draws from `seed`."""
        return step_lib.compile_train_step(
            self.state_shardings, self.batch_sharding, cfg=self.cfg, tx=self.tx, schedule=self.schedule,
            mask=self.mask, accum=accum, z_loss=z_loss, num_langs=num_langs, loss_chunk=loss_chunk,
            dropout_key=lora_setup.dropout_key(self.cfg, seed))

    def put_batch(self, host_batch: Mapping) -> dict:
        """A host batch every process holds whole, placed as the step expects it."""
        return {k: self.placement.put(v, BATCH_AXES) for k, v in host_batch.items()}


def build(cfg: LlamaConfig, placement: Placement, *, optim_cfg, total_steps: int, batch_shape: Sequence[int],
          trainable: Sequence[str] = (), frozen: Sequence[str] = ()) -> TrainSetup:
    """Everything but the parameters: parameters matching `trainable` (all when empty) and not `frozen` train,
    AdamW + schedule over `total_steps`, batches of `batch_shape` = (rows, seq_len)."""
    if placement.mesh is None:
        raise ValueError("a train step needs a mesh (parallel.mesh.make_mesh), even of one device")
    abstract = model_params.abstract_params(cfg)
    mask = optim.trainable_mask(abstract, list(trainable), list(frozen))
    tx = optim.make_optimizer(optim_cfg, total_steps, optim.split_trainable(abstract, mask)[0])
    shardings = state_lib.state_shardings(param_shardings(cfg, placement.mesh, placement.rules), abstract, tx, mask,
                                          placement.mesh)
    abstract_state = state_lib.abstract_state(abstract, tx, mask, shardings)
    return TrainSetup(cfg=cfg, placement=placement, mask=mask, tx=tx,
                      schedule=optim.learning_rate(optim_cfg, total_steps),
                      state_shardings=shardings, abstract_state=abstract_state,
                      batch_sharding=placement.sharding(BATCH_AXES, tuple(batch_shape)),
                      sizes=lora_setup.state_report(abstract_state, mask))
