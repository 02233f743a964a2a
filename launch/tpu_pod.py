"""Cloud TPU slices through gcloud: create or reuse a slice, install this checkout on every worker, start one
command on all workers, follow its log, stop it cleanly, delete the slice.

    T="python launch/tpu_pod.py --name xfer-v5p --zone us-east5-a"     # add --project P, --queued
    $T create --accelerator v5p-32 --runtime_version v2-alpha-tpuv5 [--spot | --preemptible] [--valid_until 6h]
    $T setup [--fetch_data]                 # this checkout (git-tracked + untracked, not ignored) on every worker
    $T run --run_name pretrain -- xfer train --config configs/pretrain.py --config.train.out_dir=gs://BUCKET/runs/pt
    $T logs --run_name pretrain [--worker all]
    $T stop --run_name pretrain             # SIGTERM everywhere: the trainer saves, then exits; waits for it
    $T delete
    $T up --accelerator v5p-32 --runtime_version v2-alpha-tpuv5 --spot -- xfer train ...   # create+setup+run+logs
    $T --dry_run <any of the above>         # print every gcloud command instead of running it

Every worker runs the same command with XFER_DISTRIBUTED=auto, so `xfer train` calls
`jax.distributed.initialize()` and JAX finds the slice's workers itself (GCE metadata). With --queued the
slice is a queued resource (the way to get large or spot capacity): `create` waits until it is ACTIVE and
`delete` removes the request and its nodes. Processes run detached (setsid nohup) with their output in
~/xfer_runs/RUN.log on each worker, so a dropped SSH connection does not kill training; `logs` follows
worker 0's log until the process exits. Checkpoints, data and exports live in a gs:// bucket every worker
reads (the VM's service account needs access to it; docs/scale.md, "Runs in a bucket").
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
REMOTE_CODE, REMOTE_VENV, REMOTE_RUNS = "$HOME/xfer_jax", "$HOME/xfer_venv", "$HOME/xfer_runs"
ARCHIVE = "xfer_jax.tar.gz"


class Shell:
    """Runs commands, or with dry_run prints them (a probe then answers `dry_answer`)."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run

    def run(self, cmd: list[str]) -> None:
        if self.dry_run:
            print(shlex.join(cmd), flush=True)
            return
        code = subprocess.run(cmd).returncode
        if code:
            raise SystemExit(f"tpu_pod: `{shlex.join(cmd)}` failed with exit code {code}")

    def probe(self, cmd: list[str], dry_answer: str) -> tuple[int, str]:
        """(exit code, stdout) of a read-only command."""
        if self.dry_run:
            print(f"{shlex.join(cmd)}    # dry run: assuming {dry_answer!r}", flush=True)
            return 0, dry_answer
        done = subprocess.run(cmd, capture_output=True, text=True)
        return done.returncode, done.stdout.strip()


@dataclasses.dataclass
class Pod:
    name: str
    zone: str
    project: str
    queued: bool
    shell: Shell

    def gcloud(self, *args: str) -> list[str]:
        return ["gcloud", "compute", "tpus", *args, f"--zone={self.zone}",
                *([f"--project={self.project}"] if self.project else [])]

    @property
    def queued_name(self) -> str:
        return f"{self.name}-qr"

    # ---- the slice ----
    def exists(self) -> bool:
        """Whether the node (or, with --queued, the request) exists; a dry run assumes it does not."""
        group, name = ("queued-resources", self.queued_name) if self.queued else ("tpu-vm", self.name)
        code, _ = self.shell.probe(self.gcloud(group, "describe", name, "--format=value(name)"), "")
        return code == 0 and not self.shell.dry_run

    def create(self, accelerator: str, runtime_version: str, spot: bool, preemptible: bool, valid_until: str,
               poll_s: float) -> None:
        if self.queued and preemptible:
            raise SystemExit("tpu_pod: queued resources take --spot, not --preemptible")
        if not self.queued and valid_until:
            raise SystemExit("tpu_pod: --valid_until needs --queued (only queued requests expire)")
        capacity = ["--spot"] if spot else ["--preemptible"] if preemptible else []
        if self.exists():
            print(f"tpu_pod: reusing {self.queued_name if self.queued else self.name} in {self.zone}")
        elif self.queued:
            until = [f"--valid-until-duration={valid_until}"] if valid_until else []
            self.shell.run(self.gcloud("queued-resources", "create", self.queued_name, f"--node-id={self.name}",
                                       f"--accelerator-type={accelerator}", f"--runtime-version={runtime_version}",
                                       *capacity, *until))
        else:
            self.shell.run(self.gcloud("tpu-vm", "create", self.name, f"--accelerator-type={accelerator}",
                                       f"--version={runtime_version}", *capacity))
        if self.queued:
            self.wait_active(poll_s)

    def wait_active(self, poll_s: float) -> None:
        """Poll the queued resource until ACTIVE; FAILED or SUSPENDED ends the wait with its state."""
        while True:
            _, state = self.shell.probe(self.gcloud("queued-resources", "describe", self.queued_name,
                                                    "--format=value(state.state)"), "ACTIVE")
            if state == "ACTIVE":
                return
            if state in ("FAILED", "SUSPENDED"):
                raise SystemExit(f"tpu_pod: queued resource {self.queued_name} is {state}; see `gcloud compute tpus "
                                 f"queued-resources describe {self.queued_name} --zone={self.zone}`")
            print(f"tpu_pod: {self.queued_name} is {state or 'not visible yet'}; waiting {poll_s:.0f} s", flush=True)
            time.sleep(poll_s)

    def delete(self) -> None:
        if self.queued:
            self.shell.run(self.gcloud("queued-resources", "delete", self.queued_name, "--force", "--quiet"))
        else:
            self.shell.run(self.gcloud("tpu-vm", "delete", self.name, "--quiet"))

    # ---- the workers ----
    def ssh(self, script: str, worker: str = "all") -> None:
        self.shell.run(self.gcloud("tpu-vm", "ssh", self.name, f"--worker={worker}", f"--command={script}"))

    def setup(self, archive: pathlib.Path, extra: str, fetch_data: bool) -> None:
        """Copy the checkout to every worker and install it (with the extra, e.g. `tpu`) into a fresh venv."""
        self.shell.run(self.gcloud("tpu-vm", "scp", str(archive), f"{self.name}:{ARCHIVE}", "--worker=all"))
        steps = [f'rm -rf "{REMOTE_CODE}"', f'mkdir -p "{REMOTE_CODE}"', f'tar -xzf "$HOME/{ARCHIVE}" -C "{REMOTE_CODE}"',
                 f'python3 -m venv "{REMOTE_VENV}"', f'"{REMOTE_VENV}/bin/pip" install -q --upgrade pip',
                 f'"{REMOTE_VENV}/bin/pip" install -q -e "{REMOTE_CODE}[{extra}]"']
        if fetch_data:
            steps.append(f'cd "{REMOTE_CODE}" && "{REMOTE_VENV}/bin/xfer" data fetch --tokenizer')
        self.ssh("set -e; " + " && ".join(steps))

    def start(self, run_name: str, command: list[str], env: list[str]) -> None:
        """The same command on every worker, detached, output to ~/xfer_runs/RUN.log, pid in RUN.pid."""
        log, pid = f"{REMOTE_RUNS}/{run_name}.log", f"{REMOTE_RUNS}/{run_name}.pid"
        variables = shlex.join(["XFER_DISTRIBUTED=auto", *env])
        self.ssh(f'mkdir -p "{REMOTE_RUNS}" && cd "{REMOTE_CODE}" && PATH="{REMOTE_VENV}/bin:$PATH" '
                 f'setsid nohup env {variables} {shlex.join(command)} > "{log}" 2>&1 < /dev/null & echo $! > "{pid}"')

    def logs(self, run_name: str, worker: str) -> None:
        """Follow the log from its start until the process on that worker exits."""
        log, pid = f"{REMOTE_RUNS}/{run_name}.log", f"{REMOTE_RUNS}/{run_name}.pid"
        self.ssh(f'tail -n +1 --pid="$(cat "{pid}")" -f "{log}"', worker)

    def stop(self, run_name: str, grace_s: int) -> None:
        """SIGTERM on every worker (the trainer saves a checkpoint), SIGKILL after grace_s seconds."""
        pid = f'"$(cat "{REMOTE_RUNS}/{run_name}.pid")"'
        self.ssh(f"kill -TERM {pid} 2>/dev/null; for i in $(seq {grace_s}); do kill -0 {pid} 2>/dev/null || exit 0; "
                 f"sleep 1; done; echo \"still running after {grace_s} s: SIGKILL\"; kill -KILL {pid}")


def pack_checkout(dest: pathlib.Path) -> pathlib.Path:
    """A tarball of the files git would show: tracked plus untracked-but-not-ignored (no .venv, caches, runs)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    with tarfile.open(dest, "w:gz") as tar:
        for name in filter(None, listed):
            if (REPO / name).is_file():
                tar.add(REPO / name, arcname=name)
    return dest


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tpu_pod", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="TPU VM (node) name")
    p.add_argument("--zone", required=True)
    p.add_argument("--project", default="", help="default: gcloud's configured project")
    p.add_argument("--queued", action="store_true", help="the slice is (to be) a queued resource named NAME-qr")
    p.add_argument("--dry_run", action="store_true", help="print every gcloud command instead of running it")
    sub = p.add_subparsers(dest="action", required=True)

    def creating(s):
        s.add_argument("--accelerator", required=True, help="e.g. v4-32, v5litepod-16, v5p-32, v6e-16")
        s.add_argument("--runtime_version", required=True,
                       help="TPU software version, e.g. tpu-ubuntu2204-base (v4), v2-alpha-tpuv5-lite (v5e), "
                            "v2-alpha-tpuv5 (v5p), v2-alpha-tpuv6e (v6e)")
        s.add_argument("--spot", action="store_true", help="spot capacity (preemptible at any time, cheaper)")
        s.add_argument("--preemptible", action="store_true", help="legacy preemptible TPU VM (not with --queued)")
        s.add_argument("--valid_until", default="", help="--queued only: give up waiting after this long, e.g. 6h")
        s.add_argument("--poll_s", type=float, default=30.0, help="seconds between queued-resource state checks")

    def installing(s):
        s.add_argument("--extra", default="tpu", help="setup.py extra installed with the package")
        s.add_argument("--fetch_data", action="store_true", help="also run `xfer data fetch --tokenizer` on each worker")

    def running(s, command: bool):
        s.add_argument("--run_name", default="xfer", help="names the log and pid files in ~/xfer_runs/")
        if command:
            s.add_argument("--env", action="append", default=[], help="KEY=VALUE for the command (repeatable)")
            s.add_argument("--detach", action="store_true", help="do not follow the log after starting")
            s.add_argument("command", nargs=argparse.REMAINDER, help="-- the command every worker runs")

    creating(sub.add_parser("create", help="create the slice, or reuse it if it exists"))
    installing(sub.add_parser("setup", help="copy and install this checkout on every worker"))
    running(sub.add_parser("run", help="start a command on every worker"), command=True)
    logs = sub.add_parser("logs", help="follow a run's log")
    running(logs, command=False)
    logs.add_argument("--worker", default="0", help="worker index, or all")
    running(stop := sub.add_parser("stop", help="stop a run cleanly on every worker"), command=False)
    stop.add_argument("--grace_s", type=int, default=600, help="seconds to wait for the checkpoint before SIGKILL")
    sub.add_parser("delete", help="delete the slice (and its queued request)")
    up = sub.add_parser("up", help="create + setup + run + logs")
    creating(up)
    installing(up)
    running(up, command=True)
    args = p.parse_args(argv)
    if args.action in ("run", "up"):
        args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not args.command:
            p.error(f"{args.action}: give the command after `--`, e.g. `-- xfer train --config configs/pretrain.py`")
        bad = [e for e in args.env if "=" not in e]
        if bad:
            p.error(f"--env {bad[0]!r}: write KEY=VALUE")
    if getattr(args, "spot", False) and args.preemptible:
        p.error("choose --spot or --preemptible, not both")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    pod = Pod(args.name, args.zone, args.project, args.queued, Shell(args.dry_run))
    if args.action in ("create", "up"):
        pod.create(args.accelerator, args.runtime_version, args.spot, args.preemptible, args.valid_until, args.poll_s)
    if args.action in ("setup", "up"):
        with tempfile.TemporaryDirectory() as tmp:
            archive = pathlib.Path(tmp) / ARCHIVE
            if args.dry_run:
                print(f"# dry run: would pack this checkout into {archive}")
            else:
                pack_checkout(archive)
            pod.setup(archive, args.extra, args.fetch_data)
    if args.action in ("run", "up"):
        pod.start(args.run_name, args.command, args.env)
        if not args.detach:
            pod.logs(args.run_name, "0")
    if args.action == "logs":
        pod.logs(args.run_name, args.worker)
    if args.action == "stop":
        pod.stop(args.run_name, args.grace_s)
    if args.action == "delete":
        pod.delete()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
