"""LlamaConfig: the model's shape (what an HF config.json holds) plus how to run it (dtypes, remat, attention).

The shape fields round-trip with Hugging Face `LlamaConfig` dictionaries (`from_hf` / `to_hf`); the run
fields never leave this project. Frozen so it can be a static argument under `jax.jit`.
"""
import dataclasses
from typing import Any

import jax.numpy as jnp

from xfer_jax.model.family import LORA_TARGETS  # the projections that may take adapters (kept importable here)

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_attn_out")
ATTENTION_IMPLS = ("xla", "cudnn", "splash", "auto")  # auto: cudnn on GPU, splash on TPU, xla else (attention.resolve)
DECODE_ATTENTION_IMPLS = ("xla", "pallas")  # one new token against the KV cache (model/decode_attention.py)
ROPE_TYPES = ("default", "llama3")  # plain RoPE; Llama 3.1+'s long-context frequency scaling (llama.rope_frequencies)
LLAMA3_ROPE_FIELDS = (  # set exactly when rope_type == "llama3"; HF's names for them are in HF_LLAMA3_ROPE
    "rope_factor", "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_position_embeddings")


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
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Every end-of-sequence id: generation stops on any of them."""
        return (self.eos_token_id,) if isinstance(self.eos_token_id, int) else self.eos_token_id

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

    # ---- Hugging Face config.json (the key tables are below the class) ----
    @classmethod
    def from_hf(cls, hf: dict[str, Any], source: str = "config.json", **run: Any) -> "LlamaConfig":
        """Shape from an HF config dict. Every key is honoured, checked to be at its neutral value, known to be
        harmless, or refused by name (HF_FIELDS, HF_NEUTRAL, HF_HARMLESS): a key left unread is a computation
        silently not done."""
        arch = hf.get("architectures") or ["LlamaForCausalLM"]
        if hf.get("model_type", "llama") != "llama" or arch[0] != "LlamaForCausalLM":
            raise ValueError(
                f"{source}: model_type={hf.get('model_type')!r}, architectures={arch}: only LLaMA "
                f"(model_type 'llama', LlamaForCausalLM) is supported"
            )
        unknown = sorted(set(hf) - set(HF_FIELDS) - set(HF_ROPE_KEYS) - set(HF_NEUTRAL) - set(HF_HARMLESS))
        if unknown:
            raise ValueError(
                f"{source}: key(s) {', '.join(unknown)} not understood: the model may compute differently from "
                f"a plain LLaMA; delete them if they change nothing (model/config.py lists every key read)"
            )
        kw = {ours: hf[theirs] for theirs, ours in HF_FIELDS.items() if hf.get(theirs) is not None}
        kw.setdefault("num_kv_heads", kw.get("num_heads", cls.num_kv_heads))
        for key in ("bos_token_id", "pad_token_id"):  # transformers takes one id here, not a list
            if not isinstance(kw.get(key, 0), int):
                raise ValueError(f"{source}: {key}={kw[key]!r} is not one token id (transformers takes an int)")
        eos = kw.get("eos_token_id", 0)
        if not (isinstance(eos, int) or isinstance(eos, list) and eos and all(isinstance(i, int) for i in eos)):
            raise ValueError(f"{source}: eos_token_id={eos!r} is neither a token id nor a non-empty list of them")
        shape = {**{f.name: f.default for f in dataclasses.fields(cls)}, **kw}
        for key, (neutral, fix) in HF_NEUTRAL.items():
            if key in hf and not neutral(hf[key], shape):
                raise ValueError(f"{source}: {key}={hf[key]!r} is not supported: {fix}")
        rope = _hf_rope(hf, source, shape["max_position_embeddings"])
        try:
            return cls(**kw, **rope, **run)
        except ValueError as e:  # a value __post_init__ refuses (e.g. high_freq_factor <= low_freq_factor)
            raise ValueError(f"{source}: {e}") from None

    def to_hf(self) -> dict[str, Any]:
        """config.json for transformers 4 and 5 alike: both read a top-level rope_theta and a rope_scaling dict
        without one (5 turns them into its rope_parameters); ids as given."""
        hf = {theirs: getattr(self, ours) for theirs, ours in HF_FIELDS.items()}
        if not isinstance(self.eos_token_id, int):
            hf["eos_token_id"] = list(self.eos_token_id)
        hf.update(
            architectures=["LlamaForCausalLM"],
            model_type="llama",
            hidden_act="silu",
            attention_bias=False,
            mlp_bias=False,
            attention_dropout=0.0,
            head_dim=self.head_dim,
            pretraining_tp=1,
            rope_theta=self.rope_theta,
            rope_scaling=None if self.rope_type == "default" else  # transformers' own llama3 form (Llama 3.1)
            {"rope_type": self.rope_type, **{theirs: getattr(self, ours) for theirs, ours in HF_LLAMA3_ROPE.items()}},
            use_cache=True,
            torch_dtype="float32" if self.param_dtype == "float32" else "bfloat16",
        )
        return hf


# ---- What every key of an HF LLaMA config.json means here ----
# A Llama-3 checkpoint once imported with plain RoPE, without a word, because one key was never looked at. So
# each key that a LLaMA config.json is known to hold (transformers 4 and 5 LlamaConfig and PretrainedConfig,
# and the Llama-1/2/3, TinyLlama, Vicuna, Code Llama configs on the Hub) sits in exactly one table below, and
# `from_hf` refuses any other key by name: an unknown key may mean the weights expect a computation this model
# does not do. That is strict on purpose; a key that changes nothing can be deleted by the user, or added here.

HF_FIELDS = {  # honoured: HF key -> LlamaConfig field
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "num_key_value_heads": "num_kv_heads",
    "max_position_embeddings": "max_position_embeddings",
    "rms_norm_eps": "rms_norm_eps",
    "tie_word_embeddings": "tie_word_embeddings",
    "initializer_range": "initializer_range",
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",  # an int or a list, kept as given
    "pad_token_id": "pad_token_id",
}

# Honoured in both spellings (`_hf_rope`): transformers < 5 writes rope_theta (+ a rope_scaling dict for scaled
# RoPE); transformers 5 writes one rope_parameters dict with rope_type and rope_theta inside (and reads a
# rope_scaling dict as the same thing). Inside the dict each rope_type reads only its own keys (HF_ROPE_TYPES);
# every other rope_type (linear, dynamic, yarn, longrope, ...) is refused by name.
HF_ROPE_KEYS = ("rope_theta", "rope_scaling", "rope_parameters")
HF_LLAMA3_ROPE = {  # honoured inside the dict with rope_type 'llama3': HF key -> LlamaConfig field
    "factor": "rope_factor",
    "low_freq_factor": "rope_low_freq_factor",
    "high_freq_factor": "rope_high_freq_factor",
    "original_max_position_embeddings": "rope_original_max_position_embeddings",
}
HF_ROPE_TYPES = {"default": {}, "llama3": HF_LLAMA3_ROPE}  # rope_type -> the dict keys it reads (+ rope_theta)

HF_NEUTRAL = {  # change the computation unless neutral: key -> (is_neutral(value, our shape fields), the fix)
    "hidden_act": (lambda v, s: v in ("silu", "swish"), "the MLP here is SwiGLU; expected 'silu'"),
    "attention_bias": (lambda v, s: not v, "q/k/v/o here have no bias; expected false"),
    "mlp_bias": (lambda v, s: not v, "gate/up/down here have no bias; expected false"),
    "head_dim": (lambda v, s: v is None or v * s["num_heads"] == s["hidden_size"],
                 "LLaMA-1/2 need head_dim = hidden_size / num_attention_heads"),
    "attention_dropout": (lambda v, s: not v, "training here has no attention dropout; expected 0.0"),
    "partial_rotary_factor": (lambda v, s: v in (None, 1, 1.0), "RoPE here turns the whole head; expected 1.0"),
    "sliding_window": (lambda v, s: v is None or v >= s["max_position_embeddings"],
                       "attention here is fully causal; expected null (no sliding window)"),
    "use_sliding_window": (lambda v, s: not v, "attention here is fully causal; expected false"),
    "is_encoder_decoder": (lambda v, s: not v, "this is a decoder-only LLaMA; expected false"),
    "add_cross_attention": (lambda v, s: not v, "this is a decoder-only LLaMA; expected false"),
    "pruned_heads": (lambda v, s: not v, "some attention heads were pruned; expected {}"),
    "quantization_config": (lambda v, s: v is None, "the weights are quantized; dequantize and save again"),
    "auto_map": (lambda v, s: not any(str(k).startswith("AutoModel") for k in (v or {})),
                 "it names custom modeling code (trust_remote_code), which may compute anything"),
}

_GENERATION_DEFAULTS = (  # transformers < 5 kept these in config.json; 5 drops them. Our generation has its own.
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty",
    "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
    "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "epsilon_cutoff", "eta_cutoff",
    "encoder_repetition_penalty", "num_assistant_tokens", "num_assistant_tokens_schedule",
    "assistant_confidence_threshold", "assistant_lookbehind", "target_lookbehind",
)
HF_HARMLESS = {  # the logits and the training step do not depend on these: key -> why
    "model_type": "checked: must be 'llama'",
    "architectures": "checked: must be LlamaForCausalLM",
    "_name_or_path": "provenance", "_commit_hash": "provenance", "transformers_version": "provenance",
    "unsloth_version": "provenance", "unsloth_fixed": "provenance",
    "torch_dtype": "storage dtype: the import keeps the tensors' own dtype (or --param_dtype)",
    "dtype": "storage dtype (transformers 5 spelling of torch_dtype)", "use_bfloat16": "storage dtype",
    "pretraining_tp": "transformers 4 slices some matmuls into this many parts and adds them up: the same "
                      "product (transformers 5 ignores it)",
    "use_cache": "decoding speed only", "chunk_size_feed_forward": "the MLP in chunks: the same result",
    "attn_implementation": "kernel choice, same math", "_attn_implementation": "kernel choice, same math",
    "_attn_implementation_autoset": "kernel choice, same math",
    "output_attentions": "extra outputs only", "output_hidden_states": "extra outputs only",
    "return_dict": "output container only", "torchscript": "export mode only", "tf_legacy_loss": "TensorFlow only",
    "id2label": "classification heads only", "label2id": "classification heads only",
    "num_labels": "classification heads only", "problem_type": "classification heads only",
    "finetuning_task": "metadata", "task_specific_params": "pipeline defaults", "prefix": "pipeline defaults",
    "tokenizer_class": "tokenizer files decide the tokenizer",
    "is_decoder": "encoder-decoder models only", "tie_encoder_decoder": "encoder-decoder models only",
    "cross_attention_hidden_size": "encoder-decoder models only",
    "decoder_start_token_id": "encoder-decoder models only", "sep_token_id": "tokenizer metadata",
    **{key: "a generation default, not the model's computation" for key in _GENERATION_DEFAULTS},
}


def _hf_rope(hf: dict[str, Any], source: str, max_positions: int) -> dict[str, Any]:
    """rope_theta, rope_type and the llama3 fields from either spelling. A setting given twice must agree:
    transformers 4 reads the top-level theta and rope_scaling, 5 the dict's theta and rope_scaling before
    rope_parameters, so a disagreement means the two libraries compute different models."""
    thetas = {"rope_theta": hf["rope_theta"]} if hf.get("rope_theta") is not None else {}
    scalings = {}  # where -> (rope_type, {field: value})
    for key in ("rope_scaling", "rope_parameters"):
        rope = hf.get(key)
        if rope is None:
            continue
        if not isinstance(rope, dict):
            raise ValueError(f"{source}: {key}={rope!r} is not understood; expected a dict of rope_type, rope_theta")
        kinds = {name: rope[name] for name in ("rope_type", "type") if rope.get(name) is not None}
        if len(set(kinds.values())) > 1:
            raise ValueError(f"{source}: {key} has rope_type={kinds['rope_type']!r} and type={kinds['type']!r}: "
                             f"make them equal")
        name, kind = next(iter(kinds.items()), ("rope_type", "default"))
        if kind not in HF_ROPE_TYPES:
            raise ValueError(f"{source}: {key}.{name}={kind!r} is not supported: only plain RoPE (rope_type "
                             f"'default') and Llama 3.1's scaling (rope_type 'llama3') are")
        reads, fields = HF_ROPE_TYPES[kind], {}
        for name, value in rope.items():
            if name == "rope_theta" and value is not None:
                thetas[f"{key}.rope_theta"] = value
            elif name in reads:
                fields[reads[name]] = value
            elif name not in ("rope_type", "type", "rope_theta") and (name, value) != ("partial_rotary_factor", 1):
                raise ValueError(f"{source}: {key}.{name}={value!r} is not understood with rope_type {kind!r}: the "
                                 f"model may compute differently; only rope_type, rope_theta"
                                 f"{''.join(', ' + k for k in reads)} are read")
        if kind == "llama3":  # transformers' default for a missing pretraining context
            fields.setdefault("rope_original_max_position_embeddings", max_positions)
            missing = [theirs for theirs, ours in reads.items() if fields.get(ours) is None]
            if missing:
                raise ValueError(f"{source}: {key} with rope_type 'llama3' lacks {', '.join(missing)}")
            fields = {ours: _number(fields[ours], ours == "rope_original_max_position_embeddings", f"{source}: {key}."
                                    f"{theirs}") for theirs, ours in reads.items()}
        scalings[key] = (kind, fields)
    if len({repr(v) for v in scalings.values()}) > 1:
        given = "; ".join(f"{k}: rope_type={kind!r} {fields}" for k, (kind, fields) in scalings.items())
        raise ValueError(f"{source}: {given} disagree (transformers 4 reads rope_scaling, 5 rope_scaling or else "
                         f"rope_parameters): make them equal")
    if len({float(v) for v in thetas.values()}) > 1:
        given = ", ".join(f"{k}={v}" for k, v in thetas.items())
        raise ValueError(f"{source}: {given} disagree (transformers 4 reads rope_theta, 5 the dict's): make them equal")
    kind, fields = next(iter(scalings.values()), ("default", {}))
    return {"rope_theta": float(next(iter(thetas.values()), 10000.0)), "rope_type": kind, **fields}


def _number(value: Any, integer: bool, where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or integer and value != int(value):
        raise ValueError(f"{where}={value!r} is not {'an integer' if integer else 'a number'}")
    return int(value) if integer else float(value)
