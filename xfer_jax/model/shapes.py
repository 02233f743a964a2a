"""Known LLaMA shapes by name: the models of the study (PAPER.md), TinyLlama, and tiny test shapes.

`configs/models.py` exposes them to ml_collections configs; `get_shape(name)` is the one lookup.
"""
from xfer_jax.model.config import LlamaConfig

_LLAMA1 = dict(max_position_embeddings=2048, rms_norm_eps=1e-6)
_LLAMA2 = dict(max_position_embeddings=4096, rms_norm_eps=1e-5)

SHAPES: dict[str, dict] = {
    "llama_7b": dict(hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32, num_kv_heads=32, **_LLAMA1),
    "llama_13b": dict(hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40, num_kv_heads=40, **_LLAMA1),
    "llama_33b": dict(hidden_size=6656, intermediate_size=17920, num_layers=60, num_heads=52, num_kv_heads=52, **_LLAMA1),
    "llama_65b": dict(hidden_size=8192, intermediate_size=22016, num_layers=80, num_heads=64, num_kv_heads=64, **_LLAMA1),
    "llama2_7b": dict(hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32, num_kv_heads=32, **_LLAMA2),
    "llama2_13b": dict(hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40, num_kv_heads=40, **_LLAMA2),
    "llama2_70b": dict(hidden_size=8192, intermediate_size=28672, num_layers=80, num_heads=64, num_kv_heads=8, **_LLAMA2),
    "tinyllama_1b": dict(hidden_size=2048, intermediate_size=5632, num_layers=22, num_heads=32, num_kv_heads=4,
                         max_position_embeddings=2048, rms_norm_eps=1e-5),
    # LLaMA-2-7B's layer, 8 of them: the single-card benchmark shape.
    "llama2_7b_l8": dict(hidden_size=4096, intermediate_size=11008, num_layers=8, num_heads=32, num_kv_heads=32, **_LLAMA2),
    # Tiny shapes for tests and CPU demos.
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_layers=2, num_heads=4, num_kv_heads=2,
                 max_position_embeddings=256, rms_norm_eps=1e-5),
    "tiny_mha": dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_layers=2, num_heads=4, num_kv_heads=4,
                     max_position_embeddings=256, rms_norm_eps=1e-5),
    "small": dict(hidden_size=256, intermediate_size=688, num_layers=4, num_heads=8, num_kv_heads=4,
                  max_position_embeddings=1024, rms_norm_eps=1e-5),
}
# Chinese LLaMA line: same bodies, extended vocabularies (Open Chinese LLaMA kept the original 32,000).
SHAPES["chinese_llama_7b"] = dict(SHAPES["llama_7b"], vocab_size=49953)
SHAPES["chinese_llama2_7b"] = dict(SHAPES["llama2_7b"], vocab_size=55296)
SHAPES["open_chinese_llama_7b"] = dict(SHAPES["llama_7b"])


def get_shape(name: str, **overrides) -> LlamaConfig:
    """LlamaConfig for a named shape, with field overrides (e.g. vocab_size, dtype, remat)."""
    if name not in SHAPES:
        raise KeyError(f"unknown model shape {name!r}; known shapes: {', '.join(sorted(SHAPES))}")
    return LlamaConfig(**{**SHAPES[name], **overrides})
