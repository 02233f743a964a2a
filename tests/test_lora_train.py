"""LoRA in the trainer: fresh adapters change no logit, only adapters (and chosen modules) train, the optimizer
holds state for those alone, merged weights equal base + adapters, and a resumed run with dropout is exact."""
import json
import shutil

import jax
import numpy as np
import pytest

from lora_helpers import load_config, save_base, use_test_data
from xfer_jax import checkpoint
from xfer_jax.model import lora_params, params as model_params
from xfer_jax.parallel.mesh import make_mesh
from xfer_jax.parallel.rules import DEFAULT_RULES
from xfer_jax.train import lora_setup
from xfer_jax.train.loop import train

TOKENS = np.random.RandomState(0).randint(3, 2000, size=(2, 24))
RUN = dict(dtype="float32", remat="none", attention="xla")


@pytest.fixture(scope="module")
def base(small_tokenizer, tmp_path_factory):
    return save_base(tmp_path_factory.mktemp("base") / "ckpt", small_tokenizer)


def _initial(path, cfg, **run):
    mesh = make_mesh({"fsdp": -1})
    with jax.set_mesh(mesh):
        return jax.device_get(lora_setup.initial_params(str(path), cfg, mesh, DEFAULT_RULES, seed=0, **run))


def test_fresh_adapters_on_a_bf16_base_change_no_logit(base):
    path, cfg, _ = base
    lora_cfg = cfg.replace(lora_rank=4, lora_alpha=8.0, param_dtype="bfloat16")
    params = _initial(path, lora_cfg, **RUN, param_dtype="bfloat16")
    assert params["layers"]["q_proj"].dtype == params["embed_tokens"].dtype == jax.numpy.bfloat16
    assert params["layers"]["q_proj_lora_a"].dtype == params["layers"]["q_proj_lora_b"].dtype == np.float32
    assert np.abs(params["layers"]["q_proj_lora_a"]).max() > 0 and not params["layers"]["q_proj_lora_b"].any()
    base_cfg, base_bf16 = checkpoint.load_params(path, param_dtype="bfloat16")
    np.testing.assert_array_equal(model_params.apply(lora_cfg, params, TOKENS),
                                  model_params.apply(base_cfg, base_bf16, TOKENS))


def test_a_stage_merges_the_adapters_it_starts_from(base, tmp_path):
    path, cfg, base_params = base
    old_cfg = cfg.replace(lora_rank=4, lora_alpha=8.0, lora_targets=("q_proj", "o_proj", "down_proj"))
    old = lora_params.add_adapters(old_cfg, base_params, jax.random.key(1))
    rng = np.random.RandomState(2)
    for name in old_cfg.lora_targets:  # trained-looking adapters
        old["layers"][f"{name}_lora_b"] = 0.05 * rng.standard_normal(old["layers"][f"{name}_lora_b"].shape)
    checkpoint.save(tmp_path / "old", old_cfg, jax.tree.map(np.asarray, old))
    new_cfg = cfg.replace(lora_rank=2, lora_alpha=4.0, lora_targets=("v_proj",))
    new = _initial(tmp_path / "old", new_cfg, **RUN, param_dtype="float32")
    assert sorted(n for n in new["layers"] if lora_params.is_adapter(n)) == ["v_proj_lora_a", "v_proj_lora_b"]
    np.testing.assert_allclose(model_params.apply(new_cfg, new, TOKENS), model_params.apply(old_cfg, old, TOKENS),
                               atol=1e-5)


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, open(run_dir / "metrics.jsonl"))}


@pytest.fixture(scope="module")
def lora_run(base, instruct_dir, small_tokenizer, tmp_path_factory):
    """6 steps of LoRA (rank 4, dropout 0.1) + embed_tokens/lm_head from the base, saving steps 3 and 6."""
    run_dir = tmp_path_factory.mktemp("lora_run")
    c = use_test_data(load_config("instruct", "lora_embed"), instruct_dir, small_tokenizer, run_dir)
    c.init_from, c.model.lora_rank, c.model.lora_dropout = str(base[0]), 4, 0.1
    c.data.heldout = []  # no evaluation: one compiled step per run
    c.train.steps, c.train.save_every, c.train.keep = 6, 3, 5
    c.optim.lr = 1e-2
    train(c)
    return c, run_dir


def test_lora_trains_only_adapters_and_chosen_modules(base, lora_run):
    _, cfg, base_params = base
    _, run_dir = lora_run
    lora_cfg, trained = checkpoint.load_params(run_dir / "ckpt")
    assert lora_cfg.lora_rank == 4 and lora_cfg.lora_dropout == 0.1
    adapters = {n: v for n, v in trained["layers"].items() if lora_params.is_adapter(n)}
    assert len(adapters) == 14
    trainable = sum(v.size for v in adapters.values()) + trained["embed_tokens"].size + trained["lm_head"].size
    first = json.loads(open(run_dir / "metrics.jsonl").readline())
    assert first["trainable_params"] == trainable
    assert 8 * trainable <= first["opt_state_bytes"] < 8 * trainable + 64  # two fp32 Adam moments, trained params only
    for name, weight in base_params["layers"].items():  # the frozen base, bit for bit
        np.testing.assert_array_equal(trained["layers"][name], weight)
    np.testing.assert_array_equal(trained["norm"], base_params["norm"])
    for name in ("embed_tokens", "lm_head"):
        assert np.abs(trained[name] - base_params[name]).max() > 1e-4, name
    for name in lora_cfg.lora_targets:
        assert np.abs(trained["layers"][f"{name}_lora_b"]).max() > 1e-4, name

    merged_cfg, merged = lora_params.merge(lora_cfg, trained)
    with_adapters = model_params.apply(lora_cfg, trained, TOKENS)
    np.testing.assert_allclose(model_params.apply(merged_cfg, merged, TOKENS), with_adapters, atol=1e-5)
    assert np.abs(with_adapters - model_params.apply(cfg, base_params, TOKENS)).max() > 1e-2


@pytest.mark.slow
def test_lora_dropout_resumes_exactly(lora_run, tmp_path):
    c, run_dir = lora_run
    shutil.copytree(run_dir / "ckpt" / "3", tmp_path / "ckpt" / "3")
    c.train.out_dir = str(tmp_path)
    train(c)  # steps 4-6 again from step 3: same data, same dropout masks
    a, b = _losses(run_dir), _losses(tmp_path)
    assert sorted(b) == [4, 5, 6] and [b[s] for s in b] == [a[s] for s in b]
