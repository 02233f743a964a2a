"""`xfer data fetch`: the real corpus (layout, splits, scripts, licences), user-text import, LLaMA's tokenizer.

The `corpus_dir` and `llama_tokenizer` fixtures (conftest.py) fetch once into the shared cache; every later
session finds the cache complete, so these tests read files only.
"""
import json
import re
import time

import pytest
import sentencepiece

from xfer_jax.data import catalogue, cli, corpus, llama_vocab, registry
from xfer_jax.errors import CorpusError

LETTER = re.compile(r"[^\W\d_]")
# Non-Latin languages: the characters of their script.
SCRIPTS = {
    "zh": re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]"),
    "ja": re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]"),
    "ru": re.compile(r"[\u0400-\u04ff]"),
    "uk": re.compile(r"[\u0400-\u04ff]"),
    "th": re.compile(r"[\u0e00-\u0e7f]"),
}
# Latin and Cyrillic languages: letters that mark the language itself, not merely its script.
MARKS = {"de": "äöüß", "tr": "ışğ", "vi": "ơưđạảấầ", "fr": "éèàçê", "es": "ñáéíóú", "uk": "іїє", "ru": "ыэ"}


def read_lines(path):
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def manifest(root):
    return json.loads((root / "manifest.json").read_text(encoding="utf-8"))


def script_share(line, script):
    letters = len(LETTER.findall(line))
    return len(script.findall(line)) / letters if letters else 0.0


# ------------------------------------------------------------------------------------------ the real corpus


def test_corpus_is_complete_with_five_languages_or_more(corpus_dir):
    langs = manifest(corpus_dir)["languages"]
    assert (corpus_dir / registry.MARKER).exists()
    assert {"en", "zh"} <= set(langs) and len(langs) >= 5
    for lang in langs:
        for name in ("train.txt", "heldout.txt", "SOURCES.json"):
            assert (corpus_dir / lang / name).is_file(), f"{lang}/{name}"


def test_a_complete_cache_returns_at_once(corpus_dir):
    stamp = (corpus_dir / registry.MARKER).read_text()
    start = time.perf_counter()
    assert corpus.fetch_corpus(corpus_dir) == corpus_dir
    assert time.perf_counter() - start < 1.0
    assert (corpus_dir / registry.MARKER).read_text() == stamp


def test_splits_are_nontrivial_disjoint_and_match_the_manifest(corpus_dir):
    info = manifest(corpus_dir)
    for lang in info["languages"]:
        train, heldout = read_lines(corpus_dir / lang / "train.txt"), read_lines(corpus_dir / lang / "heldout.txt")
        assert all(train) and all(heldout), f"{lang}: empty document line"
        assert sum(map(len, train)) >= 5_000 and len(heldout) >= 1 and sum(map(len, heldout)) >= 100, lang
        assert not set(train) & set(heldout), f"{lang}: heldout overlaps train"
        assert len(set(train)) == len(train), f"{lang}: duplicate documents"
        counts = info["counts"][lang]
        assert counts["train"] == {"documents": len(train), "characters": sum(map(len, train))}
        assert counts["heldout"] == {"documents": len(heldout), "characters": sum(map(len, heldout))}
        assert sum(map(len, train + heldout)) <= info["max_chars"] + 200_000, f"{lang}: far over the cap"


def test_heldout_is_chosen_by_document_hash(corpus_dir):
    for lang in manifest(corpus_dir)["languages"]:
        train, heldout = read_lines(corpus_dir / lang / "train.txt"), read_lines(corpus_dir / lang / "heldout.txt")
        assert corpus.split_heldout(sorted(train + heldout)) == (sorted(train), sorted(heldout))
        if len(train) + len(heldout) >= 1000:
            assert 0.02 < len(heldout) / (len(train) + len(heldout)) < 0.08, lang


def test_languages_are_in_their_own_script(corpus_dir):
    langs = manifest(corpus_dir)["languages"]
    for lang in set(SCRIPTS) & set(langs):
        for split in ("train", "heldout"):
            lines = read_lines(corpus_dir / lang / f"{split}.txt")
            shares = [script_share(line, SCRIPTS[lang]) for line in lines]
            assert sum(s >= 0.3 for s in shares) >= 0.9 * len(lines), f"{lang}/{split}"
            assert sum(s >= 0.5 for s in shares) >= 0.7 * len(lines), f"{lang}/{split}"
    for lang in set(MARKS) & set(langs):
        lines = read_lines(corpus_dir / lang / "train.txt")
        marked = sum(any(c in line.lower() for c in MARKS[lang]) for line in lines)
        assert marked >= 0.8 * len(lines), lang
    english = (corpus_dir / "en" / "train.txt").read_text(encoding="utf-8")
    assert len(re.findall(r"[A-Za-z]", english)) >= 0.99 * len(LETTER.findall(english))


def test_sources_and_licences_are_recorded(corpus_dir):
    for lang in manifest(corpus_dir)["languages"]:
        sources = json.loads((corpus_dir / lang / "SOURCES.json").read_text(encoding="utf-8"))
        assert sources, lang
        lines = read_lines(corpus_dir / lang / "train.txt") + read_lines(corpus_dir / lang / "heldout.txt")
        assert sum(s["documents"] for s in sources) == len(lines)
        for source in sources:
            assert source["registry"] in ("debian", "pypi", "npm") and source["version"] and source["licence"]
            assert source["files"] and source["documents"] > 0 and source["characters"] > 0
            licence = corpus_dir / lang / source["licence_file"]
            assert licence.name == f"LICENSE-{source['package']}" and licence.stat().st_size > 100


# ------------------------------------------------------------------------------------------ user text import


@pytest.fixture()
def user_text(tmp_path):
    """xx: one document per line plus a file that is not UTF-8; yy: blank-line-separated blocks."""
    root = tmp_path / "mine"
    (root / "xx").mkdir(parents=True)
    lines = [f"document {i} of the xx language, written by the user" for i in range(60)]
    (root / "xx" / "a.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "xx" / "bad.txt").write_bytes(b"caf\xe9 latin-1 text\n")
    blocks = [f"block {i} first line\nblock {i} second line" for i in range(40)]
    (root / "yy.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return root


def test_user_text_is_imported_into_the_same_layout(tmp_path, user_text, capsys):
    cache = tmp_path / "cache"
    assert corpus.fetch_corpus(cache, corpus_dir=user_text) == cache
    info = manifest(cache)
    assert info["languages"] == ["xx", "yy"] and (cache / registry.MARKER).exists()
    xx = read_lines(cache / "xx" / "train.txt") + read_lines(cache / "xx" / "heldout.txt")
    yy = read_lines(cache / "yy" / "train.txt") + read_lines(cache / "yy" / "heldout.txt")
    assert len(xx) == 60 and len(yy) == 40
    assert "block 7 first line block 7 second line" in yy
    assert read_lines(cache / "xx" / "heldout.txt") and read_lines(cache / "yy" / "heldout.txt")
    [skipped] = info["skipped_files"]
    assert skipped["file"].endswith("bad.txt") and "UTF-8" in skipped["reason"]
    assert "bad.txt" in capsys.readouterr().err
    [source] = json.loads((cache / "xx" / "SOURCES.json").read_text())
    assert source["registry"] == "local" and source["documents"] == 60


def test_user_text_cache_is_rebuilt_only_when_incomplete(tmp_path, user_text):
    cache = tmp_path / "cache"
    corpus.fetch_corpus(cache, corpus_dir=user_text)
    stamp = (cache / registry.MARKER).read_text()
    corpus.fetch_corpus(cache, corpus_dir=user_text)
    assert (cache / registry.MARKER).read_text() == stamp
    (cache / registry.MARKER).unlink()
    (cache / "xx" / "train.txt").write_text("half-written\n")
    corpus.fetch_corpus(cache, corpus_dir=user_text)
    assert "half-written" not in (cache / "xx" / "train.txt").read_text()
    assert (cache / registry.MARKER).exists()


def test_max_chars_caps_each_language(tmp_path, user_text):
    cache = corpus.fetch_corpus(tmp_path / "cache", corpus_dir=user_text, max_chars=500)
    for lang in ("xx", "yy"):
        counts = manifest(cache)["counts"][lang]
        assert 500 <= counts["train"]["characters"] + counts["heldout"]["characters"] < 600


def test_a_language_without_usable_text_says_how_to_supply_it(tmp_path):
    root = tmp_path / "mine"
    (root / "zz").mkdir(parents=True)
    (root / "zz" / "only.txt").write_bytes(b"\xff\xfe broken\n")
    with pytest.raises(CorpusError, match="corpus_dir"):
        corpus.fetch_corpus(tmp_path / "cache", corpus_dir=root)
    assert not (tmp_path / "cache" / registry.MARKER).exists()


def test_a_language_without_registry_source_fails_before_any_download(tmp_path):
    with pytest.raises(CorpusError, match="--corpus_dir"):
        corpus.fetch_corpus(tmp_path / "cache", languages=["qq"])


def test_a_failing_source_is_recorded_and_the_others_go_on(tmp_path):
    def broken(root):
        raise OSError("simulated unreadable package")

    good = catalogue.Source(registry.Package("good", "local", "MIT", ""), lambda root: [("a.txt", "some text")] * 3)
    bad = catalogue.Source(registry.Package("bad", "debian", "MIT", ""), broken)
    failures = []
    counts = corpus.build_language("xx", [(bad, tmp_path, "1"), (good, tmp_path, "1")], 1000, tmp_path / "xx", failures)
    assert counts["train"]["documents"] + counts["heldout"]["documents"] == 1  # duplicates dropped
    assert failures == [{"package": "bad", "registry": "debian", "languages": ["xx"],
                         "reason": "reading its files failed: OSError: simulated unreadable package"}]


def test_cli_prints_a_summary_table(tmp_path, user_text, capsys):
    assert cli.fetch_main(["--cache_dir", str(tmp_path / "cache"), "--corpus_dir", str(user_text)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^xx\s+60\s", out, re.M) and re.search(r"^yy\s+40\s", out, re.M)
    assert "skipped:" in out and "bad.txt" in out
    assert cli.fetch_main(["--cache_dir", str(tmp_path / "c2"), "--languages", "qq"]) == 1


# --------------------------------------------------------------------------------------------- LLaMA tokenizer


def test_llama_tokenizer_reproduces_llama_cpp_references(llama_tokenizer):
    processor = sentencepiece.SentencePieceProcessor(model_file=str(llama_tokenizer))
    cases = llama_vocab.llama_reference_cases(llama_tokenizer.parent)
    assert len(cases) >= 40 and any(ids for _, ids in cases)
    for text, ids in cases:
        assert processor.encode(text) == ids, repr(text)


def test_llama_tokenizer_has_llamas_vocabulary(llama_tokenizer):
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    model = sp_pb2.ModelProto()
    model.ParseFromString(llama_tokenizer.read_bytes())
    kind = sp_pb2.ModelProto.SentencePiece
    assert len(model.pieces) == 32_000
    assert [(p.piece, p.type) for p in model.pieces[:3]] == [("<unk>", kind.UNKNOWN), ("<s>", kind.CONTROL),
                                                             ("</s>", kind.CONTROL)]
    assert [p.piece for p in model.pieces[3:259]] == [f"<0x{b:02X}>" for b in range(256)]
    assert all(p.type == kind.BYTE for p in model.pieces[3:259])
    assert model.pieces[259].piece == "▁▁" and model.pieces[29871].piece == "▁"
    trainer, normalizer = model.trainer_spec, model.normalizer_spec
    assert trainer.model_type == sp_pb2.TrainerSpec.BPE and trainer.byte_fallback and trainer.vocab_size == 32_000
    assert (trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id) == (0, 1, 2, -1)
    assert normalizer.name == "identity" and normalizer.add_dummy_prefix and normalizer.escape_whitespaces
    assert not normalizer.remove_extra_whitespaces


def test_llama_tokenizer_round_trips_every_corpus_language(llama_tokenizer, corpus_dir):
    processor = sentencepiece.SentencePieceProcessor(model_file=str(llama_tokenizer))
    for lang in manifest(corpus_dir)["languages"]:
        for line in read_lines(corpus_dir / lang / "heldout.txt")[:20]:
            text = line[:2000]
            assert processor.decode(processor.encode(text)) == text, lang
