"""The study's grid: the paper's arms as named runs, expanded from blocks of the config.

A block lists values per arm, and the block stands for every combination of them:

    dict(vocab=["original"], mixture=["zh", "zh_en"], budget=[0, 64_000, 256_000], instruct=["small", "large"])

- vocab: "original" (the base vocabulary) or an init strategy of the extended one (random, mean, noisy_mean,
  subword_mean);
- mixture: a name of `pretrain.mixtures` (target-only, target + English, ...);
- budget: tokens of further pretraining; 0 is the checkpoint before any (its mixture is moot and shown as
  "none", so blocks that differ only in mixture share it);
- instruct (optional): names of `instruct.sizes`, each an instruction-tuning run on top of that checkpoint.

Blocks overlap freely: a run named twice is run once. Every run has a stable name, so a rerun finds it.
"""
from __future__ import annotations

import dataclasses
import itertools

from xfer_jax.vocab.resize import STRATEGIES

ORIGINAL = "original"
VOCABS = (ORIGINAL, *STRATEGIES)
NO_MIXTURE = "none"


def tokens_label(tokens: int) -> str:
    """64000 → '64k', 16000000 → '16M', 0 → '0': short, exact for round budgets, usable in folder names."""
    if tokens >= 1_000_000 and tokens % 10_000 == 0:
        return f"{tokens / 1e6:g}M"
    if tokens >= 1_000 and tokens % 10 == 0:
        return f"{tokens / 1e3:g}k"
    return str(tokens)


@dataclasses.dataclass(frozen=True)
class Point:
    """A checkpoint of the grid: a vocabulary, further pretrained on a mixture for a token budget."""

    vocab: str
    mixture: str
    budget: int

    @property
    def name(self) -> str:
        return f"{self.vocab}-{self.mixture}-{tokens_label(self.budget)}"

    @property
    def series(self) -> tuple[str, str]:
        """(vocab, mixture): the line this point lies on when plotted against the budget."""
        return self.vocab, self.mixture


@dataclasses.dataclass(frozen=True)
class Tuning:
    """An instruction-tuning run on top of a point, with `size` (a name of instruct.sizes)."""

    point: Point
    size: str

    @property
    def name(self) -> str:
        return f"{self.point.name}-{self.size}"


@dataclasses.dataclass
class Grid:
    points: list[Point]
    tunings: list[Tuning]

    @property
    def vocabs(self) -> list[str]:
        return [v for v in VOCABS if any(p.vocab == v for p in self.points)]

    def series(self) -> dict[tuple[str, str], list[Point]]:
        """Every (vocab, mixture) line with its points by budget, each line starting at its vocabulary's 0."""
        lines: dict[tuple[str, str], list[Point]] = {}
        for p in self.points:
            if p.budget:
                lines.setdefault(p.series, [Point(p.vocab, NO_MIXTURE, 0)])
                lines[p.series].append(p)
        return {k: [p for p in v if p in self.points] for k, v in lines.items()}


def size_order(sizes) -> list[str]:
    """Instruction-set names from the smallest to the largest (`examples` 0 means all pairs: the largest)."""
    return sorted(sizes, key=lambda name: (sizes[name]["examples"] or float("inf"), name))


def expand(blocks, *, mixtures, sizes) -> Grid:
    """The runs the blocks stand for, each once; points ordered by vocabulary, mixture and budget."""
    points, tunings = set(), set()
    for i, block in enumerate(blocks):
        block = dict(block)
        unknown = set(block) - {"vocab", "mixture", "budget", "instruct"}
        if unknown or not all(block.get(k) for k in ("vocab", "mixture", "budget")):
            raise ValueError(f"grid[{i}]: a block needs non-empty lists vocab, mixture, budget (and optionally "
                             f"instruct); unknown keys: {sorted(unknown)}")
        for key, allowed in (("vocab", VOCABS), ("mixture", tuple(mixtures)), ("instruct", tuple(sizes))):
            bad = [v for v in block.get(key, ()) if v not in allowed]
            if bad:
                raise ValueError(f"grid[{i}].{key}: {bad} unknown; choose from {list(allowed)}")
        if any(not isinstance(b, int) or b < 0 for b in block["budget"]):
            raise ValueError(f"grid[{i}].budget: {list(block['budget'])} must be token counts >= 0")
        for vocab, mixture, budget in itertools.product(block["vocab"], block["mixture"], block["budget"]):
            point = Point(vocab, mixture if budget else NO_MIXTURE, budget)
            points.add(point)
            tunings.update(Tuning(point, size) for size in block.get("instruct", ()))
    order = {v: i for i, v in enumerate(VOCABS)}
    key = lambda p: (order[p.vocab], p.mixture != NO_MIXTURE, p.mixture, p.budget)  # noqa: E731
    return Grid(points=sorted(points, key=key),
                tunings=sorted(tunings, key=lambda t: (key(t.point), size_order(sizes).index(t.size))))
