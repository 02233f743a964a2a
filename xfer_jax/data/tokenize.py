"""`xfer data tokenize`: pre-tokenise text sources into ArrayRecord shards, with per-language statistics.

For large runs, tokenising once beats tokenising on every epoch and in every process. Output layout:
  OUT/{lang}/part-00000.array_record ...   one record per document: its token ids (uint16 if the vocabulary
                                          fits, else uint32), BOS/EOS included as configured
  OUT/{lang}/tokenized.json                tokenizer sha256 (Tokenizer.sha256: of the .model, or of the
                                          canonical tokenizer.json + config) and kind, dtype, bos, eos, and
                                          this language's stats
  OUT/stats.json                           per language: documents, characters, tokens, tokens_per_character;
                                          and the bad-input counts
A pipeline source {lang, path: OUT/{lang}, format: 'tokens'} reads the shards directly.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import tqdm
from array_record.python import array_record_module

from xfer_jax.data.issues import InputIssues
from xfer_jax.data.readers import open_source
from xfer_jax.data.records import document_characters
from xfer_jax.data.shards import TOKENS_META
from xfer_jax.data.sources import TEXT_FORMATS, SourceSpec
from xfer_jax.data.tokenizer import Tokenizer

ENCODE_BATCH = 1024  # documents handed to sentencepiece at once


class ShardWriter:
    """Writes token arrays into numbered ArrayRecord files of about `shard_tokens` tokens each."""

    def __init__(self, directory: pathlib.Path, dtype: np.dtype, shard_tokens: int):
        self.directory, self.dtype, self.shard_tokens = directory, dtype, shard_tokens
        self.shards, self._writer, self._tokens_in_shard = 0, None, 0

    def write(self, ids) -> None:
        if self._writer is None:
            path = self.directory / f"part-{self.shards:05d}.array_record"
            self._writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
            self.shards += 1
        self._writer.write(np.asarray(ids, self.dtype).tobytes())
        self._tokens_in_shard += len(ids)
        if self._tokens_in_shard >= self.shard_tokens:
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer, self._tokens_in_shard = None, 0


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
    out_dir = pathlib.Path(out_dir)
    for spec in specs:
        if spec.format not in TEXT_FORMATS:
            raise ValueError(f"source lang={spec.lang!r} format={spec.format!r}: only {TEXT_FORMATS} can be "
                             "pre-tokenised (instruction data is tokenised on the fly, with its loss masks)")
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    issues = InputIssues(strict=strict)
    stats = {}
    for lang in dict.fromkeys(spec.lang for spec in specs):
        lang_dir = out_dir / lang
        lang_dir.mkdir(parents=True, exist_ok=True)
        if any(lang_dir.glob("*.array_record")):
            raise FileExistsError(f"{lang_dir} already holds shards: choose an empty --out")
        writer = ShardWriter(lang_dir, dtype, shard_tokens)
        counts = {"documents": 0, "characters": 0, "tokens": 0}
        for spec in (s for s in specs if s.lang == lang):
            table = open_source(spec, issues)
            progress = tqdm.tqdm(total=len(table), desc=f"{lang} {spec.path}", unit="doc")
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
                "vocab_size": tokenizer.vocab_size, "dtype": dtype.name, "bos": bos, "eos": eos, **counts}
        (lang_dir / TOKENS_META).write_text(json.dumps(meta, indent=2))
    issues.warn()
    result = {"languages": stats, "skipped": issues.metrics(), "skipped_examples": dict(issues.examples)}
    (out_dir / "stats.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return result
