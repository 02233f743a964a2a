"""The trainer's curves.png, and Weights & Biases in offline mode: a run (and its resume) writes its W&B files under the run directory, with
every logged loss in them, one W&B run id across the resume, and no server contacted; bad settings are refused
by name before the run directory changes."""
import json
import pathlib

import pytest

from xfer_jax.train import wandb_log
from xfer_jax.train.loop import train

pytest.importorskip("wandb")


def _wandb_files(run: pathlib.Path) -> list[pathlib.Path]:
    return sorted(run.glob("wandb/offline-run-*/run-*.wandb"))


@pytest.mark.parametrize("resume", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_offline_run_logs_every_step_and_a_resume_continues_the_wandb_run(pretrain_config, monkeypatch, resume):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing may be reached: offline means offline
    c = pretrain_config
    c.train.steps, c.train.save_every, c.train.eval_every, c.train.async_save = 2, 2, 2, False
    c.data.heldout = c.data.heldout[:1]
    c.train.wandb.mode, c.train.wandb.project, c.train.wandb.tags = "offline", "xfer-test", ["zh"]
    train(c)
    run = pathlib.Path(c.train.out_dir)
    run_id = (run / "wandb_id").read_text().strip()
    if resume:
        c.train.steps = 3
        train(c)  # resumes at step 2, the same W&B run
        assert (run / "wandb_id").read_text().strip() == run_id
    files = _wandb_files(run)
    assert len(files) == 1 + resume and all(f.name == f"run-{run_id}.wandb" for f in files)
    logged = b"".join(f.read_bytes() for f in files)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3][:2 + resume]
    for r in records:
        assert json.dumps(r["loss"]).encode() in logged, r
    assert any(k.startswith("eval/") for k in records[1]) and b"eval/" in logged  # held-out losses mirrored
    assert b"xfer-test" in logged  # the project, with the config
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # redrawn at each eval and at the end


def test_bad_wandb_settings_are_refused_by_name(pretrain_config):
    c = pretrain_config
    c.train.wandb.mode = "sometimes"
    with pytest.raises(ValueError, match="train.wandb.mode='sometimes'; choose one of disabled, offline, online"):
        train(c)
    assert not pathlib.Path(c.train.out_dir).exists()  # refused before the run directory was made
    c.train.wandb.mode = "offline"
    with pytest.raises(ValueError, match="train.wandb.dir: W&B writes its files locally"):
        wandb_log.check(c.train.wandb, "gs://bucket/run")
    c.train.wandb.colour = "red"
    with pytest.raises(ValueError, match="train.wandb.colour is not a W&B setting here"):
        wandb_log.check(c.train.wandb, c.train.out_dir)
