"""Named model shapes as ml_collections configs: `--config=configs/models.py:llama2_7b`.

The table itself is `xfer_jax.model.shapes.SHAPES` (llama_7b/13b/33b/65b, llama2_7b/13b/70b, llama3_8b/70b,
llama3_1_8b/70b/405b, llama3_2_1b/3b, llama3_3_70b, chinese_llama_7b, chinese_llama2_7b, open_chinese_llama_7b,
tinyllama_1b, llama2_7b_l8, tiny, tiny_mha, small; qwen2_5_0_5b/1_5b/3b/7b/14b/32b/72b, qwen3_0_6b/1_7b/4b/8b/14b/32b,
mistral_7b_v0_3); stage configs import it the same way, so a shape is
defined once.
"""
import ml_collections

from xfer_jax.model.shapes import get_shape


def get_config(name: str = "tiny") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(get_shape(name).to_dict())
