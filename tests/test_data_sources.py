"""Every source format reads the same real documents; bad input is skipped and counted (file and line named),
or stops the run in strict mode."""
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from array_record.python import array_record_module

from xfer_jax.data import pipeline
from xfer_jax.data.issues import BadInputError, InputIssues
from xfer_jax.data.readers import open_source
from xfer_jax.data.sources import SourceSpec


@pytest.fixture(scope="module")
def docs(corpus_dir):
    """120 real documents from three languages."""
    out = []
    for lang in ("en", "zh", "de"):
        out += [line.strip() for line in (corpus_dir / lang / "train.txt").read_text().splitlines()[:40]]
    return out


def read_all(spec, issues=None):
    table = open_source(spec, issues or InputIssues())
    return [table[i] for i in range(len(table))]


def write_array_record(path, payloads):
    writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
    for payload in payloads:
        writer.write(payload)
    writer.close()


def test_every_format_reads_the_same_documents(tmp_path, docs):
    (tmp_path / "lines.txt").write_text("\n".join(docs) + "\n")
    (tmp_path / "blocks.txt").write_text("\n\n\n".join(doc.replace(". ", ".\n") for doc in docs))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": d, "n": i}) + "\n" for i, d in enumerate(docs)))
    (tmp_path / "a.json").write_text(json.dumps([{"body": d} for d in docs], ensure_ascii=False, indent=1))
    pq.write_table(pa.table({"body": docs, "n": list(range(len(docs)))}), tmp_path / "a.parquet", row_group_size=17)
    write_array_record(tmp_path / "raw.array_record", [d.encode() for d in docs])
    write_array_record(tmp_path / "json.array_record", [json.dumps({"body": d}).encode() for d in docs])
    cases = {
        "text": SourceSpec(lang="x", path=str(tmp_path / "lines.txt")),
        "jsonl": SourceSpec(lang="x", path=str(tmp_path / "a.jsonl"), format="jsonl", text_field="body"),
        "json array": SourceSpec(lang="x", path=str(tmp_path / "a.json"), format="jsonl", text_field="body"),
        "parquet": SourceSpec(lang="x", path=str(tmp_path / "a.parquet"), format="parquet", text_field="body"),
        "array_record": SourceSpec(lang="x", path=str(tmp_path / "raw.array_record"), format="array_record",
                                   text_field=""),
        "array_record json": SourceSpec(lang="x", path=str(tmp_path / "json.array_record"),
                                        format="array_record", text_field="body"),
    }
    for name, spec in cases.items():
        assert read_all(spec) == docs, name
    blocks = read_all(SourceSpec(lang="x", path=str(tmp_path / "blocks.txt"), doc_split="blank_line"))
    assert blocks == [doc.replace(". ", ".\n") for doc in docs]
    parquet = open_source(cases["parquet"], InputIssues())
    order = np.random.default_rng(0).permutation(len(docs))
    assert [parquet[i] for i in order] == [docs[i] for i in order]  # random access across row groups


def test_globs_and_directories(tmp_path, docs):
    for i in range(3):
        (tmp_path / "shards" / f"part{i}").mkdir(parents=True)
        (tmp_path / "shards" / f"part{i}" / "docs.txt").write_text("\n".join(docs[i * 40:(i + 1) * 40]))
    (tmp_path / "shards" / ".hidden").write_text("not a document\n")
    by_dir = read_all(SourceSpec(lang="x", path=str(tmp_path / "shards")))
    by_glob = read_all(SourceSpec(lang="x", path=str(tmp_path / "shards" / "**" / "*.txt")))
    assert by_dir == by_glob == docs
    with pytest.raises(FileNotFoundError, match="no file matches"):
        read_all(SourceSpec(lang="x", path=str(tmp_path / "missing" / "*.txt")))


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"data.sources\[0\]: unknown key\(s\) \['wieght'\]"):
        SourceSpec.from_config({"lang": "zh", "path": "x", "wieght": 1}, "data.sources[0]")
    with pytest.raises(ValueError, match="format='csv'"):
        SourceSpec.from_config({"lang": "zh", "path": "x", "format": "csv"}, "data.sources[0]")
    with pytest.raises(ValueError, match="missing 'lang'"):
        SourceSpec.from_config({"path": "x"}, "data.sources[0]")


@pytest.fixture
def bad_dir(tmp_path, docs):
    """Real documents mixed with every kind of bad input; returns (dir, good docs in order, bad lines)."""
    lines = [json.dumps({"text": d}).encode() for d in docs[:6]]
    lines.insert(1, b'{"text": "unterminated')  # line 2: malformed JSON
    lines.insert(3, json.dumps({"body": docs[0]}).encode())  # line 4: missing field
    lines.insert(5, json.dumps({"text": "   "}).encode())  # line 6: empty document
    lines.insert(7, b'{"text": "caf\xe9 latin-1"}')  # line 8: invalid UTF-8
    lines.insert(9, json.dumps({"text": 42}).encode())  # line 10: not text
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "b.jsonl").write_bytes(b"\n".join(json.dumps({"text": d}).encode() for d in docs[6:9]))
    (tmp_path / "c.jsonl").write_bytes(b"PAR1 this is not JSON at all\n")  # line 1: malformed
    return tmp_path, docs[:9]


def test_bad_input_is_skipped_counted_and_located(bad_dir):
    directory, good = bad_dir
    issues = InputIssues()
    assert read_all(SourceSpec(lang="x", path=str(directory / "*.jsonl"), format="jsonl"), issues) == good
    assert issues.counts == {"malformed_json": 2, "missing_field": 2, "empty_document": 1, "invalid_utf8": 1}
    summary = issues.summary()
    for where in ("a.jsonl:2: malformed json", "a.jsonl:4: missing field", "a.jsonl:6: empty document",
                  "a.jsonl:8: invalid utf8", "a.jsonl:10: missing field", "c.jsonl:1: malformed json"):
        assert where in summary, where


def test_strict_mode_stops_at_the_first_bad_record(bad_dir):
    directory, _ = bad_dir
    spec = SourceSpec(lang="x", path=str(directory / "*.jsonl"), format="jsonl")
    with pytest.raises(BadInputError, match=re.escape(f"{directory / 'a.jsonl'}:2: malformed json")):
        read_all(spec, InputIssues(strict=True))


def test_unreadable_and_corrupt_files_are_counted(tmp_path, docs):
    (tmp_path / "good.txt").write_text("\n".join(docs[:5]) + "\n\n" + docs[5] + "\n")  # line 6: empty
    (tmp_path / "latin1.txt").write_bytes("première ligne\n".encode() + "deuxième".encode("latin-1") + b"\n")
    (tmp_path / "locked.txt").write_text("secret\n")
    os.chmod(tmp_path / "locked.txt", 0)
    locked = not os.access(tmp_path / "locked.txt", os.R_OK)  # root reads anything
    issues = InputIssues()
    assert read_all(SourceSpec(lang="x", path=str(tmp_path / "*.txt")), issues) == docs[:6] + ["première ligne"] + (
        [] if locked else ["secret"])
    assert issues.counts["empty_document"] == 1 and issues.counts["invalid_utf8"] == 1
    assert issues.counts["unreadable_file"] == int(locked)
    assert "latin1.txt:2: invalid utf8" in issues.summary()

    (tmp_path / "broken.parquet").write_bytes(b"PAR1 truncated")
    (tmp_path / "broken.array_record").write_bytes(b"not an array record file")
    issues = InputIssues()
    assert read_all(SourceSpec(lang="x", path=str(tmp_path / "broken.parquet"), format="parquet"), issues) == []
    assert read_all(SourceSpec(lang="x", path=str(tmp_path / "broken.array_record"), format="array_record"),
                    issues) == []
    assert issues.counts["unreadable_file"] == 2 and "broken.parquet" in issues.summary()


def test_pipeline_metrics_report_the_counts(bad_dir, llama_tokenizer):
    directory, good = bad_dir
    cfg = pipeline.default_data_config()
    cfg.sources = [dict(lang="x", path=str(directory / "*.jsonl"), format="jsonl")]
    cfg.tokenizer = str(llama_tokenizer)
    cfg.seq_len, cfg.batch_size = 32, 2
    metrics = pipeline.make_train_iterator(cfg).metrics()
    assert metrics["data/skipped/total"] == 6 and metrics["data/skipped/malformed_json"] == 2
    assert metrics["data/documents/x"] == len(good)
    cfg.strict = True
    with pytest.raises(BadInputError, match="a.jsonl:2"):
        pipeline.make_train_iterator(cfg)

# TFDS: tests/test_tfds.py; Hugging Face datasets: tests/test_hf_datasets.py (each builds its dataset once).
