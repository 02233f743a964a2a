"""Hugging Face `datasets` as a data source, on datasets the tests write: save_to_disk folders (a DatasetDict and
a lone Dataset), and parquet / JSON lines / arrow files through load_dataset, in place (streaming=True) or not;
slices, bad records counted, keys refused by name; mixed by weight, split by process, resumed exactly, and
accepted by `xfer data tokenize` and `xfer vocab train`."""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
datasets = pytest.importorskip("datasets")

from source_helpers import assert_state_restores_the_stream, process_shares, tokenize_and_decode  # noqa: E402
from xfer_jax.data import pipeline  # noqa: E402
from xfer_jax.data.issues import InputIssues  # noqa: E402
from xfer_jax.data.readers import open_source  # noqa: E402
from xfer_jax.data.sources import SourceSpec  # noqa: E402
from xfer_jax.data.tokenizer import Tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def hf_data(corpus_dir, tmp_path_factory):
    """(root, docs): 60 real German lines as every kind of file datasets reads, plus two bad rows (empty, null)."""
    root = tmp_path_factory.mktemp("hf")
    datasets.config.HF_DATASETS_CACHE = str(root / "cache")  # datasets' Arrow cache stays in the test's folder
    docs = [line.strip() for line in (corpus_dir / "de" / "train.txt").read_text().splitlines() if line.strip()][:60]
    rows = {"body": docs[:30] + ["  "] + docs[30:] + [None], "n": list(range(62))}
    table = pa.table(rows)
    (root / "parquet").mkdir()
    pq.write_table(table.slice(0, 31), root / "parquet" / "a.parquet", row_group_size=7)
    pq.write_table(table.slice(31), root / "parquet" / "b.parquet")
    (root / "a.jsonl").write_text("".join(json.dumps({"body": b, "n": n}, ensure_ascii=False) + "\n"
                                          for b, n in zip(rows["body"], rows["n"])))
    with pa.ipc.new_stream(str(root / "a.arrow"), table.schema) as writer:
        writer.write_table(table)
    full = datasets.Dataset.from_dict(rows)
    datasets.DatasetDict({"train": full, "validation": datasets.Dataset.from_dict({"body": docs[:5]})}).save_to_disk(
        str(root / "saved_dict"))
    full.save_to_disk(str(root / "saved_one"))
    return root, docs


def spec(path, **kw):
    return SourceSpec(**{"lang": "de", "format": "hf_dataset", "path": str(path), "text_field": "body", **kw})


def read_all(source_spec, issues=None):
    table = open_source(source_spec, issues or InputIssues())
    return [table[i] for i in range(len(table))]


def test_every_form_reads_the_same_documents(hf_data):
    root, docs = hf_data
    cases = {
        "save_to_disk DatasetDict": spec(root / "saved_dict"),
        "save_to_disk Dataset": spec(root / "saved_one"),
        "parquet folder": spec(root / "parquet"),
        "parquet glob": spec(root / "parquet" / "*.parquet", name="parquet"),
        "json lines": spec(root / "a.jsonl"),
        "arrow": spec(root / "a.arrow"),
        "parquet in place": spec(root / "parquet", streaming=True),
        "json lines in place": spec(root / "a.jsonl", streaming=True),
    }
    for name, case in cases.items():
        issues = InputIssues()
        assert read_all(case, issues) == docs, name
        assert issues.counts == {"empty_document": 1, "missing_field": 1}, (name, issues.counts)
    assert read_all(spec(root / "saved_dict", split="validation")) == docs[:5]
    assert read_all(spec(root / "saved_dict", split="train[:10]")) == docs[:10]
    assert read_all(spec(root / "a.jsonl", split="train[50%:]")) == docs[30:]
    issues = InputIssues()
    read_all(spec(root / "saved_one"), issues)
    assert f"{root / 'saved_one'}: row 30: empty document" in issues.summary()


def test_bad_settings_are_one_line_errors_naming_the_fix(hf_data, tmp_path):
    root, _ = hf_data
    with pytest.raises(ValueError, match=r"no column \['text'\] \(columns: \['body', 'n'\]\); set text_field"):
        open_source(spec(root / "saved_one", text_field="text"), InputIssues())
    (tmp_path / "a.weird").write_text("x\n")
    with pytest.raises(ValueError, match="cannot tell the datasets builder.*set name="):
        open_source(spec(tmp_path / "a.weird"), InputIssues())
    with pytest.raises(ValueError, match="streaming=True reads parquet or JSON files in place; a save_to_disk"):
        open_source(spec(root / "saved_dict", streaming=True), InputIssues())
    with pytest.raises(ValueError, match=r"split='test'.*splits saved: \['train', 'validation'\]"):
        open_source(spec(root / "saved_dict", split="test"), InputIssues())
    with pytest.raises(ValueError, match=r"data_dir='/x' does not apply to format 'hf_dataset'"):
        SourceSpec.from_config({"lang": "de", "format": "hf_dataset", "path": "p", "data_dir": "/x"}, "data.sources[0]")
    with pytest.raises(ValueError, match=r"streaming=True does not apply to format 'parquet'"):
        SourceSpec.from_config({"lang": "de", "format": "parquet", "path": "p", "streaming": True}, "data.sources[0]")


def mixed_config(root, corpus_dir, tokenizer_path):
    cfg = pipeline.default_data_config()
    cfg.sources = [dict(lang="de", format="hf_dataset", path=str(root / "saved_dict"), text_field="body", weight=0.6),
                   dict(lang="en", path=str(corpus_dir / "en" / "train.txt"), weight=0.4)]
    cfg.tokenizer = str(tokenizer_path)
    cfg.seq_len, cfg.batch_size, cfg.packing_bins = 64, 16, 16
    return cfg


def test_mixture_weights_and_exact_resume_with_a_datasets_source(hf_data, corpus_dir, llama_tokenizer):
    root, _ = hf_data
    tokenizer = Tokenizer.load(llama_tokenizer)
    cfg = mixed_config(root, corpus_dir, llama_tokenizer)
    iterator = pipeline.make_train_iterator(cfg, tokenizer=tokenizer)
    tokens = np.zeros(2)
    for _ in range(150):
        batch = next(iterator)
        for lang in range(2):
            tokens[lang] += np.sum((batch["segment_ids"] > 0) & (batch["lang"] == lang))
    np.testing.assert_allclose(tokens / tokens.sum(), [0.6, 0.4], atol=0.02)
    assert_state_restores_the_stream(cfg, tokenizer, iterator, 4)


def test_two_processes_read_disjoint_shares(hf_data):
    root, docs = hf_data
    read = process_shares(open_source(spec(root / "parquet"), InputIssues()))
    assert [len(r) for r in read] == [30, 30] and read[0] + read[1] == docs


def test_tokenize_and_vocab_train_accept_datasets(hf_data, llama_tokenizer, tmp_path):
    from xfer_jax import cli

    root, docs = hf_data
    source = f"lang=de,format=hf_dataset,path={root / 'parquet'},text_field=body,streaming=true"
    assert tokenize_and_decode(source, "de", llama_tokenizer, tmp_path / "tok") == docs

    out = tmp_path / "de.model"
    assert cli.main(["vocab", "train", "--format", "hf_dataset", "--source", str(root / "saved_dict"),
                     "--text_field", "body", "--out", str(out), "--vocab_size", "400"]) == 0
    assert Tokenizer.load(out).vocab_size == 400


def test_files_in_a_bucket(hf_data, bucket):
    """Parquet files on gs:// (a real GCS emulator), through load_dataset and in place."""
    from xfer_jax import paths

    root, docs = hf_data
    paths.upload_dir(root / "parquet", paths.path(f"{bucket}/de"))
    assert read_all(spec(f"{bucket}/de")) == docs
    assert read_all(spec(f"{bucket}/de/*.parquet", streaming=True)) == docs
