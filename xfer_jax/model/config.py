"""LlamaConfig: the model's shape (what an HF config.json holds) plus how to run it (dtypes, remat, attention).

The shape fields round-trip with Hugging Face `LlamaConfig` dictionaries (`from_hf` / `to_hf`); the run
fields never leave this project. Frozen so it can be a static argument under `jax.jit`.
"""
import dataclasses
from typing import Any

import jax.numpy as jnp

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_attn_out")
ATTENTION_IMPLS = ("xla", "cudnn")
DECODE_ATTENTION_IMPLS = ("xla", "pallas")  # one new token against the KV cache (model/decode_attention.py)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int | None = None
    # How to run it.
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: str = "none"
    attention: str = "xla"
    decode_attention: str = "xla"
    scan_layers: bool = True
    fuse_projections: bool = True  # q/k/v and gate/up as one GEMM each, training and decoding (llama.py)
    # LoRA adapters (0 = none); see xfer_jax/model/lora.py.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r}; choose one of {REMAT_POLICIES}")
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"attention={self.attention!r}; choose one of {ATTENTION_IMPLS}")
        if self.decode_attention not in DECODE_ATTENTION_IMPLS:
            raise ValueError(f"decode_attention={self.decode_attention!r}; choose one of {DECODE_ATTENTION_IMPLS}")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))  # lists from JSON stay hashable
        unknown = set(self.lora_targets) - set(LORA_TARGETS)
        if unknown:
            raise ValueError(f"lora_targets {sorted(unknown)} are not projections; choose from {LORA_TARGETS}")
        for field in ("dtype", "param_dtype"):
            jnp.dtype(getattr(self, field))  # raises on an unknown dtype name

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def replace(self, **changes: Any) -> "LlamaConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LlamaConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; known keys: {sorted(names)}")
        return cls(**d)

    def num_params(self, include_embedding: bool = True) -> int:
        """Base-model parameter count (adapters excluded); `include_embedding=False` gives N_matmul of the MFU
        formula (lm_head kept)."""
        d, f, L, hd = self.hidden_size, self.intermediate_size, self.num_layers, self.head_dim
        attn = d * hd * (self.num_heads * 2 + self.num_kv_heads * 2)
        per_layer = attn + 3 * d * f + 2 * d
        embed = self.vocab_size * d
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        return L * per_layer + d + head + (embed if include_embedding else 0)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, PaLM/MaxText convention: 6·N_matmul + 12·L·D·S (no causal halving)."""
        n_matmul = self.num_params(include_embedding=False)
        if self.tie_word_embeddings:
            n_matmul += self.vocab_size * self.hidden_size  # the tied matrix still does the output matmul
        return 6 * n_matmul + 12 * self.num_layers * self.hidden_size * seq_len

    # ---- Hugging Face config.json ----
    _HF_KEYS = {
        "vocab_size": "vocab_size",
        "hidden_size": "hidden_size",
        "intermediate_size": "intermediate_size",
        "num_layers": "num_hidden_layers",
        "num_heads": "num_attention_heads",
        "num_kv_heads": "num_key_value_heads",
        "max_position_embeddings": "max_position_embeddings",
        "rms_norm_eps": "rms_norm_eps",
        "rope_theta": "rope_theta",
        "tie_word_embeddings": "tie_word_embeddings",
        "initializer_range": "initializer_range",
        "bos_token_id": "bos_token_id",
        "eos_token_id": "eos_token_id",
        "pad_token_id": "pad_token_id",
    }

    @classmethod
    def from_hf(cls, hf: dict[str, Any], source: str = "config.json", **run: Any) -> "LlamaConfig":
        """Shape from an HF config dict; rejects what this model cannot represent, naming the key."""
        arch = hf.get("architectures") or ["LlamaForCausalLM"]
        if hf.get("model_type", "llama") != "llama" or arch[0] != "LlamaForCausalLM":
            raise ValueError(
                f"{source}: model_type={hf.get('model_type')!r}, architectures={arch}: only LLaMA "
                f"(model_type 'llama', LlamaForCausalLM) is supported"
            )
        for key, ok in (("hidden_act", "silu"),):
            if hf.get(key, ok) != ok:
                raise ValueError(f"{source}: {key}={hf[key]!r} is not supported (expected {ok!r})")
        rope_scaling = hf.get("rope_scaling")
        if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type")) not in (None, "default"):
            raise ValueError(f"{source}: rope_scaling={rope_scaling} is not supported; only plain RoPE")
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise ValueError(f"{source}: attention_bias/mlp_bias are not supported by LLaMA-1/2")
        if "rope_theta" not in hf and isinstance(hf.get("rope_parameters"), dict):
            hf = {**hf, "rope_theta": hf["rope_parameters"].get("rope_theta", 10000.0)}
        kw = {}
        for ours, theirs in cls._HF_KEYS.items():
            if theirs in hf and hf[theirs] is not None:
                kw[ours] = hf[theirs]
        if "num_kv_heads" not in kw and "num_heads" in kw:
            kw["num_kv_heads"] = kw["num_heads"]
        for key in ("bos_token_id", "eos_token_id"):
            if isinstance(kw.get(key), list):
                kw[key] = kw[key][0]
        head_dim = hf.get("head_dim")
        if head_dim is not None and head_dim * hf["num_attention_heads"] != hf["hidden_size"]:
            raise ValueError(
                f"{source}: head_dim={head_dim} × num_attention_heads={hf['num_attention_heads']} != "
                f"hidden_size={hf['hidden_size']}; LLaMA-1/2 need head_dim = hidden_size / num_attention_heads"
            )
        return cls(**kw, **run)

    def to_hf(self) -> dict[str, Any]:
        hf = {theirs: getattr(self, ours) for ours, theirs in self._HF_KEYS.items()}
        hf.update(
            architectures=["LlamaForCausalLM"],
            model_type="llama",
            hidden_act="silu",
            attention_bias=False,
            mlp_bias=False,
            attention_dropout=0.0,
            head_dim=self.head_dim,
            pretraining_tp=1,
            rope_scaling=None,
            use_cache=True,
            torch_dtype="float32" if self.param_dtype == "float32" else "bfloat16",
        )
        return hf
