"""Packing documents' features into fixed-length training rows in the project's batch format.

Targets and loss weights arrive computed per document (examples.py); packing only moves whole spans, so
no token of one document can become a target for another, and a document split across rows (by chunking
or by concat-then-split) keeps every one of its transitions as a target.

Row format (all [L]; batches add a leading [B]):
  tokens int32, targets int32, loss_weights float32, lang int32 (padding: all 0),
  segment_ids int32 (0 = padding, 1.. = segment within the row), positions int32 (restart at 0 per segment).

The packers are Grain IterDatasets written for these fixed features (Grain's generic packers cost ~100 us
per document in tree handling, which caps short-document corpora well below 1M tokens/s). Both checkpoint
the way Grain's do: the parent state where the current rows began, plus how far they were emitted.
  first_fit  fills `num_bins` rows at a time, each document into the first row with room; when one does
             not fit anywhere, the rows are emitted (in a seeded random order) and it starts the next set.
  concat     concatenates documents and cuts every seq_len tokens: no padding, documents split across rows.
"""
from __future__ import annotations

from typing import Any

import grain
import numpy as np

PACKINGS = ("first_fit", "concat")
FEATURES = ("tokens", "targets", "loss_weights", "lang")
BATCH_KEYS = ("tokens", "targets", "segment_ids", "positions", "loss_weights", "lang")


class _Rows:
    """`count` empty rows of seq_len; `put` writes a span of a document at a row's first free position."""

    def __init__(self, count: int, seq_len: int):
        self.arrays = {key: np.zeros((count, seq_len), np.float32 if key == "loss_weights" else np.int32)
                       for key in BATCH_KEYS}
        self.used = np.zeros(count, np.int64)
        self.segments = np.zeros(count, np.int32)
        self.arange = np.arange(seq_len, dtype=np.int32)

    def put(self, row: int, element: dict, start: int, stop: int) -> None:
        at, n = self.used[row], stop - start
        for key in FEATURES:
            self.arrays[key][row, at:at + n] = element[key][start:stop]
        self.segments[row] += 1
        self.arrays["segment_ids"][row, at:at + n] = self.segments[row]
        self.arrays["positions"][row, at:at + n] = self.arange[:n]
        self.used[row] += n

    def row(self, row: int) -> dict[str, np.ndarray]:
        return {key: value[row] for key, value in self.arrays.items()}


class _FirstFitIterator(grain.DatasetIterator):
    def __init__(self, parent, seq_len: int, num_bins: int, seed: int, shuffle: bool):
        super().__init__(parent)
        self._seq_len, self._num_bins, self._seed, self._shuffle = seq_len, num_bins, seed, shuffle
        self._start_state = self._parent.get_state()  # parent state where the current set of rows began
        self._sets = 0  # row sets completed so far (seeds the row order)
        self._rows, self._order, self._emitted = None, [], 0
        self._pending = None  # (state before it, element) read but not fitting into the last set

    def _fill(self) -> None:
        rows = _Rows(self._num_bins, self._seq_len)
        while True:
            if self._pending is None:
                state = self._parent.get_state()
                try:
                    element = next(self._parent)
                except StopIteration:
                    break
            else:
                (state, element), self._pending = self._pending, None
            n = len(element["tokens"])
            if n > self._seq_len:
                raise ValueError(f"first-fit packing got a {n}-token document for rows of {self._seq_len}")
            fits = np.flatnonzero(rows.used + n <= self._seq_len)
            if not len(fits):
                self._pending = (state, element)
                break
            rows.put(int(fits[0]), element, 0, n)
        filled = int(np.count_nonzero(rows.used))
        if not filled:
            raise StopIteration
        self._rows = rows
        order = np.arange(filled)
        self._order = np.random.default_rng([self._seed, self._sets]).permutation(order) if self._shuffle else order

    def __next__(self):
        if self._rows is None:
            self._fill()
        row = self._rows.row(int(self._order[self._emitted]))
        self._emitted += 1
        if self._emitted == len(self._order):  # the next set starts at the element that did not fit
            self._start_state = self._pending[0] if self._pending else self._parent.get_state()
            self._rows, self._emitted, self._sets = None, 0, self._sets + 1
        return row

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._start_state, "emitted": self._emitted, "sets": self._sets}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._start_state, self._sets = state["parent"], state["sets"]
        self._rows, self._pending, self._emitted = None, None, 0
        if state["emitted"]:
            self._fill()
            self._emitted = state["emitted"]


class _ConcatIterator(grain.DatasetIterator):
    def __init__(self, parent, seq_len: int):
        super().__init__(parent)
        self._seq_len = seq_len
        self._carry = None  # (state before it, element, tokens of it already emitted)
        self._start = (self._parent.get_state(), 0)  # where the next row begins: parent state, offset

    def __next__(self):
        rows = _Rows(1, self._seq_len)
        while rows.used[0] < self._seq_len:
            if self._carry is None:
                state = self._parent.get_state()
                try:
                    self._carry = (state, next(self._parent), 0)
                except StopIteration:
                    if not rows.used[0]:
                        raise
                    break
            state, element, offset = self._carry
            stop = min(len(element["tokens"]), offset + self._seq_len - int(rows.used[0]))
            rows.put(0, element, offset, stop)
            self._carry = (state, element, stop) if stop < len(element["tokens"]) else None
        self._start = (self._carry[0], self._carry[2]) if self._carry else (self._parent.get_state(), 0)
        return rows.row(0)

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._start[0], "offset": self._start[1]}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._start, self._carry = (state["parent"], state["offset"]), None
        if state["offset"]:
            self._carry = (state["parent"], next(self._parent), state["offset"])


class PackIterDataset(grain.IterDataset):
    """Packs documents (dicts of FEATURES, each at most seq_len tokens for first_fit) into rows."""

    def __init__(self, parent: grain.IterDataset, seq_len: int, packing: str, *, num_bins: int = 64,
                 seed: int = 0, shuffle_rows: bool = True):
        super().__init__(parent)
        if packing not in PACKINGS:
            raise ValueError(f"data.packing={packing!r}: expected one of {PACKINGS}")
        self._seq_len, self._packing, self._num_bins = seq_len, packing, num_bins
        self._seed, self._shuffle_rows = seed, shuffle_rows

    def __iter__(self) -> grain.DatasetIterator:
        if self._packing == "concat":
            return _ConcatIterator(self._parent.__iter__(), self._seq_len)
        return _FirstFitIterator(self._parent.__iter__(), self._seq_len, self._num_bins, self._seed, self._shuffle_rows)

    def __str__(self) -> str:
        return f"PackIterDataset(seq_len={self._seq_len}, packing={self._packing}, num_bins={self._num_bins})"
