"""A new user's Llama-3.1 story, every stage in a row (issue 18): a Llama-3.1-style Hugging Face model (rope_type
llama3, GQA, the real 128,256-id Llama-3.1 tokenizer, saved by transformers 5) is imported, its vocabulary is
extended for Chinese (a byte-level BPE trained on real zh text, merged, embeddings grown by subword_mean), it is
further pretrained, LoRA-tuned with Llama-3.1's own chat template, exported with the adapters merged and loaded
back in transformers: the same ids on English and Chinese text, the same chat prompt, the same logits.

Hidden 32 and two layers keep the 128k-row embedding small (4M parameters a matrix), so the whole story runs in
the default suite; every stage is the project's own verb or function.
"""
import json
import pathlib

import numpy as np
import pytest
import torch
import transformers

from hf_helpers import LLAMA3_ROPE, tiny_hf_model
from xfer_jax import checkpoint, cli, forward
from xfer_jax.config_files import project_config
from xfer_jax.data import chat_template, hf_vocab
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.train.loop import train

CACHE = pathlib.Path(__file__).resolve().parents[1] / ".cache"
ZH_BYTES = 300_000  # of the zh corpus: enough for a 2,000-token BPE
TEXTS = ["Language transfer moves LLaMA into new languages, doesn't it?  Yes: 3.14 % of 2024's models.",
         "子曰：君子和而不同。你好，世界！这是 Debian 参考手册：软件包在档案库中，我们的模型会说中文。", "mixed 中英文 text 🙂 and\nnewlines\t tabs"]
ROWS = dict(seq_len=32, batch_size=8)  # 8 rows: one a simulated device (tests/conftest.py)


def run(*argv: str) -> None:
    assert cli.main(list(argv)) == 0, argv


def short_run(c, tokenizer, init_from, out_dir, steps: int, lr: float):
    """A few steps of a stage config: tiny rows, no held-out evaluation, one synchronous save at the end."""
    c.init_from, c.data.tokenizer = str(init_from), str(tokenizer)
    c.data.seq_len, c.data.batch_size = ROWS["seq_len"], ROWS["batch_size"]
    c.data.heldout = []
    c.optim.lr, c.optim.warmup_steps = lr, 0
    c.train.out_dir, c.train.steps, c.train.save_every = str(out_dir), steps, steps
    c.train.log_every, c.train.async_save, c.train.progress_bar = 1, False, False
    train(c)
    return out_dir / "ckpt"


@pytest.fixture(scope="module")
def story(corpus_dir, instruct_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("llama3_e2e")
    real = hf_vocab.fetch_hf_tokenizer(CACHE / "llama3_1_tokenizer", "llama3_1")

    # 1. What a user has: an HF directory saved by transformers 5 (model + the real Llama-3.1 tokenizer).
    hf_in = root / "hf_in"
    model = tiny_hf_model(num_kv_heads=2, layers=2, vocab=128_256, hidden=32, intermediate=64, heads=4,
                          rope_scaling=LLAMA3_ROPE, qk_gain=4.0, bos_token_id=128_000,
                          eos_token_id=[128_001, 128_008, 128_009])
    model.save_pretrained(hf_in)
    transformers.AutoTokenizer.from_pretrained(real.parent).save_pretrained(hf_in)

    # 2. Import, a Chinese BPE in Llama-3's byte alphabet, merged, the checkpoint grown to it.
    run("convert", "hf-to-orbax", "--hf_dir", str(hf_in), "--out", str(root / "imported"))
    zh = (corpus_dir / "zh" / "train.txt").read_bytes()[:ZH_BYTES].decode("utf-8", errors="ignore")
    (root / "zh.txt").write_text(zh, encoding="utf-8")
    run("vocab", "train", "--kind", "hf", "--base", str(hf_in / "tokenizer.json"), "--source", str(root / "zh.txt"),
        "--out", str(root / "zh_bpe.json"), "--vocab_size", "2000")
    merged = root / "merged" / "tokenizer.json"
    run("vocab", "merge", "--base", str(hf_in / "tokenizer.json"), "--add", str(root / "zh_bpe.json"),
        "--out", str(merged), "--pad_to_multiple", "64")
    run("vocab", "extend", "--ckpt", str(root / "imported"), "--tokenizer", str(merged), "--init", "subword_mean",
        "--out", str(root / "extended"))

    # 3. Further pretraining on zh + en, then LoRA with the tokenizer's own chat template (Llama-3.1's).
    c = project_config("pretrain")
    c.data.sources = [dict(lang="zh", path=str(root / "zh.txt"), format="text", weight=0.7),
                      dict(lang="en", path=str(corpus_dir / "en" / "train.txt"), format="text", weight=0.3)]
    pretrained = short_run(c, merged, root / "extended", root / "pretrain", steps=2, lr=1e-2)
    c = project_config("instruct", "lora")
    for entry in c.data.sources:
        entry["path"] = str(instruct_dir / entry["lang"] / pathlib.Path(entry["path"]).name)
    c.data.instruct.template = "tokenizer"
    c.model.lora_rank = 4  # on all seven projections (the config's default), each merged by the export
    c.model.lora_dropout = 0.0  # dropout's masks cost seconds of compilation here, nothing in the merge
    tuned = short_run(c, merged, pretrained, root / "instruct", steps=2, lr=1e-2)

    # 4. Hand-back: LoRA merged into an HF directory.
    run("convert", "orbax-to-hf", "--ckpt", str(tuned), "--out", str(root / "hf_out"), "--merge_lora")
    return dict(root=root, real=real, merged=merged, tuned=tuned, hf_out=root / "hf_out",
                ours=Tokenizer.load(checkpoint.tokenizer_path(tuned)))


def test_the_tokenizer_survives_every_stage(story):
    ours, base = story["ours"], Tokenizer.load(story["real"])
    assert (story["tuned"] / "tokenizer.json").read_bytes() == story["merged"].read_bytes()  # carried as merged
    assert ours.vocab_size > 128_256 and ours.vocab_size % 64 == 0
    assert [ours.id_to_piece(i) for i in (128_000, 128_009)] == ["<|begin_of_text|>", "<|eot_id|>"]
    assert ours.chat_template == base.chat_template  # carried from transformers' chat_template.jinja
    zh_ids = ours.encode(TEXTS[1], bos=False)
    assert max(zh_ids) >= 128_256 and len(zh_ids) < len(base.encode(TEXTS[1], bos=False))
    assert ours.encode(TEXTS[0], bos=False) == base.encode(TEXTS[0], bos=False)  # English keeps its ids

    theirs = transformers.AutoTokenizer.from_pretrained(story["hf_out"])
    for text in TEXTS:
        assert theirs(text)["input_ids"] == ours.encode(text, bos=True), text
        assert theirs.decode(ours.encode(text, bos=False)) == text
    messages = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "你好吗？"},
                {"role": "assistant", "content": "我很好，谢谢。"}]
    template = chat_template.from_tokenizer(ours, "data.instruct.template")
    assert theirs.apply_chat_template(messages, tokenize=True, return_dict=False) == \
        template.encode(ours, template.render(messages))


def test_transformers_logits_equal_ours(story):
    config = json.loads((story["hf_out"] / "config.json").read_text())
    assert config["rope_scaling" if "rope_scaling" in config else "rope_parameters"]["rope_type"] == "llama3"
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    ours = story["ours"]
    rows = [ours.encode(TEXTS[0] + TEXTS[1], bos=True), ours.encode(TEXTS[1] + TEXTS[2], bos=True)]
    tokens = np.array([row[:min(map(len, rows))] for row in rows])
    assert tokens.max() >= 128_256 and tokens.shape[1] > LLAMA3_ROPE["original_max_position_embeddings"]
    model = forward.load(story["tuned"])
    assert model.cfg.lora_rank == 4 and np.abs(np.asarray(model.params["layers"]["q_proj_lora_b"])).max() > 0
    mine = model.logits(tokens)
    hf = transformers.AutoModelForCausalLM.from_pretrained(story["hf_out"], dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(torch.as_tensor(tokens)).logits.numpy()
    assert theirs.shape == mine.shape == (*tokens.shape, ours.vocab_size)
    gap = np.abs(theirs - mine).max() / np.abs(theirs).max()
    assert gap <= 1e-4, gap


def test_bench_parses_and_plans_llama3_1_8b(capsys):
    """`xfer bench --shape llama3_1_8b` builds the real shape (its own 128,256-row vocabulary, llama3 RoPE) and,
    with --plan, gives the memory planner's estimate for a mesh this machine need not have: `xfer sweep --plan`'s."""
    from xfer_jax.perf import sweep

    argv = ["bench", "--shape", "llama3_1_8b", "--plan", "--mesh", "fsdp=8", "--batch_size", "1", "--seq_len", "8192",
            "--remat", "full", "--jsonl", ""]
    assert cli.main(argv) == 0
    plan = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (plan["vocab_size"], plan["rope_type"], plan["params_b"], plan["devices"]) == (128_256, "llama3", 8.03, 8)
    row = sweep.plan_row(sweep.Point("llama3_1_8b", (1, 8, 1), 8), sweep.Settings(seq_len=8192, remat="full"), None)
    assert plan["plan_total_gb"] == pytest.approx(row["plan_total_gb"], abs=0.01)
