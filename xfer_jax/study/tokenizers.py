"""The experiment's two vocabularies: the English-centric base and the base extended for the target language.

The base is LLaMA-2's real tokenizer (`base: llama`, the paper's setting), Llama-3's or Llama-3.1's real
tokenizer.json (`base: llama3` / `llama3_1`: 128,256 ids of byte-level BPE), or a small sentencepiece BPE
trained here (`base: train`) on the base language, optionally with a sliver of the target language: LLaMA is
English-centric, not English-only, and its vocabulary holds some Chinese characters, which is what makes
"keep the original vocabulary" a real alternative to extending it. The target model is trained on the target
language alone and its new pieces are appended to the base (`xfer vocab merge`), as Chinese-LLaMA did. For a
tokenizer.json base the target is a byte-level BPE with the base's own pre-tokeniser and byte alphabet (`xfer
vocab train --kind hf`; `target_coverage` is sentencepiece's and is not used) merged by the BPE merge, which
keeps every base id and the base's text encoding (`xfer vocab merge` on tokenizer.json files).
"""
from __future__ import annotations

import pathlib

from xfer_jax import paths
from xfer_jax.data.hf_vocab import HF_TOKENIZERS
from xfer_jax.data.sources import SourceSpec
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.vocab import report as vocab_report
from xfer_jax.vocab.bpe_merge import BpeMergeOptions, merge_bpe_files
from xfer_jax.vocab.bpe_train import BpeTrainOptions, train_bpe
from xfer_jax.vocab.merge import MergeOptions, merge_files
from xfer_jax.vocab.train import TrainOptions, train_tokenizer

BASES = ("train", "llama", *HF_TOKENIZERS)  # tokenizers.base: trained here, LLaMA-2's, Llama-3's / 3.1's


def corpus_source(corpus, lang: str, split: str = "train", max_documents: int = 0) -> SourceSpec:
    return SourceSpec(lang=lang, path=str(pathlib.Path(corpus) / lang / f"{split}.txt"), max_documents=max_documents)


def check_base(name: str) -> None:
    if name not in BASES:
        raise ValueError(f"tokenizers.base={name!r}: 'train' (a BPE trained here), 'llama' (LLaMA-2's tokenizer), "
                         f"or {' / '.join(repr(n) for n in HF_TOKENIZERS)} (Llama-3's / Llama-3.1's tokenizer.json)")


def build(out: pathlib.Path, *, corpus, llama_tokenizer, spec) -> dict:
    """OUT/base.model, OUT/target.model, OUT/merged.model (+ OUT/merged_hf/); for a tokenizer.json base
    OUT/base/tokenizer.json, OUT/target.json, OUT/merged/tokenizer.json. Returns their paths and the merge
    statistics. `spec` is the experiment config (its `tokenizers` section and languages)."""
    t = spec.tokenizers
    check_base(t.base)
    if t.base in HF_TOKENIZERS:
        return build_hf(out, corpus=corpus, base_tokenizer=llama_tokenizer, spec=spec)
    base = out / "base.model"
    if t.base == "llama":
        paths.copy_file(llama_tokenizer, base)
    else:
        sources = [corpus_source(corpus, lang, max_documents=n) for lang, n in t.base_documents.items()]
        train_tokenizer(sources, base, TrainOptions(vocab_size=t.base_vocab, character_coverage=t.base_coverage,
                                                    seed=spec.seed))
    target = train_tokenizer([corpus_source(corpus, spec.target_lang)], out / "target.model",
                             TrainOptions(vocab_size=t.target_vocab, character_coverage=t.target_coverage,
                                          seed=spec.seed))
    merged = out / "merged.model"
    stats = merge_files(base, target, merged, MergeOptions(pad_to_multiple=t.pad_to_multiple),
                        hf_dir=out / "merged_hf", overwrite=True)  # a re-run stage replaces its own output
    return {"base": str(base), "target": str(target), "merged": str(merged),
            "merge": {k: int(v) for k, v in vars(stats).items()}}


def build_hf(out: pathlib.Path, *, corpus, base_tokenizer, spec) -> dict:
    """A tokenizer.json base (copied with its tokenizer_config.json), a byte-level BPE of the target language
    with the base's pipeline (`target_vocab` tokens, the 256 bytes included), merged onto it."""
    t = spec.tokenizers
    base = out / "base" / "tokenizer.json"
    Tokenizer.load(base_tokenizer).save_files(base.parent)
    target = train_bpe([corpus_source(corpus, spec.target_lang)], out / "target.json", base,
                       BpeTrainOptions(vocab_size=t.target_vocab, seed=spec.seed))
    merged = out / "merged" / "tokenizer.json"
    stats = merge_bpe_files(base, target, merged, BpeMergeOptions(pad_to_multiple=t.pad_to_multiple),
                            overwrite=True)  # a re-run stage replaces its own output
    summary = {"base_pieces": stats.base_tokens + stats.base_added_tokens, "added": stats.added,
               "padding": stats.padding, "merged_pieces": stats.merged_size}  # the sentencepiece merge's keys
    return {"base": str(base), "target": str(target), "merged": str(merged),
            "merge": {**{k: int(v) for k, v in vars(stats).items()}, **summary}}


def efficiency(out: pathlib.Path, *, corpus, tokenizers: dict[str, str], languages: list[str]) -> dict:
    """Tokens per character and per byte of every vocabulary on every language's held-out text
    (`xfer vocab report`); writes OUT/efficiency.md and .json."""
    report = vocab_report.measure(tokenizers, {lang: corpus_source(corpus, lang, "heldout") for lang in languages})
    vocab_report.write(report, out / "efficiency")
    return report
