"""Model internals with no outside reference needed: LoRA identities, KV-cache decoding, remat policies."""
import contextlib
import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from xfer_jax.model import lora
from xfer_jax.model import params as model_params
from xfer_jax.model.llama import init_cache
from xfer_jax.model.shapes import get_shape
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.model.sharding import param_shardings

TOKENS = np.random.RandomState(0).randint(0, 512, size=(2, 13))


def _lora_cfg(**kw):
    return get_shape("tiny", lora_rank=4, lora_alpha=8.0, **kw)


def _with_base(lora_params, base_params):
    """LoRA params whose base weights are `base_params`' (adapters kept)."""
    out = jax.tree.map(lambda x: x, lora_params)
    for key in ("embed_tokens", "norm", "lm_head"):
        out[key] = base_params[key]
    out["layers"].update(base_params["layers"])
    return out


def test_untrained_lora_equals_base_exactly():
    base_cfg = get_shape("tiny")
    base = model_params.init_params(base_cfg, seed=1)
    with_lora = _with_base(model_params.init_params(_lora_cfg(), seed=2), base)
    assert float(jnp.abs(with_lora["layers"]["q_proj_lora_a"]).max()) > 0  # A is random, B is zero
    np.testing.assert_array_equal(model_params.apply(_lora_cfg(), with_lora, TOKENS),
                                  model_params.apply(base_cfg, base, TOKENS))


def test_merged_weights_equal_base_plus_adapters():
    cfg = _lora_cfg()
    params = model_params.init_params(cfg, seed=3)
    rng = np.random.RandomState(0)
    for name in cfg.lora_targets:  # trained-looking adapters
        b = params["layers"][f"{name}_lora_b"]
        params["layers"][f"{name}_lora_b"] = jnp.asarray(0.05 * rng.standard_normal(b.shape), b.dtype)
    merged = {k: v for k, v in params.items() if k != "layers"}
    merged["layers"] = {n: w for n, w in params["layers"].items() if "_lora_" not in n}
    for name in cfg.lora_targets:
        merged["layers"][name] = lora.merged_weight(cfg, name, params["layers"][name],
                                                    params["layers"][f"{name}_lora_a"], params["layers"][f"{name}_lora_b"])
    with_adapters = model_params.apply(cfg, params, TOKENS)
    np.testing.assert_allclose(model_params.apply(get_shape("tiny"), merged, TOKENS), with_adapters, atol=1e-5)
    assert np.abs(with_adapters - model_params.apply(cfg, {**params, "layers": {**params["layers"], **{
        f"{n}_lora_b": jnp.zeros_like(params["layers"][f"{n}_lora_b"]) for n in cfg.lora_targets}}}, TOKENS)).max() > 1e-3


def test_lora_dropout_only_with_a_key():
    cfg = _lora_cfg(lora_dropout=0.5)
    params = model_params.init_params(cfg, seed=3)
    params["layers"]["q_proj_lora_b"] = jnp.ones_like(params["layers"]["q_proj_lora_b"])
    plain = model_params.apply(cfg, params, TOKENS)
    np.testing.assert_array_equal(plain, model_params.apply(cfg, params, TOKENS))
    dropped = model_params.apply(cfg, params, TOKENS, dropout_key=jax.random.key(0))
    assert np.abs(dropped - plain).max() > 1e-4


def test_adapters_shard_like_their_weights():
    cfg = _lora_cfg()
    shardings = param_shardings(cfg, mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))["layers"]
    assert shardings["q_proj"].spec == P(None, "fsdp", "tensor", None)
    assert shardings["q_proj_lora_a"].spec == P(None, "fsdp", None)
    assert shardings["q_proj_lora_b"].spec == P(None, None, "tensor", None)
    assert shardings["down_proj_lora_a"].spec == P(None, "tensor", None)
    assert shardings["down_proj_lora_b"].spec == P(None, None, "fsdp")
    assert model_params.abstract_params(cfg)["layers"]["o_proj_lora_a"].dtype == jnp.float32


@pytest.mark.parametrize("variant", ["fused", "lora", "pallas"])
def test_kv_cache_decoding_equals_full_forward(variant):
    """Prefill a left-padded batch, then decode token by token: logits equal one full forward pass. Norm weights
    and adapters are random, so folding the norms into the decoding weights (params.fold_norms) is checked too;
    "pallas" decodes new tokens with the one-kernel attention (interpreted on CPU)."""
    cfg = _lora_cfg() if variant == "lora" else get_shape("tiny", decode_attention="xla" if variant == "fused" else variant)
    params = model_params.init_params(cfg, seed=4)
    rng = np.random.RandomState(4)
    for name, value in params["layers"].items():
        if "norm" in name or name.endswith("_lora_b"):
            params["layers"][name] = jnp.asarray(value + 0.3 * rng.standard_normal(value.shape), value.dtype)
    model = model_params.bind(cfg, params)
    lengths, total = [9, 6], 14
    rows = [np.random.RandomState(i).randint(3, 512, size=total) for i in range(2)]
    pad = [total - 9 - 5, total - 6 - 5]  # left padding so both prompts end at the same slot, 5 tokens decoded
    full = [model_params.apply(cfg, params, r[p:][None])[0] for r, p in zip(rows, pad)]

    cache = init_cache(cfg, batch=2, max_len=total)
    prompt_len = total - 5
    tokens = np.stack([r[:prompt_len] for r in rows])
    valid = np.arange(prompt_len)[None, :] >= np.array(pad)[:, None]
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0)
    layers = model_params.unstack_layers(cfg, params)
    step = jax.jit(model.decode)
    logits, cache = step(tokens, positions, cache, layers, valid)
    for i in range(2):
        np.testing.assert_allclose(logits[i, pad[i]:], full[i][: lengths[i]], atol=1e-5)
    for t in range(5):
        pos = positions[:, -1:] + 1 + t
        logits, cache = step(np.stack([r[prompt_len + t] for r in rows])[:, None], pos, cache, layers)
        for i in range(2):
            np.testing.assert_allclose(logits[i, 0], full[i][lengths[i] + t], atol=1e-5)


@pytest.mark.parametrize("policy", ["full", "dots_no_batch", "minimal", *(pytest.param(p, marks=pytest.mark.slow)
                                                                 for p in ("dots", "save_attn_out"))])
def test_remat_policies_change_memory_not_results(policy):
    cfg = get_shape("tiny")
    params = model_params.init_params(cfg, seed=5)
    loss = lambda c: jax.grad(lambda p: model_params.apply(c, p, TOKENS).mean())  # noqa: E731
    ref, out = loss(cfg)(params), loss(cfg.replace(remat=policy))(params)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def _saved_residuals(fn, *args) -> list[tuple[str, tuple[int, ...], str]]:
    """(dtype, shape, why) of what the backward of `fn` keeps, from jax's public printer."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        jax.ad_checkpoint.print_saved_residuals(fn, *args)
    rows = [re.match(r"(\w+)\[([\d,]*)\] (.*)", line) for line in out.getvalue().splitlines()]
    return [(m[1], tuple(int(d) for d in m[2].split(",") if d), m[3]) for m in rows if m]


def test_minimal_remat_keeps_no_norm_or_dropout_residuals():
    """remat="minimal" (a LoRA step with dropout): the backward keeps q/k/v, the residual stream and gate/up, and
    recomputes norms, dropout masks and LoRA's rank-r products — far fewer bytes than without remat."""
    cfg = get_shape("tiny", lora_rank=4, lora_dropout=0.1, dtype="bfloat16")
    params = model_params.init_params(cfg, seed=5)
    adapters = {k: v for k, v in params["layers"].items() if "_lora_" in k}

    def saved(policy):
        c = cfg.replace(remat=policy)
        loss = lambda a: model_params.apply(  # noqa: E731
            c, {**params, "layers": {**params["layers"], **a}}, TOKENS, dropout_key=jax.random.key(0)).mean()
        b, t = TOKENS.shape  # activations only: the weights' bf16 copies are kept either way
        return [r for r in _saved_residuals(loss, adapters) if any(r[1][i:i + 2] == (b, t) for i in range(len(r[1])))]

    size = {"f32": 4, "bf16": 2, "i32": 4, "u32": 4, "bool": 1, "key<fry>": 8}
    nbytes = lambda rows: sum(np.prod(shape) * size.get(d, 4) for d, shape, _ in rows)  # noqa: E731
    minimal, none = saved("minimal"), saved("none")
    assert nbytes(minimal) < 0.5 * nbytes(none)
    per_layer = [r for r in minimal if r[1][:3] == (cfg.num_layers, *TOKENS.shape)]  # stacked by the layer scan
    shapes = {shape for _, shape, _ in per_layer}
    assert (cfg.num_layers, *TOKENS.shape, cfg.intermediate_size) in shapes  # gate and up
    assert (cfg.num_layers, *TOKENS.shape, cfg.hidden_size) in shapes  # layer input, residual after attention
    assert not any(d == "bool" for d, _, _ in minimal)  # no dropout mask kept
    heads = cfg.num_heads + 2 * cfg.num_kv_heads
    limit = TOKENS.size * (2 * cfg.hidden_size + heads * cfg.head_dim + 2 * cfg.intermediate_size) * 2  # bf16
    assert nbytes(per_layer) <= cfg.num_layers * limit


def test_unrolled_layers_equal_scanned():
    """Logits and every gradient (the unrolled path splits the stacked weights; adapters included)."""
    cfg = get_shape("tiny", lora_rank=2, lora_targets=("v_proj", "down_proj"))
    params = model_params.init_params(cfg, seed=6)
    grads = lambda c: jax.jit(jax.value_and_grad(lambda p: model_params.apply(c, p, TOKENS).std()))(params)  # noqa: E731
    (ref, ref_grads), (out, out_grads) = grads(cfg), grads(cfg.replace(scan_layers=False))
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(out_grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("lora_targets", [(), ("q_proj", "v_proj"), ("gate_proj",)])
def test_fused_projections_equal_separate_ones(lora_targets):
    """Logits and every gradient are the same with q/k/v and gate/up fused into one GEMM each (GQA shape;
    projections with adapters stay separate)."""
    cfg = get_shape("tiny", num_heads=4, num_kv_heads=2)
    if lora_targets:
        cfg = cfg.replace(lora_rank=2, lora_targets=lora_targets)
    params = model_params.init_params(cfg, seed=8)
    grads = lambda c: jax.jit(jax.value_and_grad(lambda p: model_params.apply(c, p, TOKENS).std()))(params)  # noqa: E731
    (ref, ref_grads), (out, out_grads) = grads(cfg.replace(fuse_projections=False)), grads(cfg)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(out_grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, atol=1e-6)
