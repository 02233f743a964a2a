"""Exports never mix with, nor silently replace, an earlier export (issue 16, defect 2).

Before: `orbax-to-hf --out DIR` over an earlier single-file export wrote shards + an index beside the old
model.safetensors, and transformers loaded the old weights. Now a non-empty DIR is refused unless --overwrite,
which builds the new export beside DIR and swaps it in whole; every check runs before anything is written, and a
failure mid-export leaves the old export exactly as it was. The same holds for orbax-to-peft and `vocab merge`.
"""
import hashlib

import jax
import numpy as np
import pytest
import torch
import transformers

from test_export_tokenizer import train_sp
from xfer_jax import checkpoint
from xfer_jax.convert import hf, peft
from xfer_jax.convert.safetensors_io import write_shard
from xfer_jax.model import lora_params, params as model_params
from xfer_jax.model.shapes import get_shape
from xfer_jax.vocab.merge import merge_files

QUIET = dict(log=lambda *_: None)
SMALL_SHARDS = 20_000  # bytes: the tiny model in several shards + an index


def digest(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Two tiny 1-layer checkpoints a and b (different weights), a LoRA one on a, and one whose tokenizer has a
    setting no Hugging Face tokenizer reproduces."""
    root = tmp_path_factory.mktemp("export_safety")
    cfg = get_shape("tiny", num_layers=1)
    weights = {name: jax.tree.map(np.asarray, model_params.init_params(cfg, seed))
               for name, seed in (("a", 0), ("b", 1))}
    for name, params in weights.items():
        checkpoint.save(root / name, cfg, params)
    lora_cfg = cfg.replace(lora_rank=2, lora_alpha=4.0, lora_targets=("q_proj", "v_proj"))
    trained = jax.tree.map(np.asarray, lora_params.add_adapters(lora_cfg, weights["a"], jax.random.key(0)))
    checkpoint.save(root / "lora", lora_cfg, trained,
                    extra_meta={"trainable": [f"layers/{n}_lora_{ab}" for n in lora_cfg.lora_targets for ab in "ab"]})
    (root / "suffix.model").write_bytes(train_sp(treat_whitespace_as_suffix=True))
    checkpoint.save(root / "bad_tokenizer", cfg, weights["a"], tokenizer=root / "suffix.model")
    return root, weights


def test_export_over_an_old_one_is_refused_and_overwrite_replaces_it_whole(ckpts, tmp_path):
    root, weights = ckpts
    out = tmp_path / "hf"
    hf.orbax_to_hf(root / "a", out, **QUIET)  # one model.safetensors
    before = digest(out)
    with pytest.raises(FileExistsError, match=f"--out {out} is not empty; pass --overwrite"):
        hf.orbax_to_hf(root / "b", out, max_shard_bytes=SMALL_SHARDS, **QUIET)
    assert digest(out) == before
    hf.orbax_to_hf(root / "b", out, max_shard_bytes=SMALL_SHARDS, overwrite=True, **QUIET)
    assert not (out / "model.safetensors").exists() and (out / "model.safetensors.index.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary sibling left
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    np.testing.assert_array_equal(model.model.embed_tokens.weight.detach().numpy(), weights["b"]["embed_tokens"])


def test_a_failed_export_leaves_the_old_one_whole(ckpts, tmp_path, monkeypatch):
    root, _ = ckpts
    out = tmp_path / "hf"
    hf.orbax_to_hf(root / "a", out, **QUIET)
    before = digest(out)
    calls = []

    def disk_full_on_second_shard(path, specs, produce):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return write_shard(path, specs, produce)

    monkeypatch.setattr(hf, "write_shard", disk_full_on_second_shard)
    with pytest.raises(OSError, match="No space left"):
        hf.orbax_to_hf(root / "b", out, max_shard_bytes=SMALL_SHARDS, overwrite=True, **QUIET)
    assert digest(out) == before and [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_every_check_runs_before_anything_is_written(ckpts, tmp_path):
    root, _ = ckpts
    out = tmp_path / "hf"
    hf.orbax_to_hf(root / "a", out, **QUIET)
    before, ckpt_before = digest(out), digest(root / "a")
    with pytest.raises(ValueError, match="carries LoRA adapters"):
        hf.orbax_to_hf(root / "lora", out, overwrite=True, **QUIET)
    with pytest.raises(ValueError, match="treat_whitespace_as_suffix=True"):
        hf.orbax_to_hf(root / "bad_tokenizer", out, overwrite=True, **QUIET)
    with pytest.raises(ValueError, match="is --ckpt"):  # --overwrite would have deleted the checkpoint
        hf.orbax_to_hf(root / "a", root / "a", overwrite=True, **QUIET)
    with pytest.raises(ValueError, match="holds --ckpt"):
        hf.orbax_to_hf(root / "a", root, overwrite=True, **QUIET)
    assert digest(out) == before and digest(root / "a") == ckpt_before
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_peft_export_refuses_old_and_overlapping_outputs(ckpts, tmp_path):
    root, _ = ckpts
    adapter, base = tmp_path / "adapter", tmp_path / "base"
    peft.orbax_to_peft(root / "lora", adapter, base_out=base, **QUIET)
    before = {"adapter": digest(adapter), "base": digest(base)}
    with pytest.raises(FileExistsError, match=f"--out {adapter} is not empty; pass --overwrite"):
        peft.orbax_to_peft(root / "lora", adapter, **QUIET)
    with pytest.raises(FileExistsError, match=f"--base_out {base} is not empty; pass --overwrite"):
        peft.orbax_to_peft(root / "lora", tmp_path / "new", base_out=base, **QUIET)
    with pytest.raises(ValueError, match="is --base_out"):
        peft.orbax_to_peft(root / "lora", tmp_path / "new", base_out=tmp_path / "new", **QUIET)
    with pytest.raises(ValueError, match="holds --out"):
        peft.orbax_to_peft(root / "lora", adapter / "inner", base_out=adapter, overwrite=True, **QUIET)
    with pytest.raises(ValueError, match=r"modules_to_save \['norm'\]"):
        peft.orbax_to_peft(root / "lora", adapter, base_out=base, modules_to_save=["norm"], overwrite=True, **QUIET)
    assert {"adapter": digest(adapter), "base": digest(base)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "base"]
    (base / "stale.txt").write_text("from an older export")
    peft.orbax_to_peft(root / "lora", adapter, base_out=base, overwrite=True, **QUIET)
    assert (adapter / "adapter_config.json").exists() and not (base / "stale.txt").exists()


def test_vocab_merge_refuses_an_old_hf_dir(tmp_path):
    (tmp_path / "base.model").write_bytes(train_sp(normalization_rule_name="identity", remove_extra_whitespaces=False))
    (tmp_path / "add.model").write_bytes(train_sp(vocab_size=600))
    merge_files(tmp_path / "base.model", tmp_path / "add.model", tmp_path / "merged.model", hf_dir=tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.json").write_text("{}")  # what an earlier export may have left
    before = digest(tmp_path)
    with pytest.raises(FileExistsError, match="--hf_dir .*hf is not empty; pass --overwrite"):
        merge_files(tmp_path / "base.model", tmp_path / "add.model", tmp_path / "new.model", hf_dir=tmp_path / "hf")
    with pytest.raises(FileExistsError, match="merged.model exists; pass --overwrite"):
        merge_files(tmp_path / "base.model", tmp_path / "add.model", tmp_path / "merged.model")
    with pytest.raises(ValueError, match="holds --base"):
        merge_files(tmp_path / "base.model", tmp_path / "add.model", tmp_path / "new.model", hf_dir=tmp_path,
                    overwrite=True)
    assert digest(tmp_path) == before
    merge_files(tmp_path / "base.model", tmp_path / "add.model", tmp_path / "merged.model", hf_dir=tmp_path / "hf",
                overwrite=True)
    assert not (tmp_path / "hf" / "tokenizer.json").exists()  # LLaMA-like base: LlamaTokenizer's files only


def test_a_shard_with_a_wrong_tensor_leaves_nothing(tmp_path):
    specs = [("a", (2, 3), np.dtype(np.float32)), ("b", (4,), np.dtype(np.float32))]
    with pytest.raises(ValueError, match="tensor b has shape"):
        write_shard(tmp_path / "x.safetensors", specs, lambda name: np.zeros((2, 3) if name == "a" else (5,)))
    assert list(tmp_path.iterdir()) == []
