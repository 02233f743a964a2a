"""Launchers without a cluster: which jax.distributed arguments each environment yields, the local
multi-process launcher's environments and failure handling, every gcloud command of the TPU pod launcher
(dry run, and against a stand-in gcloud), and the SLURM script against a stand-in srun."""
import importlib.util
import os
import pathlib
import subprocess
import sys
import tarfile

import pytest

from xfer_jax.parallel.launch import distributed_env

REPO = pathlib.Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


multiprocess, tpu_pod = load("multiprocess"), load("tpu_pod")


# ---- xfer_jax/parallel/launch.py ----
@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"XFER_COORDINATOR": "h:1", "XFER_NUM_PROCESSES": "2", "XFER_PROCESS_ID": "1"},
     {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}),
    ({"XFER_COORDINATOR": "h:1", "XFER_NUM_PROCESSES": "2", "XFER_PROCESS_ID": "0", "XFER_LOCAL_DEVICE_IDS": "2,3"},
     {"coordinator_address": "h:1", "num_processes": 2, "process_id": 0, "local_device_ids": [2, 3]}),
    ({"XFER_DISTRIBUTED": "auto"}, {}),
    ({"SLURM_NTASKS": "16", "SLURM_NNODES": "2"}, {}),  # per GPU: JAX gives task i GPU SLURM_LOCALID
    ({"SLURM_NTASKS": "2", "SLURM_NNODES": "2"}, {"local_device_ids": []}),  # per host: all the node's GPUs
    ({"SLURM_NTASKS": "1", "SLURM_NNODES": "1"}, None),
    ({"TPU_WORKER_HOSTNAMES": "w0,w1"}, {}),
    ({"TPU_WORKER_HOSTNAMES": "w0"}, None),
])
def test_distributed_env(env, expected):
    assert distributed_env(env) == expected


@pytest.mark.parametrize("env, message", [
    ({"XFER_COORDINATOR": "h:1", "XFER_PROCESS_ID": "0"}, "XFER_NUM_PROCESSES"),
    ({"XFER_DISTRIBUTED": "yes"}, "XFER_DISTRIBUTED='yes'"),
])
def test_distributed_env_errors_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        distributed_env(env)


# ---- launch/multiprocess.py ----
def test_child_envs_per_process():
    args = multiprocess.parse_args(["--num_processes", "2", "--cpu_devices", "4", "--", "xfer", "train"])
    envs = multiprocess.child_envs(args, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --other"})
    assert [e["XFER_PROCESS_ID"] for e in envs] == ["0", "1"]
    assert {e["XFER_NUM_PROCESSES"] for e in envs} == {"2"} and envs[0]["XFER_COORDINATOR"].startswith("localhost:")
    assert envs[1]["XLA_FLAGS"] == "--other --xla_force_host_platform_device_count=4"
    assert args.command == ["xfer", "train"]
    gpu = multiprocess.parse_args(["--num_processes", "8", "--per_gpu", "--num_hosts", "2", "--host_id", "1",
                                   "--coordinator", "h0:7777", "--", "x"])
    envs = multiprocess.child_envs(gpu, {})
    assert envs[3]["XFER_PROCESS_ID"] == "11" and envs[3]["XFER_LOCAL_DEVICE_IDS"] == "3"
    assert envs[3]["XFER_NUM_PROCESSES"] == "16" and envs[3]["XFER_COORDINATOR"] == "h0:7777"


@pytest.mark.parametrize("argv, message", [
    (["--num_processes", "2"], "give the command"),
    (["--num_processes", "2", "--num_hosts", "2", "--", "x"], "--coordinator"),
    (["--num_processes", "2", "--host_id", "1", "--", "x"], "--host_id 1"),
])
def test_multiprocess_flag_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        multiprocess.parse_args(argv)
    assert message in capsys.readouterr().err


def test_one_failing_process_stops_the_others(capfd):
    script = ("import os, sys, time\n"
              "pid = os.environ['XFER_PROCESS_ID']\n"
              "print('hello from', pid, flush=True)\n"
              "sys.exit(3) if pid == '1' else time.sleep(60)\n")
    args = multiprocess.parse_args(["--num_processes", "2", "--", sys.executable, "-c", script])
    code = multiprocess.run(args.command, multiprocess.child_envs(args, dict(os.environ)), grace_s=10)
    out = capfd.readouterr().out
    assert code == 3
    assert "[p0] hello from 0" in out and "[p1] hello from 1" in out


# ---- launch/tpu_pod.py ----
def dry_run(argv, capsys) -> list[str]:
    assert tpu_pod.main(["--name", "pod", "--zone", "z1", *argv]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("gcloud")]


def test_tpu_pod_up_queued_spot_dry_run(capsys):
    lines = dry_run(["--project", "p", "--queued", "--dry_run", "up", "--accelerator", "v5p-32", "--runtime_version",
                     "v2-alpha-tpuv5", "--spot", "--valid_until", "6h", "--env", "XFER_CACHE=/data", "--run_name", "pt",
                     "--", "xfer", "train", "--config", "configs/pretrain.py"], capsys)
    tail = "--zone=z1 --project=p"
    assert lines[0].startswith("gcloud compute tpus queued-resources describe pod-qr")
    assert lines[1] == ("gcloud compute tpus queued-resources create pod-qr --node-id=pod --accelerator-type=v5p-32 "
                        f"--runtime-version=v2-alpha-tpuv5 --spot --valid-until-duration=6h {tail}")
    assert "'--format=value(state.state)'" in lines[2]
    assert lines[3].startswith("gcloud compute tpus tpu-vm scp ") and lines[3].endswith(f"pod:xfer_jax.tar.gz --worker=all {tail}")
    assert "--worker=all" in lines[4] and 'pip" install -q -e "$HOME/xfer_jax[tpu]"' in lines[4]
    assert "--worker=all" in lines[5] and "env XFER_DISTRIBUTED=auto XFER_CACHE=/data xfer train --config " \
                                          "configs/pretrain.py" in lines[5] and "xfer_runs/pt.pid" in lines[5]
    assert "--worker=0" in lines[6] and "tail -n +1 --pid=" in lines[6]
    assert len(lines) == 7


def test_tpu_pod_plain_create_stop_delete_dry_run(capsys):
    create = dry_run(["--dry_run", "create", "--accelerator", "v4-32", "--runtime_version", "tpu-ubuntu2204-base",
                      "--preemptible"], capsys)
    assert create[-1] == ("gcloud compute tpus tpu-vm create pod --accelerator-type=v4-32 --version=tpu-ubuntu2204-base "
                          "--preemptible --zone=z1")
    stop = dry_run(["--dry_run", "stop", "--run_name", "pt", "--grace_s", "30"], capsys)
    assert "kill -TERM" in stop[0] and "seq 30" in stop[0] and "kill -KILL" in stop[0] and "--worker=all" in stop[0]
    assert dry_run(["--dry_run", "delete"], capsys) == ["gcloud compute tpus tpu-vm delete pod --quiet --zone=z1"]
    assert dry_run(["--queued", "--dry_run", "delete"], capsys) == [
        "gcloud compute tpus queued-resources delete pod-qr --force --quiet --zone=z1"]


@pytest.mark.parametrize("argv, message", [
    (["--queued", "--dry_run", "create", "--accelerator", "v4-8", "--runtime_version", "v", "--preemptible"], "--spot"),
    (["--dry_run", "create", "--accelerator", "v4-8", "--runtime_version", "v", "--valid_until", "1h"], "--queued"),
])
def test_tpu_pod_refuses_contradictions(argv, message):
    with pytest.raises(SystemExit, match=message):
        tpu_pod.main(["--name", "pod", "--zone", "z1", *argv])


def test_tpu_pod_reuses_an_existing_slice(tmp_path, monkeypatch, capsys):
    """A stand-in gcloud that knows the node: `create` describes it and creates nothing."""
    log = tmp_path / "calls"
    fake = tmp_path / "gcloud"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    tpu_pod.main(["--name", "pod", "--zone", "z1", "create", "--accelerator", "v4-8", "--runtime_version", "v"])
    assert log.read_text().splitlines() == ["compute tpus tpu-vm describe pod --format=value(name) --zone=z1"]
    assert "reusing pod" in capsys.readouterr().out


def test_pack_checkout_takes_sources_not_ignored_files(tmp_path):
    with tarfile.open(tpu_pod.pack_checkout(tmp_path / "a.tar.gz")) as tar:
        names = set(tar.getnames())
    assert {"setup.py", "launch/tpu_pod.py", "xfer_jax/parallel/launch.py"} <= names
    assert not any(n.startswith((".venv/", ".cache/", "runs/")) for n in names)


# ---- launch/slurm_gpu.sbatch ----
def test_slurm_script_runs_the_command_through_srun(tmp_path):
    fake = tmp_path / "bin" / "srun"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "srun_args"}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "XFER_VENV": sys.prefix,
           "SLURM_SUBMIT_DIR": str(REPO)}
    script = str(REPO / "launch" / "slurm_gpu.sbatch")
    done = subprocess.run(["bash", script, "xfer", "train", "--config", "configs/pretrain.py"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "srun_args").read_text().split() == ["--kill-on-bad-exit=1", "xfer", "train", "--config",
                                                            "configs/pretrain.py"]
    usage = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: sbatch launch/slurm_gpu.sbatch" in usage.stderr
