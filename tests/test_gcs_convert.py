"""`xfer convert`, `xfer vocab` and `xfer eval` against a real GCS emulator (issue 19): an HF export to gs:// and
its import back are bit-identical, the safetensors reader fetches byte ranges (never a whole shard), an export
over an existing one is refused with nothing changed, and reports land in the bucket."""
import hashlib
import json
import shutil
import urllib.parse

import numpy as np
import pytest

from hf_helpers import tiny_hf_model
from xfer_jax import checkpoint, cli, forward, paths
from xfer_jax.convert import hf, safetensors_io
from xfer_jax.convert.safetensors_io import SafetensorsFile, write_shard

QUIET = dict(log=lambda *_: None)
SMALL_SHARDS = 60_000  # bytes: the tiny model in several shards + an index


def digest(url: str) -> dict:
    """{relative name: sha256} of every object under `url`."""
    folder = paths.path(url)
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in paths.list_files(folder)}


@pytest.fixture
def ranges(gcs_emulator, monkeypatch):
    """Every object download gcsfs sends to the emulator, as (object name, Range header, bytes received): the
    requests themselves go through unchanged. (gcsfs is imported only once the emulator's settings are in the
    environment: it reads some of them at import.)"""
    import gcsfs

    calls = []
    original = gcsfs.GCSFileSystem._call

    async def recorded(self, method, path, *args, **kwargs):
        out = await original(self, method, path, *args, **kwargs)
        if method == "GET" and "alt=media" in str(path):
            name = urllib.parse.unquote(str(path).split("/o/", 1)[1].split("?", 1)[0])
            calls.append((name, (kwargs.get("headers") or {}).get("Range"), len(out[1])))
        return out

    monkeypatch.setattr(gcsfs.GCSFileSystem, "_call", recorded)
    return calls


@pytest.fixture(scope="module")
def local_ckpt(tmp_path_factory, llama_tokenizer):
    """A tiny HF LLaMA (GQA, 2 layers) imported as a local checkpoint carrying LLaMA's tokenizer.model."""
    root = tmp_path_factory.mktemp("gcs_convert")
    tiny_hf_model(num_kv_heads=2, layers=2).save_pretrained(root / "hf")
    shutil.copy(llama_tokenizer, root / "hf" / "tokenizer.model")
    hf.hf_to_orbax(root / "hf", root / "ckpt", **QUIET)
    return root / "ckpt"


def test_export_to_gs_and_import_back_is_bit_identical(local_ckpt, bucket, tmp_path, ranges, monkeypatch):
    out = f"{bucket}/exports/tiny_hf"
    assert cli.main(["convert", "orbax-to-hf", "--ckpt", str(local_ckpt), "--out", out,
                     "--max_shard_gb", str(SMALL_SHARDS / 1e9)]) == 0
    files = paths.list_files(paths.path(out))
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) > 1 and "model.safetensors.index.json" in files
    assert {"config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json"} <= set(files)

    monkeypatch.setattr(safetensors_io, "READ_CHUNK", 4096)  # every tensor above 4 KB is read in several pieces
    ranges.clear()
    hf.hf_to_orbax(out, tmp_path / "back", **QUIET)
    reads = [(name, span, n) for name, span, n in ranges if name.endswith(".safetensors")]
    assert reads and all(span is not None and 0 < n <= 4096 for _, span, n in reads)  # ranges only, none whole
    for shard in shards:  # each byte fetched once: the header, then every tensor's bytes
        size = paths.path(f"{out}/{shard}").stat().length
        assert sum(n for name, _, n in reads if name.endswith(f"/{shard}")) == size, shard

    cfg_a, a = checkpoint.load_params(local_ckpt)
    cfg_b, b = checkpoint.load_params(tmp_path / "back")
    assert cfg_a == cfg_b
    flat_a, flat_b = dict(_flat(a)), dict(_flat(b))
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        assert flat_a[key].dtype == flat_b[key].dtype and np.array_equal(flat_a[key], flat_b[key]), key
    tokens = np.random.RandomState(0).randint(0, cfg_a.vocab_size, size=(2, 9))
    assert np.array_equal(forward.logits(local_ckpt, tokens), forward.logits(tmp_path / "back", tokens))
    assert (tmp_path / "back" / "tokenizer.model").read_bytes() == (local_ckpt / "tokenizer.model").read_bytes()
    assert checkpoint.read_meta(tmp_path / "back")["source"] == out


def _flat(tree):
    import jax
    return [(jax.tree_util.keystr(k), np.asarray(v)) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_a_large_tensor_is_read_in_bounded_pieces(bucket, ranges):
    big = np.arange(300_000, dtype=np.float32).reshape(600, 500)  # 1.2 MB
    small = np.ones((3,), np.float16)
    url = f"{bucket}/shard.safetensors"
    write_shard(url, [("big", big.shape, big.dtype), ("small", small.shape, small.dtype)],
                {"big": big, "small": small}.get)
    size = paths.path(url).stat().length
    ranges.clear()
    f = SafetensorsFile(url, read_chunk=64 * 1024)
    header = list(ranges)
    assert len(header) == 2 and sum(n for *_, n in header) < 1024  # the length, then the JSON header, only
    np.testing.assert_array_equal(f.get("big"), big)
    np.testing.assert_array_equal(f.get("small"), small)
    body = ranges[len(header):]
    assert len(body) == -(-big.nbytes // (64 * 1024)) + 1  # big in ceil(1.2 MB / 64 KB) requests, small in one
    assert all(span is not None for _, span, _ in body) and max(n for *_, n in body) == 64 * 1024
    assert sum(n for *_, n in ranges) == size


def test_export_over_an_existing_gs_export_is_refused_and_changes_nothing(local_ckpt, bucket, capsys):
    out = f"{bucket}/hf"
    hf.orbax_to_hf(local_ckpt, out, **QUIET)
    before = digest(out)
    assert "model.embed_tokens.weight" in hf.HFWeights(out).names()  # one model.safetensors, found by glob on gs
    assert cli.main(["convert", "orbax-to-hf", "--ckpt", str(local_ckpt), "--out", out,
                     "--max_shard_gb", str(SMALL_SHARDS / 1e9)]) != 0
    assert f"--out {out} is not empty; pass --overwrite" in capsys.readouterr().err
    assert digest(out) == before
    hf.orbax_to_hf(local_ckpt, out, max_shard_bytes=SMALL_SHARDS, overwrite=True, **QUIET)
    after = digest(out)
    assert "model.safetensors" not in after and "model.safetensors.index.json" in after  # replaced whole
    with pytest.raises(FileNotFoundError, match="bucket gs://no-such-bucket-xfer does not exist"):
        hf.orbax_to_hf(local_ckpt, "gs://no-such-bucket-xfer/hf", **QUIET)
    paths.write_bytes(f"{bucket}/torch/pytorch_model.bin", b"not read")
    with pytest.raises(ValueError, match=r"pytorch_model\*.bin is read from local disk only; convert the model"):
        hf.HFWeights(f"{bucket}/torch")


def test_eval_and_vocab_reports_are_written_to_gs(bucket, llama_tokenizer):
    paths.write_jsonl(f"{bucket}/in/generations.jsonl", [
        {"id": 1, "lang": "zh", "response": "我们的模型会说中文，而且说得很好。"},
        {"id": 2, "lang": "zh", "response": "This answer switched to English entirely, sadly."}])
    out = f"{bucket}/eval/codeswitch"
    assert cli.main(["eval", "codeswitch", "--generations", f"{bucket}/in/generations.jsonl", "--out", out]) == 0
    report = json.loads(paths.path(f"{out}/report.json").read_text())
    assert report["kind"] == "codeswitch" and report["generations"] == f"{bucket}/in/generations.jsonl"
    assert {"report.json", "report.md", "codeswitch.jsonl"} <= set(paths.list_files(paths.path(out)))

    text = f"{bucket}/heldout_zh.txt"
    paths.write_text(text, "我们的模型会说中文。\n语言能力迁移。\n")
    prefix = f"{bucket}/vocab/report"
    assert cli.main(["vocab", "report", "--tokenizer", f"base={llama_tokenizer}", "--text", f"zh={text}",
                     "--out", prefix]) == 0
    measured = json.loads(paths.path(prefix + ".json").read_text())
    assert measured["languages"]["zh"]["documents"] == 2
    assert "| zh |" in paths.path(prefix + ".md").read_text()


def test_peft_export_and_base_to_gs_and_overlap_refused(bucket, tmp_path):
    import jax

    from xfer_jax.convert import peft
    from xfer_jax.model import lora_params, params as model_params
    from xfer_jax.model.shapes import get_shape

    cfg = get_shape("tiny", num_layers=1).replace(lora_rank=2, lora_alpha=4.0, lora_targets=("q_proj", "v_proj"))
    params = jax.tree.map(np.asarray, lora_params.add_adapters(
        cfg, jax.tree.map(np.asarray, model_params.init_params(cfg.replace(lora_rank=0), 0)), jax.random.key(0)))
    checkpoint.save(tmp_path / "lora", cfg, params,
                    extra_meta={"trainable": [f"layers/{n}_lora_{ab}" for n in cfg.lora_targets for ab in "ab"]})
    adapter, base = f"{bucket}/adapter", f"{bucket}/base"
    with pytest.raises(ValueError, match=f"--out {adapter} holds --base_out {adapter}/base"):
        peft.orbax_to_peft(tmp_path / "lora", adapter, base_out=f"{adapter}/base", **QUIET)
    assert paths.list_files(paths.path(bucket)) == []  # refused before anything was written
    assert cli.main(["convert", "orbax-to-peft", "--ckpt", str(tmp_path / "lora"), "--out", adapter,
                     "--base_out", base]) == 0
    assert set(paths.list_files(paths.path(adapter))) == {"adapter_config.json", "adapter_model.safetensors"}
    config = json.loads(paths.path(f"{adapter}/adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base and config["r"] == 2
    tensors = SafetensorsFile(f"{adapter}/adapter_model.safetensors")  # read back from gs by range
    a = tensors.get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
    np.testing.assert_array_equal(a, hf.to_hf(params["layers"]["q_proj_lora_a"][0], 1))  # [r, hidden]
    assert "config.json" in paths.list_files(paths.path(base))


def test_vocab_train_and_merge_write_to_gs(bucket, tmp_path, llama_tokenizer, corpus_dir):
    from xfer_jax.data.sources import SourceSpec
    from xfer_jax.data.tokenizer import Tokenizer
    from xfer_jax.vocab.merge import merge_files
    from xfer_jax.vocab.train import TrainOptions, train_tokenizer

    text = tmp_path / "zh.txt"
    text.write_text("\n".join((corpus_dir / "zh" / "train.txt").read_text(encoding="utf-8").splitlines()[:100]),
                    encoding="utf-8")
    url = f"{bucket}/vocab/zh.model"
    train_tokenizer([SourceSpec(lang="zh", path=str(text))], url, TrainOptions(vocab_size=3000))
    assert set(paths.list_files(paths.path(f"{bucket}/vocab"))) == {"zh.model", "zh.vocab"}
    with paths.local_copy(url) as added:
        assert Tokenizer.load(added).vocab_size == 3000
        stats = merge_files(llama_tokenizer, added, f"{bucket}/merged.model", hf_dir=f"{bucket}/merged_hf")
        before = digest(f"{bucket}/merged_hf")
        with pytest.raises(FileExistsError, match=f"--hf_dir {bucket}/merged_hf is not empty; pass --overwrite"):
            merge_files(llama_tokenizer, added, f"{bucket}/new.model", hf_dir=f"{bucket}/merged_hf")
    assert digest(f"{bucket}/merged_hf") == before and not paths.path(f"{bucket}/new.model").exists()
    merged = Tokenizer(paths.path(f"{bucket}/merged.model").read_bytes())
    assert merged.vocab_size == stats.merged_pieces > 32000
    assert {"tokenizer.model", "tokenizer_config.json"} <= set(before)


def test_an_import_from_gs_carries_its_hf_tokenizer(bucket, tmp_path, llama3_tokenizer):
    from xfer_jax.data.tokenizer import Tokenizer

    tiny_hf_model(layers=1).save_pretrained(tmp_path / "hf")
    for file in [*(tmp_path / "hf").iterdir(), *(llama3_tokenizer.with_name(n) for n in
                                                ("tokenizer.json", "tokenizer_config.json"))]:
        paths.copy_file(file, f"{bucket}/hf/{file.name}")
    assert str(hf.hf_tokenizer_source(f"{bucket}/hf")) == f"{bucket}/hf/tokenizer.json"
    hf.hf_to_orbax(f"{bucket}/hf", tmp_path / "ckpt", **QUIET)
    carried, local = Tokenizer.load(tmp_path / "ckpt"), Tokenizer.load(llama3_tokenizer)
    assert carried.sha256() == local.sha256() and carried.chat_template == local.chat_template is not None


def test_exam_and_prompt_files_are_read_from_gs(bucket):
    from xfer_jax.eval import exams, prompts

    csv = "\ufeffid,question,A,B,C,D,answer\n0,\"1+1=?\nthink\",1,2,3,4,B\n1,二加二,4,5,6,7,A\n"  # BOM, quoted newline
    paths.write_text(f"{bucket}/ceval/val/math_val.csv", csv)
    paths.write_text(f"{bucket}/ceval/dev/math_dev.csv", csv)
    exam = exams.read_exam("ceval", f"{bucket}/ceval", shots=1)
    assert [q.answer for q in exam.test["math"]] == ["B", "A"] and len(exam.dev["math"]) == 2
    assert "1+1=?\nthink" in exam.test["math"][0].body
    paths.write_jsonl(f"{bucket}/prompts.jsonl", [{"instruction": "你好"}, {"prompt": "raw", "id": "x"}])
    assert [r["id"] for r in prompts.read_prompts(f"{bucket}/prompts.jsonl")] == [1, "x"]
    with pytest.raises(FileNotFoundError, match=f"prompt file {bucket}/missing.jsonl does not exist"):
        prompts.read_prompts(f"{bucket}/missing.jsonl")
