"""Mesh-scaling study: the trainer's own train step timed over mesh shapes, model shapes and batch sizes.

Why a sweep and not a guess: which mesh is fastest (pure FSDP, data × FSDP, some tensor parallelism)
depends on the model, the batch, the chips and the interconnect, and only a measurement says. Each point
builds the state and the jitted step exactly as `train/loop.py` does (train/setup.py: same shardings,
optimizer and compiled step) and feeds a fixed synthetic batch: the sweep measures speed, not learning.

Per point: compile time, median step time over `steps` timed steps after `warmup`, tokens/s, TFLOP/s per
device and MFU (train/metrics.py), the compiler's per-device memory (arguments, temporaries), the device's
own memory report (or host RSS on CPU), and the planner's estimate (perf/planner.py) beside them.
A point that cannot run (batch not divisible by the mesh, out of memory) becomes a row with its error.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import pathlib

import jax
import ml_collections

from xfer_jax.model.config import LlamaConfig
from xfer_jax.model.shapes import get_shape
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.parallel import rules as rules_lib
from xfer_jax.parallel.placement import Placement
from xfer_jax.perf import bench, planner
from xfer_jax.train import checks, metrics as metrics_lib, optim

COLUMNS = (
    "shape", "params_m", "mesh", "data", "fsdp", "tensor", "sequence", "devices", "batch_size", "seq_len", "dtype", "param_dtype",
    "remat", "attention", "status", "compile_s", "step_s", "step_s_min", "tokens_per_s", "tokens_per_s_per_device",
    "tflops_per_device", "mfu", "xla_args_gb", "xla_temp_gb", "device_mem_gb", "device_peak_mem_gb", "host_rss_gb",
    "plan_params_gb", "plan_grads_gb", "plan_opt_gb", "plan_act_gb", "plan_update_gb", "plan_total_gb", "plan_fits",
    "device_kind",
)


@dataclasses.dataclass(frozen=True)
class Point:
    shape: str
    mesh: tuple[int, ...]  # (data, fsdp, tensor[, sequence])
    batch_size: int

    @property
    def devices(self) -> int:
        return math.prod(self.mesh)

    @property
    def mesh_sizes(self) -> dict[str, int]:
        return {**dict.fromkeys(mesh_lib.MESH_AXES, 1), **dict(zip(mesh_lib.MESH_AXES, self.mesh))}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every point shares; defaults are for accelerators (bf16 compute, 2048 tokens), optimizer as trained."""

    seq_len: int = 2048
    dtype: str = "bfloat16"
    param_dtype: str = "float32"
    remat: str = "none"
    attention: str = "auto"
    vocab_size: int = 0  # 0: the shape's own
    grad_accum: int = 1
    loss_chunk: int = 0
    steps: int = 5
    warmup: int = 2
    device_memory_gb: float = 0.0  # 0: the device's own limit where it reports one
    backend: str | None = None  # the platform a plan is for (perf/chips.py); None: this machine's
    rules: tuple = rules_lib.DEFAULT_RULES
    optim: ml_collections.ConfigDict = dataclasses.field(default_factory=optim.default_optim_config)


def parse_mesh(text: str) -> tuple[int, ...]:
    """'2x4x1' → (data=2, fsdp=4, tensor=1); '2x1x1x4' adds sequence=4 (context parallelism)."""
    parts = text.lower().split("x")
    if len(parts) not in (3, 4) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"mesh {text!r}: write data x fsdp x tensor [x sequence] as positive integers, e.g. 2x4x1 "
                         f"or 2x1x1x4")
    return tuple(int(p) for p in parts)


def meshes_for(device_counts: list[int]) -> list[tuple[int, int, int]]:
    """Every (data, fsdp, tensor) whose product is one of `device_counts`."""
    return [(d, f, n // (d * f)) for n in device_counts for d in range(1, n + 1) if n % d == 0
            for f in range(1, n // d + 1) if (n // d) % f == 0]


def grid(shapes: list[str], meshes: list[tuple[int, int, int]], batch_sizes: list[int]) -> list[Point]:
    return [Point(s, m, b) for s, m, b in itertools.product(shapes, meshes, batch_sizes)]


def model_config(shape: str, s: Settings) -> LlamaConfig:
    extra = {"vocab_size": s.vocab_size} if s.vocab_size else {}
    return get_shape(shape, dtype=s.dtype, param_dtype=s.param_dtype, remat=s.remat, attention=s.attention, **extra)


def device_memory_limit_gb(s: Settings) -> float | None:
    if s.device_memory_gb:
        return s.device_memory_gb
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats["bytes_limit"] / 1e9 if "bytes_limit" in stats else None


def plan_row(point: Point, s: Settings, limit_gb: float | None) -> dict:
    """The point's identity and the planner's estimate (no device is touched, any mesh size works); plan_fits
    compares it with `limit_gb` per device."""
    cfg = model_config(point.shape, s)
    plan = planner.plan_memory(cfg, point.mesh_sizes, s.rules, batch_size=point.batch_size, seq_len=s.seq_len,
                               grad_accum=s.grad_accum, loss_chunk=s.loss_chunk,
                               moment_dtypes=(s.optim.moment_dtype, None),  # AdamW: mu, nu (optim.make_optimizer)
                               backend=s.backend)
    return {"shape": point.shape, "params_m": cfg.num_params() / 1e6, "mesh": "x".join(map(str, point.mesh)),
            **point.mesh_sizes, "devices": point.devices, "batch_size": point.batch_size, "seq_len": s.seq_len,
            "dtype": cfg.dtype, "param_dtype": cfg.param_dtype, "remat": cfg.remat, "attention": cfg.attention,
            **plan.as_row(), "plan_fits": None if limit_gb is None else plan.total / 1e9 <= limit_gb}


def check_point(point: Point, cfg: LlamaConfig, s: Settings, planned: bool = False) -> None:
    """What makes a point impossible, said before anything is allocated (train/checks.py, as `xfer train`);
    `planned`: on a machine of the mesh's size."""
    checks.check_run(cfg, point.mesh_sizes, batch_size=point.batch_size, seq_len=s.seq_len, grad_accum=s.grad_accum,
                     steps=s.steps, model=point.shape, planned=planned)


def measure(point: Point, cfg: LlamaConfig, s: Settings) -> dict:
    """Compile and time the train step on the first `point.devices` devices (`xfer bench`'s timing)."""
    placement = Placement(mesh_lib.make_mesh(point.mesh_sizes, jax.devices()[: point.devices]), s.rules)
    host_batch = bench.synthetic_batch(point.batch_size, s.seq_len, cfg.vocab_size, 0)
    timing = bench.time_train_step(cfg, placement, host_batch,
                                   optim_cfg=s.optim, grad_accum=s.grad_accum, loss_chunk=s.loss_chunk,
                                   warmup=s.warmup, steps=s.steps)
    if not math.isfinite(timing["loss"]):
        raise FloatingPointError(f"loss {timing['loss']} is not finite on synthetic data")
    mem = timing["memory"]
    row = {"status": "ok", "compile_s": timing["compile_s"], "step_s": timing["step_s"], "step_s_min": timing["step_s_min"],
           **metrics_lib.throughput(cfg, s.seq_len, point.batch_size * s.seq_len, timing["step_s"], point.devices),
           "xla_args_gb": None if mem is None else mem.argument_size_in_bytes / 1e9,
           "xla_temp_gb": None if mem is None else mem.temp_size_in_bytes / 1e9}
    device = metrics_lib.memory_gb()
    row.update({"device_mem_gb": device.get("mem_gb"), "device_peak_mem_gb": device.get("peak_mem_gb"),
                "host_rss_gb": device.get("host_rss_gb")})
    return row


def run_point(point: Point, s: Settings, plan_only: bool = False) -> dict:
    row = {c: None for c in COLUMNS}
    if plan_only:
        row.update(plan_row(point, s, s.device_memory_gb or None), status="planned")
        try:
            check_point(point, model_config(point.shape, s), s, planned=True)
        except ValueError as e:
            row.update(status=f"error: {e}", plan_fits=False)
        return row
    row.update(plan_row(point, s, device_memory_limit_gb(s)), device_kind=jax.devices()[0].device_kind)
    cfg = model_config(point.shape, s)
    try:
        check_point(point, cfg, s)
        row.update(measure(point, cfg, s))
    except (ValueError, FloatingPointError, jax.errors.JaxRuntimeError) as e:
        row["status"] = f"error: {str(e).splitlines()[0][:300]}"
    return row


def format_row(r: dict) -> str:
    head = f"{r['shape']} mesh {r['mesh']} batch {r['batch_size']}: plan {r['plan_total_gb']:.3f} GB/device"
    if r["status"] != "ok":
        return f"{head} | {r['status']}"
    mfu = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
    xla = "n/a" if r["xla_args_gb"] is None else f"{r['xla_args_gb'] + r['xla_temp_gb']:.3f} GB/device"
    return (f"{head} | compile {r['compile_s']:.1f} s | {r['step_s'] * 1e3:.1f} ms/step | "
            f"{r['tokens_per_s']:,.0f} tok/s | {r['tflops_per_device']:.3f} TFLOP/s/dev | MFU {mfu} | "
            f"XLA args+temp {xla}")


def write_csv(rows: list[dict], path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r[k]) for k in COLUMNS} for r in rows)


def read_csv(path: pathlib.Path) -> list[dict]:
    """Rows back with numbers as numbers and empty cells as None."""
    def value(text: str):
        if text == "":
            return None
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
        return {"True": True, "False": False}.get(text, text)

    with open(path, newline="") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]
