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
