"""`xfer data tokenize`: pre-tokenise text sources into ArrayRecord shards, with per-language statistics.

For large runs, tokenising once beats tokenising on every epoch and in every process. Output layout:
  OUT/{lang}/part-00000.array_record ...   one record per document: its token ids (uint16 if the vocabulary
                                          fits, else uint32), BOS/EOS included as configured
  OUT/{lang}/tokenized.json                tokenizer sha256 (Tokenizer.sha256: of the .model, or of the
                                          canonical tokenizer.json + config) and kind, dtype, bos, eos, and
                                          this language's stats, and the records of each shard
                                          (shard_documents: a bucket's shards are indexed without opening them)
  OUT/stats.json                           per language: documents, characters, tokens, tokens_per_character;
                                          and the bad-input counts
A pipeline source {lang, path: OUT/{lang}, format: 'tokens'} reads the shards directly.

OUT may be a bucket (gs://...). Each shard is written under a hidden temporary name (on a bucket: on local
disk, one shard at a time, then uploaded atomically) and appears under its name only when complete; a
language's tokenized.json is written after its shards and stats.json after everything, so a reader never takes
a half-written language for a complete one. Every check (formats, sources, an --out without shards) runs
before the first write.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile

import numpy as np
import tqdm
from array_record.python import array_record_module

from xfer_jax import paths
from xfer_jax.data.issues import InputIssues
from xfer_jax.data.readers import open_source
from xfer_jax.data.records import document_characters
from xfer_jax.data.shards import TOKENS_META
from xfer_jax.data.sources import TEXT_FORMATS, SourceSpec, source_files
from xfer_jax.data.tokenizer import Tokenizer

ENCODE_BATCH = 1024  # documents handed to sentencepiece at once


class ShardWriter:
    """Writes token arrays into numbered ArrayRecord files of about `shard_tokens` tokens each; `documents`
    counts the records of each finished shard (recorded in TOKENS_META, so readers of a bucket need not open
    a shard to index it)."""

    def __init__(self, directory: paths.Path, dtype: np.dtype, shard_tokens: int, scratch: str):
        self.directory, self.dtype, self.shard_tokens, self.scratch = directory, dtype, shard_tokens, scratch
        self.shards, self._writer, self._tokens_in_shard, self._records = 0, None, 0, 0
        self.documents: dict[str, int] = {}

    def _name(self) -> str:
        return f"part-{self.shards - 1:05d}.array_record"

    def write(self, ids) -> None:
        if self._writer is None:
            self.shards += 1
            self._local = os.path.join(self.scratch, f".{self._name()}.tmp")
            self._writer = array_record_module.ArrayRecordWriter(self._local, "group_size:1")
        self._writer.write(np.asarray(ids, self.dtype).tobytes())
        self._tokens_in_shard += len(ids)
        self._records += 1
        if self._tokens_in_shard >= self.shard_tokens:
            self.close()

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        target = self.directory / self._name()
        if paths.is_url(target):
            paths.copy_file(self._local, target)
            os.remove(self._local)
        else:
            os.replace(self._local, target)
        self.documents[self._name()] = self._records
        self._writer, self._tokens_in_shard, self._records = None, 0, 0


def _check_output(specs: list[SourceSpec], out_dir: paths.Path) -> None:
    """Everything that can be refused, before anything is written."""
    for spec in specs:
        if spec.format not in TEXT_FORMATS:
            raise ValueError(f"source lang={spec.lang!r} format={spec.format!r}: only {TEXT_FORMATS} can be "
                             "pre-tokenised (instruction data is tokenised on the fly, with its loss masks)")
        if spec.format == "tfds":
            from xfer_jax.data.tfds_source import check_prepared

            check_prepared(spec)  # a dataset not prepared is refused now, not after other languages were written
        else:
            source_files(spec)  # a missing source is refused now, not after other languages were written
    paths.check_reachable(out_dir, "--out", must_exist=False)
    if out_dir.is_file():
        raise FileExistsError(f"--out {out_dir} is a file; choose a directory path")
    for lang in dict.fromkeys(spec.lang for spec in specs):
        if any((out_dir / lang).glob("*.array_record")):
            raise FileExistsError(f"{out_dir / lang} already holds shards: choose an empty --out")


def tokenize_sources(
    specs: list[SourceSpec],
    tokenizer: Tokenizer,
    out_dir: str | pathlib.Path,
    *,
    bos: bool = True,
    eos: bool = True,
    strict: bool = False,
    shard_tokens: int = 50_000_000,
    threads: int = 1,
) -> dict:
    """Tokenises every source into OUT/{lang}/ and returns the stats written to OUT/stats.json."""
    out_dir = paths.path(out_dir, "--out")
    _check_output(specs, out_dir)
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    issues = InputIssues(strict=strict)
    stats = {}
    for lang in dict.fromkeys(spec.lang for spec in specs):
        lang_dir = out_dir / lang
        if not paths.is_url(lang_dir):
            lang_dir.mkdir(parents=True, exist_ok=True)  # shards are written beside their names: renames are atomic
        scratch_dir = (tempfile.TemporaryDirectory(prefix="xfer-shards-") if paths.is_url(lang_dir)
                       else contextlib.nullcontext(os.fspath(lang_dir)))
        with scratch_dir as scratch:
            writer = ShardWriter(lang_dir, dtype, shard_tokens, scratch)
            counts = {"documents": 0, "characters": 0, "tokens": 0}
            for spec in (s for s in specs if s.lang == lang):
                table = open_source(spec, issues)
                progress = tqdm.tqdm(total=len(table), desc=f"{lang} {spec.label}", unit="doc")
                for start in range(0, len(table), ENCODE_BATCH):
                    docs = [table[i] for i in range(start, min(start + ENCODE_BATCH, len(table)))]
                    for ids in tokenizer.encode_batch(docs, bos=bos, eos=eos, num_threads=threads):
                        writer.write(ids)
                        counts["tokens"] += len(ids)
                    counts["documents"] += len(docs)
                    counts["characters"] += sum(document_characters(doc) for doc in docs)
                    progress.update(len(docs))
                progress.close()
            writer.close()
        counts["tokens_per_character"] = counts["tokens"] / max(1, counts["characters"])
        counts["shards"] = writer.shards
        stats[lang] = counts
        meta = {"tokenizer_sha256": tokenizer.sha256(), "tokenizer_kind": tokenizer.kind,
                "vocab_size": tokenizer.vocab_size, "dtype": dtype.name, "bos": bos, "eos": eos, **counts,
                "shard_documents": writer.documents}
        paths.write_text(lang_dir / TOKENS_META, json.dumps(meta, indent=2))
    issues.warn()
    result = {"languages": stats, "skipped": issues.metrics(), "skipped_examples": dict(issues.examples)}
    paths.write_text(out_dir / "stats.json", json.dumps(result, indent=2, ensure_ascii=False))
    return result
