"""The experiment's two vocabularies: the English-centric base and the base extended for the target language.

The base is either LLaMA-2's real tokenizer (`base: llama`, the paper's setting) or a small sentencepiece BPE
trained here (`base: train`) on the base language, optionally with a sliver of the target language: LLaMA is
English-centric, not English-only, and its vocabulary holds some Chinese characters, which is what makes
"keep the original vocabulary" a real alternative to extending it. The target model is trained on the target
language alone and its new pieces are appended to the base (`xfer vocab merge`), as Chinese-LLaMA did.
"""
from __future__ import annotations

import pathlib

from xfer_jax import paths
from xfer_jax.data.sources import SourceSpec
from xfer_jax.vocab import report as vocab_report
from xfer_jax.vocab.merge import MergeOptions, merge_files
from xfer_jax.vocab.train import TrainOptions, train_tokenizer


def corpus_source(corpus, lang: str, split: str = "train", max_documents: int = 0) -> SourceSpec:
    return SourceSpec(lang=lang, path=str(pathlib.Path(corpus) / lang / f"{split}.txt"), max_documents=max_documents)


def build(out: pathlib.Path, *, corpus, llama_tokenizer, spec) -> dict:
    """OUT/base.model, OUT/target.model, OUT/merged.model (+ OUT/merged_hf/); returns their paths and the
    merge statistics. `spec` is the experiment config (its `tokenizers` section and languages)."""
    t = spec.tokenizers
    base = out / "base.model"
    if t.base == "llama":
        paths.copy_file(llama_tokenizer, base)
    elif t.base == "train":
        sources = [corpus_source(corpus, lang, max_documents=n) for lang, n in t.base_documents.items()]
        train_tokenizer(sources, base, TrainOptions(vocab_size=t.base_vocab, character_coverage=t.base_coverage,
                                                    seed=spec.seed))
    else:
        raise ValueError(f"tokenizers.base={t.base!r}: 'llama' (LLaMA-2's tokenizer) or 'train' (a BPE trained here)")
    target = train_tokenizer([corpus_source(corpus, spec.target_lang)], out / "target.model",
                             TrainOptions(vocab_size=t.target_vocab, character_coverage=t.target_coverage,
                                          seed=spec.seed))
    merged = out / "merged.model"
    stats = merge_files(base, target, merged, MergeOptions(pad_to_multiple=t.pad_to_multiple),
                        hf_dir=out / "merged_hf", overwrite=True)  # a re-run stage replaces its own output
    return {"base": str(base), "target": str(target), "merged": str(merged),
            "merge": {k: int(v) for k, v in vars(stats).items()}}


def efficiency(out: pathlib.Path, *, corpus, tokenizers: dict[str, str], languages: list[str]) -> dict:
    """Tokens per character and per byte of every vocabulary on every language's held-out text
    (`xfer vocab report`); writes OUT/efficiency.md and .json."""
    report = vocab_report.measure(tokenizers, {lang: corpus_source(corpus, lang, "heldout") for lang in languages})
    vocab_report.write(report, out / "efficiency")
    return report
