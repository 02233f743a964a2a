"""Grow a checkpoint to a merged tokenizer: new rows of the input embedding and lm_head, set by a strategy.

Old rows are copied bit for bit, so for inputs made of old tokens the logits over the old vocabulary do not
change; what a strategy decides is where the new rows start:
  random        normal(0, initializer_range), what Chinese-LLaMA (and HF's resize_token_embeddings) did. Against
                a trained lm_head, whose logits for most tokens are far below zero, the new near-zero logits
                take a large share of the probability.
  mean          the mean of the old rows. Each new token's logit is the mean of the old logits.
  noisy_mean    the mean plus normal noise of `noise_scale` × each dimension's standard deviation over the old
                rows: new tokens start near the mean logit but apart from one another.
  subword_mean  the mean of the rows of the pieces the base tokenizer splits the new piece into, for the
                embedding and the lm_head alike: the new token starts as the average of the tokens it replaces.
Padding pieces (never produced by encode) have no pieces to average and take the mean under subword_mean.
A byte-level BPE (tokenizer.json, Llama-3) goes the same way; vocab/bpe_extend.py checks it and splits its new
tokens with the base tokenizer.

The work happens on host numpy: the checkpoint is read without shardings and written back whole, so the
result restores onto any mesh (checkpoint.load_params with target shardings).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np
from sentencepiece import sentencepiece_model_pb2 as pb

from xfer_jax import checkpoint, paths
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.vocab import bpe_extend
from xfer_jax.vocab.bpe_merge import check_same_kind
from xfer_jax.vocab.merge import load_proto, padding_ids

STRATEGIES = ("random", "mean", "noisy_mean", "subword_mean")


@dataclasses.dataclass(frozen=True)
class ExtendOptions:
    strategy: str = "subword_mean"
    seed: int = 0
    noise_scale: float = 0.1  # noisy_mean only

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"init strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.noise_scale < 0:
            raise ValueError(f"noise_scale={self.noise_scale} must be >= 0")


def check_compatible(base: pb.ModelProto, merged: pb.ModelProto, vocab_size: int, base_path, merged_path, ckpt_dir) -> None:
    """The merged tokenizer must be the checkpoint's tokenizer with pieces appended, and larger than it."""
    if len(base.pieces) != vocab_size:
        raise ValueError(f"checkpoint {ckpt_dir} has {vocab_size} vocabulary rows but its tokenizer {base_path} has "
                         f"{len(base.pieces)} pieces; pass the tokenizer the checkpoint was trained with as "
                         f"--base_tokenizer")
    if len(merged.pieces) <= vocab_size:
        raise ValueError(f"tokenizer {merged_path} has {len(merged.pieces)} pieces, not more than checkpoint "
                         f"{ckpt_dir}'s {vocab_size} rows: extend only grows a vocabulary; build the tokenizer "
                         f"with `xfer vocab merge --base {base_path} --add <new.model>`")
    for i, (b, m) in enumerate(zip(base.pieces, merged.pieces)):
        if (b.piece, b.type) != (m.piece, m.type):
            raise ValueError(f"tokenizer {merged_path} piece {i} is {m.piece!r} but the checkpoint's tokenizer "
                             f"{base_path} has {b.piece!r} there: it was not merged onto this base; build it with "
                             f"`xfer vocab merge --base {base_path} --add <new.model>`")


def base_segments(base: pb.ModelProto, pieces: list[str]) -> list[list[int]]:
    """The base ids each piece's text splits into. The dummy prefix is off: a piece's own '▁' marks its space."""
    proto = pb.ModelProto()
    proto.CopyFrom(base)
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    tokenizer = Tokenizer.from_proto(proto)
    return tokenizer.encode_batch([p.replace("\u2581", " ") for p in pieces], bos=False)


def new_rows(old: np.ndarray, count: int, options: ExtendOptions, rng: np.random.Generator, *, std: float,
             segments: list[list[int]]) -> np.ndarray:
    """[count, E] rows to append to the [V, E] matrix `old` (embedding rows, or lm_head columns transposed)."""
    old64 = old.astype(np.float64)
    mean = old64.mean(axis=0)
    if options.strategy == "random":
        rows = rng.normal(0.0, std, (count, old.shape[1]))
    elif options.strategy == "mean":
        rows = np.broadcast_to(mean, (count, old.shape[1]))
    elif options.strategy == "noisy_mean":
        rows = mean + rng.normal(0.0, 1.0, (count, old.shape[1])) * (options.noise_scale * old64.std(axis=0))
    else:
        rows = np.stack([old64[seg].mean(axis=0) if seg else mean for seg in segments])
    return rows.astype(old.dtype)


def grow(params: dict, vocab_size: int, new_total: int, options: ExtendOptions, *, std: float,
         segments: list[list[int]], tied: bool) -> dict:
    """A copy of `params` with `new_total - vocab_size` rows appended to embed_tokens and lm_head."""
    count = new_total - vocab_size
    rng = np.random.default_rng(options.seed)
    grown = dict(params)
    embed = np.asarray(params["embed_tokens"])
    grown["embed_tokens"] = np.concatenate([embed, new_rows(embed, count, options, rng, std=std, segments=segments)])
    if not tied:
        head = np.asarray(params["lm_head"])
        rows = new_rows(head.T, count, options, rng, std=std, segments=segments)
        grown["lm_head"] = np.concatenate([head, rows.T], axis=1)
    return grown


def extend(ckpt_dir, tokenizer, out_dir, options: ExtendOptions = ExtendOptions(), *, base_tokenizer=None,
           step: int | None = None, overwrite: bool = False, log=print) -> pathlib.Path:
    """Write OUT (step 0): the checkpoint grown to `tokenizer`'s size, carrying `tokenizer` (its tokenizer.model,
    or its tokenizer.json + tokenizer_config.json)."""
    options.check()
    checkpoint.check_writable(out_dir, 0, overwrite)
    base_path = base_tokenizer or checkpoint.tokenizer_path(ckpt_dir)
    if base_path is None:
        raise FileNotFoundError(f"checkpoint {ckpt_dir} carries no tokenizer (tokenizer.json or "
                                f"{checkpoint.TOKENIZER_FILE}); pass the tokenizer it was trained with as --base_tokenizer")
    if check_same_kind(base_path, tokenizer, ("--base_tokenizer", "--tokenizer")) == "hf":
        base, merged = Tokenizer.load(base_path), Tokenizer.load(tokenizer)
        step = checkpoint.latest_step(ckpt_dir) if step is None else step
        cfg, params = checkpoint.load_params(ckpt_dir, step=step)
        total, padding, segments = bpe_extend.plan(base, merged, base_path, cfg.vocab_size, ckpt_dir)
        carried = merged
    else:
        base, merged = load_proto(base_path, "--base_tokenizer"), load_proto(tokenizer, "--tokenizer")
        step = checkpoint.latest_step(ckpt_dir) if step is None else step
        cfg, params = checkpoint.load_params(ckpt_dir, step=step)
        check_compatible(base, merged, cfg.vocab_size, base_path, tokenizer, ckpt_dir)
        pads = set(padding_ids(merged))
        total, padding, new_ids = len(merged.pieces), len(pads), range(cfg.vocab_size, len(merged.pieces))
        segments = iter(base_segments(base, [merged.pieces[i].piece for i in new_ids if i not in pads]))
        segments = [[] if i in pads else next(segments) for i in new_ids]
        carried = Tokenizer.load(tokenizer)
    grown = grow(params, cfg.vocab_size, total, options, std=cfg.initializer_range,
                 segments=segments, tied=cfg.tie_word_embeddings)
    record = {"from": os.fspath(paths.path(ckpt_dir, "--ckpt")), "step": step, "strategy": options.strategy,
              "seed": options.seed, "old_vocab_size": cfg.vocab_size, "new_vocab_size": total,
              "padding_pieces": padding, "tokenizer_sha256": carried.sha256()}
    if options.strategy == "noisy_mean":
        record["noise_scale"] = options.noise_scale
    out = checkpoint.save(out_dir, cfg.replace(vocab_size=total), grown, tokenizer=carried,
                          extra_meta={"vocab_extend": record}, overwrite=overwrite)
    log(f"wrote {out}: vocabulary {cfg.vocab_size} -> {total} ({padding} padding), new rows by {options.strategy}")
    return out
