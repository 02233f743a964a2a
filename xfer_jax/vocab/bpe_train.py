"""Train a target-language byte-level BPE (a tokenizer.json) that sees text exactly as a base tokenizer.json does.

`xfer vocab train --kind hf --base tokenizer.json`: the base's normaliser, pre-tokeniser and decoder are copied
into an empty BPE model, which the `tokenizers` library trains over the 256-byte alphabet (no special tokens).
Its tokens therefore live inside the base's pre-tokens and are spelt in the base's byte alphabet, so
`xfer vocab merge` can append them, with the merges that build them, to the base (vocab/bpe_merge.py).
Documents go to the trainer whole: the pre-tokeniser splits them, so no sentence cutting is needed.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Sequence

from xfer_jax import paths
from xfer_jax.data.issues import InputIssues
from xfer_jax.data.sources import SourceSpec
from xfer_jax.vocab.bytelevel import byte_level_problem, load_json
from xfer_jax.vocab.train import documents

ALPHABET = 256


@dataclasses.dataclass(frozen=True)
class BpeTrainOptions:
    vocab_size: int = 20000  # the 256 byte tokens included
    min_frequency: int = 2  # a pair seen once is noise, not a token
    seed: int = 0  # the document sample of sources with max_documents

    def check(self) -> None:
        if self.vocab_size <= ALPHABET:
            raise ValueError(f"vocab_size={self.vocab_size}: a byte-level BPE holds the {ALPHABET} byte tokens "
                             f"first; ask for more (e.g. 20000)")


def empty_like(base: dict) -> dict:
    """A tokenizer.json with the base's normaliser, pre-tokeniser and decoder around an empty BPE model."""
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": base.get("normalizer"), "pre_tokenizer": base.get("pre_tokenizer"), "post_processor": None,
            "decoder": base.get("decoder"),
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": {}, "merges": []}}


def check_base(path, role: str = "--base") -> dict:
    """The parsed base tokenizer.json, refused in one line when it is not byte-level BPE."""
    doc = load_json(path, role)
    problem = byte_level_problem(doc)
    if problem:
        raise ValueError(f"{role} {path} is not a byte-level BPE tokenizer.json ({problem}); xfer vocab extends "
                         f"tokenizer.json files of byte-level BPE only (Llama-3, GPT-2 style): pass such a base, "
                         f"or a sentencepiece base as its .model file")
    return doc


def train_bpe(specs: Sequence[SourceSpec], out: str | pathlib.Path, base: str | pathlib.Path,
              options: BpeTrainOptions = BpeTrainOptions(), *, issues: InputIssues | None = None) -> paths.Path:
    """Train on the sources with `base`'s text pipeline and write OUT (a tokenizer.json)."""
    from tokenizers import Tokenizer, trainers
    from tokenizers.pre_tokenizers import ByteLevel

    options.check()
    out = paths.path(out, "--out")
    if out.suffix != ".json":
        raise ValueError(f"--out {out}: a Hugging Face tokenizer file ends in .json (e.g. vocab/zh_bpe.json)")
    tokenizer = Tokenizer.from_str(json.dumps(empty_like(check_base(base))))
    trainer = trainers.BpeTrainer(vocab_size=options.vocab_size, min_frequency=options.min_frequency,
                                  initial_alphabet=ByteLevel.alphabet(), special_tokens=[], show_progress=False)
    issues = issues or InputIssues()
    tokenizer.train_from_iterator(documents(specs, issues, options.seed), trainer)
    issues.warn()
    if tokenizer.get_vocab_size() <= ALPHABET:
        raise ValueError(f"{', '.join(s.path for s in specs)}: too little text to learn any merge; add text")
    paths.write_text(out, tokenizer.to_str(pretty=True))
    return out
