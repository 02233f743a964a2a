"""Errors a user can fix, said before anything is allocated or compiled.

One set of run checks for `xfer train` (named by config key: data.batch_size, ...) and `xfer bench` /
`xfer sweep` (named by flag: batch_size, ...): the mesh fits the devices, the batch splits over the batch
axes and micro-batches, the sequence fits the model, there are steps to run.
"""
import glob
import math
from collections.abc import Mapping

import jax

from xfer_jax import paths
from xfer_jax.model.config import LlamaConfig
from xfer_jax.train import guard as guard_lib, wandb_log
from xfer_jax.parallel.mesh import MESH_AXES

# The names errors use: `xfer train`'s config keys, or the perf verbs' flags.
TRAIN_KEYS = {"batch_size": "data.batch_size", "seq_len": "data.seq_len", "grad_accum": "train.grad_accum",
              "steps": "train.steps", "sequence": "mesh.sequence"}
FLAG_KEYS = {**{k: k for k in TRAIN_KEYS}, "sequence": "--mesh sequence"}
NAN_POLICIES = ("skip", "stop")


def check_run(cfg: LlamaConfig, mesh_sizes: Mapping[str, int], *, batch_size: int, seq_len: int, grad_accum: int = 1,
              steps: int = 1, keys: Mapping[str, str] = FLAG_KEYS, model: str = "the model", fix: str = "",
              planned: bool = False) -> None:
    """A train step of `batch_size` rows × `seq_len` tokens in `grad_accum` micro-batches on a mesh of
    `mesh_sizes` (data, fsdp, tensor, sequence) can run here (`planned`: on a machine of the mesh's size, not
    this one); else a one-line ValueError naming the setting (`keys`)."""
    mesh = tuple(int(mesh_sizes.get(a, 1)) for a in MESH_AXES)
    if mesh[3:] == (1,):
        mesh = mesh[:3]  # messages name (data, fsdp, tensor) as before the sequence axis, unless it is used
    devices = math.prod(mesh)
    if not planned and devices > jax.device_count():
        raise ValueError(f"mesh {mesh} needs {devices} devices, {jax.device_count()} are available")
    if not planned and jax.process_count() > 1 and devices != jax.device_count():
        raise ValueError(f"mesh {mesh} uses {devices} of {jax.device_count()} devices; with "
                         f"{jax.process_count()} processes every mesh must span all devices")
    dp = mesh[0] * mesh[1]
    suffix = f"; {fix}" if fix else ""
    if batch_size % (dp * grad_accum):
        raise ValueError(f"{keys['batch_size']} {batch_size} is not divisible by data × fsdp × "
                         f"{keys['grad_accum']} = {dp} × {grad_accum}{suffix}")
    sequence = int(mesh_sizes.get("sequence", 1))
    if seq_len % sequence:
        raise ValueError(f"{keys['seq_len']} {seq_len} is not divisible by the mesh's sequence axis "
                         f"({keys.get('sequence', 'sequence')}) {sequence}; choose a multiple of it")
    if seq_len > cfg.max_position_embeddings:
        raise ValueError(f"{keys['seq_len']} {seq_len} exceeds {model}'s max_position_embeddings "
                         f"{cfg.max_position_embeddings}")
    if steps <= 0:
        raise ValueError(f"{keys['steps']} must be positive")


def check_config(config, mesh: jax.sharding.Mesh, cfg: LlamaConfig) -> None:
    """`xfer train`'s config on `mesh`: the run checks above, by config key, and the trainer's own settings."""
    check_run(cfg, dict(mesh.shape), batch_size=config.data.batch_size, seq_len=config.data.seq_len,
              grad_accum=config.train.grad_accum, steps=config.train.steps, keys=TRAIN_KEYS,
              fix="change the batch size, the accumulation or the mesh")
    if config.train.nan_policy not in NAN_POLICIES:
        raise ValueError(f"train.nan_policy={config.train.nan_policy!r}; choose 'skip' or 'stop'")
    wandb_log.check(config.train.get("wandb"), config.train.out_dir)
    guard_lib.check(config.data)


def check_paths(config) -> None:
    """Every path the run reads or writes, by its key, before anything is built or written: a scheme this project
    reads (paths.path), a store that answers and a bucket that exists; inputs (init_from, data.tokenizer, every
    data source) must exist (a glob: its folder), the run directory need not."""
    def check(value, key, must_exist):
        paths.check_reachable(paths.path(value, key), key, must_exist=must_exist)

    check(config.train.out_dir, "train.out_dir", False)
    check(config.data.tokenizer, "data.tokenizer", True)
    if config.init_from:
        check(config.init_from, "init_from", True)
    for group in ("sources", "heldout"):
        for i, entry in enumerate(config.data.get(group) or []):
            if not entry.get("path"):  # format 'tfds' names a dataset, checked when its source opens
                continue
            parts = str(entry["path"]).split("/")
            fixed = next((j for j, part in enumerate(parts) if glob.has_magic(part)), len(parts))
            check("/".join(parts[:fixed]) or ".", f"data.{group}[{i}].path", True)  # a glob: the folder above it
