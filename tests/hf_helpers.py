"""Shared test helpers: tiny random HF LLaMA models (transformers, torch CPU) and their reference logits."""
import numpy as np
import torch
import transformers


def tiny_hf_model(num_kv_heads: int = 2, tie: bool = False, seed: int = 0, vocab: int = 320, layers: int = 3,
                  dtype=torch.float32) -> transformers.LlamaForCausalLM:
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=120, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=num_kv_heads, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=500.0,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF inits norms at 1; perturb them so a wrong norm mapping shows up
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.to(dtype)


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.float().numpy()
