"""`xfer data tokenize`: ArrayRecord shards and per-language stats; the pipeline reads the shards and gives
exactly the batches it gives when tokenising on the fly. Also the tokenizer wrapper and the CLI dispatch."""
import json
import pickle

import numpy as np
import pytest

from xfer_jax.data import cli, pipeline
from xfer_jax.data.tokenizer import Tokenizer

LANGS = ("zh", "en", "fr")


@pytest.fixture(scope="module")
def small_corpus(corpus_dir, tmp_path_factory):
    """The first 150 documents of three languages of the real corpus."""
    root = tmp_path_factory.mktemp("corpus")
    for lang in LANGS:
        lines = (corpus_dir / lang / "train.txt").read_text().splitlines()[:150]
        (root / f"{lang}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def shards(small_corpus, llama_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens")
    argv = ["tokenize", "--out", str(out), "--tokenizer", str(llama_tokenizer), "--shard_tokens", "20000"]
    for lang in LANGS:
        argv += ["--source", f"lang={lang},path={small_corpus / f'{lang}.txt'},format=text"]
    assert cli.main(argv) == 0
    return out


def test_stats_per_language(shards, small_corpus, llama_tokenizer):
    stats = json.loads((shards / "stats.json").read_text())
    tokenizer = Tokenizer.load(llama_tokenizer)
    for lang in LANGS:
        docs = [d.strip() for d in (small_corpus / f"{lang}.txt").read_text().splitlines()]
        entry = stats["languages"][lang]
        assert entry["documents"] == len(docs) and entry["characters"] == sum(map(len, docs))
        assert entry["tokens"] == sum(len(ids) for ids in tokenizer.encode_batch(docs, bos=True, eos=True))
        assert entry["tokens_per_character"] == pytest.approx(entry["tokens"] / entry["characters"])
        assert entry["shards"] == len(list((shards / lang).glob("*.array_record"))) >= 1
    assert stats["languages"]["zh"]["tokens_per_character"] > stats["languages"]["en"]["tokens_per_character"]
    assert stats["skipped"]["data/skipped/total"] == 0


def configs(small_corpus, shards, llama_tokenizer):
    raw, pre = pipeline.default_data_config(), pipeline.default_data_config()
    for cfg, kind in ((raw, "text"), (pre, "tokens")):
        cfg.tokenizer = str(llama_tokenizer)
        cfg.seq_len, cfg.batch_size = 128, 8
        cfg.sources = [
            dict(lang=lang, weight=w, format=kind,
                 path=str(small_corpus / f"{lang}.txt") if kind == "text" else str(shards / lang))
            for lang, w in zip(LANGS, (0.5, 0.3, 0.2))
        ]
    return raw, pre


def test_pretokenised_shards_give_the_same_batches(small_corpus, shards, llama_tokenizer):
    raw, pre = configs(small_corpus, shards, llama_tokenizer)
    on_the_fly, from_shards = pipeline.make_train_iterator(raw), pipeline.make_train_iterator(pre)
    for _ in range(20):
        a, b = next(on_the_fly), next(from_shards)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_shards_of_another_tokenizer_are_refused(small_corpus, shards, llama_tokenizer, tmp_path):
    _, pre = configs(small_corpus, shards, llama_tokenizer)
    proto = Tokenizer.load(llama_tokenizer).proto()
    proto.pieces[-1].score -= 1.0  # any edit changes the fingerprint
    Tokenizer.from_proto(proto).save(tmp_path / "edited.model")
    pre.tokenizer = str(tmp_path / "edited.model")
    with pytest.raises(ValueError, match="re-run `xfer data tokenize`"):
        pipeline.make_train_iterator(pre)
    pre.tokenizer, pre.add_eos = str(llama_tokenizer), False
    with pytest.raises(ValueError, match="eos=True"):
        pipeline.make_train_iterator(pre)


def test_tokenizer_wrapper(llama_tokenizer):
    tokenizer = Tokenizer.load(llama_tokenizer)
    assert (tokenizer.vocab_size, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (32000, 0, 1, 2)
    text = "Hello 世界, привет!"
    ids = tokenizer.encode(text, bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2 and tokenizer.decode(ids) == text
    assert tokenizer.encode_batch([text, text], bos=False) == [ids[1:-1]] * 2
    assert len(tokenizer.proto().pieces) == 32000
    assert pickle.loads(pickle.dumps(tokenizer)).encode(text) == tokenizer.encode(text)


def test_cli_dispatch(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "fetch_main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["fetch", "--languages", "zh"]) == 0 and seen == [["--languages", "zh"]]
    assert cli.main(["nonsense"]) == 2


def test_cli_reads_sources_from_a_config_file(small_corpus, llama_tokenizer, tmp_path):
    config = tmp_path / "tiny.py"
    config.write_text(
        "from xfer_jax.data.pipeline import default_data_config\n"
        "import ml_collections\n"
        "def get_config(lang='zh'):\n"
        "    c = ml_collections.ConfigDict()\n"
        "    c.data = default_data_config()\n"
        f"    c.data.tokenizer = {str(llama_tokenizer)!r}\n"
        f"    c.data.sources = [dict(lang=lang, path={str(small_corpus)!r} + f'/{{lang}}.txt')]\n"
        "    return c\n"
    )
    assert cli.main(["tokenize", "--out", str(tmp_path / "out"), "--config", f"{config}:fr"]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert list(stats["languages"]) == ["fr"] and stats["languages"]["fr"]["documents"] == 150
