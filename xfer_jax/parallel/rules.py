"""Logical axis names → mesh axes: the one table that decides every parameter's and activation's sharding.

Model code names the axes of each parameter ("embed", "mlp", ...) and of each activation ("batch", "act_mlp",
...). A rules table maps each logical name to a mesh axis, a tuple of mesh axes, or None (replicated). The
table lives in config (`config.mesh.rules`); `DEFAULT_RULES` is FSDP over `fsdp`, tensor parallelism over
`tensor`, data parallelism over `data` (+ `fsdp`) for the batch, context parallelism over `sequence` for the
activations' (and batch arrays') sequence dimension.

A dimension whose size the chosen mesh axes do not divide is replicated instead (e.g. a 49,953-row
vocabulary on tensor=2); `spec_for` does that one decision, so parameters and activations agree.
"""
import contextlib
import contextvars
from collections.abc import Sequence

import jax
from jax.sharding import NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

DEFAULT_RULES: tuple = (
    # activations
    ("batch", ("data", "fsdp")),
    ("seq", "sequence"),  # context parallelism; a no-op while mesh.sequence is 1
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    # parameters
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("lora_rank", None),
)

_RULES = contextvars.ContextVar("xfer_rules", default=DEFAULT_RULES)


@contextlib.contextmanager
def use_rules(rules: Rules):
    """Make `rules` the table `constrain` and `spec_for` use while tracing inside this block."""
    token = _RULES.set(tuple(tuple(r) for r in rules))
    try:
        yield
    finally:
        _RULES.reset(token)


def current_rules() -> tuple:
    return _RULES.get()


def _mesh_axes_for(name: str | None, rules: Rules) -> tuple[str, ...]:
    if name is None:
        return ()
    for logical, mesh_axes in rules:
        if logical == name:
            if mesh_axes is None:
                return ()
            return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
    raise KeyError(f"logical axis {name!r} has no entry in the sharding rules; add ({name!r}, <mesh axis or None>)")


# The logical axis a mesh axis is for, named in the error when a rules table leaves that mesh axis unused.
_SUGGEST = {"sequence": ("seq", "sequence"), "tensor": ("act_mlp", "tensor"), "fsdp": ("embed", "fsdp"),
            "data": ("batch", ("data", "fsdp"))}


def check_mesh_used(mesh_shape: dict[str, int], rules: Rules) -> None:
    """Every mesh axis with more than one device is named by some rule: else its devices would silently hold
    copies (e.g. mesh.sequence=4 under an older table with ("seq", None) keeps every sequence whole)."""
    named = {a for logical, _ in rules for a in _mesh_axes_for(logical, rules)}
    for axis, size in mesh_shape.items():
        if size > 1 and axis not in named:
            raise ValueError(f"mesh axis {axis!r} has {size} devices but no entry of the sharding rules (config "
                             f"rules) maps to it, so they would only hold copies; add a rule such as "
                             f"{_SUGGEST.get(axis, ('<logical axis>', axis))!r} or set that axis to 1")


def spec_for(names: Sequence[str | None], shape: Sequence[int], mesh_shape: dict[str, int], rules: Rules | None = None) -> PartitionSpec:
    """PartitionSpec for an array whose axes carry `names`, on a mesh with axis sizes `mesh_shape`.

    Mesh axes absent from the mesh or of size 1 are dropped; a mesh axis is used at most once; a dimension
    the remaining axes do not divide is replicated.
    """
    rules = current_rules() if rules is None else rules
    if len(names) != len(shape):
        raise ValueError(f"logical names {tuple(names)} do not match array rank {len(shape)} (shape {tuple(shape)})")
    used: set[str] = set()
    spec = []
    for name, dim in zip(names, shape):
        axes = [a for a in _mesh_axes_for(name, rules) if mesh_shape.get(a, 1) > 1 and a not in used]
        size = 1
        for a in axes:
            size *= mesh_shape[a]
        if not axes or dim % size:
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else tuple(axes))
    return PartitionSpec(*spec)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation by logical names; a no-op when no mesh is set (one device)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, spec_for(names, x.shape, dict(mesh.shape)))


def named_shardings(logical_tree, abstract_tree, mesh: jax.sharding.Mesh, rules: Rules | None = None):
    """NamedShardings for a tree of arrays given a matching tree of logical-name tuples."""
    mesh_shape = dict(mesh.shape)
    return jax.tree.map(
        lambda names, a: NamedSharding(mesh, spec_for(names, a.shape, mesh_shape, rules)),
        logical_tree,
        abstract_tree,
        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(n, (str, type(None))) for n in x),
    )
