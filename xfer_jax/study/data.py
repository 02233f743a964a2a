"""The text an experiment reads, from the cache folder `--cache` (what `xfer data fetch` builds).

Fetching is a no-op on a complete cache, so this runs at every start instead of being a stage: a machine
without network (the GPU machine) works from a carried cache, and a missing or partial cache is rebuilt
here rather than discovered half-way through a run.
"""
from __future__ import annotations

import pathlib

from xfer_jax.data import instruct_fetch
from xfer_jax.data.corpus import fetch_corpus
from xfer_jax.data.hf_vocab import HF_TOKENIZERS, fetch_hf_tokenizer
from xfer_jax.data.llama_vocab import fetch_llama_tokenizer


def prepare(cache, spec) -> dict[str, str]:
    """{"corpus", "instruct"[, "llama_tokenizer"]}: paths under CACHE for the spec's two languages;
    "llama_tokenizer" is the real base tokenizer the spec names (LLaMA-2's .model, Llama-3's tokenizer.json)."""
    cache = pathlib.Path(cache)
    paths = {"corpus": fetch_corpus(cache / "corpus", [spec.target_lang, spec.base_lang], max_chars=spec.max_chars),
             "instruct": instruct_fetch.fetch_instruct(cache / "instruct")}
    base = spec.tokenizers.base
    if base == "llama":
        paths["llama_tokenizer"] = fetch_llama_tokenizer(cache / "llama_tokenizer")
    elif base in HF_TOKENIZERS:
        paths["llama_tokenizer"] = fetch_hf_tokenizer(cache / HF_TOKENIZERS[base].cache, base)
    return {k: str(v) for k, v in paths.items()}


def heldout_subset(out: pathlib.Path, *, corpus, langs, max_documents: int) -> dict:
    """The held-out text the evaluations read: the corpus itself, or (max_documents > 0) that many documents
    per language taken evenly spaced through CORPUS/{lang}/heldout.txt (whose order follows the sources, so
    the first N would all come from one package), written as OUT/{lang}/heldout.txt."""
    if not max_documents:
        return {"corpus": str(corpus), "documents": None}
    counts = {}
    for lang in langs:
        docs = (pathlib.Path(corpus) / lang / "heldout.txt").read_text(encoding="utf-8").splitlines()
        n = min(max_documents, len(docs))
        kept = [docs[i * len(docs) // n] for i in range(n)]
        (out / lang).mkdir(parents=True, exist_ok=True)
        (out / lang / "heldout.txt").write_text("".join(d + "\n" for d in kept), encoding="utf-8")
        counts[lang] = n
    return {"corpus": str(out), "documents": counts}
