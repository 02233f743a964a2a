"""LoRA export: the plain HF export refuses adapters, --merge_lora writes weights transformers reproduces, and
the PEFT export loads with peft.PeftModel.from_pretrained on the exported base with the same logits."""
import json

import jax
import numpy as np
import pytest
import torch
import transformers

from xfer_jax import checkpoint, forward
from xfer_jax.convert import cli, hf, peft as peft_export
from xfer_jax.convert.safetensors_io import SafetensorsFile
from xfer_jax.model import lora_params, params as model_params
from xfer_jax.model.shapes import get_shape

TOKENS = np.random.RandomState(0).randint(0, 512, size=(2, 19))
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A base checkpoint and a 'trained' LoRA one: adapters everywhere (B ≠ 0), embed_tokens and lm_head changed."""
    root = tmp_path_factory.mktemp("lora_export")
    cfg = get_shape("tiny")  # GQA: 4 heads, 2 kv heads
    base = jax.tree.map(np.asarray, model_params.init_params(cfg, seed=0))
    checkpoint.save(root / "base", cfg, base)
    lora_cfg = cfg.replace(lora_rank=4, lora_alpha=8.0, lora_dropout=0.05, lora_targets=TARGETS)
    trained = jax.tree.map(np.asarray, lora_params.add_adapters(lora_cfg, base, jax.random.key(1)))
    rng = np.random.RandomState(2)
    for name in TARGETS:
        b = trained["layers"][f"{name}_lora_b"]
        trained["layers"][f"{name}_lora_b"] = (0.05 * rng.standard_normal(b.shape)).astype(b.dtype)
    for name in ("embed_tokens", "lm_head"):
        trained[name] = trained[name] + (0.01 * rng.standard_normal(trained[name].shape)).astype(np.float32)
    paths = ["embed_tokens", "lm_head"] + [f"layers/{n}_lora_{ab}" for n in TARGETS for ab in "ab"]
    checkpoint.save(root / "lora", lora_cfg, trained, extra_meta={"trainable": paths})
    return root, forward.logits(root / "lora", TOKENS)


def _hf_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(TOKENS)).logits.numpy()


def test_plain_export_refuses_adapters(ckpts, capsys):
    root, _ = ckpts
    assert cli.main(["orbax-to-hf", "--ckpt", str(root / "lora"), "--out", str(root / "refused")]) == 1
    err = capsys.readouterr().err
    assert "carries LoRA adapters" in err and "--merge_lora" in err and "orbax-to-peft" in err
    assert not (root / "refused" / "config.json").exists()


def test_merged_export_gives_the_adapted_logits_in_transformers(ckpts):
    root, ours = ckpts
    assert cli.main(["orbax-to-hf", "--ckpt", str(root / "lora"), "--out", str(root / "merged"), "--merge_lora"]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(root / "merged", dtype=torch.float32).eval()
    np.testing.assert_allclose(_hf_logits(model), ours, atol=1e-4)


def test_peft_adapter_loads_on_the_exported_base(ckpts):
    peft = pytest.importorskip("peft")
    root, ours = ckpts
    hf.orbax_to_hf(root / "base", root / "base_hf")
    assert cli.main(["orbax-to-peft", "--ckpt", str(root / "lora"), "--out", str(root / "adapter")]) == 0
    config = json.loads((root / "adapter" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"], config["lora_dropout"]) == ("LORA", 4, 8, 0.05)
    assert config["target_modules"] == list(TARGETS) and config["modules_to_save"] == ["embed_tokens", "lm_head"]
    tensors = SafetensorsFile(root / "adapter" / "adapter_model.safetensors")
    prefix = "base_model.model.model.layers.1"
    assert tensors.shape(f"{prefix}.self_attn.o_proj.lora_A.weight") == (4, 64)  # [r, heads·head_dim]
    assert tensors.shape(f"{prefix}.self_attn.k_proj.lora_B.weight") == (32, 4)  # [kv_heads·head_dim, r]
    assert tensors.shape(f"{prefix}.mlp.down_proj.lora_A.weight") == (4, 176)

    base = transformers.AutoModelForCausalLM.from_pretrained(root / "base_hf", dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, root / "adapter").eval()
    assert set(peft.get_peft_model_state_dict(model)) == set(tensors.names())  # every tensor found its module
    np.testing.assert_allclose(_hf_logits(model), ours, atol=1e-4)
    merged = model.merge_and_unload()  # PEFT's own merge agrees with ours
    np.testing.assert_allclose(_hf_logits(merged), ours, atol=1e-4)


def test_peft_export_needs_the_base_when_base_weights_trained(ckpts, tmp_path):
    root, _ = ckpts
    cfg, params = checkpoint.load_params(root / "lora")
    checkpoint.save(tmp_path / "all", cfg, params, extra_meta={"trainable": ["embed_tokens", "layers/q_proj"]})
    with pytest.raises(ValueError, match="--base_out"):
        peft_export.orbax_to_peft(tmp_path / "all", tmp_path / "adapter")
    peft_export.orbax_to_peft(tmp_path / "all", tmp_path / "adapter", base_out=tmp_path / "base_hf")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["modules_to_save"] == ["embed_tokens"]
    base_names = SafetensorsFile(tmp_path / "base_hf" / "model.safetensors").names()
    assert "model.layers.0.self_attn.q_proj.weight" in base_names and not any("lora" in n for n in base_names)
