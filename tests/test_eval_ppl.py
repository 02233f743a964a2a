"""`xfer eval ppl`: perplexity equals transformers' on the same text and weights, bits per character and per
byte follow from the same sums, a mesh changes nothing, and the CLI reports two checkpoints and their deltas."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from hf_helpers import tiny_hf_model
from xfer_jax import cli, forward
from xfer_jax.convert import hf
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.eval import perplexity
from xfer_jax.parallel import mesh as mesh_lib

SEQ_LEN = 256


@pytest.fixture(scope="module")
def setup(corpus_dir, small_tokenizer, tmp_path_factory):
    """A tiny HF LLaMA over the small real tokenizer, its checkpoint, and real held-out zh/en documents that fit
    a row."""
    root = tmp_path_factory.mktemp("ppl")
    tokenizer = Tokenizer.load(small_tokenizer)
    model = tiny_hf_model(vocab=tokenizer.vocab_size, layers=2, seed=3)
    model.save_pretrained(root / "hf")
    shutil.copy(small_tokenizer, root / "hf" / "tokenizer.model")
    hf.hf_to_orbax(root / "hf", root / "ckpt", log=lambda *_: None)
    files = {}
    for lang in ("zh", "en"):
        docs = [d for d in (corpus_dir / lang / "heldout.txt").read_text(encoding="utf-8").splitlines()
                if len(tokenizer.encode(d, eos=True)) <= SEQ_LEN][:12]
        (root / f"{lang}.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
        files[lang] = [str(root / f"{lang}.txt")]
    return model, root, tokenizer, files


def transformers_nll(model, tokenizer, path) -> tuple[float, int]:
    """Summed NLL (nats) and predicted tokens, document by document, from transformers' own loss."""
    nll, count = 0.0, 0
    for doc in open(path, encoding="utf-8").read().splitlines():
        ids = torch.tensor([tokenizer.encode(doc, bos=True, eos=True)])
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()  # mean over the len-1 predicted tokens
        nll, count = nll + loss * (ids.shape[1] - 1), count + ids.shape[1] - 1
    return nll, count


def test_ppl_equals_transformers(setup):
    model, root, tokenizer, files = setup
    data_cfg = perplexity.heldout_config(files, seq_len=SEQ_LEN, batch_size=4)
    ours = perplexity.evaluate(forward.load(root / "ckpt"), tokenizer, data_cfg, progress=False)
    for lang in ("zh", "en"):
        nll, count = transformers_nll(model, tokenizer, files[lang][0])
        text = open(files[lang][0], encoding="utf-8").read().splitlines()
        assert ours[lang]["tokens"] == count and ours[lang]["documents"] == len(text)
        assert abs(ours[lang]["ppl"] / math.exp(nll / count) - 1) <= 1e-4, (ours[lang]["ppl"], math.exp(nll / count))
        chars, n_bytes = sum(map(len, text)), sum(len(d.encode("utf-8")) for d in text)
        assert ours[lang]["characters"] == chars and ours[lang]["bytes"] == n_bytes
        np.testing.assert_allclose(ours[lang]["bits_per_char"], nll / math.log(2) / chars, rtol=1e-4)
        np.testing.assert_allclose(ours[lang]["bits_per_byte"], nll / math.log(2) / n_bytes, rtol=1e-4)
    assert ours["zh"]["bytes"] > 2 * ours["zh"]["characters"]  # CJK: 3 bytes a character


def test_mesh_gives_the_same_numbers(setup):
    _, root, tokenizer, files = setup
    data_cfg = perplexity.heldout_config(files, seq_len=SEQ_LEN, batch_size=4)
    one = perplexity.evaluate(forward.load(root / "ckpt"), tokenizer, data_cfg, progress=False)
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})  # batch 4 over data × fsdp, heads over tensor
    sharded = perplexity.evaluate(forward.load(root / "ckpt", mesh=mesh), tokenizer, data_cfg, progress=False)
    for lang in one:
        assert sharded[lang]["tokens"] == one[lang]["tokens"]
        np.testing.assert_allclose(sharded[lang]["nll_nats"], one[lang]["nll_nats"], rtol=1e-5)


def test_cli_reports_two_checkpoints_and_english_retention(setup, tmp_path):
    _, root, _, files = setup
    other = tmp_path / "hf"
    model = tiny_hf_model(vocab=2000, layers=2, seed=4)  # another model over the same tokenizer
    model.save_pretrained(other)
    shutil.copy(root / "hf" / "tokenizer.model", other / "tokenizer.model")
    hf.hf_to_orbax(other, tmp_path / "base", log=lambda *_: None)
    out = tmp_path / "report"
    args = ["eval", "ppl", "--ckpt", str(root / "ckpt"), "--baseline", str(tmp_path / "base"),
            "--seq_len", str(SEQ_LEN), "--batch_size", "4", "--out", str(out), "--no_progress"]
    assert cli.main(args + [f"--heldout=zh={files['zh'][0]}", f"--heldout=en={files['en'][0]}"]) == 0
    report = json.loads((out / "report.json").read_text())
    model_en, base_en = report["runs"]["model"]["languages"]["en"], report["runs"]["baseline"]["languages"]["en"]
    delta = report["delta"]["en"]
    assert delta["bpc_delta"] == pytest.approx(model_en["bits_per_char"] - base_en["bits_per_char"])
    assert delta["retention"] == pytest.approx(base_en["bits_per_char"] / model_en["bits_per_char"])
    assert delta["same_tokens"] and set(report["delta"]) == {"zh", "en"}
    markdown = (out / "report.md").read_text()
    assert "retention" in markdown and "bits_per_char.svg" in markdown
    assert (out / "bits_per_char.svg").read_text().startswith("<svg")
    assert cli.main(["eval", "ppl", "--ckpt", str(root / "ckpt"), "--heldout", "zh", "--out", str(out)]) == 1
