"""KV-cache generation: greedy output equals transformers' `generate`, sampling filters equal its logits
processors, stop strings cut where they should, and the prompt-file CLI and the decode benchmark run."""
import importlib.util
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from hf_helpers import LLAMA3_ROPE, tiny_hf_model
from test_eval_helpers import random_checkpoint
from xfer_jax import cli, forward
from xfer_jax.convert import hf
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.eval import prompts, sampling
from xfer_jax.eval.generate import Generator, stop_ids
from xfer_jax.eval.sampling import Sampling
from xfer_jax.model.config import LlamaConfig

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    model = tiny_hf_model(num_kv_heads=2)
    root = tmp_path_factory.mktemp("gen")
    model.save_pretrained(root / "hf")
    hf.hf_to_orbax(root / "hf", root / "ckpt", log=lambda *_: None)
    return model, forward.load(root / "ckpt")


def hf_greedy(model, prompts_, new_tokens, eos):
    """transformers' batched greedy generate with left padding; each row's new tokens up to its first EOS
    (`eos` one id or a list)."""
    width = max(map(len, prompts_))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts_])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts_])
    out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens, eos_token_id=eos,
                         pad_token_id=0)[:, width:].tolist()
    eos = [eos] if isinstance(eos, int) else eos
    return [row[: min((row.index(e) for e in eos if e in row), default=len(row))] for row in out]


@pytest.mark.parametrize("decode_attention,fuse", [("xla", True), ("pallas", True), ("pallas", False)])
def test_greedy_equals_transformers_generate(hf_pair, decode_attention, fuse):  # pallas: GPU kernel, interpreted
    model, loaded = hf_pair
    loaded = forward.LoadedModel(loaded.cfg.replace(fuse_projections=fuse), loaded.params)
    rng = np.random.RandomState(0)
    batch = [[int(t) for t in rng.randint(3, 320, size=n)] for n in (5, 11, 8)]
    generator = Generator(loaded, eos_id=2, batch_size=4,  # a spare row: padding rows must stay inert
                          decode_attention=decode_attention)
    assert generator.cfg.decode_attention == decode_attention
    ours, stats = generator.run(batch, Sampling(max_new_tokens=32))
    ref = hf_greedy(model, batch, 32, eos=2)
    assert [r.tokens for r in ours] == ref
    assert all(r.finish_reason == "length" and len(r.tokens) == 32 for r in ours)
    assert stats.new_tokens == 96 and stats.as_dict()["tokens_per_s"] > 0

    eos = ref[0][10]  # make a token row 0 emits mid-way the end of sequence: rows stop there, as in transformers
    ours = Generator(loaded, eos_id=eos, batch_size=4, decode_attention=decode_attention).run(
        batch, Sampling(max_new_tokens=32))[0]
    assert [r.tokens for r in ours] == hf_greedy(model, batch, 32, eos=eos)
    assert ours[0].finish_reason == "eos" and len(ours[0].tokens) == ref[0].index(eos)


@pytest.mark.parametrize("decode_attention", ["xla", "pallas"])
def test_llama3_rope_greedy_equals_transformers_generate(tmp_path_factory, decode_attention):
    """Llama 3.1's scaled RoPE through the KV cache and the decoding kernel (interpreted): the rows run past the
    original context of 32 tokens, and decode exactly as transformers does."""
    model = tiny_hf_model(num_kv_heads=2, layers=2, rope_scaling=LLAMA3_ROPE, qk_gain=4.0)  # RoPE-sensitive
    root = tmp_path_factory.mktemp("gen_llama3")
    model.save_pretrained(root / "hf")
    hf.hf_to_orbax(root / "hf", root / "ckpt", log=lambda *_: None)
    loaded = forward.load(root / "ckpt")
    assert loaded.cfg.rope_type == "llama3"
    rng = np.random.RandomState(3)
    batch = [[int(t) for t in rng.randint(3, 320, size=n)] for n in (30, 17)]
    ours, _ = Generator(loaded, eos_id=2, batch_size=2, decode_attention=decode_attention).run(
        batch, Sampling(max_new_tokens=24))
    assert [r.tokens for r in ours] == hf_greedy(model, batch, 24, eos=2)
    assert max(len(p) + len(r.tokens) for p, r in zip(batch, ours)) > 48


def test_rows_stop_on_any_of_several_eos_ids(hf_pair):
    """Llama-3-Instruct ends a turn on one of several ids: a row ends at the first of any, as in transformers."""
    model, loaded = hf_pair
    rng = np.random.RandomState(0)
    batch = [[int(t) for t in rng.randint(3, 320, size=n)] for n in (5, 11, 8)]  # shapes as above: code reused
    free = [r.tokens for r in Generator(loaded, eos_id=2, batch_size=4).run(batch, Sampling(max_new_tokens=32))[0]]
    assert all(len(row) == 32 for row in free)  # id 2 never comes: only the second id can end a row
    second = free[1][6]
    ours = Generator(loaded, eos_id=[2, second], batch_size=4).run(batch, Sampling(max_new_tokens=32))[0]
    assert ours[1].finish_reason == "eos" and ours[1].tokens == free[1][: free[1].index(second)]
    assert [r.tokens for r in ours] == hf_greedy(model, batch, 32, eos=[2, second])
    assert stop_ids(7, LlamaConfig(eos_token_id=[2, 5])) == (2, 5, 7) and stop_ids(2, LlamaConfig()) == (2,)


def test_sampling_filters_equal_transformers_processors():
    rng = np.random.RandomState(1)
    logits = rng.standard_normal((3, 300)).astype(np.float32) * 3
    input_ids = rng.randint(0, 300, size=(3, 20))
    seen = np.zeros((3, 300), bool)
    np.put_along_axis(seen, input_ids, True, axis=1)
    for temperature, top_k, top_p, penalty in [(0.7, 20, 0.8, 1.3), (1.3, 0, 0.5, 1.0), (1.0, 5, 1.0, 0.8)]:
        ref = torch.as_tensor(logits)
        ids = torch.as_tensor(input_ids)
        ref = transformers.RepetitionPenaltyLogitsProcessor(penalty)(ids, ref)
        ref = transformers.TemperatureLogitsWarper(temperature)(ids, ref)
        if top_k:
            ref = transformers.TopKLogitsWarper(top_k)(ids, ref)
        if top_p < 1:
            ref = transformers.TopPLogitsWarper(top_p)(ids, ref)
        ours = sampling.filter_logits(sampling.penalize(jnp.asarray(logits), seen, penalty), temperature,
                                      jnp.int32(top_k), jnp.float32(top_p))
        ref = ref.numpy()
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(ref))
        np.testing.assert_allclose(np.asarray(ours)[np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-6)


def test_sampling_is_seeded_and_top_k_one_is_greedy(hf_pair):
    _, loaded = hf_pair
    generator = Generator(loaded, eos_id=2, batch_size=4)  # shapes as above: the compiled steps are reused
    batch = [[5, 17, 33, 4], [9, 8, 7]]
    tokens = lambda **kw: [r.tokens for r in generator.run(batch, Sampling(max_new_tokens=32, **kw))[0]]  # noqa: E731
    greedy = tokens()
    assert tokens(temperature=1.0, top_k=1, seed=3) == greedy
    assert tokens(temperature=1.5, seed=3) == tokens(temperature=1.5, seed=3)
    assert tokens(temperature=1.5, seed=3) != tokens(temperature=1.5, seed=4)
    with pytest.raises(ValueError, match="top_p must be in"):
        Sampling(top_p=0.0)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        generator.run([[5] * 120], Sampling(max_new_tokens=32))


@pytest.fixture(scope="module")
def text_model(small_tokenizer, tmp_path_factory):
    """A random tiny model over the small real tokenizer, saved as a checkpoint that carries it."""
    tokenizer = Tokenizer.load(small_tokenizer)
    ckpt = random_checkpoint(tmp_path_factory.mktemp("text_model") / "ckpt", small_tokenizer, seed=7,
                             vocab_size=tokenizer.vocab_size)
    return ckpt, tokenizer


def test_stop_strings_cut_the_response(text_model):
    ckpt, tokenizer = text_model
    generator = Generator(forward.load(ckpt), eos_id=tokenizer.eos_id, batch_size=2, vocab_size=tokenizer.vocab_size)
    ids = [tokenizer.encode(t) for t in ("The answer is", "语言能力迁移")]
    free, _ = prompts.respond(generator, tokenizer, ids, Sampling(max_new_tokens=24))
    text = free[0]["response"]
    stop = text[len(text) // 2: len(text) // 2 + 3]
    assert stop.strip() and free[0]["finish_reason"] == "length"
    cut, _ = prompts.respond(generator, tokenizer, ids, Sampling(max_new_tokens=24, stop=(stop,)))
    assert cut[0]["response"] == text[: text.index(stop)]
    assert cut[0]["finish_reason"] == "stop" and cut[0]["new_tokens"] < 24
    assert cut[1]["response"] == prompts.before_stop(free[1]["response"], (stop,))


def test_generate_cli_writes_generations_and_speed(text_model, tmp_path):
    ckpt, tokenizer = text_model
    prompt_file = tmp_path / "prompts.jsonl"
    records = [{"instruction": "用一句话介绍长城。", "lang": "zh", "reference": "长城是中国古代的防御工程。"},
               {"instruction": "Name a colour.", "input": "One word.", "lang": "en", "reference": "Blue."},
               {"prompt": "Once upon a time", "lang": "en"}]
    prompt_file.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    out = tmp_path / "report"
    # the plain template keeps prompts within the stop-string test's compiled shapes
    assert cli.main(["eval", "generate", "--ckpt", str(ckpt), "--prompts", str(prompt_file), "--out", str(out),
                     "--template", "plain", "--max_new_tokens", "24", "--batch_size", "2", "--no_progress",
                     "--decode_attention", "auto"]) == 0
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["id"] for g in generations] == [1, 2, 3]
    assert [g["rendered_prompt"] for g in generations] == ["用一句话介绍长城。\n", "Name a colour.\nOne word.\n",
                                                           "Once upon a time"]
    alpaca = prompts.render(records[0], prompts.template("alpaca"))
    assert alpaca.startswith("Below is an instruction")
    assert alpaca.endswith("### Instruction:\n用一句话介绍长城。\n\n### Response:\n")
    assert all(g["new_tokens"] <= 24 and g.get("reference") == r.get("reference") for g, r in zip(generations, records))
    report = json.loads((out / "report.json").read_text())
    assert report["stats"]["tokens_per_s"] > 0 and report["stats"]["new_tokens"] > 0
    assert report["decode_attention"] == "xla"  # auto on a CPU
    assert "tokens/s" in (out / "report.md").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"input": "no instruction"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: a prompt record needs"):
        prompts.read_prompts(bad)


def test_bench_decode_runs_on_cpu(text_model, capsys):
    spec = importlib.util.spec_from_file_location("bench_decode", REPO / "tools" / "bench_decode.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, tokenizer = text_model  # the same shapes as the stop-string test: its compiled steps are reused
    assert bench.main(["--shape", "tiny", "--dtype", "float32", "--vocab_size", str(tokenizer.vocab_size),
                       "--batch", "2", "--prompt_len", "16", "--new_tokens", "24", "--repeats", "1",
                       "--bandwidth_tbs", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out and "share of limit" in out
    assert bench.default_bandwidth("NVIDIA H100 80GB HBM3") == 3.35 and bench.default_bandwidth("NVIDIA H200") == 4.8
