"""Data and tokenizers in a bucket (a real GCS emulator, fake-gcs-server): every source format, a glob,
pre-tokenised shards and the held-out set read from gs:// give exactly the batches the same files give on disk;
`xfer data tokenize --out gs://...` writes what it writes locally, its manifests last; a process downloads only
the shards its share of the documents lies in; a missing object is one line naming its URL; a tokenizer loads
from and saves to a bucket unchanged."""
import json
import os
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from array_record.python import array_record_module

from xfer_jax import paths
from xfer_jax.data import cli, pipeline
from xfer_jax.data.issues import BadInputError, InputIssues
from xfer_jax.data.readers import open_source
from xfer_jax.data.shards import TOKENS_META, TokenShards
from xfer_jax.data.sources import SourceSpec, source_files
from xfer_jax.data.tokenize import tokenize_sources
from xfer_jax.data.tokenizer import Tokenizer

DOCS = 30


def write_array_record(path, payloads):
    writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
    for payload in payloads:
        writer.write(payload)
    writer.close()


@pytest.fixture(scope="module")
def local_data(corpus_dir, instruct_dir, llama_tokenizer, tmp_path_factory) -> pathlib.Path:
    """Real documents in every format a source reads, plus shards of `xfer data tokenize`."""
    root = tmp_path_factory.mktemp("gcs_data")
    docs = {lang: [d.strip() for d in (corpus_dir / lang / "train.txt").read_text().splitlines()[:DOCS]]
            for lang in ("en", "zh", "de", "fr", "es", "ru", "uk", "vi", "th")}
    (root / "text.txt").write_text("\n".join(docs["en"]) + "\n")
    (root / "blocks.txt").write_text("\n\n\n".join(d.replace("。", "。\n") for d in docs["zh"]))
    lines = [json.dumps({"body": d}, ensure_ascii=False) for d in docs["de"]]
    (root / "a.jsonl").write_text("\n".join(lines[:3] + ['{"body": "broken'] + lines[3:]) + "\n")
    (root / "a.json").write_text(json.dumps([{"body": d} for d in docs["fr"]], ensure_ascii=False, indent=1))
    pq.write_table(pa.table({"body": docs["es"]}), root / "a.parquet", row_group_size=7)
    write_array_record(root / "raw.array_record", [d.encode() for d in docs["ru"]])
    write_array_record(root / "json.array_record", [json.dumps({"body": d}).encode() for d in docs["uk"]])
    (root / "parts").mkdir()
    for i in range(3):
        (root / "parts" / f"p{i}.txt").write_text("\n".join(docs["vi"][i * 10:(i + 1) * 10]) + "\n")
    (root / "belle.jsonl").write_text("".join((instruct_dir / "zh" / "train.jsonl").read_text().splitlines(True)[:20]))
    (root / "heldout.txt").write_text("".join((corpus_dir / "en" / "heldout.txt").read_text().splitlines(True)[:12]))
    (root / "th.txt").write_text("\n".join(docs["th"]) + "\n")
    tokenize_sources([SourceSpec(lang="th", path=str(root / "th.txt"))], Tokenizer.load(llama_tokenizer),
                     root / "tokens", shard_tokens=400)
    return root


def upload(local: pathlib.Path, url: str) -> str:
    for rel in paths.list_files(paths.path(local)):
        paths.copy_file(local / rel, f"{url}/{rel}")
    return url


def data_config(root: str, tokenizer: str):
    """The same sources under `root`, a folder or a bucket prefix."""
    cfg = pipeline.default_data_config()
    cfg.tokenizer = tokenizer
    cfg.seq_len, cfg.batch_size, cfg.packing_bins = 128, 4, 4
    cfg.sources = [
        dict(lang="en", path=f"{root}/text.txt"),
        dict(lang="zh", path=f"{root}/blocks.txt", doc_split="blank_line"),
        dict(lang="de", path=f"{root}/a.jsonl", format="jsonl", text_field="body"),
        dict(lang="fr", path=f"{root}/a.json", format="jsonl", text_field="body"),
        dict(lang="es", path=f"{root}/a.parquet", format="parquet", text_field="body"),
        dict(lang="ru", path=f"{root}/raw.array_record", format="array_record", text_field=""),
        dict(lang="uk", path=f"{root}/json.array_record", format="array_record", text_field="body"),
        dict(lang="vi", path=f"{root}/parts/*.txt"),
        dict(lang="zh", path=f"{root}/belle.jsonl", format="belle", weight=0.5),
        dict(lang="th", path=f"{root}/tokens/th", format="tokens"),
    ]
    cfg.heldout = [dict(lang="en", path=f"{root}/heldout.txt")]
    return cfg


def assert_same_batches(a, b, count: int) -> None:
    for _ in range(count):
        x, y = next(a), next(b)
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_every_format_from_a_bucket_gives_the_local_batches(local_data, bucket, llama_tokenizer):
    url = upload(local_data, f"{bucket}/data")
    local_cfg, gcs_cfg = data_config(str(local_data), str(llama_tokenizer)), data_config(url, str(llama_tokenizer))
    tokenizer = Tokenizer.load(llama_tokenizer)
    local = pipeline.make_train_iterator(local_cfg, tokenizer=tokenizer)  # as train/loop.py builds it
    remote = pipeline.make_train_iterator(gcs_cfg, tokenizer=tokenizer)
    assert remote.metrics() == local.metrics()
    assert remote.metrics()["data/skipped/malformed_json"] == 1 and remote.metrics()["data/documents/vi"] == DOCS
    assert_same_batches(local, remote, 12)
    local_eval, remote_eval = (pipeline.make_eval_batches(c, tokenizer=tokenizer) for c in (local_cfg, gcs_cfg))
    assert remote_eval.keys() == local_eval.keys() == {"en"}
    counts = [(e["en"].documents, e["en"].characters, e["en"].tokens) for e in (local_eval, remote_eval)]
    assert counts[0] == counts[1]
    for x, y in zip(local_eval["en"].batches, remote_eval["en"].batches, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    issues = InputIssues()
    open_source(SourceSpec(lang="de", path=f"{url}/a.jsonl", format="jsonl", text_field="body"), issues)
    assert f"{url}/a.jsonl:4: malformed json" in issues.summary()  # the URL, not the local copy
    assert source_files(SourceSpec(lang="vi", path=f"{url}/parts")) == [f"{url}/parts/p{i}.txt" for i in range(3)]


def test_tokenize_to_a_bucket_writes_what_it_writes_locally(local_data, bucket, llama_tokenizer, tmp_path):
    url = upload(local_data, f"{bucket}/data")
    paths.copy_file(llama_tokenizer, f"{bucket}/tok/{llama_tokenizer.name}")
    args = ["--shard_tokens", "500", "--source", "lang=en,path={}/text.txt",
            "--source", "lang=vi,path={}/parts/*.txt,format=text"]
    local_out, gcs_out = tmp_path / "tokens", f"{bucket}/tokens"
    assert cli.main(["tokenize", "--out", str(local_out), "--tokenizer", str(llama_tokenizer),
                     *(a.format(local_data) for a in args)]) == 0
    assert cli.main(["tokenize", "--out", gcs_out, "--tokenizer", f"{bucket}/tok/{llama_tokenizer.name}",
                     *(a.format(url) for a in args)]) == 0
    names = paths.list_files(paths.path(local_out))
    assert names == paths.list_files(paths.path(gcs_out))  # no temporary object left behind
    assert {"stats.json", "en/tokenized.json", "en/part-00001.array_record", "vi/tokenized.json"} <= set(names)
    for name in names:
        assert paths.path(f"{gcs_out}/{name}").read_bytes() == (local_out / name).read_bytes(), name
    meta = json.loads((local_out / "en" / TOKENS_META).read_text())
    assert sum(meta["shard_documents"].values()) == meta["documents"] == DOCS

    def tokens_config(root):
        cfg = pipeline.default_data_config()
        cfg.tokenizer, cfg.seq_len, cfg.batch_size = str(llama_tokenizer), 64, 4
        cfg.sources = [dict(lang=lang, path=f"{root}/{lang}", format="tokens") for lang in ("en", "vi")]
        return cfg

    assert_same_batches(pipeline.make_train_iterator(tokens_config(local_out)),
                        pipeline.make_train_iterator(tokens_config(gcs_out)), 8)


def test_a_half_written_language_is_never_read_as_complete(local_data, bucket, llama_tokenizer):
    """The shards of a language are uploaded as they fill; its tokenized.json (and stats.json) only at the end."""
    url = upload(local_data, f"{bucket}/data")
    paths.write_text(f"{url}/bad.jsonl", '{"text": "fine"}\n{"text": broken\n')
    specs = [SourceSpec(lang="en", path=f"{url}/text.txt"),
             SourceSpec(lang="en", path=f"{url}/bad.jsonl", format="jsonl")]
    with pytest.raises(BadInputError, match="bad.jsonl:2"):
        tokenize_sources(specs, Tokenizer.load(llama_tokenizer), f"{bucket}/out", strict=True, shard_tokens=300)
    written = paths.list_files(paths.path(f"{bucket}/out"))
    assert written and all(name.startswith("en/part-") for name in written)  # shards, but no manifest
    with pytest.raises(FileNotFoundError, match=f"no {TOKENS_META} beside it"):
        TokenShards(source_files(SourceSpec(lang="en", path=f"{bucket}/out/en", format="tokens")))


def test_each_process_downloads_only_its_shards(local_data, bucket):
    url = upload(local_data / "tokens", f"{bucket}/tokens")
    files = source_files(SourceSpec(lang="th", path=f"{url}/th", format="tokens"))
    local = TokenShards(source_files(SourceSpec(lang="th", path=str(local_data / "tokens" / "th"), format="tokens")))
    counts = json.loads((local_data / "tokens" / "th" / TOKENS_META).read_text())["shard_documents"]
    shard_of = np.repeat(np.arange(len(files)), [counts[pathlib.Path(f).name] for f in files])  # per document
    assert len(files) >= 4 and len(shard_of) == DOCS
    downloaded = []
    for index in range(2):
        remote = TokenShards(files)  # indexed from tokenized.json: nothing downloaded yet
        assert remote._source._copies.directory is None and len(remote) == len(local) == DOCS
        share = pipeline.process_share(np.arange(len(remote)), index, 2)
        for i in share:
            np.testing.assert_array_equal(remote[i], local[i])
        names = {name.split("-", 1)[1] for name in os.listdir(remote._source._copies.directory)}
        assert names == {pathlib.Path(files[s]).name for s in shard_of[share]}
        downloaded.append(names)
    assert len(downloaded[0] & downloaded[1]) <= 1  # a shard the two shares split, at most
    assert downloaded[0] | downloaded[1] == {pathlib.Path(f).name for f in files}
    meta = paths.path(f"{url}/th/{TOKENS_META}")
    older_meta = {k: v for k, v in json.loads(meta.read_text()).items() if k != "shard_documents"}
    paths.write_text(meta, json.dumps(older_meta))
    older = TokenShards(files)  # shards of an older `xfer data tokenize`: downloaded to be counted
    assert [older[i].tolist() for i in range(DOCS)] == [local[i].tolist() for i in range(DOCS)]


def test_missing_objects_are_one_line_naming_the_url(bucket, llama_tokenizer, capsys):
    cases = {f"{bucket}/missing.txt": "no file matches", f"{bucket}/nowhere/*.txt": "no file matches",
             "gs://xfer-no-such-bucket/a.txt": "bucket gs://xfer-no-such-bucket does not exist",
             f"{bucket}/deep/**/*.txt": "'\\*\\*' globs are not supported"}
    for source, message in cases.items():
        argv = ["tokenize", "--out", f"{bucket}/out", "--tokenizer", str(llama_tokenizer),
                "--source", f"lang=en,path={source}"]
        assert cli.main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and source in err, err
        assert message.replace("\\", "") in err, err
        assert paths.list_files(paths.path(f"{bucket}/out")) == []  # refused before anything was written
    cfg = data_config(f"{bucket}/empty", str(llama_tokenizer))
    with pytest.raises(FileNotFoundError, match=f"path='{bucket}/empty/text.txt': no file matches"):
        pipeline.make_train_iterator(cfg)
    with pytest.raises(FileNotFoundError, match=f"{bucket}/none/tokenizer.model"):
        Tokenizer.load(f"{bucket}/none/tokenizer.model")


def hf_tokenizer_dir(corpus_dir, root: pathlib.Path) -> pathlib.Path:
    """A small byte-level BPE tokenizer.json trained on real text, with tokenizer_config.json and the
    chat_template.jinja that transformers 5 writes beside it."""
    from tokenizers import Tokenizer as RustTokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = RustTokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((corpus_dir / "en" / "train.txt").read_text().splitlines()[:300], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    root.mkdir()
    tok.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    (root / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}</s>{% endfor %}")
    return root


def test_tokenizers_load_from_and_save_to_a_bucket(corpus_dir, llama_tokenizer, bucket, tmp_path):
    texts = ["Hello, world!", "床前明月光，疑是地上霜。", "Grüße aus München", " spaces  and\ttabs\n"]
    hf_dir = hf_tokenizer_dir(corpus_dir, tmp_path / "hf")
    sp_url = os.fspath(paths.copy_file(llama_tokenizer, f"{bucket}/sp/{llama_tokenizer.name}").parent)
    hf_url = upload(hf_dir, f"{bucket}/hf")
    cases = [(llama_tokenizer, f"{sp_url}/{llama_tokenizer.name}"), (hf_dir, hf_url),
             (hf_dir / "tokenizer.json", f"{hf_url}/tokenizer.json")]
    for local_path, url in cases:
        local, remote = Tokenizer.load(local_path), Tokenizer.load(url)
        assert remote.kind == local.kind and remote.sha256() == local.sha256()
        assert remote.encode_batch(texts, bos=True, eos=True) == local.encode_batch(texts, bos=True, eos=True)
        assert (remote.chat_template, remote.bos_id, remote.eos_id) == (local.chat_template, local.bos_id, local.eos_id)
        assert remote.source.startswith(url)
    assert Tokenizer.load(hf_url).chat_template.startswith("{% for m in messages %}")  # the .jinja beside it
    for tok in (Tokenizer.load(llama_tokenizer), Tokenizer.load(hf_dir)):
        saved = f"{bucket}/saved-{tok.kind}"
        tok.save_files(saved)
        assert paths.list_files(paths.path(saved)) == sorted(tok.files())
        again = Tokenizer.load(saved)
        assert again.sha256() == tok.sha256() and again.encode_batch(texts) == tok.encode_batch(texts)
