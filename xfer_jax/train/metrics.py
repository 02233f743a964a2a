"""Throughput, MFU and memory figures, and where metrics go (JSONL, TensorBoard, the terminal).

MFU convention (PaLM/MaxText, see DESIGN.md): model FLOPs per token = 6·N_matmul + 12·L·D·S, with N_matmul
the parameters excluding the input embedding and S the sequence length; no causal halving of attention.
MFU = achieved FLOP/s per device / the device's peak dense bf16 FLOP/s.
"""
import json
import os
import resource
import shutil
import tempfile
import time

import jax

from xfer_jax import paths
from xfer_jax.model.config import LlamaConfig
from xfer_jax.train.curves import write_curves

# Peak dense bf16 FLOP/s per chip, by a substring of jax's device_kind.
PEAK_FLOPS = (
    ("H200", 989e12), ("H100", 989e12), ("A100", 312e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v4", 275e12),
)


def peak_flops(device: jax.Device | None = None) -> float | None:
    kind = (device or jax.devices()[0]).device_kind
    for name, flops in PEAK_FLOPS:
        if name.lower() in kind.lower():
            return flops
    return None


def throughput(cfg: LlamaConfig, seq_len: int, tokens: float, seconds: float, num_devices: int) -> dict:
    """tokens/s (total and per device), TFLOP/s per device and MFU (None where the peak is unknown, e.g. CPU)."""
    tok_s = tokens / max(seconds, 1e-9)
    per_device = tok_s / num_devices
    flops = per_device * cfg.flops_per_token(seq_len)
    peak = peak_flops()
    return {"tokens_per_s": tok_s, "tokens_per_s_per_device": per_device, "tflops_per_device": flops / 1e12,
            "mfu": None if peak is None else flops / peak}


def memory_gb() -> dict:
    """Accelerator memory in use / peak (first local device) where the backend reports it, else host RSS."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_in_use" in stats:
        return {"mem_gb": stats["bytes_in_use"] / 1e9, "peak_mem_gb": stats.get("peak_bytes_in_use", 0) / 1e9}
    return {"host_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


class MetricWriter:
    """Appends one JSON object per record to metrics.jsonl and mirrors scalars to TensorBoard (process 0).

    A run resumed from step `resume_step` first forgets what was logged after it (steps that ran but whose
    checkpoint was lost, e.g. to a kill during an async save): the JSONL keeps only records up to that step
    (rewritten atomically) and TensorBoard purges later events, so the logs of an interrupted-and-resumed run
    equal an uninterrupted run's, step for step.

    In a bucket (out_dir gs://...) an object cannot be appended to, and one request per line would cost a
    round trip per step: the JSONL is kept in memory and the whole object rewritten by `flush()` (at most every
    `flush_s` seconds, at each checkpoint save and at close), and TensorBoard writes to a local temporary folder
    whose event files `flush()` uploads. A kill -9 loses at most the records since the last flush."""

    def __init__(self, out_dir: paths.Path, resume_step: int = 0, flush_s: float = 30.0, wandb=None,
                 config_dict: dict | None = None):
        """`wandb`: the train.wandb settings (train/wandb_log.py); mode "offline"/"online" mirrors every record."""
        self.enabled = jax.process_index() == 0
        self._wandb = None
        if not self.enabled:
            return
        self.remote, self.flush_s, self._flushed_at = paths.is_url(out_dir), flush_s, time.monotonic()
        out_dir.mkdir(parents=True, exist_ok=True)
        self._path = path = out_dir / "metrics.jsonl"
        kept = ""
        if path.exists():
            kept = "".join(line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                           if _logged_step(line) <= resume_step)
            paths.write_text(path, kept)
        self._records = [json.loads(line) for line in kept.splitlines() if line.strip()]  # for curves.png
        if self.remote:
            self._lines, self._jsonl = [kept], None
        else:
            self._jsonl = open(path, "a", encoding="utf-8")
        from tensorboardX import SummaryWriter

        self._tb_out = out_dir / "tensorboard"
        purge = resume_step + 1 if self._tb_out.exists() else None  # TensorBoard hides events at steps >= purge
        self._tb_local = tempfile.mkdtemp(prefix="xfer-tb-") if self.remote else str(self._tb_out)
        self._tb = SummaryWriter(self._tb_local, purge_step=purge)
        self._uploaded: dict[str, int] = {}
        if wandb is not None and wandb.mode != "disabled":
            from xfer_jax.train.wandb_log import WandbSink

            self._wandb = WandbSink(wandb, out_dir, config_dict or {})

    def write(self, step: int, record: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps({"step": step, **record}) + "\n"
        self._records.append({"step": step, **record})
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(step, record)
        if not self.remote:
            self._jsonl.write(line)
            self._jsonl.flush()
            return
        self._lines.append(line)
        if time.monotonic() - self._flushed_at >= self.flush_s:
            self.flush()

    def draw_curves(self) -> None:
        """OUT/curves.png from every record so far (train/curves.py)."""
        if self.enabled:
            write_curves(self._records, self._path.parent / "curves.png", title=str(self._path.parent.name))

    def flush(self) -> None:
        """In a bucket: rewrite metrics.jsonl whole and upload the event files that grew (one object each)."""
        if not (self.enabled and self.remote):
            return
        paths.write_text(self._path, "".join(self._lines))
        self._tb.flush()
        for name in os.listdir(self._tb_local):
            size = os.path.getsize(os.path.join(self._tb_local, name))
            if self._uploaded.get(name) != size:
                paths.copy_file(os.path.join(self._tb_local, name), self._tb_out / name)
                self._uploaded[name] = size
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._wandb is not None:
            self._wandb.close()
            self._wandb = None
        if self.remote:
            try:
                self.flush()
            finally:
                self._tb.close()
                shutil.rmtree(self._tb_local, ignore_errors=True)
            return
        self._jsonl.close()
        self._tb.close()


def _logged_step(line: str) -> float:
    """The step of a metrics.jsonl line; a torn last line (a crash mid-write) counts as after every step."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


def format_line(step: int, total: int, r: dict) -> str:
    """The per-step log line: loss, ppl, grad norm, lr, step time, tokens/s/device, TFLOP/s/device, MFU, memory."""
    mfu = "n/a" if r.get("mfu") is None else f"{r['mfu']:.1%}"
    mem = r.get("peak_mem_gb", r.get("host_rss_gb", 0.0))
    return (f"step {step}/{total} | loss {r['loss']:.4f} | ppl {r['ppl']:.2f} | gnorm {r['grad_norm']:.3f} | "
            f"lr {r['lr']:.2e} | {r['step_time_s']:.3f} s/step | {r['tokens_per_s_per_device']:,.0f} tok/s/dev | "
            f"{r['tflops_per_device']:.2f} TFLOP/s/dev | MFU {mfu} | mem {mem:.2f} GB")
