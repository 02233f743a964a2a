"""Accelerators a plan can target without one at hand: peak bf16 FLOP/s, memory per chip, and the backend
(which decides the attention kernel `attention="auto"` picks, so the planner counts the right activations).

Why here and not only in train/metrics.py's PEAK_FLOPS: `xfer bench --plan --chip v5p` projects a TPU slice
from a laptop, where no device reports its kind. Figures are the vendors' published dense bf16 peaks and HBM.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    backend: str  # jax.default_backend() on it
    peak_flops: float  # dense bf16 FLOP/s
    memory_gb: float  # HBM per chip (per TensorCore pair on v4/v5p: what one JAX device holds)


CHIPS = {c.name: c for c in (
    Chip("v4", "tpu", 275e12, 32.0),
    Chip("v5e", "tpu", 197e12, 16.0),
    Chip("v5p", "tpu", 459e12, 95.0),
    Chip("v6e", "tpu", 918e12, 32.0),
    Chip("a100", "gpu", 312e12, 80.0),
    Chip("h100", "gpu", 989e12, 80.0),
    Chip("h200", "gpu", 989e12, 141.0),
)}


def get_chip(name: str) -> Chip:
    if name.lower() not in CHIPS:
        raise ValueError(f"--chip {name!r} is not known; choose one of {', '.join(CHIPS)}")
    return CHIPS[name.lower()]


def projected_step_s(flops_per_token: float, tokens: int, devices: int, chip: Chip, mfu: float) -> float:
    """Seconds per train step of `tokens` tokens on `devices` chips running at `mfu` of their peak."""
    return flops_per_token * tokens / (devices * chip.peak_flops * mfu)
