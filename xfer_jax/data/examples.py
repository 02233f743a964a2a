"""Documents → training examples: token ids with per-document targets and loss weights, in chunks.

Targets and loss weights are computed per document, *before* packing: target i is token i+1 of the same
document, and its weight is the loss mask of token i+1 (1 for text; 1 only on response tokens for
instruction data). The document's last token gets target 0 and weight 0. Documents longer than a row are
cut into chunks of at most seq_len tokens; each chunk keeps its true targets (the last token of a chunk
predicts the first of the next), and `doc_start` marks first chunks so the mixer can count documents.
"""
from __future__ import annotations

import numpy as np

from xfer_jax.data import instruct
from xfer_jax.data.tokenizer import Tokenizer


def document_example(tokens: np.ndarray, loss_mask: np.ndarray, lang: int) -> dict[str, np.ndarray]:
    """One document's features; `loss_mask[i]` says whether token i is learned when it is the target."""
    tokens = np.asarray(tokens, np.int32)
    targets = np.zeros_like(tokens)
    targets[:-1] = tokens[1:]
    weights = np.zeros(len(tokens), np.float32)
    weights[:-1] = loss_mask[1:]
    return {"tokens": tokens, "targets": targets, "loss_weights": weights, "lang": np.full(len(tokens), lang, np.int32)}


def chunks(example: dict[str, np.ndarray], max_len: int) -> list[dict[str, np.ndarray]]:
    """Splits a document into pieces of at most max_len tokens; `doc_start` marks the first piece."""
    return [
        {**{k: v[start:start + max_len] for k, v in example.items()}, "doc_start": start == 0}
        for start in range(0, len(example["tokens"]), max_len)
    ]


class ExampleBuilder:
    """A document (text, Conversation or token ids) → its packed-feature chunks of at most seq_len tokens."""

    def __init__(self, tokenizer: Tokenizer, data_cfg, lang: int):
        self.tokenizer, self.lang, self.seq_len = tokenizer, lang, data_cfg.seq_len
        self.bos, self.eos = data_cfg.add_bos, data_cfg.add_eos
        self.template = instruct.template_from_config(data_cfg.instruct, tokenizer)

    def encode(self, doc) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(doc, instruct.Conversation):
            return instruct.encode_conversation(doc, self.tokenizer, self.template, self.seq_len)
        tokens = doc if isinstance(doc, np.ndarray) else self.tokenizer.encode(doc, bos=self.bos, eos=self.eos)
        return np.asarray(tokens, np.int32), np.ones(len(tokens), np.int32)

    def validate(self, doc) -> None:
        """Build-time check for instruction data: the first prompt must fit (raises BadRecord)."""
        if isinstance(doc, instruct.Conversation):
            self.encode(doc)

    def __call__(self, doc) -> list[dict[str, np.ndarray]]:
        tokens, mask = self.encode(doc)
        return chunks(document_example(tokens, mask, self.lang), self.seq_len)
