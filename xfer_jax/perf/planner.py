"""Memory per device for a model shape on a mesh, before anything is allocated or compiled.

Why: a pod slice takes minutes to start and an out-of-memory error arrives only after compilation; the
plan answers "does llama2_7b with batch 64 fit on (data=2, fsdp=128)?" on a laptop, for any mesh size.

Parameter, gradient and optimizer bytes are exact: every parameter's shard shape comes from the same rules
table (`rules.spec_for`) that shards the real arrays (tests check this against the train state's arrays
on 8 devices). Scalars (optimizer step counters) are left out: a few bytes.

Activations are an estimate of what the backward pass keeps, per layer and per device, under the remat
policy: the tensors `model.llama.decoder_layer` produces, sharded by the activation rules, times the
layers (the scanned stack saves each layer's residuals), plus one layer recomputed during the backward pass
when remat is on, plus the fp32 logits and their gradient. XLA fuses element-wise work, so the real figure
is usually lower; `xfer sweep` puts the compiler's own numbers beside it.
"""
import dataclasses
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from xfer_jax.model import attention as attention_lib, params as model_params
from xfer_jax.model.config import LlamaConfig
from xfer_jax.parallel.rules import Rules, spec_for

GB = 1e9

# What each remat policy keeps per layer (see model/llama.py _REMAT); the layer input is always kept.
# kind: "proj" = weight matmuls (dot_general without batch dims) that remat="minimal" recomputes nothing for,
# "proj_kept" = weight matmuls it keeps (v, gate/up), "attn" = the attention einsums (dot_general with batch dims),
# "stats" = a fused kernel's softmax statistics, "attn_out" = the attention output, "rope" = q and k after RoPE,
# "resid" = the residual stream after attention, "other" = everything else.
KEPT = {
    "none": {"proj", "proj_kept", "attn", "stats", "attn_out", "rope", "resid", "other"},
    "full": set(),
    "dots": {"proj", "proj_kept", "attn", "stats", "attn_out"},
    "dots_no_batch": {"proj", "proj_kept"},
    "save_attn_out": {"attn_out"},
    "minimal": {"proj_kept", "stats", "attn_out", "rope", "resid"},  # attn_out: a fused kernel's output only
}


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device of one train step (shards are equal: the rules split only dimensions they divide)."""

    params: int
    grads: int
    optimizer: int
    activations: int
    remat: str
    update: int = 0  # the optimizer update's fp32 temporaries of the largest trainable array (see plan_memory)

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations + self.update

    def as_row(self) -> dict:
        """Columns for a sweep CSV, in GB."""
        return {"plan_params_gb": self.params / GB, "plan_grads_gb": self.grads / GB,
                "plan_opt_gb": self.optimizer / GB, "plan_act_gb": self.activations / GB,
                "plan_update_gb": self.update / GB, "plan_total_gb": self.total / GB}


def shard_elements(names: Sequence[str | None], shape: Sequence[int], mesh_shape: Mapping[str, int],
                   rules: Rules) -> int:
    """Elements of one shard of an array with logical axis `names` (the rules decide the split)."""
    spec = spec_for(names, shape, dict(mesh_shape), rules)
    count = 1
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
        count *= dim // math.prod(mesh_shape[a] for a in axes)  # spec_for splits only dimensions it divides
    return count


def _param_elements(cfg: LlamaConfig, mesh_shape, rules, trainable: Mapping | None) -> tuple[dict, dict]:
    """({path: shard elements}, {path: trainable?}) for every parameter."""
    abstract = model_params.abstract_params(cfg)
    logical = model_params.logical_axes(cfg)
    flat_a = dict(jax.tree_util.tree_flatten_with_path(abstract)[0])
    flat_l = dict(jax.tree_util.tree_flatten_with_path(logical, is_leaf=lambda x: isinstance(x, tuple))[0])
    flat_t = dict(jax.tree_util.tree_flatten_with_path(trainable)[0]) if trainable is not None else {}
    elems = {k: shard_elements(flat_l[k], a.shape, mesh_shape, rules) for k, a in flat_a.items()}
    return elems, {k: bool(flat_t.get(k, True)) for k in flat_a}


def activation_bytes(cfg: LlamaConfig, mesh_shape: Mapping[str, int], rules: Rules, batch: int, seq: int,
                     loss_chunk: int = 0, layer_weight_copies: int = 0, backend: str | None = None) -> int:
    """Estimated bytes the backward pass keeps alive for one (micro-)batch of [batch, seq] tokens.

    layer_weight_copies: bytes of every layer's weights cast to the compute dtype (kept like other
    intermediates when nothing is rematerialised). backend: where it runs ("gpu", "tpu", "cpu"; default this
    machine's), which decides the kernel `attention` picks (attention.choose) and so whether scores exist."""
    c, f = jnp.dtype(cfg.dtype).itemsize, 4
    norm_copies = 2 if c != f else 1  # RMSNorm: the input upcast to fp32 (unless already fp32), the normalised fp32
    E, F, H, K, D, V = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                        cfg.vocab_size)
    G = H // K
    bt = ("batch", "seq")
    scores = ("batch", "act_kv_heads", None, "seq", None)
    kernel, _ = attention_lib.choose(cfg.attention, (batch, seq, H, D), (batch, seq, K, D), cfg.dtype,
                                     block_size=cfg.attention_block_size, backend=backend)
    if kernel == "xla":  # the reference kernel materialises [T, S] scores and probabilities
        attention_scores = [("attn", scores, (batch, K, G, seq, seq), f), ("other", scores, (batch, K, G, seq, seq), c)]
    else:  # fused kernels (cuDNN, splash) keep only the softmax statistics
        attention_scores = [("stats", scores[:-1], (batch, K, G, seq), f)]
    if spec_for(bt, (batch, seq), dict(mesh_shape), rules)[1] is not None:  # context parallelism: every shard
        # holds (and the backward keeps) K and V for the whole sequence, gathered over the sequence axis
        attention_scores.append(("attn", ("batch", None, "act_kv_heads", None), (batch, seq, 2 * K, D), c))
    # (kind, logical names, shape, bytes per element): the tensors one decoder layer creates.
    layer = [
        ("other", (*bt, "act_embed"), (batch, seq, E), c),  # normed input
        ("other", (*bt, "act_embed"), (batch, seq, 2 * norm_copies * E), f),  # both norms' fp32 work
        ("proj", (*bt, "act_heads", None), (batch, seq, H, D), c),  # q
        ("proj", (*bt, "act_kv_heads", None), (batch, seq, K, D), c),  # k
        ("proj_kept", (*bt, "act_kv_heads", None), (batch, seq, K, D), c),  # v
        ("rope", (*bt, "act_heads", None), (batch, seq, H + K, D), c),  # q, k after RoPE
        *attention_scores,
        ("attn_out", (*bt, "act_heads", None), (batch, seq, H, D), c),
        ("proj", (*bt, "act_embed"), (batch, seq, E), c),  # o_proj
        ("resid", (*bt, "act_embed"), (batch, seq, E), c),  # residual after attention
        ("other", (*bt, "act_embed"), (batch, seq, E), c),  # its norm
        ("proj_kept", (*bt, "act_mlp"), (batch, seq, 2 * F), c),  # gate, up
        ("other", (*bt, "act_mlp"), (batch, seq, 2 * F), c),  # silu(gate), silu(gate)·up
        ("proj", (*bt, "act_embed"), (batch, seq, E), c),  # down_proj
    ]
    sizes = [(kind, shard_elements(names, shape, mesh_shape, rules) * nbytes) for kind, names, shape, nbytes in layer]
    layer_input = shard_elements((*bt, "act_embed"), (batch, seq, E), mesh_shape, rules) * c
    kept = KEPT[cfg.remat] - ({"attn_out"} if cfg.remat == "minimal" and kernel == "xla" else set())
    per_layer = layer_input + sum(b for kind, b in sizes if kind in kept)
    weights = layer_weight_copies if "other" in kept else 0
    recompute = 0 if cfg.remat == "none" else sum(b for _, b in sizes)
    logit_len = loss_chunk if 0 < loss_chunk < seq and seq % loss_chunk == 0 else seq  # as train.step chunks
    logits = shard_elements((*bt, "act_vocab"), (batch, logit_len, V), mesh_shape, rules) * f
    hidden = shard_elements((*bt, "act_embed"), (batch, seq, E), mesh_shape, rules) * c
    return cfg.num_layers * per_layer + weights + recompute + hidden + 3 * logits  # hidden; logits, softmax, grad


def plan_memory(cfg: LlamaConfig, mesh_shape: Mapping[str, int], rules: Rules, *, batch_size: int, seq_len: int,
                grad_accum: int = 1, loss_chunk: int = 0, moment_dtypes: Sequence[str | None] = ("float32", None),
                trainable: Mapping | None = None, backend: str | None = None) -> MemoryPlan:
    """The plan for one train step.

    moment_dtypes: one entry per optimizer moment kept per trainable parameter, None meaning the
        parameter's dtype (AdamW: mu in optim.moment_dtype, nu in the parameter dtype).
    trainable: the train mask (a tree of bools like the params); None trains everything.
    loss_chunk: train.loss_chunk (fp32 logits exist for one chunk of the sequence at a time).
    backend: the platform planned for (default this machine's): it decides the attention kernel.
    Gradients reach the optimizer in the parameter dtype (train/step.py); with grad_accum > 1 an fp32
    accumulator sits beside them. The AdamW update computes in fp32 one array at a time: the largest trainable
    array's shard in fp32 is alive beside the state (`update`; measured on one H200 for Llama-3-8B, Qwen2.5-7B,
    Qwen3-8B and Mistral-7B full fine-tuning, where it closed a gap of 7-8 GB: docs/benchmarks.md).
    """
    elems, is_trainable = _param_elements(cfg, mesh_shape, rules, trainable)
    p = jnp.dtype(cfg.param_dtype).itemsize
    trained = sum(n for k, n in elems.items() if is_trainable[k])
    cast = jnp.dtype(cfg.dtype).itemsize if cfg.dtype != cfg.param_dtype else 0
    layer_copies = cast * sum(n for k, n in elems.items() if jax.tree_util.keystr(k).startswith("['layers']"))
    moments = sum(p if d is None else jnp.dtype(d).itemsize for d in moment_dtypes)
    return MemoryPlan(
        params=sum(elems.values()) * p,
        grads=trained * (p + (4 if grad_accum > 1 else 0)),
        optimizer=trained * moments,
        activations=activation_bytes(cfg, mesh_shape, rules, batch_size // grad_accum, seq_len, loss_chunk, layer_copies,
                                     backend),
        remat=cfg.remat,
        update=4 * max((n for k, n in elems.items() if is_trainable[k]), default=0),
    )
