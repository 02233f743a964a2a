"""Two JAX processes on one machine train like one: `xfer train` under launch/multiprocess.py (2 processes × 4
simulated CPU devices, Gloo collectives, mesh data=2 × fsdp=4) against the same model on 8 devices in this
process fed the same global batches.

What it proves: jax.distributed start-up from XFER_* variables, batches assembled from process-local rows
(make_array_from_process_local_data), an Orbax checkpoint written by both processes into a bucket (the GCS
emulator: train.out_dir=gs://...; one grain iterator state per process) and restored by both, metrics written
by process 0 into the bucket, and losses equal to the single-process run at every step.

Each process reads only its shard of the documents, so the data stream depends on the process count; the
reference therefore builds both shards' iterators here (with jax.process_index/process_count reporting the
shard) and concatenates their rows, which is the global batch the two processes assemble.
"""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from xfer_jax import paths
from xfer_jax.data import pipeline
from xfer_jax.train.loop import Trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
OVERRIDES = {"mesh.data": 2, "mesh.fsdp": 4, "mesh.tensor": 1, "optim.schedule": "constant", "optim.warmup_steps": 0,
             "train.log_every": 1, "train.save_every": 1000, "train.eval_every": 1000, "train.eval_batches": 1,
             "train.progress_bar": False}


def losses(run_dir) -> dict[int, float]:
    text = paths.path(run_dir).joinpath("metrics.jsonl").read_text()
    return {r["step"]: r["loss"] for r in map(json.loads, text.splitlines())}


def launch_two(tokenizer, out_dir, steps: int, env) -> str:
    """`xfer train` as 2 processes × 4 CPU devices; returns the launcher's combined, process-prefixed output."""
    overrides = {**OVERRIDES, "data.tokenizer": tokenizer, "train.out_dir": out_dir, "train.steps": steps}
    train = [sys.executable, "-m", "xfer_jax.cli", "train", "--config", "configs/pretrain.py",
             *(f"--config.{k}={v}" for k, v in overrides.items())]
    done = subprocess.run([sys.executable, "launch/multiprocess.py", "--num_processes", "2", "--cpu_devices", "4",
                           "--", *train], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return done.stdout


class ProcessShards:
    """The global batches `count` processes would assemble, built in this one process."""

    def __init__(self, data_cfg, count: int, sharding, monkeypatch):
        self.iterators, self.sharding = [], sharding
        for index in range(count):
            with monkeypatch.context() as m:
                m.setattr(jax, "process_index", lambda index=index: index)
                m.setattr(jax, "process_count", lambda: count)
                self.iterators.append(pipeline.make_train_iterator(data_cfg))

    def __next__(self):
        parts = [next(it) for it in self.iterators]
        return pipeline.to_device({k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, self.sharding)

    def metrics(self) -> dict:
        return {}

    def close(self) -> None:
        for it in self.iterators:
            it.close()


def reference_losses(config, steps: int, monkeypatch) -> dict[int, float]:
    """The same config on this process's 8 devices, fed both process shards' rows; nothing is saved."""
    c = config
    for key, value in {**OVERRIDES, "train.steps": steps}.items():
        section, field = key.split(".")
        c[section][field] = value
    c.data.heldout = []
    trainer = Trainer(c)
    trainer.data.close()
    trainer.data = ProcessShards(c.data, 2, trainer.batch_sharding, monkeypatch)
    trainer.save = lambda *args, **kwargs: None
    trainer.run()
    return losses(pathlib.Path(c.train.out_dir))


def test_two_processes_train_save_restore_like_one(pretrain_config, corpus_dir, small_tokenizer, bucket, tmp_path,
                                                   monkeypatch):
    # The second launch compiles the same programs: JAX's persistent cache saves it that time.
    env = {**os.environ, "XFER_CACHE": str(corpus_dir.parent), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    run = paths.path(f"{bucket}/two_processes")
    first = launch_two(small_tokenizer, run, 3, env)
    assert "[p0] process 0/2: 4 local of 8 devices" in first and "[p1] process 1/2: 4 local of 8 devices" in first
    step = run / "ckpt" / "3"
    assert (step / "data" / "process_0-of-2.json").exists() and (step / "data" / "process_1-of-2.json").exists()
    assert (step / "commit_success.txt").exists()  # Orbax's commit marker on an object store

    second = launch_two(small_tokenizer, run, 6, env)  # restores step 3 in both processes, trains 4..6
    assert "[p0] resumed from" in second and "[p1] resumed from" in second
    two = losses(run)
    assert sorted(two) == list(range(1, 7))

    one = reference_losses(pretrain_config, 6, monkeypatch)
    np.testing.assert_allclose([two[s] for s in range(1, 7)], [one[s] for s in range(1, 7)], rtol=1e-5)
