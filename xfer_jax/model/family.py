"""A model family's parameters as one table: a row per parameter, read by everything that names parameters.

Initialisation (llama.py), LoRA targets and adapter shapes (lora.py), norm folding (`params.fold_norms`), the HF
tensor plan (convert/hf.py) and the PEFT names (convert/peft.py) all read the rows, so a parameter is named,
shaped and laid out in one place. A family is a table plus the few lines where its math differs (llama.py):
LLaMA and Mistral share one; Qwen2 adds q/k/v biases, Qwen3 per-head q/k RMSNorms. `table(cfg)` is where a
config gets its family's rows.

Shapes come from the logical axes: each axis name has one length in a config (`sizes`), so a row's axes are at
once its sharding (xfer_jax.parallel.rules) and its shape rule. Our matrices put their input axes first, HF's
[out, in] puts them last: `n_in`, how many of ours are the input, makes the HF conversion a reshape plus a
transpose (convert/hf.py) and every projection an einsum (`einsum`).
"""
import dataclasses
from typing import Any, Callable

KINDS = ("embedding", "norm", "projection", "bias")  # a row lookup; an RMSNorm gain (at 1); a matmul; its bias


def _always(cfg) -> bool:
    return True


def _untied(cfg) -> bool:
    return not cfg.tie_word_embeddings


@dataclasses.dataclass(frozen=True)
class Param:
    name: str  # ours; a per-layer parameter sits at params["layers"][name]
    axes: tuple[str, ...]  # logical axes, "layers" first for a parameter stacked over the decoder layers
    hf: str  # the Hugging Face tensor, "{i}" standing for the layer index
    kind: str  # one of KINDS
    n_in: int | None = None  # projections: how many of our leading (non-layer) axes are the matmul's input;
    # biases 0 (no input axes: HF keeps the whole [out] vector flat)
    norm: str | None = None  # the layer's RMSNorm whose output it reads: fold_norms multiplies that gain in
    lora: bool = False  # may carry a LoRA adapter (LlamaConfig.lora_targets)
    present: Callable[[Any], bool] = _always  # whether a config's model has it

    def __post_init__(self):
        if self.kind not in KINDS or (self.n_in is None) != (self.kind not in ("projection", "bias")) or (
                self.kind == "bias") != (self.n_in == 0):
            raise ValueError(f"{self.name}: kind {self.kind!r} (one of {KINDS}); n_in given exactly for projections "
                             f"(0 for biases)")

    @property
    def stacked(self) -> bool:
        return self.axes[0] == "layers"

    def shape(self, cfg) -> tuple[int, ...]:
        """Our shape of it in `cfg`'s model, the `layers` axis included."""
        length = sizes(cfg)
        return tuple(length[axis] for axis in self.axes)

    def hf_name(self, layer: int | None = None) -> str:
        return self.hf.format(i=layer)


def _layer(name, axes, hf, kind, **kw) -> Param:
    suffix = "bias" if kind == "bias" else "weight"
    return Param(name, ("layers", *axes), f"model.layers.{{i}}.{hf}.{suffix}", kind, **kw)


# LLaMA-1/2/3 and Mistral (LlamaForCausalLM, MistralForCausalLM), in HF's order: the embedding, each layer's
# tensors, the final norm, the LM head.
LLAMA = (
    Param("embed_tokens", ("vocab", "embed"), "model.embed_tokens.weight", "embedding"),
    _layer("input_layernorm", ("norm",), "input_layernorm", "norm"),
    _layer("q_proj", ("embed", "heads", "head_dim"), "self_attn.q_proj", "projection", n_in=1,
           norm="input_layernorm", lora=True),
    _layer("k_proj", ("embed", "kv_heads", "head_dim"), "self_attn.k_proj", "projection", n_in=1,
           norm="input_layernorm", lora=True),
    _layer("v_proj", ("embed", "kv_heads", "head_dim"), "self_attn.v_proj", "projection", n_in=1,
           norm="input_layernorm", lora=True),
    _layer("o_proj", ("heads", "head_dim", "embed"), "self_attn.o_proj", "projection", n_in=2, lora=True),
    _layer("post_attention_layernorm", ("norm",), "post_attention_layernorm", "norm"),
    _layer("gate_proj", ("embed", "mlp"), "mlp.gate_proj", "projection", n_in=1,
           norm="post_attention_layernorm", lora=True),
    _layer("up_proj", ("embed", "mlp"), "mlp.up_proj", "projection", n_in=1,
           norm="post_attention_layernorm", lora=True),
    _layer("down_proj", ("mlp", "embed"), "mlp.down_proj", "projection", n_in=1, lora=True),
    Param("norm", ("norm",), "model.norm.weight", "norm"),
    Param("lm_head", ("embed", "vocab"), "lm_head.weight", "projection", n_in=1, present=_untied),
)

LORA_TARGETS = tuple(p.name for p in LLAMA if p.lora)


def _with(rows: tuple[Param, ...], after: dict[str, tuple[Param, ...]]) -> tuple[Param, ...]:
    """`rows` with `after[name]` inserted after row `name` (HF's order: a projection's bias right after it)."""
    return tuple(q for p in rows for q in (p, *after.get(p.name, ())))


# Qwen2 (Qwen2ForCausalLM): LLaMA plus a bias on q/k/v (not o), shaped like the projection's output. LoRA stages
# train only what train.trainable names (configs/instruct.py: r"_lora_[ab]$"), so the biases stay frozen there;
# add r"_bias$" to train them with the adapters (the PEFT export then needs --base_out, as for any trained base).
QWEN2 = _with(LLAMA, {
    "q_proj": (_layer("q_proj_bias", ("heads", "head_dim"), "self_attn.q_proj", "bias", n_in=0),),
    "k_proj": (_layer("k_proj_bias", ("kv_heads", "head_dim"), "self_attn.k_proj", "bias", n_in=0),),
    "v_proj": (_layer("v_proj_bias", ("kv_heads", "head_dim"), "self_attn.v_proj", "bias", n_in=0),),
})
# Qwen3 (Qwen3ForCausalLM): LLaMA plus an RMSNorm over head_dim on each query and key head before RoPE. Its gain
# reads a projection's output, not its input: nothing folds it (no `norm` column points at it).
QWEN3 = _with(LLAMA, {"o_proj": (_layer("q_norm", ("head_dim",), "self_attn.q_norm", "norm"),
                                 _layer("k_norm", ("head_dim",), "self_attn.k_norm", "norm"))})
TABLES = {"llama": LLAMA, "mistral": LLAMA, "qwen2": QWEN2, "qwen3": QWEN3}  # Mistral's math is LLaMA's

# One einsum letter per logical axis; activations add b(atch) and t(ime) in front.
_LETTERS = {"vocab": "v", "embed": "e", "heads": "h", "kv_heads": "k", "head_dim": "d", "mlp": "f"}


def sizes(cfg) -> dict[str, int]:
    """Every logical axis name's length in `cfg`."""
    return {"layers": cfg.num_layers, "vocab": cfg.vocab_size, "embed": cfg.hidden_size, "norm": cfg.hidden_size,
            "heads": cfg.num_heads, "kv_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
            "mlp": cfg.intermediate_size}


def table(cfg) -> tuple[Param, ...]:
    """The rows of `cfg`'s model: its family's table less what it lacks (lm_head with tied embeddings)."""
    return tuple(p for p in TABLES[cfg.family] if p.present(cfg))


def by_name(cfg) -> dict[str, Param]:
    return {p.name: p for p in table(cfg)}


def layer_specs(cfg) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    """name -> (stacked shape, logical axes) of every decoder-layer parameter, in table order."""
    return {p.name: (p.shape(cfg), p.axes) for p in table(cfg) if p.stacked}


def layer_projections(cfg) -> tuple[str, ...]:
    """The decoder layer's matmuls in table order (LoRA dropout draws one key for each, in this order)."""
    return tuple(p.name for p in table(cfg) if p.stacked and p.kind == "projection")


def norm_folds(cfg) -> dict[str, tuple[str, ...]]:
    """Each layer RMSNorm -> the projections that read its output (what `params.fold_norms` folds it into)."""
    folds: dict[str, tuple[str, ...]] = {}
    for p in table(cfg):
        if p.stacked and p.norm:
            folds[p.norm] = folds.get(p.norm, ()) + (p.name,)
    return folds


def einsum(p: Param) -> str:
    """A projection as an einsum: activation axes, weight axes (input axes first) -> output axes."""
    weight = "".join(_LETTERS[axis] for axis in p.axes[p.stacked:])
    return f"bt{weight[:p.n_in]},{weight}->bt{weight[p.n_in:]}"
