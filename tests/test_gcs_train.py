"""`xfer train` with its run directory in a bucket (a real GCS emulator, fake-gcs-server on loopback).

Checkpoints, metrics.jsonl and TensorBoard events go to gs://; tokenizer and corpus stay local. What is proved:
a step Orbax did not commit (no commit_success.txt: the process died mid-save) is never resumed from; resume
from the bucket reproduces an uninterrupted local run bit for bit (SIGTERM, and a real kill -9 during an async
save); `init_from` reads a gs:// checkpoint.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import fsspec
import jax
import numpy as np
import pytest

from xfer_jax import checkpoint, paths
from xfer_jax.train.loop import Trainer, train

REPO = pathlib.Path(__file__).resolve().parents[1]


def losses(run: str) -> dict[int, float]:
    text = paths.path(run).joinpath("metrics.jsonl").read_text()
    return {r["step"]: r["loss"] for r in map(json.loads, text.splitlines())}


def same_params(a: str, b: str) -> None:
    _, pa = checkpoint.load_params(a)
    _, pb = checkpoint.load_params(b)
    assert jax.tree.structure(pa) == jax.tree.structure(pb)
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_array_equal(x, y)


def test_uncommitted_step_is_skipped_and_init_from_reads_the_bucket(pretrain_config, bucket, capsys):
    c = pretrain_config
    c.train.steps, c.train.save_every, c.train.keep, c.train.eval_every, c.train.async_save = 4, 2, 5, 1000, False
    c.data.heldout = []
    local = c.train.out_dir
    run = f"{bucket}/run"
    c.train.out_dir = run
    train(c)
    fs, _ = fsspec.core.url_to_fs(run)
    ckpt = f"{run}/ckpt"
    assert fs.exists(f"{ckpt}/4/commit_success.txt") and fs.exists(f"{ckpt}/tokenizer.model")
    assert checkpoint.committed_step(ckpt) == 4 and sorted(losses(run)) == [1, 2, 3, 4]
    assert fs.ls(f"{run}/tensorboard")  # the event file was uploaded
    first = losses(run)

    # A process killed after writing step 4's items but before Orbax's commit marker leaves exactly this.
    fs.rm(f"{ckpt}/4/commit_success.txt")
    assert checkpoint.committed_step(ckpt) == 2 and fs.exists(f"{ckpt}/4/params")
    capsys.readouterr()
    train(c)  # resumes from step 2, runs 3-4 again, rewrites the logs without the lost steps' duplicates
    assert f"resumed from {ckpt} step 2" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in paths.path(run, "run").joinpath("metrics.jsonl").read_text().splitlines()] \
        == [1, 2, 3, 4]
    assert losses(run) == first
    assert checkpoint.committed_step(ckpt) == 4

    # init_from a gs:// checkpoint: the fresh state holds its parameters exactly.
    c.init_from, c.train.out_dir, c.train.steps = ckpt, local, 1
    trainer = Trainer(c)
    try:
        state = trainer.initial_state()
    finally:
        trainer.close()
    _, stored = checkpoint.load_params(ckpt)
    for x, y in zip(jax.tree.leaves(stored), jax.tree.leaves(state["params"])):
        np.testing.assert_array_equal(x, np.asarray(y))


def _cmd(c, out_dir, steps, *extra):
    return [sys.executable, "-m", "xfer_jax.cli", "train", "--config", "configs/pretrain.py",
            f"--config.data.tokenizer={c.data.tokenizer}", f"--config.train.out_dir={out_dir}",
            f"--config.train.steps={steps}", "--config.train.log_every=1", "--config.train.progress_bar=False",
            "--config.train.eval_every=1000", *extra]


def _incomplete_steps(fs, ckpt: str) -> list[str]:
    """Step folders in the bucket without Orbax's commit marker (a save under way, or cut short)."""
    try:
        names = [p.rsplit("/", 1)[-1] for p in fs.ls(ckpt, refresh=True)]
    except FileNotFoundError:
        return []
    return [n for n in names if n.isdigit() and not fs.exists(f"{ckpt}/{n}/commit_success.txt")]


@pytest.mark.slow
def test_sigterm_and_kill_during_a_bucket_save_then_resume_equal_a_local_run(pretrain_config, corpus_dir, bucket,
                                                                            tmp_path):
    env = {**os.environ, "XFER_CACHE": str(corpus_dir.parent)}
    steps, c = 16, pretrain_config
    straight = tmp_path / "straight"
    subprocess.run(_cmd(c, straight, steps, "--config.train.save_every=1000"), env=env, cwd=REPO, check=True,
                   capture_output=True)

    run = f"{bucket}/run"
    fs, _ = fsspec.core.url_to_fs(run)
    # 1. SIGTERM mid-run: the step is saved to the bucket (sync save, commit marker) and the process exits 143.
    proc = subprocess.Popen(_cmd(c, run, steps, "--config.train.save_every=1000"), env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while "step 4/" not in _read_nonblocking(proc) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-3000:]
    first = checkpoint.committed_step(f"{run}/ckpt")
    assert first is not None and 4 <= first < steps

    # 2. Resume with an async save every step and kill -9 as soon as a step folder is in the bucket uncommitted.
    proc = subprocess.Popen(_cmd(c, run, steps, "--config.train.save_every=1", "--config.train.async_save=True",
                                 "--config.train.keep=100"), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = []
    while not seen and proc.poll() is None and time.time() < deadline:
        seen = _incomplete_steps(fs, f"{run}/ckpt")
    proc.kill()
    proc.wait(timeout=60)
    assert seen, "no save was observed under way"
    after_kill = checkpoint.committed_step(f"{run}/ckpt")
    left = _incomplete_steps(fs, f"{run}/ckpt")
    assert all(int(n) > after_kill for n in left), (left, after_kill)

    # 3. Resume to the end: from the newest committed step, never from an incomplete one.
    out = subprocess.run(_cmd(c, run, steps, "--config.train.save_every=1000"), env=env, cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resumed from {run}/ckpt step {after_kill}" in out.stdout
    a, b = losses(str(straight)), losses(run)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    assert [a[s] for s in a] == [b[s] for s in a]
    assert checkpoint.committed_step(f"{run}/ckpt") == steps
    same_params(str(straight / "ckpt"), f"{run}/ckpt")
    print(f"SIGTERM saved step {first}; kill -9 saw {seen} under way, left {left}; resumed from {after_kill}")


def _read_nonblocking(proc, _buf={}) -> str:
    """What `proc` printed on stdout so far (a line at a time; the loop prints one line per step)."""
    line = proc.stdout.readline().decode()
    _buf[proc.pid] = _buf.get(proc.pid, "") + line
    return _buf[proc.pid]
