"""Known shapes by name: the models of the study (PAPER.md), Llama 3.x, TinyLlama, Qwen2.5, Qwen3, Mistral-7B-v0.3,
and tiny test shapes.

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
# Llama 3.x, as Meta's config.json files on the Hub give them: 128,256 pieces, theta 500,000, 8 kv heads; from 3.1
# on, the llama3 RoPE scaling (factor 8; 3.2's small models 32) from an 8,192-token pretraining context.
_LLAMA3 = dict(vocab_size=128256, num_kv_heads=8, rope_theta=500000.0, rms_norm_eps=1e-5, bos_token_id=128000,
               eos_token_id=128001, max_position_embeddings=8192)
_LLAMA3_1 = dict(_LLAMA3, max_position_embeddings=131072, rope_type="llama3", rope_factor=8.0, rope_low_freq_factor=1.0,
                 rope_high_freq_factor=4.0, rope_original_max_position_embeddings=8192)
_LLAMA3_2 = dict(_LLAMA3_1, rope_factor=32.0, tie_word_embeddings=True)
_8B = dict(hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32)
_70B = dict(hidden_size=8192, intermediate_size=28672, num_layers=80, num_heads=64)
SHAPES.update({
    "llama3_8b": dict(_8B, **_LLAMA3),
    "llama3_70b": dict(_70B, **_LLAMA3),
    "llama3_1_8b": dict(_8B, **_LLAMA3_1),
    "llama3_1_70b": dict(_70B, **_LLAMA3_1),
    "llama3_1_405b": dict(hidden_size=16384, intermediate_size=53248, num_layers=126, num_heads=128, **_LLAMA3_1),
    "llama3_2_1b": dict(hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32, **_LLAMA3_2),
    "llama3_2_3b": dict(hidden_size=3072, intermediate_size=8192, num_layers=28, num_heads=24, **_LLAMA3_2),
    "llama3_3_70b": dict(_70B, **_LLAMA3_1),
})
# Chinese LLaMA line: same bodies, extended vocabularies (Open Chinese LLaMA kept the original 32,000).
SHAPES["chinese_llama_7b"] = dict(SHAPES["llama_7b"], vocab_size=49953)
SHAPES["chinese_llama2_7b"] = dict(SHAPES["llama2_7b"], vocab_size=55296)
SHAPES["open_chinese_llama_7b"] = dict(SHAPES["llama_7b"])

# Qwen2.5 and Qwen3 (dense), as Qwen's config.json files on the Hub give them: theta 1,000,000; vocab 151,936
# (Qwen2.5 from 7B on: 152,064); embeddings tied up to 3B (Qwen2.5) / 4B (Qwen3). Qwen3's head_dim is 128
# whatever hidden_size / heads is. Ids: <|endoftext|> 151643 starts (and ends a Qwen2.5 base text), <|im_end|>
# 151645 ends a Qwen3 (hybrid-thinking, chat-tuned) turn.
_QWEN = dict(vocab_size=151936, rope_theta=1000000.0, rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151643)
_QWEN2_5 = dict(_QWEN, family="qwen2", max_position_embeddings=131072)
_QWEN2_5_BIG = dict(_QWEN2_5, vocab_size=152064, rms_norm_eps=1e-5)
_QWEN3 = dict(_QWEN, family="qwen3", head_dim=128, num_kv_heads=8, max_position_embeddings=40960, eos_token_id=151645)
SHAPES.update({
    "qwen2_5_0_5b": dict(_QWEN2_5, hidden_size=896, intermediate_size=4864, num_layers=24, num_heads=14, num_kv_heads=2,
                         max_position_embeddings=32768, tie_word_embeddings=True),
    "qwen2_5_1_5b": dict(_QWEN2_5, hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12,
                         num_kv_heads=2, tie_word_embeddings=True),
    "qwen2_5_3b": dict(_QWEN2_5, hidden_size=2048, intermediate_size=11008, num_layers=36, num_heads=16, num_kv_heads=2,
                       max_position_embeddings=32768, tie_word_embeddings=True),
    "qwen2_5_7b": dict(_QWEN2_5_BIG, hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
                       num_kv_heads=4, rms_norm_eps=1e-6),
    "qwen2_5_14b": dict(_QWEN2_5_BIG, hidden_size=5120, intermediate_size=13824, num_layers=48, num_heads=40,
                        num_kv_heads=8),
    "qwen2_5_32b": dict(_QWEN2_5_BIG, hidden_size=5120, intermediate_size=27648, num_layers=64, num_heads=40,
                        num_kv_heads=8),
    "qwen2_5_72b": dict(_QWEN2_5_BIG, hidden_size=8192, intermediate_size=29568, num_layers=80, num_heads=64,
                        num_kv_heads=8),
    "qwen3_0_6b": dict(_QWEN3, hidden_size=1024, intermediate_size=3072, num_layers=28, num_heads=16,
                       tie_word_embeddings=True),
    "qwen3_1_7b": dict(_QWEN3, hidden_size=2048, intermediate_size=6144, num_layers=28, num_heads=16,
                       tie_word_embeddings=True),
    "qwen3_4b": dict(_QWEN3, hidden_size=2560, intermediate_size=9728, num_layers=36, num_heads=32,
                     tie_word_embeddings=True),
    "qwen3_8b": dict(_QWEN3, hidden_size=4096, intermediate_size=12288, num_layers=36, num_heads=32),
    "qwen3_14b": dict(_QWEN3, hidden_size=5120, intermediate_size=17408, num_layers=40, num_heads=40),
    "qwen3_32b": dict(_QWEN3, hidden_size=5120, intermediate_size=25600, num_layers=64, num_heads=64),
    # Mistral-7B-v0.3: LLaMA's math, GQA 8, a 32,768-piece vocabulary, no sliding window (v0.1 had 4,096).
    "mistral_7b_v0_3": dict(family="mistral", vocab_size=32768, hidden_size=4096, intermediate_size=14336,
                            num_layers=32, num_heads=32, num_kv_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5,
                            rope_theta=1000000.0),
})


def get_shape(name: str, **overrides) -> LlamaConfig:
    """LlamaConfig for a named shape, with field overrides (e.g. vocab_size, dtype, remat)."""
    if name not in SHAPES:
        raise KeyError(f"unknown model shape {name!r}; known shapes: {', '.join(sorted(SHAPES))}")
    return LlamaConfig(**{**SHAPES[name], **overrides})
