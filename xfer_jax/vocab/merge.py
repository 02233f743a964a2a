"""Append a target-language sentencepiece model's new pieces to a base model (ModelProto surgery).

Every base piece keeps its id, score and type, and the base's trainer and normaliser specs are kept, so the
merged model tokenises with the base's algorithm (LLaMA: BPE) and a checkpoint's existing rows stay valid.
Chinese-LLaMA did exactly this: 32,000 + 17,953 = 49,953 pieces.

Three decisions shape what is appended:
- Which pieces. NORMAL pieces the base lacks, best-scoring first (the added model's own order), optionally
  capped. Pieces made only of ASCII characters are skipped by default: the base already covers ASCII text,
  and with them English would tokenise differently from the base (measured: docs/vocab.md). Without them,
  any text that is pure ASCII provably keeps the base's encoding, since no appended piece can match it.
- Scores. A BPE model merges the pair whose result scores highest; transformers' LlamaTokenizer instead ranks
  merges by piece id. `below_base` (default) scores each new piece below every base piece and below the
  previous new piece, so score order equals id order and sentencepiece and transformers agree. `zero` is
  what Chinese-LLaMA did; new pieces then outrank every base merge in sentencepiece but not in transformers,
  so the two libraries tokenise some target text differently (measured in tests/test_vocab_tokenizer.py).
- Padding. `pad_to_multiple` appends UNUSED pieces named `<xfer_pad_N>` until the size is a multiple (e.g.
  128), so a vocabulary dimension divides the mesh's tensor axis. Sentencepiece never emits an UNUSED piece,
  and the names cannot be formed by merging two pieces, so transformers' merge table never produces one.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from sentencepiece import sentencepiece_model_pb2 as pb

from xfer_jax import paths
from xfer_jax.convert.hf_tokenizer import tokenizer_files
from xfer_jax.data.tokenizer import Tokenizer

Piece = pb.ModelProto.SentencePiece
SCORE_POLICIES = ("below_base", "zero")
PAD_PIECE = "<xfer_pad_{}>"


@dataclasses.dataclass(frozen=True)
class MergeOptions:
    max_added: int = 0  # 0: every new piece
    score_policy: str = "below_base"
    pad_to_multiple: int = 0  # 0: no padding
    keep_ascii: bool = False  # True: also append pieces made only of ASCII characters


@dataclasses.dataclass
class MergeStats:
    base_pieces: int
    added_model_pieces: int
    already_in_base: int
    skipped_ascii: int
    skipped_not_normal: int
    capped: int
    added: int
    unreachable: int  # appended pieces no merge of two pieces can form (BPE never emits them)
    padding: int
    merged_pieces: int


def is_ascii_piece(piece: str) -> bool:
    return all(ord(c) < 128 or c == "\u2581" for c in piece)


def below(score: float) -> np.float32:
    """The next float32 below `score`: the proto stores float32, so smaller steps would collapse into ties."""
    return np.nextafter(np.float32(score), np.float32(-np.inf))


def merge(base: pb.ModelProto, added: pb.ModelProto, options: MergeOptions = MergeOptions()) -> tuple[pb.ModelProto, MergeStats]:
    """(merged proto, what was appended and why the rest was not); `base` and `added` are left untouched."""
    if options.score_policy not in SCORE_POLICIES:
        raise ValueError(f"score_policy={options.score_policy!r}; choose one of {SCORE_POLICIES}")
    if options.max_added < 0 or options.pad_to_multiple < 0:
        raise ValueError("max_added and pad_to_multiple must be >= 0 (0 means no cap / no padding)")
    merged = pb.ModelProto()
    merged.CopyFrom(base)
    have = {p.piece for p in base.pieces}
    normal = [p for p in added.pieces if p.type == Piece.NORMAL]
    fresh = [p for p in normal if p.piece not in have]
    kept = [p for p in fresh if options.keep_ascii or not is_ascii_piece(p.piece)]
    kept.sort(key=lambda p: -p.score)  # stable: ties keep the added model's order
    chosen = kept[: options.max_added or None]

    base_floor = np.float32(min(p.score for p in base.pieces))
    previous, top = base_floor, (chosen[0].score if chosen else 0.0)
    for p in chosen:
        score = 0.0
        if options.score_policy == "below_base":  # the added model's gaps, shifted, kept strictly decreasing
            score = previous = min(np.float32(float(below(base_floor)) + p.score - top), below(previous))
        merged.pieces.add(piece=p.piece, score=float(score), type=Piece.NORMAL)

    padding = -len(merged.pieces) % options.pad_to_multiple if options.pad_to_multiple else 0
    vocab = {p.piece for p in merged.pieces}
    floor = np.float32(min(p.score for p in merged.pieces))
    for i in range(padding):
        name = PAD_PIECE.format(i)
        check_pad_name(name, vocab)
        floor = below(floor)
        merged.pieces.add(piece=name, score=float(floor), type=Piece.UNUSED)
    merged.trainer_spec.vocab_size = len(merged.pieces)

    stats = MergeStats(
        base_pieces=len(base.pieces), added_model_pieces=len(added.pieces), already_in_base=len(normal) - len(fresh),
        skipped_ascii=len(fresh) - len(kept), skipped_not_normal=len(added.pieces) - len(normal),
        capped=len(kept) - len(chosen), added=len(chosen), unreachable=len(unreachable(chosen, vocab)),
        padding=padding, merged_pieces=len(merged.pieces),
    )
    return merged, stats


def unreachable(pieces, vocab: set[str]) -> list[str]:
    """Multi-character pieces that are not the concatenation of two pieces of `vocab`.

    A BPE model builds a piece only by merging two adjacent pieces, so these are never emitted; a BPE-trained
    added model has none (its merges' halves come along), a unigram one may."""
    return [p.piece for p in pieces if len(p.piece) > 1
            and not any(p.piece[:k] in vocab and p.piece[k:] in vocab for k in range(1, len(p.piece)))]


def check_pad_name(name: str, vocab: set[str]) -> None:
    """A padding piece must be new and must not be the concatenation of two pieces (a merge would make it)."""
    if name in vocab:
        raise ValueError(f"the vocabulary already holds {name!r}, the name reserved for padding pieces; "
                         f"merge without --pad_to_multiple")
    splits = [(name[:k], name[k:]) for k in range(1, len(name)) if name[:k] in vocab and name[k:] in vocab]
    if splits:
        raise ValueError(f"padding piece {name!r} could be produced by merging {splits[0]}; "
                         f"merge without --pad_to_multiple")


def padding_ids(proto: pb.ModelProto) -> list[int]:
    """Ids of the padding pieces `merge` appended (UNUSED pieces with the reserved name)."""
    names = PAD_PIECE.split("{}")
    return [i for i, p in enumerate(proto.pieces)
            if p.type == Piece.UNUSED and p.piece.startswith(names[0]) and p.piece.endswith(names[1])]


HF_REFUSAL = ("a byte-level BPE tokenizer.json is merged by xfer_jax.vocab.bpe_merge (`xfer vocab merge` picks it "
              "when --base and --add are tokenizer.json files)")


def load_proto(path, role: str) -> pb.ModelProto:
    """The ModelProto in `path`, with an error that names the file and its role (--base, --add). A Hugging Face
    tokenizer.json (Llama-3's byte-level BPE) is refused by name: merge and extend here edit sentencepiece models."""
    try:
        tokenizer = Tokenizer.load(path)
    except RuntimeError as e:  # sentencepiece's parse failure
        raise ValueError(f"{role} {path}: not a sentencepiece model ({e})") from e
    if tokenizer.kind != "sentencepiece":
        raise ValueError(f"{role} {tokenizer.source} is a Hugging Face tokenizer.json (byte-level BPE), and this "
                         f"merge/extend edits sentencepiece models only; {HF_REFUSAL}")
    return tokenizer.proto()


def merge_files(base, add, out, options: MergeOptions = MergeOptions(), *, hf_dir=None,
                max_length: int = 4096, overwrite: bool = False) -> MergeStats:
    """`merge` on files: writes OUT (.model) and, with `hf_dir`, the tokenizer files transformers loads.

    An existing OUT or non-empty `hf_dir` is refused unless `overwrite`: a tokenizer.json left from an earlier
    merge would be what transformers loads. Everything is checked before anything is written; `hf_dir` is built
    beside its target and swapped in whole, with OUT replaced (atomically) just before the swap."""
    from xfer_jax.vocab.bpe_merge import check_same_kind

    check_same_kind(base, add)
    out = paths.path(out, "--out")
    check_outputs(base, add, out, hf_dir, overwrite)
    merged, stats = merge(load_proto(base, "--base"), load_proto(add, "--add"), options)
    model = merged.SerializeToString()
    Tokenizer(model)  # sentencepiece must load it: a model it rejects is never written
    files = None if hf_dir is None else tokenizer_files(model, max_length, source=out)
    if files is None:
        paths.write_bytes(out, model)
        return stats
    with paths.replace_dir(hf_dir, overwrite, "--hf_dir") as tmp:
        for name, content in files.items():
            paths.write_bytes(tmp / name, content)
        paths.write_bytes(out, model)
    return stats


def check_outputs(base, add, out: paths.Path, hf_dir, overwrite: bool) -> None:
    """OUT a .model path that is new (or --overwrite); `hf_dir` empty (or --overwrite) and apart from the inputs."""
    if out.is_dir():
        raise FileExistsError(f"--out {out} is a directory; name the .model file to write")
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it, or choose a new path")
    if hf_dir is not None:
        paths.check_empty_or_overwrite(hf_dir, overwrite, "--hf_dir")
        paths.check_apart(hf_dir, {"--base": base, "--add": add, "--out": out}, "--hf_dir")
