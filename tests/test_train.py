"""The trainer on real text: loss falls, resume after SIGTERM is bitwise exact, meshes and accumulation agree."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from xfer_jax.data import pipeline
from xfer_jax.model.shapes import get_shape
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.parallel import rules as rules_lib
from xfer_jax.model.sharding import init_sharded, param_shardings
from xfer_jax.model import params as model_params
from xfer_jax.train import optim, state as state_lib, step as step_lib
from xfer_jax.train.loop import train


def losses(run_dir) -> dict[int, float]:
    records = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    return {r["step"]: r["loss"] for r in records}


def test_loss_falls_on_real_text(pretrain_config):
    c = pretrain_config
    c.train.steps = 80
    c.train.eval_every = 80
    c.optim.lr = 5e-3
    summary = train(c)
    curve = losses(pathlib.Path(c.train.out_dir))
    first, last = np.mean([curve[s] for s in (1, 2, 3)]), np.mean([curve[s] for s in (78, 79, 80)])
    assert last < first - 1.0, (first, last)
    assert summary["eval/zh/loss"] < first and summary["eval/en/loss"] < first
    assert summary["skipped"] == 0 and summary["loss/zh"] > 0 and summary["loss/en"] > 0
    assert (pathlib.Path(c.train.out_dir) / "ckpt" / "tokenizer.model").read_bytes() == open(c.data.tokenizer, "rb").read()


def _train_cmd(c, steps):
    return [sys.executable, "-m", "xfer_jax.cli", "train", "--config", "configs/pretrain.py",
            f"--config.data.tokenizer={c.data.tokenizer}", f"--config.train.out_dir={c.train.out_dir}",
            f"--config.train.steps={steps}", "--config.train.log_every=1", "--config.train.save_every=1000",
            "--config.train.progress_bar=False", "--config.train.eval_every=1000"]


def test_sigterm_then_resume_is_bitwise_identical(pretrain_config, corpus_dir, tmp_path):
    env = {**os.environ, "XFER_CACHE": str(corpus_dir.parent)}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    steps = 16
    straight = pretrain_config.copy_and_resolve_references()
    straight.train.out_dir = str(tmp_path / "straight")
    subprocess.run(_train_cmd(straight, steps), env=env, cwd=repo, check=True, capture_output=True)

    resumed = pretrain_config.copy_and_resolve_references()
    resumed.train.out_dir = str(tmp_path / "resumed")
    proc = subprocess.Popen(_train_cmd(resumed, steps), env=env, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = tmp_path / "resumed" / "metrics.jsonl"
    deadline = time.time() + 240
    while (not log.exists() or len(log.read_text().splitlines()) < steps // 2) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-3000:]
    assert "checkpoint saved" in err.decode()
    killed_at = max(losses(tmp_path / "resumed"))
    assert killed_at < steps

    out = subprocess.run(_train_cmd(resumed, steps), env=env, cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stdout
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    assert [a[s] for s in a] == [b[s] for s in a]  # bitwise: same floats at every step, data order included


def test_checkpoint_restores_onto_another_mesh(pretrain_config):
    c = pretrain_config
    c.train.steps, c.train.save_every, c.train.eval_every, c.train.keep = 8, 4, 1000, 5
    c.mesh = {"data": 8, "fsdp": 1, "tensor": 1}
    train(c)  # the reference: 8 steps on (8, 1, 1), saving steps 4 and 8
    first = pathlib.Path(c.train.out_dir)
    second = first.parent / "on_2x2x2"
    shutil.copytree(first / "ckpt" / "4", second / "ckpt" / "4")  # a run that stopped at step 4
    c.train.out_dir = str(second)
    c.mesh = {"data": 2, "fsdp": 2, "tensor": 2}
    train(c)  # restores step 4 onto (2, 2, 2) and continues
    a, b = losses(first), losses(second)
    assert sorted(b) == [5, 6, 7, 8]
    np.testing.assert_allclose([b[s] for s in b], [a[s] for s in b], rtol=1e-5)


def _one_step(cfg, mesh, batch, accum=1, steps=10):
    abstract = model_params.abstract_params(cfg)
    mask = optim.trainable_mask(abstract, [], [])
    tx = optim.make_optimizer(optim.default_optim_config(), steps, abstract)
    shardings = state_lib.state_shardings(param_shardings(cfg, mesh), abstract, tx, mask, mesh)
    batch_sharding = jax.sharding.NamedSharding(mesh, rules_lib.spec_for(("batch", "seq"), batch["tokens"].shape, dict(mesh.shape)))
    with jax.set_mesh(mesh):
        params = init_sharded(cfg, mesh, seed=0)
        state = jax.jit(lambda p: state_lib.new_state(p, tx, mask), out_shardings=shardings)(params)
        fn = step_lib.compile_train_step(shardings, batch_sharding, cfg=cfg, tx=tx, mask=mask, accum=accum,
                                         schedule=optim.learning_rate(optim.default_optim_config(), steps), num_langs=2)
        state, metrics = fn(state, pipeline.to_device(batch, batch_sharding))
        return jax.device_get(state["params"]), jax.device_get(metrics)


def _real_batch(pretrain_config, batch_size=8):
    c = pretrain_config
    c.data.batch_size = batch_size
    c.data.seq_len = 64
    iterator = pipeline.make_train_iterator(c.data)
    batch = next(iterator)
    iterator.close()
    return batch


def _gradients(cfg, mesh, batch):
    """Gradients of the summed next-token loss, parameters and batch sharded on `mesh`, gathered to the host."""
    batch_sharding = jax.sharding.NamedSharding(mesh, rules_lib.spec_for(("batch", "seq"), batch["tokens"].shape, dict(mesh.shape)))
    with jax.set_mesh(mesh):
        params = init_sharded(cfg, mesh, seed=0)
        grad = jax.jit(jax.grad(lambda p, b: step_lib.loss_sums(cfg, p, b, 0.0, 2)["nll"]))
        return jax.device_get(grad(params, pipeline.to_device(batch, batch_sharding)))


def test_one_device_equals_eight_with_fsdp_and_tp(pretrain_config):
    cfg = get_shape("tiny", vocab_size=2000)
    batch = _real_batch(pretrain_config)
    one = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
    eight = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    # Every gradient agrees before the optimizer sees it, to summation-order noise relative to its largest entry.
    grads1, grads8 = _gradients(cfg, one, batch), _gradients(cfg, eight, batch)
    for (path, g1), g8 in zip(jax.tree_util.tree_flatten_with_path(grads1)[0], jax.tree.leaves(grads8)):
        np.testing.assert_allclose(g8, g1, rtol=0, atol=1e-5 * np.abs(g1).max(), err_msg=jax.tree_util.keystr(path))
    p1, m1 = _one_step(cfg, one, batch)
    p8, m8 = _one_step(cfg, eight, batch)
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m8["grad_norm"], m1["grad_norm"], rtol=1e-5)
    # One AdamW step moves a weight by up to lr whatever its gradient's size, so a weight whose gradient is ~0
    # turns summation-order noise into a visible step (seen: 1 of 22,528 elements off by 1.3e-5).
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_gradient_accumulation_equals_larger_batch(pretrain_config):
    cfg = get_shape("tiny", vocab_size=2000)
    batch = _real_batch(pretrain_config, batch_size=16)
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    p1, m1 = _one_step(cfg, mesh, batch, accum=1)
    p4, m4 = _one_step(cfg, mesh, batch, accum=4)
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_chunked_loss_equals_full_loss():
    cfg = get_shape("tiny")
    rng = np.random.RandomState(0)
    h = jax.numpy.asarray(rng.standard_normal((2, 32, cfg.hidden_size)), jax.numpy.float32)
    w = jax.numpy.asarray(rng.standard_normal((cfg.hidden_size, cfg.vocab_size)) * 0.1, jax.numpy.float32)
    targets = jax.numpy.asarray(rng.randint(0, cfg.vocab_size, size=(2, 32)))
    full = lambda h, w: step_lib.token_losses(h, w, targets, 0)[0].sum()  # noqa: E731
    chunked = lambda h, w: step_lib.token_losses(h, w, targets, 8)[0].sum()  # noqa: E731
    np.testing.assert_allclose(chunked(h, w), full(h, w), rtol=1e-6)
    for a, b in zip(jax.grad(chunked, (0, 1))(h, w), jax.grad(full, (0, 1))(h, w)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def _tensorboard_scalars(tb_dir: pathlib.Path, tag: str) -> dict[int, float]:
    """What TensorBoard shows for `tag`: events read in file order, a START event at step s purging the
    earlier events at steps >= s (how TensorBoard applies a SummaryWriter's purge_step)."""
    import struct

    from tensorboardX.proto import event_pb2

    shown: dict[int, float] = {}
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at: at + 8])
            event = event_pb2.Event.FromString(data[at + 12: at + 12 + length])
            at += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                shown = {s: v for s, v in shown.items() if s < event.step}
            for value in event.summary.value:
                if value.tag == tag:
                    shown[event.step] = value.simple_value
    return shown


def test_logs_of_a_resumed_run_equal_an_uninterrupted_one(pretrain_config):
    """Steps whose checkpoint was lost (kill -9 during an async save) run again on resume; the JSONL and
    TensorBoard logs must then hold each step once, with the values of an uninterrupted run."""
    c = pretrain_config
    c.train.steps, c.train.save_every, c.train.keep, c.train.eval_every = 6, 3, 5, 1000
    c.data.heldout = []
    train(c)
    first = pathlib.Path(c.train.out_dir)
    second = first.parent / "interrupted"
    shutil.copytree(first, second)
    shutil.rmtree(second / "ckpt" / "6")  # the save of step 6 never committed
    c.train.out_dir = str(second)
    train(c)  # resumes from step 3 and runs 4-6 again
    lines = lambda run: (run / "metrics.jsonl").read_text().splitlines()  # noqa: E731
    steps = [json.loads(line)["step"] for line in lines(second)]
    assert steps == [1, 2, 3, 4, 5, 6]
    a, b = losses(first), losses(second)
    assert [a[s] for s in steps] == [b[s] for s in steps]
    assert _tensorboard_scalars(first / "tensorboard", "loss") == pytest.approx(a)
    assert _tensorboard_scalars(second / "tensorboard", "loss") == pytest.approx(a)
