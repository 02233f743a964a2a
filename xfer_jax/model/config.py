"""LlamaConfig: the model's shape (what an HF config.json holds) plus how to run it (dtypes, remat, attention).

One config class for every family (LLaMA, Mistral, Qwen2, Qwen3: `family`); the shape fields round-trip with
Hugging Face config dictionaries of the family (`from_hf` / `to_hf`, tables in hf_config.py); the run fields never
leave this project. Frozen so it can be a static argument under `jax.jit`.
"""
import dataclasses
from typing import Any

import jax.numpy as jnp

from xfer_jax.model import hf_config
from xfer_jax.model.family import LORA_TARGETS  # the projections that may take adapters (kept importable here)
from xfer_jax.model.hf_config import HF_FAMILIES

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_attn_out", "minimal")  # llama.py _REMAT says what each keeps
ATTENTION_IMPLS = ("xla", "cudnn", "splash", "auto")  # auto: cudnn on GPU, splash on TPU, xla else (attention.resolve)
DECODE_ATTENTION_IMPLS = ("xla", "pallas")  # one new token against the KV cache (model/decode_attention.py)
FAMILIES = tuple(HF_FAMILIES)  # llama (1/2/3), mistral, qwen2 (q/k/v biases), qwen3 (per-head q/k RMSNorm)
ROPE_TYPES = ("default", "llama3")  # plain RoPE; Llama 3.1+'s long-context frequency scaling (llama.rope_frequencies)
LLAMA3_ROPE_FIELDS = (  # set exactly when rope_type == "llama3"; HF's names for them are in hf_config.HF_LLAMA3_ROPE
    "rope_factor", "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_position_embeddings")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    family: str = "llama"  # see FAMILIES: which parameters the layers have (family.table) and which HF class it is
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    head_dim: int | None = None  # None: hidden_size // num_heads (set so in __post_init__); Qwen3 sets its own
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"  # see ROPE_TYPES
    # rope_type "llama3" only (None otherwise): wavelengths longer than original/low_freq_factor are stretched by
    # rope_factor, shorter than original/high_freq_factor kept, those between interpolated smoothly.
    rope_factor: float | None = None
    rope_low_freq_factor: float | None = None
    rope_high_freq_factor: float | None = None
    rope_original_max_position_embeddings: int | None = None  # the pretraining context the scaling extends
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    bos_token_id: int = 1
    eos_token_id: int | tuple[int, ...] = 2  # HF allows a list (Llama-3-Instruct ends turns on several); kept as given
    pad_token_id: int | None = None
    # How to run it.
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: str = "none"
    attention: str = "auto"  # see ATTENTION_IMPLS; the kernel that runs is logged (attention.choose)
    attention_block_size: int = 512  # attention="splash": q/kv tile, capped to the sequence (multiple of 128)
    attention_max_segments: int = 32  # cuDNN, packed rows of <= this many documents: its packed layout (0: mask)
    decode_attention: str = "xla"
    scan_layers: bool = True
    fuse_projections: bool = True  # q/k/v and gate/up as one GEMM each, training and decoding (llama.py)
    # LoRA adapters (0 = none); see xfer_jax/model/lora.py.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r}; choose one of {FAMILIES}")
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                                 f"or give head_dim")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if not isinstance(self.head_dim, int) or self.head_dim <= 0 or self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim!r}: RoPE needs a positive even head size")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r}; choose one of {REMAT_POLICIES}")
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"attention={self.attention!r}; choose one of {ATTENTION_IMPLS}")
        if self.attention_max_segments < 0:
            raise ValueError(f"attention_max_segments={self.attention_max_segments}: 0 (a dense mask) or a positive "
                             f"number of documents per row")
        if self.attention_block_size <= 0 or self.attention_block_size % 128:
            raise ValueError(f"attention_block_size={self.attention_block_size}: the splash kernel's tile must be a "
                             f"positive multiple of 128")
        if self.decode_attention not in DECODE_ATTENTION_IMPLS:
            raise ValueError(f"decode_attention={self.decode_attention!r}; choose one of {DECODE_ATTENTION_IMPLS}")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))  # lists from JSON stay hashable
        if not isinstance(self.eos_token_id, int):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
            if not self.eos_token_id or not all(isinstance(i, int) for i in self.eos_token_id):
                raise ValueError(f"eos_token_id={list(self.eos_token_id)}: expected an id or a non-empty list of ids")
        unknown = set(self.lora_targets) - set(LORA_TARGETS)
        if unknown:
            raise ValueError(f"lora_targets {sorted(unknown)} are not projections; choose from {LORA_TARGETS}")
        for field in ("dtype", "param_dtype"):
            jnp.dtype(getattr(self, field))  # raises on an unknown dtype name
        self._check_rope()

    def _check_rope(self):
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"rope_type={self.rope_type!r}; choose one of {ROPE_TYPES}")
        given = {f: getattr(self, f) for f in LLAMA3_ROPE_FIELDS if getattr(self, f) is not None}
        if self.rope_type != "llama3":
            if given:
                raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in given.items())}: only read with "
                                 f"rope_type='llama3' (rope_type={self.rope_type!r}); drop them or set rope_type")
            return
        missing = [f for f in LLAMA3_ROPE_FIELDS if f not in given]
        if missing:
            raise ValueError(f"rope_type='llama3' needs {', '.join(missing)}")
        low, high = self.rope_low_freq_factor, self.rope_high_freq_factor
        original = self.rope_original_max_position_embeddings
        if not (self.rope_factor > 0 and 0 < low < high and isinstance(original, int) and original > 0):
            raise ValueError(f"rope_factor={self.rope_factor}, rope_low_freq_factor={low}, rope_high_freq_factor="
                             f"{high}, rope_original_max_position_embeddings={original}: expected factor > 0, "
                             f"0 < low < high and a positive integer context")

    @property
    def qkv_bias(self) -> bool:
        """q/k/v projections add a bias (Qwen2's attention; o_proj has none)."""
        return self.family == "qwen2"

    @property
    def qk_norm(self) -> bool:
        """q and k pass a per-head RMSNorm over head_dim before RoPE (Qwen3's q_norm, k_norm)."""
        return self.family == "qwen3"

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Every end-of-sequence id: generation stops on any of them."""
        return (self.eos_token_id,) if isinstance(self.eos_token_id, int) else self.eos_token_id

    def replace(self, **changes: Any) -> "LlamaConfig":
        """A changed copy; a head_dim equal to hidden_size // num_heads counts as derived and is derived again
        when either changes (pass head_dim to keep it)."""
        derived = self.head_dim * self.num_heads == self.hidden_size
        if derived and "head_dim" not in changes and {"hidden_size", "num_heads"} & set(changes):
            changes["head_dim"] = None
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
        attn += self.qkv_bias * hd * (self.num_heads + 2 * self.num_kv_heads) + self.qk_norm * 2 * hd
        per_layer = attn + 3 * d * f + 2 * d
        embed = self.vocab_size * d
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        return L * per_layer + d + head + (embed if include_embedding else 0)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, PaLM/MaxText convention: 6·N_matmul + 12·L·D·S (no causal halving), D the
        attention width num_heads·head_dim (hidden_size unless head_dim is set apart, as in Qwen3)."""
        n_matmul = self.num_params(include_embedding=False)
        if self.tie_word_embeddings:
            n_matmul += self.vocab_size * self.hidden_size  # the tied matrix still does the output matmul
        return 6 * n_matmul + 12 * self.num_layers * self.num_heads * self.head_dim * seq_len

    # ---- Hugging Face config.json (the key tables are in hf_config.py) ----
    @classmethod
    def from_hf(cls, hf: dict[str, Any], source: str = "config.json", **run: Any) -> "LlamaConfig":
        """Shape (and family) from an HF config dict. Every key is honoured, checked to be at its neutral value,
        known to be harmless, or refused by name (model/hf_config.py, per family): a key left unread is a
        computation silently not done."""
        return hf_config.from_hf(cls, hf, source, run)

    def to_hf(self) -> dict[str, Any]:
        """config.json that transformers 4 and 5 load as this family's class (model/hf_config.py)."""
        return hf_config.to_hf(self)
