"""Vocabulary extension for byte-level BPE: Llama-3's real tokenizer.json + a Chinese BPE trained on the real zh
corpus with Llama-3's own pre-tokeniser. Every base id is kept, English (typography and emoji included) keeps its
ids, Chinese needs fewer tokens, every text round-trips, every new token is reachable by the merges, and
transformers agrees with the `tokenizers` library; then a Llama-3-shaped checkpoint grows to the new size."""
import json
import pathlib

import numpy as np
import pytest
from tokenizers import Tokenizer as Rust

from xfer_jax import checkpoint, cli
from xfer_jax.data.sources import SourceSpec
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.model import params as model_params
from xfer_jax.model.shapes import get_shape
from xfer_jax.vocab import report
from xfer_jax.vocab.bpe_merge import BpeMergeOptions, merge_bpe, merge_bpe_files, new_tokens, padding_ids, unreachable
from xfer_jax.vocab.bpe_train import BpeTrainOptions, train_bpe
from xfer_jax.vocab.bytelevel import token_bytes
from xfer_jax.vocab.resize import STRATEGIES, ExtendOptions, extend

ZH_BYTES = 300_000  # a few hundred KB of the zh corpus and a 2,000-token BPE keep the module fast
TYPOGRAPHY = [
    "“Smart quotes” and ‘single’ ones — an em dash – an en dash… and «guillemets»",
    "café naïve façade Ærøskøbing São Paulo Øresund Zürich Kraków İstanbul",
    "Price: €12.50, £3, ¥500, ₹80, ©2024 ™ ® § ¶ † ‡ • ° ′ ″",
    "Math: ∑ ∫ √ ≈ ≠ ≤ ≥ ± × ÷ ∞ → ⇒ ∀ ∃ ∈ ⊂ ∪ ∩ ∂ ∇",
    "Emoji: 🤗 😀 👍🏽 👨‍👩‍👧‍👦 🇺🇸 🏴󠁧󠁢󠁳󠁣󠁴󠁿 ❤️ ✨ 🎉🎉🎉",
    "Box drawing ────────────── │┌┐└┘├┤ ■ □ ▲ ● ★ ☆ ♠ ♥",
    "Full-width ＡＢＣ１２３！？ and CJK punctuation only: ，。、；：「」『』【】《》（）……——",
    "nbsp\u00a0here, zero\u200bwidth, soft\u00adhyphen, thin\u2009space",
    "tabs\tand\nnewlines\r\n  two  spaces   and a trailing one ",
    "Numbers 3.14159 1,000,000 ½ ¼ ① ② ³ 1st 2nd", "ﬁ ﬂ ligatures, Ωmega µ, e\u0301 combining", "",
]
# Special tokens spelt in text: ordinary bytes to the project's wrapper (transformers would match them instead).
SPELT = ["<|begin_of_text|>hi<|eot_id|> <|reserved_special_token_5|> <|xfer_pad_0|><|xfer_pad_1|>"]


def lines(corpus_dir, lang: str) -> list[str]:
    return (corpus_dir / lang / "heldout.txt").read_text(encoding="utf-8").splitlines()


def rust(path) -> Rust:
    tok = Rust.from_file(str(path))
    tok.encode_special_tokens = True  # text never spells a special token (as the project's wrapper)
    return tok


def ids(tok: Rust, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


@pytest.fixture(scope="module")
def built(llama3_tokenizer, corpus_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab_bpe")
    text = (corpus_dir / "zh" / "train.txt").read_bytes()[:ZH_BYTES].decode("utf-8", errors="ignore")
    (root / "zh.txt").write_text(text, encoding="utf-8")
    add = train_bpe([SourceSpec(lang="zh", path=str(root / "zh.txt"))], root / "zh_bpe.json", llama3_tokenizer,
                    BpeTrainOptions(vocab_size=2000))
    out = root / "merged" / "tokenizer.json"
    stats = merge_bpe_files(llama3_tokenizer, add, out, BpeMergeOptions(pad_to_multiple=128))
    docs = {name: json.loads(pathlib.Path(p).read_text(encoding="utf-8"))
            for name, p in (("base", llama3_tokenizer), ("add", add), ("merged", out))}
    return dict(root=root, base=llama3_tokenizer, add=add, out=out, stats=stats, docs=docs,
                base_tok=rust(llama3_tokenizer), merged_tok=rust(out))


def test_trained_bpe_sees_text_as_the_base_does(built):
    add, base = built["docs"]["add"], built["docs"]["base"]
    for key in ("normalizer", "pre_tokenizer", "decoder"):
        assert add[key] == base[key]
    assert add["added_tokens"] == [] and len(add["model"]["vocab"]) == 2000
    assert all(token_bytes(t) is not None for t in add["model"]["vocab"])  # spelt in the base's byte alphabet


def test_every_base_id_is_kept_and_new_ids_follow_the_last(built):
    base, merged, stats = built["base_tok"], built["merged_tok"], built["stats"]
    old, new = base.get_vocab(with_added_tokens=True), merged.get_vocab(with_added_tokens=True)
    assert len(old) == 128256 and all(new[t] == i for t, i in old.items())
    assert {i: t.content for i, t in merged.get_added_tokens_decoder().items() if i < 128256} == \
        {i: t.content for i, t in base.get_added_tokens_decoder().items()}  # the 256 specials, same ids
    fresh = new_tokens(built["docs"]["base"], built["docs"]["merged"])
    assert stats.first_new_id == 128256 and stats.added == len(fresh) > 100
    assert sorted(fresh.values()) == list(range(128256, 128256 + stats.added))
    assert sorted(new.values()) == list(range(stats.merged_size)) and merged.get_vocab_size() == stats.merged_size
    base_merges = built["docs"]["base"]["model"]["merges"]
    assert built["docs"]["merged"]["model"]["merges"][:len(base_merges)] == base_merges  # appended after all of them


def test_english_typography_and_emoji_keep_their_ids(built, corpus_dir):
    texts = lines(corpus_dir, "en") + TYPOGRAPHY + SPELT
    assert ids(built["merged_tok"], texts) == ids(built["base_tok"], texts)
    wrapper_base, wrapper_merged = Tokenizer.load(built["base"]), Tokenizer.load(built["out"])
    assert wrapper_merged.encode_batch(texts) == wrapper_base.encode_batch(texts)


def test_chinese_needs_fewer_tokens(built, corpus_dir):
    zh = lines(corpus_dir, "zh")
    before, after = (sum(map(len, ids(t, zh))) for t in (built["base_tok"], built["merged_tok"]))
    assert after < 0.99 * before, (before, after)
    assert any(i >= 128256 for doc in ids(built["merged_tok"], zh) for i in doc)


def test_report_counts_tokens_of_hf_tokenizers(built, corpus_dir):
    texts = {lang: SourceSpec(lang=lang, path=str(corpus_dir / lang / "heldout.txt")) for lang in ("zh", "en")}
    result = report.measure({"llama3": built["base"], "merged": built["out"]}, texts)["languages"]
    zh, en = result["zh"]["tokenizers"], result["en"]["tokenizers"]
    assert zh["merged"]["tokens_per_char"] < zh["llama3"]["tokens_per_char"]
    assert en["merged"]["tokens"] == en["llama3"]["tokens"]


def test_every_text_round_trips(built, corpus_dir):
    tok = built["merged_tok"]
    for lang in ("zh", "en", "ja", "ru"):
        texts = lines(corpus_dir, lang)
        assert [tok.decode(i) for i in ids(tok, texts)] == texts, lang
    assert [tok.decode(i) for i in ids(tok, TYPOGRAPHY + SPELT)] == TYPOGRAPHY + SPELT


def test_every_new_token_is_reachable_by_its_merges(built):
    """Each new token's decoded string, encoded alone, is that one token. Llama-3's `ignore_merges` would emit a
    vocabulary entry whole whatever the merges, so the check runs with it off; a token that starts or ends
    inside a character has no string, and the BPE model is applied to its bytes."""
    merged = built["docs"]["merged"]
    assert merged["model"]["ignore_merges"] is True
    strict = Rust.from_str(json.dumps(dict(merged, model=dict(merged["model"], ignore_merges=False))))
    fresh = new_tokens(built["docs"]["base"], merged)
    whole = partial = 0
    for token, i in fresh.items():
        try:
            text = token_bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            assert [t.id for t in strict.model.tokenize(token)] == [i], token
            partial += 1
            continue
        assert strict.encode(text, add_special_tokens=False).ids == [i], text
        assert built["merged_tok"].encode(text, add_special_tokens=False).ids == [i], text
        whole += 1
    assert whole > 50 and partial > 0 and unreachable(merged, fresh) == []


def test_transformers_agrees_and_loads_the_directory(built, corpus_dir):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_file=str(built["out"]))
    auto = AutoTokenizer.from_pretrained(built["out"].parent)
    texts = lines(corpus_dir, "zh") + lines(corpus_dir, "en")[:100] + TYPOGRAPHY
    ours = ids(built["merged_tok"], texts)
    for hf in (fast, auto):
        assert [hf.encode(t, add_special_tokens=False) for t in texts] == ours
        assert [hf.decode(i) for i in ours] == texts
    assert len(fast) == len(auto) == built["stats"].merged_size
    base_config = json.loads(built["base"].with_name("tokenizer_config.json").read_text())
    assert auto.chat_template == base_config["chat_template"] and auto.bos_token == "<|begin_of_text|>"


def test_padding_tokens_are_reserved_and_never_produced(built, corpus_dir):
    stats, merged = built["stats"], built["docs"]["merged"]
    pads = padding_ids(merged)
    assert stats.merged_size % 128 == 0 and len(pads) == stats.padding > 0
    assert pads == list(range(stats.merged_size - stats.padding, stats.merged_size))
    specials = built["merged_tok"].get_added_tokens_decoder()
    assert all(specials[i].special for i in pads)
    config = json.loads(built["out"].with_name("tokenizer_config.json").read_text())
    assert all(str(i) in config["added_tokens_decoder"] for i in pads)
    produced = {i for lang in ("zh", "en", "ja") for doc in ids(built["merged_tok"], lines(corpus_dir, lang)) for i in doc}
    names = " ".join(specials[i].content for i in pads[:3])  # even text spelling their names
    produced |= set(Tokenizer.load(built["out"]).encode(names, bos=False))
    assert not produced & set(pads)


def test_max_added_and_unprotected_scripts(built):
    base, add = built["docs"]["base"], built["docs"]["add"]
    capped, stats = merge_bpe(base, add, BpeMergeOptions(max_added=40))
    assert stats.added <= 40 and stats.capped > 0
    assert unreachable(capped, new_tokens(base, capped)) == []
    everything, all_stats = merge_bpe(base, add, BpeMergeOptions(protect_scripts=()))
    assert all_stats.added > built["stats"].added and all_stats.skipped_protected == 0
    # Without the script rule, zh's box-drawing and punctuation tokens reach base-language text.
    tok = Rust.from_str(json.dumps(everything))
    assert ids(tok, TYPOGRAPHY) != ids(built["base_tok"], TYPOGRAPHY)


def test_cli_train_and_merge(built, tmp_path, capsys):
    add, out = tmp_path / "zh.json", tmp_path / "m" / "tokenizer.json"
    assert cli.main(["vocab", "train", "--kind", "hf", "--base", str(built["base"]), "--source",
                     str(built["root"] / "zh.txt"), "--out", str(add), "--vocab_size", "600"]) == 0
    assert cli.main(["vocab", "merge", "--base", str(built["base"]), "--add", str(add), "--out", str(out),
                     "--max_added", "30"]) == 0
    assert Tokenizer.load(out).vocab_size <= 128256 + 30
    assert cli.main(["vocab", "merge", "--base", str(built["base"]), "--add", str(add), "--out", str(out),
                     "--score_policy", "zero"]) == 1
    assert "--score_policy does not apply to a tokenizer.json merge" in capsys.readouterr().err


def one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_refusals_name_the_file_and_the_fix(built, llama_tokenizer, tmp_path, capsys):
    out = tmp_path / "m" / "tokenizer.json"
    err = one_line_error(capsys, ["vocab", "merge", "--base", str(llama_tokenizer), "--add", str(built["add"]),
                                  "--out", str(tmp_path / "m.model")])
    assert str(built["add"]) in err and "--kind sentencepiece" in err and not (tmp_path / "m.model").exists()
    err = one_line_error(capsys, ["vocab", "merge", "--base", str(built["base"]), "--add", str(llama_tokenizer),
                                  "--out", str(out)])
    assert str(llama_tokenizer) in err and f"--kind hf --base {built['base']}" in err and not out.exists()
    wordlevel = tmp_path / "wordlevel.json"  # a tokenizer.json that is not byte-level BPE
    wordlevel.write_text(json.dumps(dict(built["docs"]["add"], pre_tokenizer={"type": "Whitespace"},
                                         decoder=None)))
    for argv in (["vocab", "train", "--kind", "hf", "--base", str(wordlevel), "--source",
                  str(built["root"] / "zh.txt"), "--out", str(tmp_path / "x.json")],
                 ["vocab", "merge", "--base", str(wordlevel), "--add", str(built["add"]), "--out", str(out)]):
        err = one_line_error(capsys, argv)
        assert f"{wordlevel} is not a byte-level BPE tokenizer.json (its pre_tokenizer (Whitespace) has no " \
               f"ByteLevel step)" in err and not out.exists() and not (tmp_path / "x.json").exists()
    err = one_line_error(capsys, ["vocab", "merge", "--base", str(built["base"]), "--add", str(built["add"]),
                                  "--out", str(tmp_path / "merged.json")])
    assert "name the file tokenizer.json" in err


@pytest.mark.parametrize("tied,strategies", [pytest.param(False, STRATEGIES, marks=pytest.mark.slow),  # every strategy
                                             (True, ("random", "subword_mean"))])
def test_extend_grows_a_llama3_checkpoint(built, tmp_path, tied, strategies):
    """Untied: every strategy on the embedding and lm_head. Tied: the same code without lm_head, two strategies."""
    cfg = get_shape("tiny", vocab_size=128256, tie_word_embeddings=tied)
    ckpt = checkpoint.save(tmp_path / "base", cfg, model_params.init_params(cfg), tokenizer=built["base"])
    old_cfg, old = checkpoint.load_params(ckpt)
    base = Tokenizer.load(built["base"])
    fresh = new_tokens(built["docs"]["base"], built["docs"]["merged"])
    total, pads = built["stats"].merged_size, padding_ids(built["docs"]["merged"])
    for strategy in strategies:
        out = extend(ckpt, built["out"], tmp_path / strategy, ExtendOptions(strategy=strategy), log=lambda _: None)
        new_cfg, grown = checkpoint.load_params(out)
        assert new_cfg.vocab_size == total and Tokenizer.load(checkpoint.tokenizer_path(out)).vocab_size == total
        names = ["embed_tokens"] + ([] if tied else ["lm_head"])
        assert ("lm_head" in grown) == (not tied)
        for name in names:
            rows = np.asarray(grown[name]) if name == "embed_tokens" else np.asarray(grown[name]).T
            before = np.asarray(old[name]) if name == "embed_tokens" else np.asarray(old[name]).T
            assert rows.shape == (total, cfg.hidden_size)
            np.testing.assert_array_equal(rows[:128256], before)  # old rows bit for bit
            mean = before.astype(np.float64).mean(0)
            if strategy == "mean":
                np.testing.assert_allclose(rows[128256:], np.broadcast_to(mean, rows[128256:].shape), atol=1e-6)
            elif strategy == "subword_mean":
                for token, i in list(fresh.items())[:50]:
                    data = token_bytes(token)
                    try:
                        parts = base.encode(data.decode("utf-8"), bos=False)
                    except UnicodeDecodeError:
                        parts = [t.id for t in built["base_tok"].model.tokenize(token)]
                    assert len(parts) > 1
                    np.testing.assert_allclose(rows[i], before[parts].astype(np.float64).mean(0), atol=1e-6)
                np.testing.assert_allclose(rows[pads], np.broadcast_to(mean, rows[pads].shape), atol=1e-6)
            elif strategy == "random":
                assert abs(rows[128256:].std() - cfg.initializer_range) < 0.2 * cfg.initializer_range
            else:
                assert 0 < np.abs(rows[128256:] - mean).max() < 1.0
        assert checkpoint.read_meta(out)["vocab_extend"]["new_vocab_size"] == total


def test_extend_refuses_a_tokenizer_of_another_kind(built, llama_tokenizer, tmp_path, capsys):
    cfg = get_shape("tiny", vocab_size=128256)
    ckpt = checkpoint.save(tmp_path / "base", cfg, model_params.init_params(cfg), tokenizer=built["base"])
    err = one_line_error(capsys, ["vocab", "extend", "--ckpt", str(ckpt), "--tokenizer", str(llama_tokenizer),
                                  "--out", str(tmp_path / "x")])
    assert str(llama_tokenizer) in err and "sentencepiece" in err and not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="not more than checkpoint"):
        extend(ckpt, built["base"], tmp_path / "y")
