"""config.json in, config.json out: every key is honoured or refused by name (issue 16), both spellings of RoPE
are read (plain and Llama 3.1's llama3 scaling, issue 18), and a list of end-of-sequence ids survives import and
export."""
import json
import shutil

import numpy as np
import pytest
import torch
import transformers

from hf_helpers import LLAMA3_ROPE, hf_logits, tiny_hf_model
from xfer_jax import cli, forward
from xfer_jax.convert import hf
from xfer_jax.model.config import LlamaConfig
from xfer_jax.model.hf_config import HF_HARMLESS

QUIET = dict(log=lambda *_: None)
YARN_ROPE = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}
LLAMA3_FIELDS = dict(rope_type="llama3", rope_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                     rope_original_max_position_embeddings=32)


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
    ({"rope_parameters": {**YARN_ROPE, "rope_theta": 500.0}}, "rope_parameters.rope_type='yarn' is not supported"),
    ({"rope_parameters": None, "rope_theta": 500.0, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
     "rope_scaling.rope_type='dynamic' is not supported"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling.type='linear'"),
    ({"rope_parameters": {**LLAMA3_ROPE, "rope_theta": 500.0, "attention_factor": 2.0}},
     "rope_parameters.attention_factor=2.0 is not understood with rope_type 'llama3'"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 500.0, "factor": 8.0}},
     "rope_parameters with rope_type 'llama3' lacks low_freq_factor, high_freq_factor"),
    ({"rope_scaling": {**LLAMA3_ROPE, "factor": 4.0}, "rope_parameters": {**LLAMA3_ROPE, "rope_theta": 500.0}},
     "disagree (transformers 4 reads rope_scaling"),
    ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 500.0}}},
     "rope_parameters.full_attention="),
    ({"rope_theta": 10000.0}, "rope_theta=10000.0, rope_parameters.rope_theta=500.0 disagree"),
    ({"attention_bias": True}, "attention_bias=True is not supported"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
    ({"sliding_window": 32}, "sliding_window=32 is not supported"),
    ({"bos_token_id": [1, 3]}, "bos_token_id=[1, 3] is not one token id"),
    ({"logits_scaling": 4.0}, "key(s) logits_scaling not understood: the model may compute differently"),
], ids=["rope_parameters-yarn", "rope_scaling-dynamic", "rope_scaling-linear", "llama3-extra-key",
        "llama3-incomplete", "llama3-twice-unequal", "rope-per-layer-type",
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


def test_llama3_rope_round_trips_through_both_spellings(tmp_path):
    """A transformers 5 llama3 model (rope_parameters) and the same config in transformers 4's spelling (top-level
    rope_theta + rope_scaling) import alike; the export writes the form both libraries read, reloads with the same
    rope_parameters and bit-identical weights, and reads back to the same LlamaConfig."""
    model = tiny_hf_model(num_kv_heads=2, tie=True, layers=1, rope_scaling=LLAMA3_ROPE, qk_gain=4.0)
    model.save_pretrained(tmp_path / "hf")
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["rope_parameters"] == {**LLAMA3_ROPE, "rope_theta": 500.0} and "rope_scaling" not in written
    hf.hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", **QUIET)
    cfg = forward.load(tmp_path / "ckpt").cfg
    assert cfg == cfg.replace(rope_theta=500.0, tie_word_embeddings=True, **LLAMA3_FIELDS)
    v4 = {**written, "rope_theta": 500.0, "rope_scaling": {**LLAMA3_ROPE, "type": "llama3"}}
    del v4["rope_parameters"]
    assert LlamaConfig.from_hf(v4) == LlamaConfig.from_hf(written)
    v4["rope_scaling"].pop("original_max_position_embeddings")
    assert LlamaConfig.from_hf(v4).rope_original_max_position_embeddings == 128  # transformers' default

    hf.orbax_to_hf(tmp_path / "ckpt", tmp_path / "out", **QUIET)
    exported = json.loads((tmp_path / "out" / "config.json").read_text())
    assert exported["rope_theta"] == 500.0 and exported["rope_scaling"] == LLAMA3_ROPE  # transformers 4's own form
    assert LlamaConfig.from_hf(exported) == LlamaConfig.from_hf(written)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert reloaded.config.rope_parameters == model.config.rope_parameters
    before, after = model.state_dict(), reloaded.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    torch.testing.assert_close(reloaded.model.rotary_emb.inv_freq, model.model.rotary_emb.inv_freq, rtol=0, atol=0)
