"""The English-retention guard (train/guard.py): the controller's rule, the mixer taking new weights mid-stream,
and a guarded run whose weights are logged, checkpointed and resumed exactly."""
import json
import pathlib
import shutil

import ml_collections
import numpy as np
import pytest

from xfer_jax.train import guard as guard_lib
from xfer_jax.train.loop import train

GUARD = ml_collections.ConfigDict(dict(languages=["en"], every=2, budget=0.02, gain=0.5, min_weight=0.05,
                                       max_weight=0.8))


def test_controller_raises_on_a_rise_lowers_on_slack_and_stays_in_bounds():
    w = {"zh": 0.8, "en": 0.2}
    up = guard_lib.next_weights(w, {"en": 2.0}, {"en": 2.1}, GUARD)  # +5% > budget 2%
    assert up["en"] == pytest.approx(0.3) and up["zh"] == pytest.approx(0.7)
    down = guard_lib.next_weights(w, {"en": 2.0}, {"en": 2.0}, GUARD)  # no rise: slack
    assert down["en"] == pytest.approx(0.2 / 1.25) and sum(down.values()) == pytest.approx(1.0)
    hold = guard_lib.next_weights(w, {"en": 2.0}, {"en": 2.03}, GUARD)  # +1.5%: between budget/2 and budget
    assert hold == pytest.approx(w)
    capped = guard_lib.next_weights({"zh": 0.3, "en": 0.7}, {"en": 1.0}, {"en": 2.0}, GUARD)
    assert capped["en"] == pytest.approx(0.8) and capped["zh"] == pytest.approx(0.2)
    floored = guard_lib.next_weights({"zh": 0.95, "de": 0.0, "en": 0.05}, {"en": 1.0}, {"en": 0.5},
                                     GUARD.copy_and_resolve_references())
    assert floored["en"] == pytest.approx(0.05)


def _guarded(c, out: pathlib.Path):
    c.data.sources = [dict(s, weight={"zh": 0.9, "en": 0.1}[s["lang"]]) for s in c.data.sources]
    c.data.guard = GUARD.copy_and_resolve_references()
    c.data.guard.budget = 1e-4  # a tiny budget, so a few steps of mostly-Chinese text move the weights
    c.train.steps, c.train.save_every, c.train.keep, c.train.eval_every = 6, 2, 5, 1000
    c.train.async_save, c.train.out_dir = False, str(out)
    return c


def test_a_guarded_run_logs_its_weights_and_resumes_exactly(pretrain_config, tmp_path):
    c = _guarded(pretrain_config, tmp_path / "first")
    train(c)
    first = pathlib.Path(c.train.out_dir)
    records = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    checks = [r for r in records if "guard/weight/en" in r]
    assert [r["step"] for r in checks] == [2, 4, 6]
    weights = [r["guard/weight/en"] for r in checks]
    assert all(abs(r["guard/weight/en"] + r["guard/weight/zh"] - 1) < 1e-9 for r in checks)
    assert weights[0] != pytest.approx(0.1) and checks[-1]["guard/changes"] >= 1  # the guard acted
    # Kill -9 after step 2's checkpoint: the resumed run repeats steps 3-6 with the same batches and weights.
    second = tmp_path / "second"
    shutil.copytree(first, second)
    for step in ("4", "6"):
        shutil.rmtree(second / "ckpt" / step)
    c.train.out_dir = str(second)
    train(c)
    again = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in again] == [r["step"] for r in records]
    for a, b in zip(records, again):
        assert a["loss"] == b["loss"] and a.get("guard/weight/en") == b.get("guard/weight/en"), (a["step"], a, b)
    assert (first / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_guard_settings_are_checked_by_name(pretrain_config):
    c = pretrain_config
    c.data.guard = GUARD.copy_and_resolve_references()
    c.data.guard.languages = ["fr"]
    with pytest.raises(ValueError, match="data.guard.languages: 'fr' is not a language of data.sources"):
        guard_lib.check(c.data)
    c.data.guard.languages = ["en", "zh"]
    with pytest.raises(ValueError, match="protects every language"):
        guard_lib.check(c.data)
    c.data.guard.languages, c.data.worker_count = ["en"], 2
    with pytest.raises(ValueError, match="data.worker_count=0"):
        guard_lib.check(c.data)
    c.data.worker_count, c.data.guard.speed = 0, 1
    with pytest.raises(ValueError, match="data.guard.speed is not a guard setting"):
        guard_lib.check(c.data)
    assert np.isfinite(GUARD.budget)
