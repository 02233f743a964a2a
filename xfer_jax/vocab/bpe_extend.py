"""`xfer vocab extend` for a byte-level BPE (tokenizer.json): which rows are new, and each one's base pieces.

The merged tokenizer must be the checkpoint's tokenizer with ids appended (`xfer vocab merge` keeps every base
id): the same token at every old id, more ids in all. New special tokens (the padding `merge` appends) have no
text, so they take the mean row under subword_mean. Every other new token is split by the BASE tokenizer: its
text when its bytes are whole UTF-8 characters, else (a token that starts or ends inside a character) the base
BPE model applied to its bytes.
"""
from __future__ import annotations

from xfer_jax.data.tokenizer import Tokenizer, resolve
from xfer_jax.vocab.bytelevel import token_bytes


def check_compatible(base: Tokenizer, merged: Tokenizer, vocab_size: int, ckpt_dir) -> None:
    if base.vocab_size != vocab_size:
        raise ValueError(f"checkpoint {ckpt_dir} has {vocab_size} vocabulary rows but its tokenizer {base.source} "
                         f"has {base.vocab_size} ids; pass the tokenizer the checkpoint was trained with as "
                         f"--base_tokenizer")
    if merged.vocab_size <= vocab_size:
        raise ValueError(f"tokenizer {merged.source} has {merged.vocab_size} ids, not more than checkpoint "
                         f"{ckpt_dir}'s {vocab_size} rows: extend only grows a vocabulary; build the tokenizer with "
                         f"`xfer vocab merge --base {base.source} --add <new.json> --out DIR/tokenizer.json`")
    for i in range(vocab_size):
        if base.id_to_piece(i) != merged.id_to_piece(i):
            raise ValueError(f"tokenizer {merged.source} id {i} is {merged.id_to_piece(i)!r} but the checkpoint's "
                             f"tokenizer {base.source} has {base.id_to_piece(i)!r} there: it was not merged onto this "
                             f"base; build it with `xfer vocab merge --base {base.source} --add <new.json>`")


def base_segments(base: Tokenizer, base_path, pieces: list[str]) -> list[list[int]]:
    """The base ids each new token splits into (see the module docstring)."""
    from tokenizers import Tokenizer as RustTokenizer

    model = RustTokenizer.from_file(str(resolve(base_path))).model
    segments = []
    for piece in pieces:
        data = token_bytes(piece) or b""
        try:
            segments.append(base.encode(data.decode("utf-8"), bos=False))
        except UnicodeDecodeError:
            segments.append([t.id for t in model.tokenize(piece)])
    return segments


def plan(base: Tokenizer, merged: Tokenizer, base_path, vocab_size: int, ckpt_dir) -> tuple[int, int, list[list[int]]]:
    """(new vocabulary size, padding rows, base ids per new row: [] for padding) after every check."""
    check_compatible(base, merged, vocab_size, ckpt_dir)
    new_ids = range(vocab_size, merged.vocab_size)
    pads = set(merged.special_ids)
    segments = iter(base_segments(base, base_path, [merged.id_to_piece(i) for i in new_ids if i not in pads]))
    return merged.vocab_size, len(pads & set(new_ids)), [[] if i in pads else next(segments) for i in new_ids]
