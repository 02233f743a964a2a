"""Exported tokenizers encode as sentencepiece does, whatever the model's normaliser (issue 16, defect 6).

sentencepiece's default normalisation is `nmt_nfkc`: full-width `，！：` become `,!:`, `ＡＢＣ１２３` becomes `ABC123`,
the ideographic space a space. LLaMA's tokenizer uses `identity`, and transformers' LlamaTokenizer assumes it, so
exporting an NFKC model with LlamaTokenizer's files gave different ids in transformers than in training. Tiny
models trained here on a few KB of mixed en/zh text stand in for real ones (a second each).
"""
import io
import json

import jax
import numpy as np
import pytest
import sentencepiece as spm
import transformers

from xfer_jax import checkpoint
from xfer_jax.convert import hf, hf_tokenizer
from xfer_jax.model import params as model_params
from xfer_jax.model.shapes import get_shape

QUIET = dict(log=lambda *_: None)
EN = ["The quick brown fox jumps over the lazy dog.", "Hello world, this is a test of the tokenizer.",
      "Numbers like 123 and 456 appear here, with A, B and C.", "Tabs\tand  double  spaces appear too."]
ZH = ["我们的模型会说中文。", "你好，世界！今天天气很好：晴天？", "（括号）里的内容很重要。", "全角字母ＡＢＣ和数字１２３。",
      "这是一个测试\u3000句子，包含全角空格。", "模型训练需要大量的数据：中文、英文！"]
TEXTS = ["你好，世界！", "时间：十点？（是的）", "ＡＢＣ１２３ ａｂｃ", "全角\u3000空格", "Hello world, this is a test.",
         "  two  spaces ", "tabs\tand\nnewlines", "我们的模型会说中文。", "🙂 emoji", "ｶﾀｶﾅ ﬁ ①"]


def train_sp(**overrides) -> bytes:
    """A ~400-piece BPE model with byte fallback; sentencepiece's defaults (nmt_nfkc) unless `overrides` say else."""
    out = io.BytesIO()
    settings = dict(model_type="bpe", vocab_size=400, hard_vocab_limit=False, byte_fallback=True,
                    character_coverage=1.0, minloglevel=2)
    settings.update(overrides)
    spm.SentencePieceTrainer.train(sentence_iterator=iter((EN + ZH) * 20), model_writer=out, **settings)
    return out.getvalue()


def sp_ids(model: bytes, text: str) -> list[int]:
    sp = spm.SentencePieceProcessor(model_proto=model)
    return [sp.bos_id()] + sp.encode(text)


@pytest.fixture(scope="module")
def nfkc_export(tmp_path_factory):
    """An NFKC tokenizer in a tiny checkpoint, exported with orbax_to_hf: (model bytes, HF directory)."""
    root = tmp_path_factory.mktemp("nfkc_export")
    model = train_sp()
    (root / "sp.model").write_bytes(model)
    cfg = get_shape("tiny", num_layers=1, vocab_size=spm.SentencePieceProcessor(model_proto=model).get_piece_size())
    checkpoint.save(root / "ckpt", cfg, jax.tree.map(np.asarray, model_params.init_params(cfg, 0)),
                    tokenizer=root / "sp.model")
    hf.orbax_to_hf(root / "ckpt", root / "hf", **QUIET)
    return model, root / "hf"


def test_nfkc_model_exports_a_tokenizer_with_its_normaliser(nfkc_export):
    model, out = nfkc_export
    tok, sp = transformers.AutoTokenizer.from_pretrained(out), spm.SentencePieceProcessor(model_proto=model)
    assert sp.encode("，！ＡＢＣ") == sp.encode(",!ABC")  # the model really normalises
    for text in TEXTS:
        ids = sp_ids(model, text)
        assert tok(text).input_ids == ids, text
        assert tok.decode(ids, skip_special_tokens=True) == sp.decode(ids[1:]), text
    assert (tok.bos_token, tok.eos_token, tok.unk_token) == ("<s>", "</s>", "<unk>")
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (out / "tokenizer.model").read_bytes() == model  # kept: sentencepiece users and hf-to-orbax read it


@pytest.mark.parametrize("settings", [
    dict(normalization_rule_name="nfkc_cf"),
    dict(normalization_rule_name="identity"),  # identity, but remove_extra_whitespaces (sentencepiece's default)
    dict(add_dummy_prefix=False),
    dict(normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False),
    dict(model_type="unigram"),
], ids=["nfkc_cf", "identity_strip_spaces", "no_dummy_prefix", "identity_no_dummy_prefix", "unigram"])
def test_every_normaliser_flag_is_reproduced(settings, tmp_path):
    model = train_sp(**settings)
    (tmp_path / "sp.model").write_bytes(model)
    (tmp_path / "hf").mkdir()
    hf.write_tokenizer_files(tmp_path / "sp.model", tmp_path / "hf", 128)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in TEXTS + [" leading", "trailing  ", ""]:
        assert tok(text).input_ids == sp_ids(model, text), text


def test_llama_settings_keep_the_llama_tokenizer_files(tmp_path):
    llama_like = train_sp(normalization_rule_name="identity", remove_extra_whitespaces=False)
    files = hf_tokenizer.tokenizer_files(llama_like, 128)
    assert "tokenizer.json" not in files
    assert json.loads(files["tokenizer_config.json"])["tokenizer_class"] == "LlamaTokenizer"


def test_a_setting_without_equivalent_is_refused_by_name(tmp_path):
    model = train_sp(treat_whitespace_as_suffix=True)
    with pytest.raises(ValueError, match="treat_whitespace_as_suffix=True"):
        hf_tokenizer.tokenizer_files(model, 128, source="sp.model")


def test_a_tokenizer_json_that_encodes_differently_is_refused(monkeypatch):
    """The probe check is the safety net: drop the charsmap from the pipeline and the export must refuse."""
    from tokenizers import normalizers

    no_charsmap = normalizers.Sequence([normalizers.Replace(" ", "▁")])
    monkeypatch.setattr(hf_tokenizer, "_normalizer", lambda spec: no_charsmap)
    with pytest.raises(ValueError, match=r"normalization_rule_name=nmt_nfkc.*cannot be exported exactly"):
        hf_tokenizer.tokenizer_files(train_sp(), 128, source="sp.model")
