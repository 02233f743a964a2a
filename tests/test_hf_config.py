"""config.json in, config.json out: every key is honoured or refused by name (issue 16), both spellings of RoPE
are read, and a list of end-of-sequence ids survives import and export."""
import json
import shutil

import numpy as np
import pytest
import transformers

from hf_helpers import hf_logits, tiny_hf_model
from xfer_jax import cli, forward
from xfer_jax.convert import hf
from xfer_jax.model.config import HF_HARMLESS, LlamaConfig

QUIET = dict(log=lambda *_: None)
LLAMA3_ROPE = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64, "rope_type": "llama3"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model saved by the installed transformers (5: theta 500 inside rope_parameters), eos ids [2, 5]."""
    model = tiny_hf_model(num_kv_heads=2, layers=2)
    model.config.eos_token_id = model.generation_config.eos_token_id = [2, 5]
    root = tmp_path_factory.mktemp("hf_config")
    model.save_pretrained(root / "hf")
    return model, root / "hf"


def test_every_key_transformers_knows_is_classified(saved):
    _, hf_dir = saved
    defaults = transformers.LlamaConfig().to_dict()
    assert LlamaConfig.from_hf(defaults).rope_theta == 10000.0  # no key of transformers' own config is unknown
    assert set(transformers.GenerationConfig._get_default_generation_params()) <= set(HF_HARMLESS)
    ours = LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=120, num_layers=2, num_heads=4,
                       num_kv_heads=2, rope_theta=500.0, eos_token_id=(2, 5))
    assert LlamaConfig.from_hf(ours.to_hf()) == ours  # our own export reads back
    assert LlamaConfig().to_hf()["eos_token_id"] == 2 and ours.to_hf()["eos_token_id"] == [2, 5]
    v4 = {**json.loads((hf_dir / "config.json").read_text()), "rope_theta": 500.0, "torch_dtype": "float32",
          "rope_scaling": None, "pretraining_tp": 2, "max_length": 4096, "_name_or_path": "x"}
    del v4["rope_parameters"], v4["dtype"]
    assert LlamaConfig.from_hf(v4).rope_theta == 500.0  # the transformers 4 spelling


@pytest.mark.parametrize("edit,message", [
    ({"rope_parameters": {**LLAMA3_ROPE, "rope_theta": 500.0}}, "rope_parameters.rope_type='llama3'"),
    ({"rope_parameters": None, "rope_theta": 500.0, "rope_scaling": LLAMA3_ROPE}, "rope_scaling.rope_type='llama3'"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling.type='linear'"),
    ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 500.0}}},
     "rope_parameters.full_attention="),
    ({"rope_theta": 10000.0}, "rope_theta=10000.0, rope_parameters.rope_theta=500.0 disagree"),
    ({"attention_bias": True}, "attention_bias=True is not supported"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
    ({"sliding_window": 32}, "sliding_window=32 is not supported"),
    ({"bos_token_id": [1, 3]}, "bos_token_id=[1, 3] is not one token id"),
    ({"logits_scaling": 4.0}, "key(s) logits_scaling not understood: the model may compute differently"),
], ids=["rope_parameters-llama3", "rope_scaling-llama3", "rope_scaling-linear", "rope-per-layer-type",
        "theta-twice", "attention_bias", "hidden_act", "sliding_window", "bos-list", "unknown-key"])
def test_import_refuses_what_it_would_compute_differently(saved, tmp_path, capsys, edit, message):
    _, hf_dir = saved
    shutil.copytree(hf_dir, tmp_path / "hf")
    config = {**json.loads((hf_dir / "config.json").read_text()), **edit}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    code = cli.main(["convert", "hf-to-orbax", "--hf_dir", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    line, = [line for line in err.splitlines() if message in line]
    assert str(tmp_path / "hf" / "config.json") in line
    assert not (tmp_path / "ckpt").exists()


def test_transformers5_config_imports_with_its_theta_and_eos_list(saved, tmp_path):
    model, hf_dir = saved
    written = json.loads((hf_dir / "config.json").read_text())
    assert "rope_theta" not in written and written["rope_parameters"] == {"rope_theta": 500.0, "rope_type": "default"}
    hf.hf_to_orbax(hf_dir, tmp_path / "ckpt", **QUIET)
    loaded = forward.load(tmp_path / "ckpt")
    assert loaded.cfg.rope_theta == 500.0 and loaded.cfg.eos_token_ids == (2, 5)
    tokens = np.random.RandomState(0).randint(0, 320, size=(2, 40))  # far positions: a wrong theta shows
    np.testing.assert_allclose(loaded.logits(tokens), hf_logits(model, tokens), atol=1e-4)

    hf.orbax_to_hf(tmp_path / "ckpt", tmp_path / "out", **QUIET)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["eos_token_id"] == [2, 5]
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())["eos_token_id"] == [2, 5]
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert reloaded.config.eos_token_id == reloaded.generation_config.eos_token_id == [2, 5]
    np.testing.assert_allclose(hf_logits(reloaded, tokens), hf_logits(model, tokens), atol=1e-5)
