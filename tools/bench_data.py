"""Data pipeline throughput on the real corpus with LLaMA-2's tokenizer: tokens/s, and tokens per CPU-second.

  python tools/bench_data.py [--languages zh,en,ru,de,fr,ja] [--seq_len 2048] [--batch_size 8] [--batches 200]
                             [--workers 0] [--cache .cache]

Three measurements, each after a warm-up batch:
  tokenize   `xfer data tokenize` into ArrayRecord shards (sentencepiece threads = --threads)
  on-the-fly the train pipeline on raw text: read, shuffle, tokenise, mix, pack, batch
  shards     the same pipeline reading the pre-tokenised shards
Tokens are real (non-padding) tokens of the batches. Per-core numbers divide by the CPU time this process
used; with --workers the workers' CPU time cannot be read while they run, so only tokens/s is printed.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import resource
import sys
import tempfile
import time

import numpy as np

from xfer_jax.cli_args import add_flag
from xfer_jax.data import pipeline
from xfer_jax.data.corpus import fetch_corpus
from xfer_jax.data.llama_vocab import fetch_llama_tokenizer
from xfer_jax.data.sources import specs_from_config
from xfer_jax.data.tokenize import tokenize_sources
from xfer_jax.data.tokenizer import Tokenizer


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def measure(data_cfg, tokenizer, batches: int) -> tuple[float, float, float]:
    """(tokens/s, tokens per CPU-second, padding share) over `batches` batches after one warm-up batch."""
    iterator = pipeline.make_train_iterator(data_cfg, tokenizer=tokenizer)
    next(iterator)
    tokens, wall, cpu = 0, time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        tokens += int(np.count_nonzero(next(iterator)["segment_ids"]))
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    iterator.close()
    return tokens / wall, tokens / cpu, 1 - tokens / (batches * data_cfg.batch_size * data_cfg.seq_len)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flag(parser, "--languages", "--langs", default="zh,en,ru,de,fr,ja")
    add_flag(parser, "--seq_len", "--seq-len", type=int, default=2048)
    add_flag(parser, "--batch_size", "--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--packing", default="first_fit")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="sentencepiece threads for tokenize")
    parser.add_argument("--cache", default=os.environ.get("XFER_CACHE", pathlib.Path(__file__).parents[1] / ".cache"))
    args = parser.parse_args(argv)

    cache = pathlib.Path(args.cache)
    corpus, tokenizer_path = fetch_corpus(cache / "corpus"), fetch_llama_tokenizer(cache / "llama_tokenizer")
    tokenizer = Tokenizer.load(tokenizer_path)
    langs = args.languages.split(",")
    cfg = pipeline.default_data_config()
    cfg.tokenizer, cfg.seq_len, cfg.batch_size = str(tokenizer_path), args.seq_len, args.batch_size
    cfg.packing, cfg.worker_count = args.packing, args.workers
    cfg.sources = [dict(lang=lang, path=str(corpus / lang / "train.txt")) for lang in langs]
    print(f"cpus {os.cpu_count()}, langs {langs}, seq_len {args.seq_len}, batch {args.batch_size}, "
          f"packing {args.packing}, workers {args.workers}")

    with tempfile.TemporaryDirectory() as shards:
        wall, cpu = time.perf_counter(), cpu_seconds()
        stats = tokenize_sources(specs_from_config(cfg.sources, "sources"), tokenizer, shards, threads=args.threads)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        tokens = sum(entry["tokens"] for entry in stats["languages"].values())
        documents = sum(entry["documents"] for entry in stats["languages"].values())
        print(f"corpus: {documents} documents, {tokens} tokens, {tokens / documents:.0f} tokens/document")
        print(f"tokenize   {tokens / wall / 1e3:8.0f}k tokens/s  {tokens / cpu / 1e3:8.0f}k tokens/CPU-s")

        for name in ("on-the-fly", "shards"):
            if name == "shards":
                cfg.sources = [dict(lang=lang, path=str(pathlib.Path(shards) / lang), format="tokens") for lang in langs]
            rate, per_cpu, padding = measure(cfg, tokenizer, args.batches)
            per_cpu_text = f"{per_cpu / 1e3:8.0f}k tokens/CPU-s" if not args.workers else " " * 21
            print(f"{name:<10} {rate / 1e3:8.0f}k tokens/s  {per_cpu_text}  padding {padding:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
