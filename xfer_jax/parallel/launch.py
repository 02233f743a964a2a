"""Multi-host start-up: call `jax.distributed.initialize` exactly when the environment says we are one of many.

- Explicit: XFER_COORDINATOR=host:port, XFER_NUM_PROCESSES=N, XFER_PROCESS_ID=i (any cluster, local tests);
  optional XFER_LOCAL_DEVICE_IDS=0,1 to give each process its own GPUs.
- SLURM with more than one task (SLURM_NTASKS > 1) and TPU pod slices (TPU_WORKER_HOSTNAMES with several
  hosts): JAX's own cluster detection fills in the coordinator, count and id.
- Otherwise: a single process; nothing to do.
Must run before anything touches a device.
"""
import os

import jax


def distributed_env() -> dict | None:
    """The keyword arguments for jax.distributed.initialize, or None for a single-process run."""
    env = os.environ
    if env.get("XFER_COORDINATOR"):
        missing = [k for k in ("XFER_NUM_PROCESSES", "XFER_PROCESS_ID") if k not in env]
        if missing:
            raise ValueError(f"XFER_COORDINATOR is set but {missing} are not; set all three (or none)")
        kwargs = dict(coordinator_address=env["XFER_COORDINATOR"], num_processes=int(env["XFER_NUM_PROCESSES"]),
                      process_id=int(env["XFER_PROCESS_ID"]))
        if env.get("XFER_LOCAL_DEVICE_IDS"):
            kwargs["local_device_ids"] = [int(i) for i in env["XFER_LOCAL_DEVICE_IDS"].split(",")]
        return kwargs
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        return {}
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
