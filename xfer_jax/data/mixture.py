"""Weighted mixing of per-source streams, in tokens or in documents, with optional token budgets.

Grain's own `IterDataset.mix` interleaves by element count, so it can only hold *document* proportions.
The paper's mixtures (e.g. zh 0.7 / en 0.3) are usually meant in tokens, and documents differ in length
per language, so this mixer keeps a running count of what each source has given (tokens, or documents)
and always draws from the source furthest below its share: given_i / weight_i is smallest. The result is
deterministic, needs no random numbers, and its proportions are exact up to one element at any point of
the stream. Its state (the counts and the parents' states) checkpoints with the rest of the pipeline.

The weights may change mid-stream (`set_weights`: the English-retention guard, train/guard.py): the running counts
then restart, so the new shares hold from that element on rather than making up for the past. The weights are
part of the iterator state; the guard also saves them with each checkpoint, since the packer restores its parent
to where its current rows began (data/packing.py) and a change made after that point must be made again.

A token budget ends the whole mixed stream as soon as one source has given that many tokens (the element
that crosses it is the last one), so the proportions never drift once a language runs out.
"""
from __future__ import annotations

from typing import Any, Sequence

import grain
import numpy as np

UNITS = ("tokens", "documents")


class WeightedMixIterDataset(grain.IterDataset):
    """Elements are dicts with `tokens` (1-D) and `doc_start` (1 for the first chunk of a document, else 0)."""

    def __init__(
        self,
        parents: Sequence[grain.IterDataset],
        weights: Sequence[float],
        unit: str = "tokens",
        token_budgets: Sequence[float] | None = None,
    ):
        super().__init__(list(parents))
        if unit not in UNITS:
            raise ValueError(f"data.mix_unit={unit!r}: expected one of {UNITS}")
        if len(weights) != len(parents) or min(weights) <= 0:
            raise ValueError(f"need one positive weight per source, got {list(weights)} for {len(parents)} sources")
        self._weights = [float(w) for w in weights]
        self._unit = unit
        self._budgets = [float(b) for b in (token_budgets or [0] * len(parents))]

    def __iter__(self) -> grain.DatasetIterator:
        return WeightedMixIterator(
            [parent.__iter__() for parent in self.parents], self._weights, self._unit, self._budgets
        )

    def __str__(self) -> str:
        return f"WeightedMixIterDataset(weights={self._weights}, unit={self._unit}, budgets={self._budgets})"


class WeightedMixIterator(grain.DatasetIterator):
    def __init__(self, parents, weights, unit, budgets):
        super().__init__(parents)
        self._weights = np.asarray(weights) / sum(weights)
        self._unit = unit
        self._budgets = np.asarray(budgets, np.float64)
        self._given = np.zeros(len(parents), np.int64)  # in `unit`, since the weights were last set
        self._tokens = np.zeros(len(parents), np.int64)
        self._stopped = False

    @property
    def weights(self) -> list[float]:
        return self._weights.tolist()

    def set_weights(self, weights: Sequence[float], normalise: bool = True) -> None:
        """New shares from the next element on (every one positive; `normalise=False` takes them exactly as given,
        e.g. as `weights` returned them)."""
        weights = np.asarray(weights, np.float64)
        if weights.shape != self._weights.shape or weights.min() <= 0:
            raise ValueError(f"need {len(self._weights)} positive weights, got {weights.tolist()}")
        self._weights = weights / weights.sum() if normalise else weights
        self._given = np.zeros_like(self._given)

    def __next__(self):
        if self._stopped:
            raise StopIteration
        source = int(np.argmin(self._given / self._weights))
        element = next(self._parents[source])
        size = len(element["tokens"])
        self._given[source] += size if self._unit == "tokens" else int(element["doc_start"])
        self._tokens[source] += size
        budget = self._budgets[source]
        if budget and self._tokens[source] >= budget:
            self._stopped = True
        return element

    def get_state(self) -> dict[str, Any]:
        return {
            "parents": [parent.get_state() for parent in self._parents],
            "given": self._given.tolist(),
            "tokens": self._tokens.tolist(),
            "stopped": self._stopped,
            "weights": self._weights.tolist(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if len(state["parents"]) != len(self._parents):
            raise ValueError(
                f"checkpointed data state has {len(state['parents'])} sources, the config has {len(self._parents)}"
            )
        for parent, parent_state in zip(self._parents, state["parents"]):
            parent.set_state(parent_state)
        self._given = np.asarray(state["given"], np.int64)
        self._tokens = np.asarray(state["tokens"], np.int64)
        self._stopped = bool(state["stopped"])
        if "weights" in state:  # states saved before the weights could change hold none: the config's stand
            self._weights = np.asarray(state["weights"], np.float64)

    def __str__(self) -> str:
        return f"WeightedMixIterator(unit={self._unit})"
