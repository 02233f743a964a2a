"""Train a sentencepiece model on target-language text: the vocabulary `xfer vocab merge` appends to a base.

Text comes through the project's data readers (plain text, JSON lines, Parquet, ArrayRecord, TFDS; see
xfer_jax/data/sources.py), so the same source entries that feed training feed the tokenizer. Sentencepiece
learns from sentences, not documents: it drops any input longer than `max_sentence_length` bytes, and our
corpora hold documents of hundreds of kilobytes on one line. Documents are therefore cut at sentence ends
(and, failing that, at the byte limit) before they reach the trainer.

The defaults copy how LLaMA's tokenizer sees text (identity normalisation, digits split, whitespace kept,
byte fallback): pieces learnt under another normalisation (e.g. sentencepiece's default NFKC) can contain
characters the base never produces, and such pieces are dead weight once merged into the base.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np
import sentencepiece as spm

from xfer_jax import paths
from xfer_jax.data.issues import InputIssues
from xfer_jax.data.readers import open_source
from xfer_jax.data.sources import TEXT_FORMATS, SourceSpec

MODEL_TYPES = ("bpe", "unigram")
SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=[.:])\s+")


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    vocab_size: int = 20000  # the study's Chinese model (PAPER.md); LLaMA appended 17,953 of them
    model_type: str = "bpe"  # bpe: pieces stay reachable by the base's BPE merges (see docs/vocab.md)
    character_coverage: float = 0.9995  # sentencepiece's advice for CJK; lower it for small vocabularies
    byte_fallback: bool = True
    normalization: str = "identity"  # LLaMA's; "nmt_nfkc" is sentencepiece's default
    split_digits: bool = True
    max_sentences: int = 2_000_000  # sentences sampled for training (input_sentence_size)
    max_sentence_bytes: int = 4192  # sentencepiece's max_sentence_length; longer sentences are cut
    num_threads: int = 2
    seed: int = 0

    def check(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type={self.model_type!r}; choose one of {MODEL_TYPES}")
        if self.vocab_size < 10:
            raise ValueError(f"vocab_size={self.vocab_size} is too small to hold even the special pieces")
        if not 0.98 <= self.character_coverage <= 1:
            raise ValueError(f"character_coverage={self.character_coverage} must be in [0.98, 1] (sentencepiece's range)")


def sentences(doc: str, max_bytes: int) -> Iterator[str]:
    """The sentences of a document, none longer than `max_bytes` UTF-8 bytes (cut on a character boundary)."""
    for sentence in SENTENCE_END.split(doc):
        sentence = sentence.strip()
        while sentence:
            head = sentence.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
            yield head
            sentence = sentence[len(head):].lstrip()


def documents(specs: Sequence[SourceSpec], issues: InputIssues, seed: int = 0) -> Iterator[str]:
    """Every document of the sources (a fixed random sample of `max_documents` where a source sets it)."""
    for spec in specs:
        if spec.format not in TEXT_FORMATS:
            raise ValueError(f"source {spec.label!r}: format {spec.format!r} holds no plain text; "
                             f"a tokenizer trains on one of {TEXT_FORMATS}")
        table = open_source(spec, issues)
        indices = np.arange(len(table))
        if spec.max_documents and spec.max_documents < len(indices):
            indices = np.sort(np.random.default_rng(seed).choice(indices, spec.max_documents, replace=False))
        for i in indices:
            yield table[int(i)]


def train_tokenizer(specs: Sequence[SourceSpec], out: str | os.PathLike, options: TrainOptions = TrainOptions(),
                    *, issues: InputIssues | None = None) -> paths.Path:
    """Train on the sources and write OUT (a .model file; sentencepiece's .vocab listing beside it).

    sentencepiece writes only to local files, so it trains into a temporary folder and the two files are then
    copied to OUT (a local path or a gs:// URL) atomically, the .model last: OUT never holds half a model."""
    options.check()
    out = paths.path(out, "--out")
    if out.suffix != ".model":
        raise ValueError(f"--out {out}: a sentencepiece model file ends in .model")
    with tempfile.TemporaryDirectory(prefix="xfer-spm-") as tmp:
        local = pathlib.Path(tmp) / out.name
        _train(specs, local, options, issues or InputIssues(), out)
        for suffix in (".vocab", ".model"):
            paths.copy_file(local.with_suffix(suffix), out.with_suffix(suffix))
    return out


def _train(specs, out: pathlib.Path, options: TrainOptions, issues: InputIssues, shown) -> None:
    """sentencepiece's trainer writing OUT (local) and its .vocab; errors name `shown` (the user's --out)."""
    stream = (s for doc in documents(specs, issues, options.seed) for s in sentences(doc, options.max_sentence_bytes))
    spm.set_random_generator_seed(options.seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=stream, model_prefix=str(out.with_suffix("")),
            vocab_size=options.vocab_size, model_type=options.model_type,
            character_coverage=options.character_coverage, byte_fallback=options.byte_fallback,
            normalization_rule_name=options.normalization, split_digits=options.split_digits,
            remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
            input_sentence_size=options.max_sentences, shuffle_input_sentence=True,
            max_sentence_length=options.max_sentence_bytes, num_threads=options.num_threads, minloglevel=2,
        )
    except RuntimeError as e:
        hint = ""
        if "required_chars" in str(e):
            hint = " (lower character_coverage or raise vocab_size: every covered character needs a piece)"
        elif "Vocabulary size is too high" in str(e):
            hint = " (the text is too small for this vocabulary: lower vocab_size or add text)"
        raise ValueError(f"sentencepiece could not train {shown}: {e}{hint}") from e
    issues.warn()
