"""TFDS as a data source, without TensorFlow: a dataset the tests build themselves (a GeneratorBasedBuilder
writing ArrayRecord), read by index through tfds.data_source, mixed by weight, split by process, resumed
exactly, pre-tokenised and trained on by the vocabulary trainer; and the one-line errors for a dataset that is
not prepared or is stored as TFRecord."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from source_helpers import assert_state_restores_the_stream, process_shares, tokenize_and_decode  # noqa: E402
from xfer_jax.data import pipeline, tfds_source  # noqa: E402
from xfer_jax.data.issues import InputIssues  # noqa: E402
from xfer_jax.data.readers import open_source  # noqa: E402
from xfer_jax.data.sources import SourceSpec  # noqa: E402
from xfer_jax.data.tokenizer import Tokenizer  # noqa: E402

NAME = "xfer_test_corpus"


@pytest.fixture(scope="session")
def corpus(corpus_dir, tmp_path_factory):
    """(data_dir, {split: documents}): real Chinese lines in two splits, text + language fields, ArrayRecord;
    the train split also holds one empty record (counted as bad input when read)."""
    lines = [line.strip() for line in (corpus_dir / "zh" / "train.txt").read_text().splitlines() if line.strip()]
    splits = {"train": lines[:80], "validation": lines[80:100]}

    class XferTestCorpus(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "language": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(splits["train"] + [" "]),
                    "validation": self._generate_examples(splits["validation"])}

        def _generate_examples(self, docs):
            for i, text in enumerate(docs):
                yield i, {"text": text, "language": "zh"}

    data_dir = tmp_path_factory.mktemp("tfds")
    XferTestCorpus(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir, splits


def spec(data_dir, **kw):
    return SourceSpec(**{"lang": "zh", "format": "tfds", "name": NAME, "data_dir": str(data_dir), **kw})


def read_all(source_spec, issues=None):
    table = open_source(source_spec, issues or InputIssues())
    return [table[i] for i in range(len(table))]


def test_splits_and_slices_read_by_index(corpus):
    data_dir, splits = corpus
    issues = InputIssues()
    train = read_all(spec(data_dir), issues)
    assert sorted(train) == sorted(splits["train"])  # TFDS shuffles records as it writes them
    assert issues.counts == {"empty_document": 1} and f"tfds:{NAME}[train] record" in issues.summary()
    assert sorted(read_all(spec(data_dir, split="validation"))) == sorted(splits["validation"])
    half = read_all(spec(data_dir, split="train[:50%]"))
    assert len(half) in (40, 41) and set(half) <= set(splits["train"])
    both = read_all(spec(data_dir, split="train+validation"))
    assert sorted(both) == sorted(splits["train"] + splits["validation"])


def test_config_keys_that_do_not_apply_are_refused_by_name():
    with pytest.raises(ValueError, match=r"data.sources\[0\]: format 'tfds' names its dataset with 'name'"):
        SourceSpec.from_config({"lang": "zh", "format": "tfds", "path": NAME}, "data.sources[0]")
    with pytest.raises(ValueError, match=r"data_dir='/x' does not apply to format 'text'"):
        SourceSpec.from_config({"lang": "zh", "path": "a.txt", "data_dir": "/x"}, "data.sources[0]")
    with pytest.raises(ValueError, match=r"streaming=True does not apply to format 'tfds'"):
        SourceSpec.from_config({"lang": "zh", "format": "tfds", "name": NAME, "streaming": True}, "s")
    with pytest.raises(ValueError, match=r"doc_split='blank_line' does not apply to format 'tfds'"):
        SourceSpec.from_config({"lang": "zh", "format": "tfds", "name": NAME, "doc_split": "blank_line"}, "s")
    with pytest.raises(ValueError, match="unknown key"):
        SourceSpec.from_config({"lang": "zh", "format": "tfds", "name": NAME, "tfds_split": "train"}, "s")


def test_a_dataset_not_prepared_names_it_the_directory_and_the_command(tmp_path, llama_tokenizer, capsys):
    from xfer_jax import cli

    out = tmp_path.parent / f"{tmp_path.name}_tok"
    assert cli.main(["data", "tokenize", "--out", str(out), "--tokenizer", str(llama_tokenizer), "--source",
                     f"lang=zh,format=tfds,name={NAME},data_dir={tmp_path}"]) == 1
    assert "is not prepared in" in capsys.readouterr().err and not out.exists()  # refused before any write
    for name in (NAME, "mnist"):  # a builder of one's own, a catalogue dataset: neither is downloaded here
        with pytest.raises(FileNotFoundError) as e:
            open_source(spec(tmp_path, name=name), InputIssues())
        message = str(e.value)
        assert "\n" not in message and f"{name!r} is not prepared in {tmp_path}" in message
        assert f"tfds build {name} --data_dir {tmp_path} --file_format array_record" in message
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or prepared


def test_an_unknown_split_names_the_splits(corpus):
    data_dir, _ = corpus
    with pytest.raises(ValueError, match=r"split='train\[:10%\]\+test' names no split \['test'\]; its splits: "
                                         r"\['train', 'validation'\]"):
        open_source(spec(data_dir, split="train[:10%]+test"), InputIssues())


def test_a_tfrecord_dataset_asks_for_array_record_not_tensorflow(corpus, tmp_path):
    """The same dataset described as TFRecord (what a build without file_format writes): no TensorFlow import."""
    data_dir, _ = corpus
    shutil.copytree(data_dir / NAME, tmp_path / NAME)
    version = tmp_path / NAME / "1.0.0"
    info = json.loads((version / "dataset_info.json").read_text())
    info["fileFormat"] = "tfrecord"
    (version / "dataset_info.json").write_text(json.dumps(info))
    for shard in version.glob("*.array_record-*"):
        shard.rename(str(shard).replace(".array_record-", ".tfrecord-"))
    with pytest.raises(ValueError) as e:
        open_source(spec(tmp_path), InputIssues())
    message = str(e.value)
    assert "\n" not in message and "stored as tfrecord" in message and "file_format=array_record" in message
    assert "tensorflow" not in sys.modules


def mixed_config(corpus, corpus_dir, tokenizer_path, weights=(0.7, 0.3), **overrides):
    data_dir, _ = corpus
    cfg = pipeline.default_data_config()
    cfg.sources = [dict(lang="zh", format="tfds", name=NAME, data_dir=str(data_dir), weight=weights[0]),
                   dict(lang="en", path=str(corpus_dir / "en" / "train.txt"), weight=weights[1])]
    cfg.tokenizer = str(tokenizer_path)
    cfg.seq_len, cfg.batch_size, cfg.packing_bins = 64, 16, 16
    cfg.update(overrides)
    return cfg


def test_mixture_with_a_tfds_source_holds_the_weights(corpus, corpus_dir, llama_tokenizer):
    cfg = mixed_config(corpus, corpus_dir, llama_tokenizer)
    iterator = pipeline.make_train_iterator(cfg, tokenizer=Tokenizer.load(llama_tokenizer))
    tokens = np.zeros(2)
    for _ in range(200):
        batch = next(iterator)
        for lang in range(2):
            tokens[lang] += np.sum((batch["segment_ids"] > 0) & (batch["lang"] == lang))
    np.testing.assert_allclose(tokens / tokens.sum(), [0.7, 0.3], atol=0.02)
    assert iterator.metrics()["data/documents/zh"] == 80 and iterator.metrics()["data/skipped/empty_document"] == 1
    data_dir, splits = corpus
    cfg.heldout = [dict(lang="zh", format="tfds", name=NAME, data_dir=str(data_dir), split="validation")]
    heldout = pipeline.make_eval_batches(cfg, tokenizer=Tokenizer.load(llama_tokenizer))["zh"]
    assert heldout.documents == 20 and heldout.characters == sum(map(len, splits["validation"]))


def test_state_restores_the_exact_stream_with_a_tfds_source(corpus, corpus_dir, llama_tokenizer):
    tokenizer = Tokenizer.load(llama_tokenizer)
    cfg = mixed_config(corpus, corpus_dir, llama_tokenizer)
    iterator = pipeline.make_train_iterator(cfg, tokenizer=tokenizer)
    for _ in range(30):  # past the 80 TFDS documents: the next epoch's order is restored too
        next(iterator)
    assert_state_restores_the_stream(cfg, tokenizer, iterator, 5)


def test_two_processes_read_disjoint_shares(corpus):
    data_dir, splits = corpus
    docs = process_shares(open_source(spec(data_dir), InputIssues()))
    assert [len(d) for d in docs] == [40, 40] and not set(docs[0]) & set(docs[1])
    assert sorted(docs[0] + docs[1]) == sorted(splits["train"])


def test_tokenize_and_vocab_train_accept_tfds(corpus, llama_tokenizer, tmp_path):
    from xfer_jax import cli

    data_dir, splits = corpus
    source = f"lang=zh,format=tfds,name={NAME},data_dir={data_dir},split=validation"
    decoded = tokenize_and_decode(source, "zh", llama_tokenizer, tmp_path / "tok")
    assert sorted(decoded) == sorted(splits["validation"])

    out = tmp_path / "zh.model"
    assert cli.main(["vocab", "train", "--format", "tfds", "--source", NAME, "--data_dir", str(data_dir),
                     "--split", "train", "--out", str(out), "--vocab_size", "2000"]) == 0
    trained = Tokenizer.load(out)
    assert trained.vocab_size == 2000 and trained.decode(trained.encode(splits["train"][0])) == splits["train"][0]


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, open(run_dir / "metrics.jsonl"))}


def _train_cmd(config_path, tokenizer, out_dir, steps):
    return [sys.executable, "-m", "xfer_jax.cli", "train", "--config", config_path,
            f"--config.data.tokenizer={tokenizer}", f"--config.train.out_dir={out_dir}",
            f"--config.train.steps={steps}", "--config.train.log_every=1", "--config.train.save_every=1000",
            "--config.train.progress_bar=False", "--config.train.eval_every=1000"]


@pytest.mark.slow
def test_sigterm_then_resume_is_bitwise_identical_with_a_tfds_source(corpus, pretrain_config, tmp_path):
    """tests/test_train.py's resume test with the TFDS source in the mix, read in fresh processes that never
    saw the builder's code: SIGTERM half-way, resume, and every step's loss equals an uninterrupted run's."""
    data_dir, _ = corpus
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sources = [dict(lang="zh", format="tfds", name=NAME, data_dir=str(data_dir), weight=0.7),
               dict(pretrain_config.data.sources[1])]
    config = tmp_path / "tfds_pretrain.py"
    config.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('pretrain', {repo + '/configs/pretrain.py'!r})\n"
        "base = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(base)\n\n\n"
        "def get_config():\n    c = base.get_config()\n"
        f"    c.data.sources = {sources!r}\n    c.data.heldout = {[dict(h) for h in pretrain_config.data.heldout]!r}\n"
        "    return c\n")
    steps, tokenizer = 10, pretrain_config.data.tokenizer
    run = dict(cwd=repo, capture_output=True, text=True)
    straight = subprocess.run(_train_cmd(str(config), tokenizer, tmp_path / "straight", steps), **run)
    assert straight.returncode == 0, straight.stderr[-3000:]

    cmd = _train_cmd(str(config), tokenizer, tmp_path / "resumed", steps)
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log, deadline = tmp_path / "resumed" / "metrics.jsonl", time.time() + 240
    while (not log.exists() or len(log.read_text().splitlines()) < steps // 2) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM and "checkpoint saved" in err.decode(), err.decode()[-3000:]
    assert max(_losses(tmp_path / "resumed")) < steps
    out = subprocess.run(cmd, **run)
    assert out.returncode == 0 and "resumed from" in out.stdout, out.stderr[-3000:]
    a, b = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    assert [a[s] for s in a] == [b[s] for s in a]  # bitwise: same floats at every step, data order included


def test_a_bucket_data_dir_is_read_from_a_local_copy(corpus, bucket):
    """data_dir on gs:// (a real GCS emulator): the split's shards and the metadata are copied once, then read."""
    from xfer_jax import paths

    data_dir, splits = corpus
    paths.upload_dir(data_dir / NAME, paths.path(f"{bucket}/tfds/{NAME}"))
    assert sorted(read_all(spec(f"{bucket}/tfds", split="validation"))) == sorted(splits["validation"])
    copied = os.listdir(tfds_source._FOLDERS[-1].path)
    assert "dataset_info.json" in copied and not any("-train." in name for name in copied)
