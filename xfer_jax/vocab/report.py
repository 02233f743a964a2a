"""Tokenizer efficiency: tokens per character and per UTF-8 byte on held-out text, per language, per tokenizer.

Fewer tokens for the same text is the point of extending a vocabulary (a longer effective context, cheaper
training and decoding); the same table also shows that the base language did not get worse. Counts exclude
BOS/EOS. Per-token losses of models with different tokenizers are not comparable; bits per character are,
and tokens per character is the factor between the two.
"""
from __future__ import annotations

import json
import os

from xfer_jax import paths
from xfer_jax.data.issues import InputIssues
from xfer_jax.data.sources import SourceSpec
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.vocab.train import documents


def measure(tokenizers: dict[str, str | os.PathLike], texts: dict[str, SourceSpec], num_threads: int = 2) -> dict:
    """{"tokenizers": {name: path}, "languages": {lang: {documents, characters, bytes, tokens: {name: n}, ...}}}."""
    loaded = {name: Tokenizer.load(path) for name, path in tokenizers.items()}
    issues = InputIssues()
    languages = {}
    for lang, spec in texts.items():
        docs = list(documents([spec], issues))
        if not docs:
            raise ValueError(f"{spec.path}: no document to measure for language {lang!r}")
        chars, nbytes = sum(map(len, docs)), sum(len(d.encode("utf-8")) for d in docs)
        entry = {"path": str(spec.path), "documents": len(docs), "characters": chars, "bytes": nbytes, "tokenizers": {}}
        for name, tokenizer in loaded.items():
            tokens = sum(map(len, tokenizer.encode_batch(docs, bos=False, num_threads=num_threads)))
            entry["tokenizers"][name] = {"tokens": tokens, "tokens_per_char": tokens / chars,
                                         "tokens_per_byte": tokens / nbytes}
        languages[lang] = entry
    issues.warn()
    return {"tokenizers": {name: str(path) for name, path in tokenizers.items()}, "languages": languages}


def markdown(report: dict) -> str:
    """One row per language; per tokenizer its tokens, tokens/char and tokens/byte; the change against the first."""
    names = list(report["tokenizers"])
    head = ["lang", "chars", "bytes"]
    for i, name in enumerate(names):
        head += [f"{name} tokens", f"{name} tok/char", f"{name} tok/byte"] + ([f"{name} vs {names[0]}"] if i else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lang, entry in report["languages"].items():
        cells = [lang, f"{entry['characters']:,}", f"{entry['bytes']:,}"]
        first = entry["tokenizers"][names[0]]["tokens"]
        for i, name in enumerate(names):
            t = entry["tokenizers"][name]
            cells += [f"{t['tokens']:,}", f"{t['tokens_per_char']:.3f}", f"{t['tokens_per_byte']:.3f}"]
            if i:
                cells.append(f"{t['tokens'] / first - 1:+.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(report: dict, prefix: str | os.PathLike) -> tuple[paths.Path, paths.Path]:
    """PREFIX.md and PREFIX.json (PREFIX may be a gs:// URL), each replaced atomically (a crash never leaves half
    a report). An earlier report under the same prefix is replaced: it is derived output, recomputed from its
    inputs in seconds."""
    prefix = paths.path(prefix, "--out")
    md, js = prefix.with_name(prefix.name + ".md"), prefix.with_name(prefix.name + ".json")
    paths.write_text(js, json.dumps(report, indent=2))
    paths.write_text(md, markdown(report))
    return md, js
