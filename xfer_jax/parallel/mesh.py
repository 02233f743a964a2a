"""The one mesh builder: axes (data, fsdp, tensor, sequence) from config, -1 meaning "the rest of the devices".

`sequence` is context parallelism: the activations' sequence dimension split over it (rules.py "seq"). It comes
last so that a (data, fsdp, tensor) tuple still zips onto the first three axes (perf/sweep.py).

Sizes are checked before anything compiles, with a message that says what to change.
"""
import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType

MESH_AXES = ("data", "fsdp", "tensor", "sequence")


def parse_axis_sizes(text: str) -> dict[str, int]:
    """The --mesh flag of bench, eval and serve: 'data=1,fsdp=-1,tensor=2' → {'data': 1, 'fsdp': -1, 'tensor': 2}."""
    sizes = {}
    for part in text.split(","):
        name, _, size = part.partition("=")
        if not size.lstrip("-").isdigit():
            raise ValueError(f"--mesh {text!r}: {part!r} is not axis=size (e.g. --mesh fsdp=-1,tensor=2)")
        sizes[name.strip()] = int(size)
    return sizes


def parse_mesh(text: str | None) -> jax.sharding.Mesh | None:
    """The --mesh flag as a mesh: 'data=1,fsdp=-1,tensor=2' → a mesh over all devices; None or '' → one device."""
    return make_mesh(parse_axis_sizes(text)) if text else None


def resolve_axis_sizes(sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Replace a single -1 with the devices left over; check that the product equals `num_devices`."""
    unknown = set(sizes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; the mesh axes are {MESH_AXES}")
    resolved = {a: int(sizes.get(a, 1)) for a in MESH_AXES}
    free = [a for a, s in resolved.items() if s == -1]
    if len(free) > 1:
        raise ValueError(f"mesh axes {free} are all -1; at most one axis may take 'the rest' of the devices")
    if any(s == 0 or s < -1 for s in resolved.values()):
        raise ValueError(f"mesh axis sizes must be positive or -1, got {resolved}")
    fixed = math.prod(s for s in resolved.values() if s != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"mesh {resolved}: the fixed axes use {fixed} devices, which does not divide the {num_devices} "
                f"devices available; choose sizes whose product divides {num_devices}"
            )
        resolved[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(
            f"mesh {resolved} needs {fixed} devices but {num_devices} are available; "
            f"set one axis to -1 or make the product equal {num_devices}"
        )
    return resolved


def make_mesh(sizes: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A mesh over `devices` (all by default) with Auto axis types (Explicit breaks Flax gathers)."""
    devices = list(jax.devices() if devices is None else devices)
    resolved = resolve_axis_sizes(sizes or {"fsdp": -1}, len(devices))
    shape = tuple(resolved[a] for a in MESH_AXES)
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
    return jax.sharding.Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
