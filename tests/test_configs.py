"""Named shapes: parameter counts of the published models, GQA where expected, configs load by path."""

import pytest

from xfer_jax.model.config import LlamaConfig
from xfer_jax.model.shapes import SHAPES, get_shape
from xfer_jax.config_files import project_config



@pytest.mark.parametrize("name,billions", [
    ("llama_7b", 6.74), ("llama_13b", 13.02), ("llama_33b", 32.53), ("llama_65b", 65.29),
    ("llama2_7b", 6.74), ("llama2_13b", 13.02), ("llama2_70b", 68.98), ("tinyllama_1b", 1.10),
    ("chinese_llama_7b", 6.89), ("chinese_llama2_7b", 6.93),
])
def test_published_parameter_counts(name, billions):
    assert get_shape(name).num_params() / 1e9 == pytest.approx(billions, abs=0.01)


@pytest.mark.parametrize("name,billions", [
    ("llama3_8b", 8.03), ("llama3_70b", 70.6), ("llama3_1_8b", 8.03), ("llama3_1_70b", 70.6), ("llama3_1_405b", 405.9),
    ("llama3_2_1b", 1.24), ("llama3_2_3b", 3.21), ("llama3_3_70b", 70.6),
])
def test_published_llama3_parameter_counts(name, billions):
    """Meta's model cards (8.03B, 70.6B, 405.9B, 1.24B, 3.21B), to 3 significant digits."""
    cfg = get_shape(name)
    assert float(f"{cfg.num_params() / 1e9:.3g}") == float(f"{billions:.3g}")
    assert (cfg.vocab_size, cfg.num_kv_heads, cfg.rope_theta, cfg.rms_norm_eps) == (128256, 8, 500000.0, 1e-5)
    assert cfg.tie_word_embeddings == name.startswith("llama3_2")
    assert cfg.rope_type == ("default" if name in ("llama3_8b", "llama3_70b") else "llama3")  # scaled from 3.1 on
    if cfg.rope_type == "llama3":
        assert cfg.rope_factor == (32.0 if name.startswith("llama3_2") else 8.0)
        assert (cfg.rope_original_max_position_embeddings, cfg.max_position_embeddings) == (8192, 131072)


def test_gqa_and_vocabularies():
    assert (get_shape("llama2_70b").num_kv_heads, get_shape("tinyllama_1b").num_kv_heads) == (8, 4)
    assert get_shape("chinese_llama_7b").vocab_size == 49953
    assert get_shape("chinese_llama2_7b").vocab_size == 55296


def test_config_file_by_path():
    for name in SHAPES:
        cfg = project_config("models", name)
        assert LlamaConfig.from_dict(cfg.to_dict()) == get_shape(name)


def test_unknown_shape_and_key_are_explained():
    with pytest.raises(KeyError, match="known shapes"):
        get_shape("llama_8b")
    with pytest.raises(ValueError, match="unknown model config keys"):
        LlamaConfig.from_dict({"hidden": 4})
