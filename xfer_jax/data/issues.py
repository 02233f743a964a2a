"""A tally of bad input: unreadable files, invalid UTF-8, malformed JSON, missing fields, empty documents,
conversations whose turns do not alternate, prompts that cannot fit a row.

Every record the pipeline refuses passes through `InputIssues.report`: in strict mode that raises a
`BadInputError` naming the file and line; otherwise the record is skipped, counted by kind, and the first
few locations of each kind are kept for the warning summary. Nothing is dropped silently: `metrics()` is a
flat dict the trainer can log, `summary()` the human-readable account.
"""
from __future__ import annotations

import array
import collections
import logging

import numpy as np

log = logging.getLogger(__name__)

KINDS = (
    "unreadable_file",
    "invalid_utf8",
    "malformed_json",
    "missing_field",
    "empty_document",
    "bad_conversation",
    "prompt_too_long",
)
EXAMPLES_PER_KIND = 5


class BadInputError(ValueError):
    """Raised in strict mode on the first bad record; the message names file, line and reason."""


class BadRecord(ValueError):
    """Raised by record parsers; `kind` is one of KINDS, the message says what is wrong."""

    def __init__(self, kind: str, detail: str):
        assert kind in KINDS, kind
        super().__init__(detail)
        self.kind = kind


class InputIssues:
    def __init__(self, strict: bool = False):
        self.strict = strict
        self.counts: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, list[str]] = collections.defaultdict(list)

    def report(self, kind: str, where: str, detail: str) -> None:
        assert kind in KINDS, kind
        message = f"{where}: {kind.replace('_', ' ')}: {detail}"
        if self.strict:
            raise BadInputError(f"{message} (strict mode; set data.strict=False to skip and count bad input)")
        self.counts[kind] += 1
        if len(self.examples[kind]) < EXAMPLES_PER_KIND:
            self.examples[kind].append(message)

    def accepts(self, decode, raw, validate, where) -> bool:
        """Whether a record decodes (and passes the caller's `validate`); a BadRecord is reported at `where()`
        (built only then) and the record is skipped — or, strict, raised."""
        try:
            doc = decode(raw)
            if validate:
                validate(doc)
        except BadRecord as e:
            self.report(e.kind, where(), str(e))
            return False
        return True

    def kept(self, records, decode, validate, where) -> np.ndarray:
        """The indices (int64) of the records that `accepts`; `records` yields (index, raw), `where(i)` names one."""
        keep = array.array("q")
        for i, raw in records:
            if self.accepts(decode, raw, validate, lambda: where(i)):
                keep.append(i)
        return np.frombuffer(keep, np.int64)

    def total(self) -> int:
        return sum(self.counts.values())

    def metrics(self) -> dict[str, int]:
        """Skipped-input counts by kind (every kind present, zeros included) and in total."""
        out = {f"data/skipped/{kind}": self.counts[kind] for kind in KINDS}
        out["data/skipped/total"] = self.total()
        return out

    def reasons(self, n: int = 3) -> str:
        """The first `n` recorded problems (file:line: kind: detail), for an error that ends a run."""
        examples = [e for kind in KINDS for e in self.examples[kind]]
        more = f" (and {self.total() - n} more)" if self.total() > n else ""
        return "; ".join(examples[:n]) + more

    def summary(self) -> str:
        if not self.total():
            return "no bad input"
        lines = [f"skipped {self.total()} bad input record(s):"]
        for kind in KINDS:
            if self.counts[kind]:
                lines.append(f"  {kind}: {self.counts[kind]}")
                lines += [f"    {example}" for example in self.examples[kind]]
                if self.counts[kind] > len(self.examples[kind]):
                    lines.append(f"    ... and {self.counts[kind] - len(self.examples[kind])} more")
        return "\n".join(lines)

    def warn(self) -> None:
        if self.total():
            log.warning(self.summary())
