"""Multi-host start-up: call `jax.distributed.initialize` exactly when the environment says we are one of many.

- Explicit: XFER_COORDINATOR=host:port, XFER_NUM_PROCESSES=N, XFER_PROCESS_ID=i (any cluster, local tests,
  launch/multiprocess.py); optional XFER_LOCAL_DEVICE_IDS=0,1 to give each process its own GPUs.
- XFER_DISTRIBUTED=auto: JAX's own cluster detection (Cloud TPU VM slices, whose workers are known from GCE
  metadata rather than the environment; Open MPI; Kubernetes). launch/tpu_pod.py sets it.
- SLURM with more than one task (SLURM_NTASKS > 1): JAX reads coordinator, count and id from SLURM. With
  several tasks per node each task gets GPU SLURM_LOCALID (one process per GPU; do not bind GPUs per task);
  with one task per node the task gets all the node's devices (one process per host).
- TPU_WORKER_HOSTNAMES with several hosts (GKE TPU slices): JAX's detection, as for auto.
- Otherwise: a single process; nothing to do.
Must run before anything touches a device. CPU processes exchange collectives over Gloo (JAX's default
`jax_cpu_collectives_implementation` on 0.10 and later).
"""
import os
from collections.abc import Mapping

import jax


def _slurm(env: Mapping[str, str]) -> dict:
    tasks, nodes = int(env["SLURM_NTASKS"]), int(env.get("SLURM_NNODES", env.get("SLURM_JOB_NUM_NODES", "1")))
    if tasks == nodes:
        # JAX would otherwise restrict each task to device SLURM_LOCALID (= 0): an empty list keeps them all.
        return {"local_device_ids": []}
    return {}


def distributed_env(env: Mapping[str, str] | None = None) -> dict | None:
    """The keyword arguments for jax.distributed.initialize, or None for a single-process run."""
    env = os.environ if env is None else env
    if env.get("XFER_COORDINATOR"):
        missing = [k for k in ("XFER_NUM_PROCESSES", "XFER_PROCESS_ID") if k not in env]
        if missing:
            raise ValueError(f"XFER_COORDINATOR is set but {missing} are not; set all three (or none)")
        kwargs = dict(coordinator_address=env["XFER_COORDINATOR"], num_processes=int(env["XFER_NUM_PROCESSES"]),
                      process_id=int(env["XFER_PROCESS_ID"]))
        if env.get("XFER_LOCAL_DEVICE_IDS"):
            kwargs["local_device_ids"] = [int(i) for i in env["XFER_LOCAL_DEVICE_IDS"].split(",")]
        return kwargs
    if env.get("XFER_DISTRIBUTED", "") not in ("", "auto"):
        raise ValueError(f"XFER_DISTRIBUTED={env['XFER_DISTRIBUTED']!r}; the only value is 'auto' (or leave it unset)")
    if env.get("XFER_DISTRIBUTED") == "auto":
        return {}
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        return _slurm(env)
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return {}
    return None


def maybe_initialize_distributed() -> None:
    kwargs = distributed_env()
    if kwargs is None:
        return
    jax.distributed.initialize(**kwargs)
    print(f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} local of "
          f"{jax.device_count()} devices")
