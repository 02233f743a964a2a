"""Placement: a mesh plus its logical-axis rules, and the three things every caller needs from the pair.

Training, benchmarking, evaluation and generation all (1) trace their functions inside the mesh and the rules,
(2) split host batches over the batch axes and (3) bring small results back whole to every process. Before
this class each wrote `jax.set_mesh` + `rules.use_rules` + a batch `NamedSharding` out by hand; now they hold a
Placement. `Placement(None)` is one device: no context to enter, arrays stay as they are.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from xfer_jax.parallel import rules as rules_lib


@dataclasses.dataclass(frozen=True)
class Placement:
    mesh: jax.sharding.Mesh | None
    rules: tuple = rules_lib.DEFAULT_RULES

    def __post_init__(self):
        object.__setattr__(self, "rules", tuple(tuple(r) if isinstance(r, list) else r for r in self.rules))
        if self.mesh is not None:
            rules_lib.check_mesh_used(dict(self.mesh.shape), self.rules)

    @contextlib.contextmanager
    def context(self):
        """The mesh and rules every traced function must see (nothing to set on one device)."""
        if self.mesh is None:
            yield
            return
        with jax.set_mesh(self.mesh), rules_lib.use_rules(self.rules):
            yield

    def sharding(self, names: Sequence[str | None], shape: Sequence[int]) -> NamedSharding | None:
        """Where an array with these logical axis names goes (None on one device)."""
        if self.mesh is None:
            return None
        return NamedSharding(self.mesh, rules_lib.spec_for(tuple(names), tuple(shape), dict(self.mesh.shape),
                                                           self.rules))

    def batch_sharding(self, shape: Sequence[int]) -> NamedSharding | None:
        """Split the leading axis over the batch axes, the rest replicated."""
        return self.sharding(("batch",) + (None,) * (len(shape) - 1), shape)

    def put(self, array, names: Sequence[str | None] | None = None):
        """A host array every process holds whole → a global array placed by `names` (default: batch-split)."""
        if self.mesh is None:
            return array
        shape = np.shape(array)
        sharding = self.batch_sharding(shape) if names is None else self.sharding(names, shape)
        return jax.device_put(array, sharding)

    @staticmethod
    def replicated(x: jax.Array) -> jax.Array:
        """Every process can read a result once it is replicated (small results only)."""
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
            return x
        return jax.jit(lambda a: a, out_shardings=NamedSharding(x.sharding.mesh, PartitionSpec()))(x)

    @staticmethod
    def to_host(x) -> np.ndarray:
        """A (small, or single-process) result as numpy on every process: replicated first where other processes
        hold parts of it."""
        return np.asarray(Placement.replicated(x))
