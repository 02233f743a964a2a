"""Every family against transformers' own class (issue 21): LLaMA-2, Llama 3.x (llama3 RoPE), Qwen2.5 (q/k/v biases;
tied and untied), Qwen3 (per-head q/k RMSNorm, head_dim apart from hidden/heads) and Mistral v0.3. Tiny random
models with GQA whose biases and norms (q_norm/k_norm too) are randomised, so every weight matters: logits equal,
HF -> checkpoint -> HF is bit-identical and loads as the same class, greedy KV-cache decoding (XLA and the Pallas
kernel, interpreted) equals `generate`; the published shapes count the parameters transformers builds."""
import json

import jax
import numpy as np
import pytest
import torch
import transformers

from hf_helpers import HF_CLASSES, LLAMA3_ROPE, hf_logits, tiny_hf_model
from test_eval_generate import hf_greedy
from xfer_jax import checkpoint, forward
from xfer_jax.convert import hf, peft as peft_export
from xfer_jax.eval.generate import Generator
from xfer_jax.eval.sampling import Sampling
from xfer_jax.model import family, lora_params, params as model_params
from xfer_jax.model.config import LlamaConfig
from xfer_jax.model.llama import init_cache
from xfer_jax.model.shapes import SHAPES, get_shape
from xfer_jax.train.optim import trainable_mask

QUIET = dict(log=lambda *_: None)
# id -> tiny_hf_model arguments; qk_gain makes attention sharp enough to see RoPE (and the q/k norms' gains)
FAMILIES = {
    "llama2": dict(family="llama"),
    "llama3": dict(family="llama", rope_scaling=LLAMA3_ROPE, tie=True),
    "qwen2_5": dict(family="qwen2"),
    "qwen2_5-tied": dict(family="qwen2", tie=True),
    "qwen3": dict(family="qwen3", head_dim=32),  # hidden 64 / 4 heads would be 16
    "mistral": dict(family="mistral", sliding_window=None),
}
NEW_SHAPES = [name for name in SHAPES if name.startswith(("qwen", "mistral"))]


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request, tmp_path_factory):
    """(id, HF model, its directory, our checkpoint loaded)."""
    model = tiny_hf_model(num_kv_heads=2, layers=2, qk_gain=3.0, **FAMILIES[request.param])
    root = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(root / "hf")
    hf.hf_to_orbax(root / "hf", root / "ckpt", **QUIET)
    return request.param, model, root, forward.load(root / "ckpt")


def test_logits_match_transformers(pair):
    name, model, _, loaded = pair
    assert loaded.cfg.family == FAMILIES[name]["family"]
    assert loaded.cfg.qkv_bias == name.startswith("qwen2") and loaded.cfg.qk_norm == (name == "qwen3")
    tokens = np.random.RandomState(1).randint(0, 320, size=(3, 40))
    ref, ours = hf_logits(model, tokens), loaded.logits(tokens)
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) <= 1e-5
    unfused = forward.LoadedModel(loaded.cfg.replace(fuse_projections=False), loaded.params).logits(tokens)
    assert np.abs(unfused - ref).max() <= 1e-4 * np.abs(ref).max()


def test_hf_round_trip_is_bit_identical_and_the_same_class(pair, tmp_path):
    _, model, root, loaded = pair
    hf.orbax_to_hf(root / "ckpt", tmp_path / "out", **QUIET)
    before, after = (json.loads((d / "config.json").read_text()) for d in (root / "hf", tmp_path / "out"))
    assert (after["model_type"], after["architectures"]) == (before["model_type"], before["architectures"])
    assert LlamaConfig.from_hf(after) == loaded.cfg.replace(param_dtype="float32")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert type(reloaded) is type(model)
    a, b = model.state_dict(), reloaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# pallas: the GPU kernel, interpreted on CPU; its per-family default check is the per-step logits test below
@pytest.mark.parametrize("decode_attention", ["xla", pytest.param("pallas", marks=pytest.mark.slow)])
def test_greedy_equals_transformers_generate(pair, decode_attention):
    """Prefill and KV-cache decoding (biases after the folded norms, q/k norms before RoPE, in the kernel too)."""
    _, model, _, loaded = pair
    rng = np.random.RandomState(0)
    batch = [[int(t) for t in rng.randint(3, 320, size=n)] for n in (5, 11)]
    ours, _ = Generator(loaded, eos_id=2, batch_size=2, decode_attention=decode_attention).run(
        batch, Sampling(max_new_tokens=12))
    assert [r.tokens for r in ours] == hf_greedy(model, batch, 12, eos=2)


_init = jax.jit(model_params.init_params, static_argnums=0)  # eager initialisation takes seconds


@pytest.mark.parametrize("decode_attention", ["xla", "pallas"])
def test_kv_cache_logits_equal_transformers(pair, decode_attention):
    """Prefill of 7 tokens, then 9 single-token steps over the cache (norms folded into the weights, the Pallas
    kernel interpreted): each step's logits are transformers' for the whole sequence, to 1e-4 of their scale."""
    _, model, _, loaded = pair
    cfg = loaded.cfg.replace(decode_attention=decode_attention)
    tokens = np.random.RandomState(2).randint(0, 320, size=(2, 16))
    positions = np.broadcast_to(np.arange(16), tokens.shape)
    weights = model_params.unstack_layers(cfg, loaded.params)
    decode = jax.jit(lambda params, *args: model_params.bind(cfg, params).decode(*args))
    cache, steps = init_cache(cfg, 2, 16), []
    for start, end in [(0, 7)] + [(t, t + 1) for t in range(7, 16)]:
        logits, cache = decode(loaded.params, tokens[:, start:end], positions[:, start:end], cache, weights)
        steps.append(np.asarray(logits))
    ref = hf_logits(model, tokens)
    assert np.abs(np.concatenate(steps, axis=1) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_norm_folding_keeps_the_head_norms_and_lora_freezes_the_biases():
    """Decoding folds each layer's input norms into the projections that read them; q_norm/k_norm read a
    projection's output and stay. LoRA stages train only the adapters (configs/instruct.py), biases frozen."""
    qwen3 = get_shape("tiny", family="qwen3", head_dim=32)
    assert family.norm_folds(qwen3) == family.norm_folds(get_shape("tiny"))
    qwen3_params = _init(qwen3)
    layer = model_params.unstack_layers(qwen3, qwen3_params)[0]
    assert {"q_norm", "k_norm"} <= set(layer) and "input_layernorm" not in layer
    qwen2 = get_shape("tiny", family="qwen2", lora_rank=4)
    params = _init(qwen2)
    assert params["layers"]["q_proj_bias"].shape == (2, 4, 16) and params["layers"]["k_proj_bias"].shape == (2, 2, 16)
    mask = trainable_mask(params, [r"_lora_[ab]$"], [])
    assert not any(v for k, v in mask["layers"].items() if k.endswith("_bias"))
    assert jax.tree.leaves(mask["layers"]["q_proj_lora_a"]) == [True]
    # that training reaches the new parameters, on a mesh: test_gradients_on_one_device_equal_eight_...


@pytest.mark.parametrize("name", NEW_SHAPES)
def test_shapes_count_the_parameters_transformers_builds(name):
    """The shape's own config.json, built by transformers (on the meta device: no memory), has exactly the
    parameters num_params counts; and the config reads back."""
    cfg = get_shape(name)
    hf_cfg = cfg.to_hf()
    assert LlamaConfig.from_hf(hf_cfg) == cfg
    config = transformers.AutoConfig.for_model(**{k: v for k, v in hf_cfg.items() if k != "architectures"})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == hf_cfg["architectures"][0]
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()


@pytest.mark.parametrize("name,total,non_embedding", [
    ("qwen2_5_0_5b", 0.49, 0.36), ("qwen2_5_7b", 7.62, 6.53), ("qwen3_0_6b", 0.60, 0.44), ("qwen3_8b", 8.19, 6.95),
    ("mistral_7b_v0_3", 7.25, 6.98),
])
def test_published_parameter_counts(name, total, non_embedding):
    """The model cards' counts (billions; non-embedding = less the input embedding and any untied LM head)."""
    cfg = get_shape(name)
    head = 0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size
    assert round(cfg.num_params() / 1e9, 2) == total
    assert round((cfg.num_params(include_embedding=False) - head) / 1e9, 2) == non_embedding


def test_flops_count_the_attention_width():
    """Qwen3-0.6B attends 16 heads of 128 (2,048 wide) over a 1,024-wide residual: the attention term counts 2,048;
    the tied embedding still does the output matmul."""
    cfg = get_shape("qwen3_0_6b")
    n_matmul = cfg.num_params(include_embedding=False) + cfg.vocab_size * cfg.hidden_size
    assert cfg.flops_per_token(4096) == 6 * n_matmul + 12 * 28 * 2048 * 4096


def test_published_qwen2_5_config_json_imports():
    """Qwen2.5-7B's config.json as published (transformers 4 spelling), key for key."""
    published = {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
        "intermediate_size": 18944, "max_position_embeddings": 131072, "max_window_layers": 28, "model_type": "qwen2",
        "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "sliding_window": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False, "vocab_size": 152064}
    assert LlamaConfig.from_hf(published) == get_shape("qwen2_5_7b")


def _qwen(**keys):
    return {**get_shape("qwen2_5_0_5b").to_hf(), **keys}


@pytest.mark.parametrize("hf_cfg,message", [
    (_qwen(use_sliding_window=True, sliding_window=4096, max_window_layers=0, layer_types=None),
     "use_sliding_window=True is not "
     "supported: attention here is fully causal"),
    (_qwen(layer_types=["sliding_attention"] * 24, use_sliding_window=True, sliding_window=512), "is not supported"),
    (_qwen(layer_types=["full_attention"] * 23 + ["chunked_attention"]), "layer_types="),
    ({**get_shape("qwen3_0_6b").to_hf(), "attention_bias": True}, "Qwen3 here has no q/k/v/o biases"),
    ({**get_shape("mistral_7b_v0_3").to_hf(), "sliding_window": 4096}, "sliding_window=4096 is not supported"),
    (_qwen(architectures=["Qwen3ForCausalLM"]), "model_type='qwen2', architectures=['Qwen3ForCausalLM']: not "
     "supported"),
    (_qwen(model_type="qwen2_moe", architectures=["Qwen2MoeForCausalLM"]), "the supported families are"),
    (_qwen(mlp_bias=True), "mlp_bias=True is not supported"),
], ids=["window", "sliding-layers", "unknown-layer-type", "qwen3-bias", "mistral-window", "class-mismatch", "moe",
        "mlp-bias"])
def test_import_refuses_by_name_what_it_would_compute_differently(hf_cfg, message):
    with pytest.raises(ValueError, match="^config.json: ") as e:
        LlamaConfig.from_hf(hf_cfg)
    assert message in str(e.value)


@pytest.mark.parametrize("name", ["mistral", "qwen2", "qwen3"])
def test_every_key_transformers_writes_is_classified(name):
    """transformers' own default config of the family reads (MistralConfig's default 4,096-token window aside)."""
    hf_cfg = HF_CLASSES[name][0](sliding_window=None).to_dict()
    cfg = LlamaConfig.from_hf(hf_cfg)
    assert cfg.family == name and cfg.head_dim == (hf_cfg.get("head_dim") or cfg.hidden_size // cfg.num_heads)


def test_windows_transformers_ignores_are_accepted():
    """Qwen2.5's own configs carry sliding_window 131072 / 32768, max_window_layers, use_sliding_window false; a
    window as long as the context slides nothing; Qwen2 reads no attention_bias."""
    base = get_shape("qwen2_5_7b")
    for keys in ({"sliding_window": 131072, "max_window_layers": 21}, {"sliding_window": 4096, "layer_types": None},
                 {"use_sliding_window": True, "sliding_window": 131072, "max_window_layers": 0},
                 {"attention_bias": True}):
        assert LlamaConfig.from_hf({**base.to_hf(), **keys}) == base


@pytest.mark.parametrize("name", ["qwen2", pytest.param("qwen3", marks=pytest.mark.slow)])  # qwen2: biases beside
def test_lora_merged_and_peft_exports_reproduce_the_adapted_model(name, tmp_path):
    """Adapters on every projection (B ≠ 0) beside frozen biases and head norms: the merged export and the PEFT
    adapter on the exported base give, in transformers, the logits of the adapted model here."""
    peft = pytest.importorskip("peft")
    cfg = get_shape("tiny", family=name, **({"head_dim": 32} if name == "qwen3" else {}))
    rng = np.random.RandomState(3)
    base = jax.tree.map(lambda x: np.asarray(x) + 0.2 * rng.standard_normal(x.shape).astype(np.float32),
                        model_params.init_params(cfg))  # biases and norms away from 0 and 1
    lora_cfg = cfg.replace(lora_rank=4, lora_alpha=8.0)
    trained = jax.tree.map(np.asarray, lora_params.add_adapters(lora_cfg, base, jax.random.key(1)))
    for target in lora_cfg.lora_targets:
        b = trained["layers"][f"{target}_lora_b"]
        trained["layers"][f"{target}_lora_b"] = (0.05 * rng.standard_normal(b.shape)).astype(b.dtype)
    trainable = [f"layers/{n}_lora_{ab}" for n in lora_cfg.lora_targets for ab in "ab"]
    checkpoint.save(tmp_path / "ckpt", lora_cfg, trained, extra_meta={"trainable": trainable})
    tokens = np.random.RandomState(0).randint(0, 512, size=(2, 19))
    ours = forward.logits(tmp_path / "ckpt", tokens)

    hf.orbax_to_hf(tmp_path / "ckpt", tmp_path / "merged", merge_lora=True, **QUIET)
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    np.testing.assert_allclose(hf_logits(merged, tokens), ours, atol=1e-4)
    peft_export.orbax_to_peft(tmp_path / "ckpt", tmp_path / "adapter", base_out=tmp_path / "base", **QUIET)
    base_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    adapted = peft.PeftModel.from_pretrained(base_model, tmp_path / "adapter").eval()
    np.testing.assert_allclose(hf_logits(adapted, tokens), ours, atol=1e-4)


def test_head_dim_is_derived_unless_given():
    """head_dim defaults to hidden/heads and follows them through replace(); one set apart (Qwen3) stays; a
    checkpoint written before `family` and `head_dim` existed reads as the LLaMA it was."""
    tiny = get_shape("tiny")
    assert tiny.head_dim == 16 and tiny.replace(hidden_size=128).head_dim == 32
    assert get_shape("qwen3_0_6b").replace(hidden_size=2048).head_dim == 128
    old = {k: v for k, v in tiny.to_dict().items() if k not in ("family", "head_dim")}
    assert LlamaConfig.from_dict(old) == tiny
    with pytest.raises(ValueError, match="family='gemma'; choose one of"):
        tiny.replace(family="gemma")


@pytest.mark.parametrize("name,extra", [("qwen2", {}), ("qwen3", {"head_dim": 32})])
def test_gradients_on_one_device_equal_eight_and_biases_do_not_decay(name, extra):
    """Training any family on any mesh: every gradient (q/k/v biases, q/k norms included) on (data=2, fsdp=2,
    tensor=2) equals one device's, on packed rows; AdamW decays no bias and no norm."""
    from test_train import _gradients
    from xfer_jax.parallel import mesh as mesh_lib
    from xfer_jax.perf.bench import synthetic_batch
    from xfer_jax.train.optim import decay_mask

    cfg = get_shape("tiny", family=name, **extra)
    batch = synthetic_batch(4, 64, cfg.vocab_size, packed=3)
    one = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
    eight = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    grads1, grads8 = _gradients(cfg, one, batch), _gradients(cfg, eight, batch)
    flat = jax.tree_util.tree_flatten_with_path(grads1)[0]
    names = {jax.tree_util.keystr(path) for path, _ in flat}
    assert any("bias" in n for n in names) if name == "qwen2" else any("q_norm" in n for n in names)
    for (path, g1), g8 in zip(flat, jax.tree.leaves(grads8)):
        np.testing.assert_allclose(g8, g1, rtol=0, atol=1e-5 * np.abs(g1).max(), err_msg=jax.tree_util.keystr(path))
    decays = dict(jax.tree_util.tree_flatten_with_path(decay_mask(grads1, decay_embeddings=False))[0])
    for path, decayed in decays.items():
        key = jax.tree_util.keystr(path)
        assert decayed == ("proj" in key and not key.endswith("bias']") or "lm_head" in key), key
