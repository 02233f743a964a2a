"""Start one command as several JAX processes on this host: one per GPU, one per host, or simulated on CPU.

    # one machine, 2 processes × 4 simulated CPU devices (multi-host testing without a cluster)
    python launch/multiprocess.py --num_processes 2 --cpu_devices 4 -- xfer train --config configs/pretrain.py
    # one GPU host, one process per GPU
    python launch/multiprocess.py --num_processes 8 --per_gpu -- xfer train --config ...
    # several GPU hosts without a scheduler: run on every host with its --host_id
    python launch/multiprocess.py --coordinator host0:7777 --num_hosts 4 --host_id $I --num_processes 8 --per_gpu -- ...

Each child gets XFER_COORDINATOR / XFER_NUM_PROCESSES / XFER_PROCESS_ID (and XFER_LOCAL_DEVICE_IDS with
--per_gpu), which `xfer_jax.parallel.launch.maybe_initialize_distributed` turns into
`jax.distributed.initialize`. Output lines are prefixed with the process id. One child failing stops the
others (they would otherwise wait forever in a collective); SIGINT/SIGTERM is forwarded to every child, so a
trainer saves its checkpoint and the launcher exits with the children's code. Under SLURM use
launch/slurm_gpu.sbatch instead: srun starts the processes there.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    """A TCP port nobody listens on now (the coordinator binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_processes", type=int, required=True, help="processes on this host")
    parser.add_argument("--num_hosts", type=int, default=1, help="hosts running this launcher (same flags)")
    parser.add_argument("--host_id", type=int, default=0, help="this host's index, 0..num_hosts-1 (host 0 coordinates)")
    parser.add_argument("--coordinator", default="", help="host:port of host 0; default localhost:<free port> "
                        "(only valid with --num_hosts 1)")
    parser.add_argument("--cpu_devices", type=int, default=0, help="run on CPU with this many simulated devices "
                        "per process (XLA_FLAGS=--xla_force_host_platform_device_count)")
    parser.add_argument("--per_gpu", action="store_true", help="give process i of this host only GPU i")
    parser.add_argument("--grace_s", type=float, default=120.0, help="seconds between SIGTERM and SIGKILL when "
                        "stopping (a trainer saves its checkpoint in between)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command every process runs")
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        parser.error("give the command after `--`, e.g. `-- xfer train --config configs/pretrain.py`")
    if not 0 <= args.host_id < args.num_hosts:
        parser.error(f"--host_id {args.host_id} must be in 0..{args.num_hosts - 1}")
    if args.num_hosts > 1 and not args.coordinator:
        parser.error("--num_hosts > 1 needs --coordinator host0:port (the same on every host)")
    if args.per_gpu and args.cpu_devices:
        parser.error("--per_gpu and --cpu_devices exclude each other")
    return args


def child_envs(args: argparse.Namespace, base: dict[str, str]) -> list[dict[str, str]]:
    """The environment of each local process."""
    coordinator = args.coordinator or f"localhost:{free_port()}"
    total = args.num_hosts * args.num_processes
    envs = []
    for local in range(args.num_processes):
        env = {**base, "XFER_COORDINATOR": coordinator, "XFER_NUM_PROCESSES": str(total),
               "XFER_PROCESS_ID": str(args.host_id * args.num_processes + local)}
        if args.per_gpu:
            env["XFER_LOCAL_DEVICE_IDS"] = str(local)
        if args.cpu_devices:
            flags = [f for f in base.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
            env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={args.cpu_devices}"])
            env["JAX_PLATFORMS"] = "cpu"
        envs.append(env)
    return envs


def _pump(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, b""):
        out.write(f"{prefix}{line.decode(errors='replace')}")
        out.flush()


def run(command: list[str], envs: list[dict[str, str]], grace_s: float = 120.0, poll_s: float = 0.2) -> int:
    """Start every process and stream its output. When one fails, or on SIGINT/SIGTERM, the others get SIGTERM
    (a trainer saves and exits) and SIGKILL after `grace_s`. Returns the first failing exit code, else 0."""
    procs, pumps = [], []
    for env in envs:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        pump = threading.Thread(target=_pump, args=(proc.stdout, f"[p{env['XFER_PROCESS_ID']}] ", sys.stdout), daemon=True)
        pump.start()
        procs.append(proc)
        pumps.append(pump)
    stopping = []

    def stop(signum=signal.SIGTERM, _frame=None):
        stopping.append(time.monotonic())
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    failed = None
    try:
        while any(p.poll() is None for p in procs):
            if failed is None and (failed := next((p for p in procs if p.poll() not in (None, 0)), None)):
                stop()
            if stopping and time.monotonic() - stopping[0] > grace_s:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(poll_s)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for pump in pumps:
            pump.join()
    failed = failed or next((p for p in procs if p.returncode), None)
    return failed.returncode if failed is not None else 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    envs = child_envs(args, dict(os.environ))
    print(f"launch: {args.num_processes} process(es) on host {args.host_id}/{args.num_hosts}, coordinator "
          f"{envs[0]['XFER_COORDINATOR']}: {shlex.join(args.command)}", flush=True)
    return run(args.command, envs, args.grace_s)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
