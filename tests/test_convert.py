"""HF → Orbax → HF is bit-identical and loads in transformers; bad inputs fail with a message naming the culprit."""
import json
import pathlib
import shutil

import numpy as np
import pytest
import sentencepiece as spm
import torch
import transformers

from hf_helpers import tiny_hf_model
from xfer_jax import checkpoint, cli
from xfer_jax.convert import hf
from xfer_jax.convert.safetensors_io import SafetensorsFile

QUIET = dict(log=lambda *_: None)


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_round_trip_bit_identical_and_loads(tmp_path, dtype, llama_tokenizer):
    model = tiny_hf_model(num_kv_heads=2, dtype=dtype)
    model.save_pretrained(tmp_path / "hf", max_shard_size="60KB")  # several shards + index
    shutil.copy(llama_tokenizer, tmp_path / "hf" / "tokenizer.model")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()

    hf.hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", **QUIET)
    assert checkpoint.read_meta(tmp_path / "ckpt")["model"]["param_dtype"] == str(dtype).split(".")[-1]
    hf.orbax_to_hf(tmp_path / "ckpt", tmp_path / "out", max_shard_bytes=50_000, **QUIET)

    out = tmp_path / "out"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    for shard in set(index["weight_map"].values()):  # within the limit, unless one tensor alone exceeds it
        tensors = [n for n, f in index["weight_map"].items() if f == shard]
        assert (out / shard).stat().st_size <= 50_000 + 4096 or len(tensors) == 1, (shard, tensors)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=dtype)
    before, after = _state(model), _state(reloaded)
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].dtype == after[name].dtype == dtype, name
        assert torch.equal(before[name], after[name]), name


def test_exported_tokenizer_matches_sentencepiece(tmp_path, llama_tokenizer):
    model = tiny_hf_model(vocab=32000, layers=1)
    model.save_pretrained(tmp_path / "hf")
    shutil.copy(llama_tokenizer, tmp_path / "hf" / "tokenizer.model")
    hf.hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", **QUIET)
    hf.orbax_to_hf(tmp_path / "ckpt", tmp_path / "out", **QUIET)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        assert (tmp_path / "out" / name).exists(), name
    assert not (tmp_path / "out" / "tokenizer.json").exists()  # LLaMA's settings: LlamaTokenizer, as before
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    sp = spm.SentencePieceProcessor(model_file=str(llama_tokenizer))
    # transformers 5 converts tokenizer.model to its own BPE, which splits runs of several spaces (and a leading
    # space) differently from sentencepiece; ordinary text, tabs, newlines, CJK and byte fallback agree.
    for text in ["Hello world, this is a test.", "tabs\tand\nnewlines", "我们的模型会说中文。", "Ünïcödé — ok?", "🙂 emoji"]:
        assert tok(text).input_ids == [sp.bos_id()] + sp.encode(text), text
    assert (tok.bos_token, tok.eos_token, tok.unk_token) == ("<s>", "</s>", "<unk>")


def test_pytorch_bin_import(tmp_path):
    model = tiny_hf_model(num_kv_heads=1)
    (tmp_path / "hf").mkdir()
    model.config.save_pretrained(tmp_path / "hf")
    torch.save(model.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    hf.hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", **QUIET)
    hf.orbax_to_hf(tmp_path / "ckpt", tmp_path / "out", **QUIET)
    f = SafetensorsFile(tmp_path / "out" / "model.safetensors")
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(f.get(name), tensor.numpy(), err_msg=name)


@pytest.fixture
def hf_dir(tmp_path) -> pathlib.Path:
    tiny_hf_model(num_kv_heads=2).save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def _convert_error(capsys, hf_dir, tmp_path) -> str:
    code = cli.main(["convert", "hf-to-orbax", "--hf_dir", str(hf_dir), "--out", str(tmp_path / "ckpt")])
    assert code == 1
    return capsys.readouterr().err


def test_truncated_safetensors_is_named(hf_dir, tmp_path, capsys):
    path = hf_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    err = _convert_error(capsys, hf_dir, tmp_path)
    assert "model.safetensors" in err and "truncated" in err and "tensor model." in err


def test_wrong_hidden_size_is_named(hf_dir, tmp_path, capsys):
    config = json.loads((hf_dir / "config.json").read_text())
    config["hidden_size"] = 128
    config.pop("head_dim", None)  # LLaMA-1/2 configs predate it; with it, the mismatch is caught in config.json
    (hf_dir / "config.json").write_text(json.dumps(config))
    err = _convert_error(capsys, hf_dir, tmp_path)
    assert "model.embed_tokens.weight" in err and "hidden_size=128" in err


def test_missing_tensor_is_named(hf_dir, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(hf_dir / "model.safetensors")
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, hf_dir / "model.safetensors", metadata={"format": "pt"})
    err = _convert_error(capsys, hf_dir, tmp_path)
    assert "missing" in err and "model.layers.1.mlp.down_proj.weight" in err


def test_unsupported_architecture_is_named(hf_dir, tmp_path, capsys):
    config = json.loads((hf_dir / "config.json").read_text())
    config.update(model_type="gemma", architectures=["GemmaForCausalLM"])  # mistral, qwen2, qwen3 import now
    (hf_dir / "config.json").write_text(json.dumps(config))
    err = _convert_error(capsys, hf_dir, tmp_path)
    assert "config.json" in err and "GemmaForCausalLM" in err


def test_checkpoint_shape_mismatch_is_named(hf_dir, tmp_path):
    hf.hf_to_orbax(hf_dir, tmp_path / "ckpt", **QUIET)
    meta_file = tmp_path / "ckpt" / "0" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["model"]["vocab_size"] = 999
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"embed_tokens.*stored shape \(320, 64\), config expects \(999, 64\)"):
        checkpoint.load_params(tmp_path / "ckpt")


def test_interrupted_save_is_never_latest(hf_dir, tmp_path):
    hf.hf_to_orbax(hf_dir, tmp_path / "ckpt", **QUIET)
    # What Orbax leaves behind when a process dies mid-save: an uncommitted temporary step directory.
    shutil.copytree(tmp_path / "ckpt" / "0", tmp_path / "ckpt" / "7.orbax-checkpoint-tmp-1234")
    assert checkpoint.latest_step(tmp_path / "ckpt") == 0


def test_an_eos_list_reaches_both_configs(tmp_path):
    """Llama-3-Instruct ends turns on several ids: config.json and generation_config.json keep the whole list."""
    import jax

    from xfer_jax.model import params as model_params
    from xfer_jax.model.shapes import get_shape

    cfg = get_shape("tiny", num_layers=1).replace(eos_token_id=(2, 3))
    hf.write_hf(cfg, jax.tree.map(np.asarray, model_params.init_params(cfg, 0)), tmp_path / "hf", **QUIET)
    for name in ("config.json", "generation_config.json"):
        assert json.loads((tmp_path / "hf" / name).read_text())["eos_token_id"] == [2, 3], name
    assert transformers.GenerationConfig.from_pretrained(tmp_path / "hf").eos_token_id == [2, 3]
