"""Shared test helpers: tiny random HF models of every family (transformers, torch CPU) and their reference logits."""
import numpy as np
import torch
import transformers

# Llama 3.1's RoPE scaling shrunk to the tiny models (head size 16, theta 500): wavelengths 6.3 (kept: below 32/4),
# 13.6 and 29.6 (interpolated), 64 and longer (stretched by 8); sequences past 32 tokens leave the "original" context.
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}


# family -> (transformers config class, model class)
HF_CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
}


def tiny_hf_model(num_kv_heads: int = 2, tie: bool = False, seed: int = 0, vocab: int = 320, layers: int = 3,
                  dtype=torch.float32, rope_scaling: dict | None = None,
                  qk_gain: float = 1.0, hidden: int = 64, intermediate: int = 120, heads: int = 4,
                  family: str = "llama", **config) -> transformers.PreTrainedModel:
    """`rope_scaling`: e.g. LLAMA3_ROPE (transformers 5 keeps it, with the theta, as rope_parameters). `qk_gain`
    multiplies the q and k projections: at HF's initialisation attention is nearly uniform, so blind to RoPE.
    `family`: llama, mistral, qwen2 (q/k/v biases, drawn at random here) or qwen3 (q/k norms, perturbed like
    every norm). `config`: more config fields (bos_token_id, eos_token_id, head_dim, ...)."""
    config_cls, model_cls = HF_CLASSES[family]
    cfg = config_cls(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=num_kv_heads, max_position_embeddings=128, rms_norm_eps=1e-5,
        rope_theta=500.0, tie_word_embeddings=tie, rope_scaling=None if rope_scaling is None else dict(rope_scaling),
        **config,
    )
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    with torch.no_grad():  # HF inits norms at 1 and biases at 0; perturb them so a wrong mapping shows up
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn_like(p))
            elif "q_proj" in name or "k_proj" in name:
                p.mul_(qk_gain)
    return model.to(dtype)


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.float().numpy()
