"""Every key of a Hugging Face config.json, per model family: honoured, neutral, harmless or refused by name.

A Llama-3 checkpoint once imported with plain RoPE, without a word, because one key was never looked at. So each
key that a config.json of a supported family is known to hold (transformers 4 and 5 and the configs on the Hub)
sits in exactly one table below, and `from_hf` refuses any other key by name: an unknown key may mean the weights
expect a computation this model does not do. Strict on purpose; a key that changes nothing can be deleted by the
user, or added here. The families differ in a few keys only (HF_FAMILY_NEUTRAL, HF_FAMILY_HARMLESS): Qwen2 always
has q/k/v biases, Qwen3 always normalises q and k per head, and both carry sliding-window keys that transformers
ignores unless use_sliding_window is on. A config that would really slide a window is refused (attention here is
fully causal in training, prefill and decoding alike).
"""
import dataclasses
from typing import Any

# family -> (model_type, the architecture transformers' AutoModelForCausalLM builds for it)
HF_FAMILIES = {
    "llama": ("llama", "LlamaForCausalLM"),
    "mistral": ("mistral", "MistralForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
}

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
    "head_dim": "head_dim",  # null: hidden_size / num_attention_heads (every family reads it so)
    "rms_norm_eps": "rms_norm_eps",
    "tie_word_embeddings": "tie_word_embeddings",
    "initializer_range": "initializer_range",
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",  # an int or a list, kept as given
    "pad_token_id": "pad_token_id",
}

# Honoured in both spellings (`hf_rope`): transformers < 5 writes rope_theta (+ a rope_scaling dict for scaled
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

HF_NEUTRAL = {  # change the computation unless neutral: key -> (is_neutral(value, s), the fix); s: our shape
    # fields so far, and s["hf"] the whole config dict (for keys that only mean something together)
    "hidden_act": (lambda v, s: v in ("silu", "swish"), "the MLP here is SwiGLU; expected 'silu'"),
    "attention_bias": (lambda v, s: not v, "q/k/v/o here have no bias; expected false"),
    "mlp_bias": (lambda v, s: not v, "gate/up/down here have no bias; expected false"),
    "attention_dropout": (lambda v, s: not v, "training here has no attention dropout; expected 0.0"),
    "partial_rotary_factor": (lambda v, s: v in (None, 1, 1.0), "RoPE here turns the whole head; expected 1.0"),
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
    "model_type": "checked: names the family (HF_FAMILIES)",
    "architectures": "checked: the family's class (HF_FAMILIES)",
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


def hf_rope(hf: dict[str, Any], source: str, max_positions: int) -> dict[str, Any]:
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


def _qwen_window(s) -> tuple[int | None, list]:
    """(window, layer types) as Qwen2/Qwen3Config decide them: the window is sliding_window only with
    use_sliding_window; layer_types, when not given, marks sliding_attention the layers from max_window_layers on."""
    hf = s["hf"]
    window = hf.get("sliding_window", 4096) if hf.get("use_sliding_window", False) else None
    types = hf.get("layer_types") or ["sliding_attention" if window is not None and i >= hf.get("max_window_layers", 28)
                                      else "full_attention" for i in range(s["num_layers"])]
    return window, types


def _qwen_window_unused(v, s) -> bool:
    """No layer slides a window shorter than the positions the model takes."""
    window, types = _qwen_window(s)
    return "sliding_attention" not in types or window is not None and window >= s["max_position_embeddings"]


def _qwen_layer_types_full(v, s) -> bool:
    """Only full or (unused) sliding attention; a layer marked sliding with no window at all is refused as well."""
    window, types = _qwen_window(s)
    return (all(t in ("full_attention", "sliding_attention") for t in types) and _qwen_window_unused(v, s)
            and (window is not None or "sliding_attention" not in types))


_QWEN_FIX = ("attention here is fully causal in training, prefill and decoding, so a sliding window is refused; "
             "expected use_sliding_window false and layer_types all full_attention")
_QWEN_WINDOW = {  # use_sliding_window first: with it false the window is off, whatever sliding_window says
    "use_sliding_window": (_qwen_window_unused, _QWEN_FIX),
    "layer_types": (_qwen_layer_types_full, _QWEN_FIX),
    "sliding_window": (_qwen_window_unused, _QWEN_FIX),
    "max_window_layers": (_qwen_window_unused, _QWEN_FIX),
}
HF_LLAMA_WINDOW = {
    "sliding_window": (lambda v, s: v is None or v >= s["max_position_embeddings"],
                       "attention here is fully causal; expected null (no sliding window)"),
    "use_sliding_window": (lambda v, s: not v, "attention here is fully causal; expected false"),
}
HF_FAMILY_NEUTRAL = {  # family -> its own neutral keys, over HF_NEUTRAL (None: not neutral-checked in that family)
    "llama": HF_LLAMA_WINDOW,
    "mistral": HF_LLAMA_WINDOW,  # MistralForCausalLM slides a window of sliding_window (v0.1: 4096); v0.3 has null
    "qwen2": {"attention_bias": None, **_QWEN_WINDOW},
    "qwen3": {"attention_bias": (lambda v, s: not v, "Qwen3 here has no q/k/v/o biases; expected false"),
              **_QWEN_WINDOW},
}
HF_FAMILY_HARMLESS = {
    "qwen2": {"attention_bias": "Qwen2Attention always has q/k/v biases (o none) and never reads it"},
}


def neutral_keys(family: str) -> dict:
    table = {**HF_FAMILY_NEUTRAL[family], **{k: v for k, v in HF_NEUTRAL.items() if k not in HF_FAMILY_NEUTRAL[family]}}
    return {k: v for k, v in table.items() if v is not None}


def harmless_keys(family: str) -> dict:
    return {**HF_HARMLESS, **HF_FAMILY_HARMLESS.get(family, {})}


def hf_family(hf: dict[str, Any], source: str) -> str:
    """The family a config.json names: model_type and architectures must agree (a LLaMA without either is read
    as one, as transformers' own LlamaConfig does)."""
    model_type = hf.get("model_type", "llama")
    arch = hf.get("architectures") or [dict(HF_FAMILIES.values()).get(model_type, "LlamaForCausalLM")]
    for family, (kind, cls) in HF_FAMILIES.items():
        if model_type == kind and arch[0] == cls and len(arch) == 1:
            return family
    supported = ", ".join(f"{kind} ({cls})" for kind, cls in HF_FAMILIES.values())
    raise ValueError(f"{source}: model_type={model_type!r}, architectures={arch}: not supported; the supported "
                     f"families are {supported}")


def from_hf(cls, hf: dict[str, Any], source: str, run: dict[str, Any]):
    """`cls` (LlamaConfig) from an HF config dict: see LlamaConfig.from_hf."""
    family = hf_family(hf, source)
    neutral, harmless = neutral_keys(family), harmless_keys(family)
    unknown = sorted(set(hf) - set(HF_FIELDS) - set(HF_ROPE_KEYS) - set(neutral) - set(harmless))
    if unknown:
        raise ValueError(
            f"{source}: key(s) {', '.join(unknown)} not understood: the model may compute differently from "
            f"a plain {HF_FAMILIES[family][1]}; delete them if they change nothing (model/hf_config.py lists every "
            f"key read)")
    kw = {ours: hf[theirs] for theirs, ours in HF_FIELDS.items() if hf.get(theirs) is not None}
    kw.setdefault("num_kv_heads", kw.get("num_heads", cls.num_kv_heads))
    for key in ("bos_token_id", "pad_token_id"):  # transformers takes one id here, not a list
        if not isinstance(kw.get(key, 0), int):
            raise ValueError(f"{source}: {key}={kw[key]!r} is not one token id (transformers takes an int)")
    eos = kw.get("eos_token_id", 0)
    if not (isinstance(eos, int) or isinstance(eos, list) and eos and all(isinstance(i, int) for i in eos)):
        raise ValueError(f"{source}: eos_token_id={eos!r} is neither a token id nor a non-empty list of them")
    shape = {**{f.name: f.default for f in dataclasses.fields(cls)}, **kw, "hf": hf}
    for key, (is_neutral, fix) in neutral.items():
        if key in hf and not is_neutral(hf[key], shape):
            raise ValueError(f"{source}: {key}={hf[key]!r} is not supported: {fix}")
    rope = hf_rope(hf, source, shape["max_position_embeddings"])
    try:
        return cls(family=family, **kw, **rope, **run)
    except ValueError as e:  # a value __post_init__ refuses (e.g. high_freq_factor <= low_freq_factor)
        raise ValueError(f"{source}: {e}") from None


def to_hf(cfg) -> dict[str, Any]:
    """config.json for transformers 4 and 5 alike: both read a top-level rope_theta and a rope_scaling dict
    without one (5 turns them into its rope_parameters); ids as given; the family's model_type and class, so
    AutoModelForCausalLM builds the same model."""
    hf = {theirs: getattr(cfg, ours) for theirs, ours in HF_FIELDS.items()}
    if not isinstance(cfg.eos_token_id, int):
        hf["eos_token_id"] = list(cfg.eos_token_id)
    model_type, arch = HF_FAMILIES[cfg.family]
    hf.update(
        architectures=[arch],
        model_type=model_type,
        hidden_act="silu",
        attention_dropout=0.0,
        rope_theta=cfg.rope_theta,
        rope_scaling=None if cfg.rope_type == "default" else  # transformers' own llama3 form (Llama 3.1)
        {"rope_type": cfg.rope_type, **{theirs: getattr(cfg, ours) for theirs, ours in HF_LLAMA3_ROPE.items()}},
        use_cache=True,
        torch_dtype="float32" if cfg.param_dtype == "float32" else "bfloat16",
    )
    if cfg.family == "llama":
        hf.update(attention_bias=False, mlp_bias=False, pretraining_tp=1)
    elif cfg.family == "mistral":
        hf.update(sliding_window=None)
    else:  # qwen2, qwen3: no window on any layer
        hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.num_layers,
                  layer_types=["full_attention"] * cfg.num_layers)
        if cfg.family == "qwen3":
            hf.update(attention_bias=False)
    return hf
