"""The memory planner against the real sharded train state on 8 devices, and `xfer sweep` end to end."""
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xfer_jax.perf import cli as perf_cli, sweep
from xfer_jax.model import params as model_params
from xfer_jax.model.shapes import get_shape
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.perf.planner import plan_memory
from xfer_jax.parallel.rules import DEFAULT_RULES
from xfer_jax.model.sharding import param_shardings
from xfer_jax.train import optim, state as state_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def bytes_per_device(tree) -> dict:
    """Bytes each device holds of the non-scalar arrays of `tree` (scalars are counters: the plan skips them)."""
    held = {d: 0 for d in jax.devices()}
    for leaf in jax.tree.leaves(tree):
        if leaf.ndim:
            for shard in leaf.addressable_shards:
                held[shard.device] += shard.data.nbytes
    return held


@pytest.mark.parametrize("mesh, param_dtype, moment_dtype, trainable", [
    ({"data": 2, "fsdp": 2, "tensor": 2}, "float32", "float32", []),
    ({"data": 1, "fsdp": 8, "tensor": 1}, "bfloat16", "bfloat16", []),
    ({"data": 2, "fsdp": 1, "tensor": 4}, "float32", "bfloat16", ["embed_tokens", "lm_head"]),
])
def test_plan_matches_the_sharded_train_state(mesh, param_dtype, moment_dtype, trainable):
    cfg = get_shape("tiny", vocab_size=2000, param_dtype=param_dtype)  # tensor=4 does not divide the 2 kv heads
    mesh = mesh_lib.make_mesh(mesh)
    abstract = model_params.abstract_params(cfg)
    mask = optim.trainable_mask(abstract, trainable, [])
    optim_cfg = optim.default_optim_config()
    optim_cfg.moment_dtype = moment_dtype
    tx = optim.make_optimizer(optim_cfg, 10, optim.split_trainable(abstract, mask)[0])
    shardings = state_lib.state_shardings(param_shardings(cfg, mesh), abstract, tx, mask, mesh)
    params = jax.tree.map(lambda a, s: jnp.zeros(a.shape, a.dtype, device=s), abstract, shardings["params"])
    with jax.set_mesh(mesh):
        state = jax.jit(lambda p: state_lib.new_state(p, tx, mask), out_shardings=shardings)(params)
    plan = plan_memory(cfg, dict(mesh.shape), DEFAULT_RULES, batch_size=8, seq_len=64, trainable=mask,
                       moment_dtypes=(moment_dtype, None))
    assert set(bytes_per_device(state["params"]).values()) == {plan.params}
    assert set(bytes_per_device(state["opt_state"]).values()) == {plan.optimizer}
    trained = sum(np.prod(a.shape) for a, m in zip(jax.tree.leaves(abstract), jax.tree.leaves(mask)) if m)
    assert plan.grads * mesh.size >= trained * jnp.dtype(param_dtype).itemsize  # every trainable parameter's


def test_plan_of_a_pod_needs_no_devices(tmp_path, capsys):
    out = tmp_path / "plan"
    assert perf_cli.sweep_main(["--plan", "--shapes", "llama2_7b", "--meshes", "1x256x1,1x64x4", "--batch_sizes", "256",
                           "--seq_len", "4096", "--remat", "full", "--device_memory_gb", "95", "--out", str(out)]) == 0
    rows = sweep.read_csv(out / "sweep.csv")
    fsdp = next(r for r in rows if r["mesh"] == "1x256x1")
    n = get_shape("llama2_7b").num_params()
    assert fsdp["status"] == "planned" and fsdp["devices"] == 256
    assert fsdp["plan_params_gb"] == pytest.approx(n * 4 / 256 / 1e9, rel=0.02)  # fp32, split 256 ways but the norms
    assert fsdp["plan_opt_gb"] == pytest.approx(2 * fsdp["plan_params_gb"])  # AdamW: mu, nu in fp32
    assert isinstance(fsdp["plan_fits"], bool)
    assert "llama2_7b mesh 1x64x4 batch 256: plan" in capsys.readouterr().out


def test_sweep_measures_writes_csv_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "sweep"
    assert perf_cli.sweep_main(["--shapes", "tiny", "--meshes", "2x2x2,1x16x1", "--batch_sizes", "8",
                           "--seq_len", "64", "--dtype", "float32", "--steps", "2", "--warmup", "0",
                           "--out", str(out)]) == 0
    rows = {r["mesh"]: r for r in sweep.read_csv(out / "sweep.csv")}
    assert rows["1x16x1"]["status"] == "error: mesh (1, 16, 1) needs 16 devices, 8 are available"
    r = rows["2x2x2"]
    assert r["status"] == "ok" and r["devices"] == 8 and r["device_kind"] == "cpu"
    assert r["compile_s"] > 0 and r["step_s_min"] <= r["step_s"]
    assert r["tokens_per_s"] == pytest.approx(8 * 64 / r["step_s"])
    assert r["tflops_per_device"] > 0 and r["mfu"] is None  # no known peak for CPU
    # The compiler's arguments are the state (the plan, exactly) plus the batch and scalars.
    planned_state = (r["plan_params_gb"] + r["plan_opt_gb"]) * 1e9
    assert planned_state <= r["xla_args_gb"] * 1e9 <= planned_state + 8 * 64 * 6 * 4 + 1024
    # Activations + gradients are an estimate: within a factor of two of XLA's temporaries.
    assert 0.5 < (r["plan_act_gb"] + r["plan_grads_gb"]) / r["xla_temp_gb"] < 2.0
    assert (out / "throughput.png").stat().st_size > 10_000 and (out / "mfu.png").stat().st_size > 10_000

    spec = importlib.util.spec_from_file_location("mesh_sweep", REPO / "tools" / "mesh_sweep.py")
    mesh_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mesh_sweep)
    assert mesh_sweep.main([str(out / "sweep.csv"), str(out / "sweep.csv"), "--out", str(tmp_path / "merged")]) == 0
    assert "| tiny | 8 | cpu | 8 | 2x2x2 |" in capsys.readouterr().out
    assert len(sweep.read_csv(tmp_path / "merged" / "sweep.csv")) == 4
    assert (tmp_path / "merged" / "cpu" / "throughput.png").exists()


def test_grid_and_mesh_errors():
    assert sweep.parse_mesh("2x4x1") == (2, 4, 1)
    with pytest.raises(ValueError, match="data x fsdp x tensor"):
        sweep.parse_mesh("2x4")
    assert sorted(sweep.meshes_for([4])) == [(1, 1, 4), (1, 2, 2), (1, 4, 1), (2, 1, 2), (2, 2, 1), (4, 1, 1)]
    row = sweep.run_point(sweep.Point("tiny", (2, 2, 2), 6), sweep.Settings(seq_len=64))
    assert row["status"] == "error: batch_size 6 is not divisible by data × fsdp × grad_accum = 4 × 1"


def test_plan_covers_the_sequence_axis_on_a_tpu_slice(tmp_path):
    """--meshes takes a fourth (sequence) axis and --chip plans for a TPU: splash keeps no [T, S] scores, a
    point the checks refuse says why, and splitting the sequence 4 ways cuts the activations per device."""
    out = tmp_path / "plan"
    argv = ["--plan", "--shapes", "llama3_1_8b", "--batch_sizes", "64", "--seq_len", "32768", "--remat", "full",
            "--chip", "v5p", "--out", str(out)]
    assert perf_cli.sweep_main([*argv, "--meshes", "1x64x1x4,1x256x1,16x16x1"]) == 0
    rows = {r["mesh"]: r for r in sweep.read_csv(out / "sweep.csv")}
    cp, dp = rows["1x64x1x4"], rows["16x16x1"]
    assert cp["sequence"] == 4 and cp["status"] == "planned" and cp["plan_fits"] is True
    assert rows["1x256x1"]["status"] == "error: batch_size 64 is not divisible by data × fsdp × grad_accum = 256 × 1"
    assert cp["plan_act_gb"] < 0.5 * dp["plan_act_gb"]  # a quarter of each row per device (+ gathered K/V)
    assert perf_cli.sweep_main([*argv, "--meshes", "1x64x1x4", "--attention", "xla"]) == 0
    assert sweep.read_csv(out / "sweep.csv")[0]["plan_act_gb"] > 3 * cp["plan_act_gb"]  # one layer's [T/4, T] scores


def test_bench_record_names_the_kernel_and_counts_rows_under_context_parallelism(tmp_path, capsys):
    """`xfer bench` times the real step and appends its JSONL row: `kernel` says what `auto` ran, and on
    (data=2, sequence=4) the 8 devices hold 2 rows of 128 tokens (--batch_size is rows per device)."""
    from xfer_jax import cli

    jsonl = tmp_path / "bench.jsonl"
    jsonl.write_text('{"system": "an earlier row"}')  # kept, and the new row goes on its own line
    assert cli.main(["bench", "--shape", "tiny", "--seq_len", "128", "--batch_size", "1", "--dtype", "float32",
                     "--mesh", "data=2,sequence=4", "--steps", "2", "--warmup", "0", "--jsonl", str(jsonl)]) == 0
    lines = jsonl.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == {"system": "an earlier row"}
    row = json.loads(lines[1])
    assert row["attention"] == "auto" and row["kernel"] == "auto → xla" and row["devices"] == 8
    assert row["tokens_per_s_per_device"] == pytest.approx(2 * 128 / row["step_time_s"] / 8, rel=0.01)
