"""Vocabulary extension, tokenizer side: LLaMA-2's real 32,000-piece model + a Chinese model trained on the real
zh corpus. Base ids are kept, English keeps its base encoding, Chinese needs markedly fewer tokens, and
sentencepiece agrees with transformers' tokenizer loaded from the exported files."""
import json
import pathlib

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from xfer_jax import cli
from xfer_jax.data.sources import SourceSpec
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.vocab import report
from xfer_jax.vocab.merge import MergeOptions, is_ascii_piece, merge, merge_files, padding_ids
from xfer_jax.vocab.train import TrainOptions, train_tokenizer

ZH_VOCAB = 4000  # the paper's model has 20,000 pieces; small keeps the test fast (docs/vocab.md has both)
ZH_OPTIONS = TrainOptions(vocab_size=ZH_VOCAB, character_coverage=0.99)


def lines(corpus_dir, lang: str) -> list[str]:
    return (corpus_dir / lang / "heldout.txt").read_text(encoding="utf-8").splitlines()


def hf_tokenizer(hf_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hf_dir)


@pytest.fixture(scope="module")
def zh_model(corpus_dir, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("vocab") / "zh.model"
    return train_tokenizer([SourceSpec(lang="zh", path=str(corpus_dir / "zh" / "train.txt"))], out, ZH_OPTIONS)


@pytest.fixture(scope="module")
def merged(llama_tokenizer, zh_model):
    out = zh_model.parent / "merged.model"
    stats = merge_files(llama_tokenizer, zh_model, out, hf_dir=out.parent / "merged_hf")
    return out, out.parent / "merged_hf", stats


def test_every_base_piece_keeps_its_id_score_and_type(llama_tokenizer, merged):
    path, _, stats = merged
    base, new = Tokenizer.load(llama_tokenizer).proto(), Tokenizer.load(path).proto()
    assert [(p.piece, p.score, p.type) for p in new.pieces[:32000]] == [(p.piece, p.score, p.type) for p in base.pieces]
    assert new.trainer_spec.model_type == pb.TrainerSpec.BPE  # LLaMA's algorithm, so transformers' BPE matches
    assert new.normalizer_spec == base.normalizer_spec
    appended = new.pieces[32000:]
    assert len(appended) == stats.added > 1000 and stats.merged_pieces == 32000 + stats.added
    base_names = {p.piece for p in base.pieces}
    assert all(p.type == pb.ModelProto.SentencePiece.NORMAL and p.piece not in base_names for p in appended)
    assert not any(is_ascii_piece(p.piece) for p in appended) and stats.skipped_ascii > 0
    scores = [p.score for p in appended]  # below_base: below every base score, strictly decreasing
    assert scores[0] < min(p.score for p in base.pieces) and all(a > b for a, b in zip(scores, scores[1:]))
    assert stats.unreachable == 0  # a BPE-trained added model brings the halves of its merges along


def test_english_keeps_its_encoding_and_chinese_needs_fewer_tokens(llama_tokenizer, merged, corpus_dir, tmp_path):
    path, _, _ = merged
    base, new = Tokenizer.load(llama_tokenizer), Tokenizer.load(path)
    english = lines(corpus_dir, "en")
    assert new.encode_batch(english) == base.encode_batch(english)
    texts = {lang: SourceSpec(lang=lang, path=str(corpus_dir / lang / "heldout.txt")) for lang in ("zh", "en")}
    result = report.measure({"llama": llama_tokenizer, "merged": path}, texts)
    print("\n" + report.markdown(result))
    zh, en = result["languages"]["zh"]["tokenizers"], result["languages"]["en"]["tokenizers"]
    assert zh["merged"]["tokens"] < 0.75 * zh["llama"]["tokens"]  # measured: -31.5% with 4,000 pieces
    assert en["merged"]["tokens"] == en["llama"]["tokens"]
    md, js = report.write(result, tmp_path / "report")
    assert "| zh |" in md.read_text() and json.loads(js.read_text())["languages"]["zh"]["characters"] > 100_000


def test_transformers_tokenizer_from_the_exported_files_agrees(llama_tokenizer, merged, corpus_dir):
    path, hf_dir, stats = merged
    tok = hf_tokenizer(hf_dir)
    assert type(tok).__name__ == "LlamaTokenizer" and len(tok) == stats.merged_pieces
    base, new = Tokenizer.load(llama_tokenizer), Tokenizer.load(path)
    english, chinese = lines(corpus_dir, "en"), lines(corpus_dir, "zh")
    assert tok(english)["input_ids"] == base.encode_batch(english)
    assert tok(chinese)["input_ids"] == new.encode_batch(chinese)
    assert tok.decode(new.encode(chinese[0], bos=False)) == chinese[0]


def test_score_zero_as_chinese_llama_makes_the_libraries_disagree(llama_tokenizer, zh_model, corpus_dir, tmp_path):
    """With score 0, sentencepiece merges new pieces first, transformers (ranking merges by id) last."""
    stats = merge_files(llama_tokenizer, zh_model, tmp_path / "zero.model", MergeOptions(score_policy="zero"),
                        hf_dir=tmp_path / "hf")
    tok, sp = hf_tokenizer(tmp_path / "hf"), Tokenizer.load(tmp_path / "zero.model")
    chinese = lines(corpus_dir, "zh")
    disagree = sum(a != b for a, b in zip(tok(chinese)["input_ids"], sp.encode_batch(chinese)))
    print(f"\nscore 0: {disagree} of {len(chinese)} held-out zh documents tokenise differently "
          f"in sentencepiece and transformers ({stats.added} pieces appended)")
    assert disagree > 0
    english = lines(corpus_dir, "en")
    assert sp.encode_batch(english) == Tokenizer.load(llama_tokenizer).encode_batch(english)


def test_padding_pieces_are_never_produced(llama_tokenizer, zh_model, corpus_dir, tmp_path):
    stats = merge_files(llama_tokenizer, zh_model, tmp_path / "padded.model", MergeOptions(pad_to_multiple=128),
                        hf_dir=tmp_path / "hf")
    proto = Tokenizer.load(tmp_path / "padded.model").proto()
    pads = padding_ids(proto)
    assert len(proto.pieces) % 128 == 0 and len(pads) == stats.padding > 0
    assert pads == list(range(len(proto.pieces) - stats.padding, len(proto.pieces)))
    names = " ".join(proto.pieces[i].piece for i in pads)
    texts = [names, names.replace(" ", ""), *lines(corpus_dir, "zh")[:50], *lines(corpus_dir, "en")[:50]]
    sp, tok = spm.SentencePieceProcessor(model_file=str(tmp_path / "padded.model")), hf_tokenizer(tmp_path / "hf")
    produced = {i for ids in sp.encode(texts) + tok(texts)["input_ids"] for i in ids}
    assert not produced & set(pads)
    assert len(tok) == len(proto.pieces)


def test_cap_appends_the_best_scoring_pieces(llama_tokenizer, zh_model):
    base, added = Tokenizer.load(llama_tokenizer).proto(), Tokenizer.load(zh_model).proto()
    full, _ = merge(base, added)
    capped, stats = merge(base, added, MergeOptions(max_added=500))
    assert stats.added == 500 and stats.capped == len(full.pieces) - 32000 - 500
    assert [p.piece for p in capped.pieces] == [p.piece for p in full.pieces[:32500]]


def test_ascii_pieces_would_change_english(llama_tokenizer, zh_model, corpus_dir):
    """Why ASCII-only pieces are skipped by default: the zh corpus (man pages) teaches English pieces."""
    base, added = Tokenizer.load(llama_tokenizer).proto(), Tokenizer.load(zh_model).proto()
    with_ascii, stats = merge(base, added, MergeOptions(keep_ascii=True))
    english = lines(corpus_dir, "en")
    changed = sum(a != b for a, b in zip(Tokenizer.from_proto(with_ascii).encode_batch(english),
                                         Tokenizer.load(llama_tokenizer).encode_batch(english)))
    print(f"\nkeep_ascii: {changed} of {len(english)} held-out en documents change their encoding")
    assert stats.skipped_ascii == 0 and changed > 0


def test_train_reads_jsonl_through_the_data_readers(corpus_dir, tmp_path):
    docs = lines(corpus_dir, "zh")[:200]
    source = tmp_path / "zh.jsonl"
    source.write_text("\n".join(json.dumps({"content": d}, ensure_ascii=False) for d in docs) + "\n{bad json\n")
    out = train_tokenizer([SourceSpec(lang="zh", path=str(source), format="jsonl", text_field="content")],
                          tmp_path / "uni.model", TrainOptions(vocab_size=2500, model_type="unigram", character_coverage=0.98))
    proto = Tokenizer.load(out).proto()
    assert proto.trainer_spec.model_type == pb.TrainerSpec.UNIGRAM and len(proto.pieces) == 2500
    assert proto.trainer_spec.byte_fallback and proto.normalizer_spec.name == "identity"
    assert Tokenizer.load(out).decode(Tokenizer.load(out).encode(docs[0])) == docs[0]


def test_train_and_merge_errors_name_the_problem(corpus_dir, tmp_path, llama_tokenizer):
    zh = [SourceSpec(lang="zh", path=str(corpus_dir / "zh" / "heldout.txt"))]
    with pytest.raises(ValueError, match="character_coverage"):
        train_tokenizer(zh, tmp_path / "x.model", TrainOptions(vocab_size=300, character_coverage=1.0))
    with pytest.raises(ValueError, match="no plain text"):
        train_tokenizer([SourceSpec(lang="zh", path=str(tmp_path), format="alpaca")], tmp_path / "x.model")
    with pytest.raises(ValueError, match=r"\.model"):
        train_tokenizer(zh, tmp_path / "x.bin")
    not_a_model = tmp_path / "not.model"
    not_a_model.write_bytes(b"hello")
    with pytest.raises(ValueError, match="--add .*not a sentencepiece model"):
        merge_files(llama_tokenizer, not_a_model, tmp_path / "m.model")
    with pytest.raises(FileNotFoundError, match="missing.model"):
        merge_files(tmp_path / "missing.model", llama_tokenizer, tmp_path / "m.model")


def test_cli_train_merge_report(corpus_dir, llama_tokenizer, tmp_path, capsys):
    zh = tmp_path / "zh.model"
    assert cli.main(["vocab", "train", "--source", str(corpus_dir / "zh" / "heldout.txt"), "--out", str(zh),
                     "--vocab_size", "1500", "--character_coverage", "0.98"]) == 0
    merged = tmp_path / "merged.model"
    assert cli.main(["vocab", "merge", "--base", str(llama_tokenizer), "--add", str(zh), "--out", str(merged),
                     "--pad_to_multiple", "64", "--max_added", "300"]) == 0
    assert '"added": 300' in capsys.readouterr().out
    assert Tokenizer.load(merged).vocab_size == 32320 and (tmp_path / "merged_hf" / "tokenizer_config.json").exists()
    assert cli.main(["vocab", "report", "--tokenizer", f"base={llama_tokenizer}", "--tokenizer", f"merged={merged}",
                     "--corpus", str(corpus_dir), "--languages", "zh,en", "--out", str(tmp_path / "r")]) == 0
    assert "| zh |" in capsys.readouterr().out and (tmp_path / "r.json").exists()
    assert cli.main(["vocab", "report", "--tokenizer", str(merged), "--corpus", str(corpus_dir)]) == 1
    assert "NAME=PATH" in capsys.readouterr().err
