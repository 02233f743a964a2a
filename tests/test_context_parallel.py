"""Context parallelism: the `sequence` mesh axis splits every batch array's and activation's sequence dimension;
a tiny model's loss and gradients on (data=2, sequence=4) equal one device's, packed rows included; splash
attention with the sequence split equals the reference."""
import json

import jax
import numpy as np
import pytest

from xfer_jax.data import pipeline
from xfer_jax.model.shapes import get_shape
from xfer_jax.model.sharding import init_sharded
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.parallel import rules as rules_lib
from xfer_jax.train import checks, step as step_lib
from xfer_jax.train.setup import BATCH_AXES

VOCAB = 2000


def _packed_batch(rows=4, seq=64, seed=0):
    """Rows of several documents whose boundaries do not fall on the sequence shards' edges (64 / 4 = 16 per
    shard), positions restarting at each document, and padding (segment 0, weight 0) at the end of some rows."""
    rng = np.random.RandomState(seed)
    tokens = rng.randint(1, VOCAB, size=(rows, seq)).astype(np.int32)
    segment_ids = np.zeros((rows, seq), np.int32)
    positions = np.zeros((rows, seq), np.int32)
    for r in range(rows):
        cuts = sorted(rng.choice(np.arange(3, seq - 8), size=r + 1, replace=False))
        end = seq - 5 * (r % 2)  # odd rows end in padding
        bounds = [0, *cuts, end]
        for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
            segment_ids[r, a:b] = i + 1
            positions[r, a:b] = np.arange(b - a)
    targets = np.roll(tokens, -1, axis=1)
    last = np.append(segment_ids[:, 1:] != segment_ids[:, :-1], np.ones((rows, 1), bool), axis=1)
    loss_weights = ((segment_ids > 0) & ~last).astype(np.float32)  # no target across a document's end
    lang = (np.arange(rows)[:, None] % 2 * np.ones((1, seq))).astype(np.int32)
    return {"tokens": tokens, "targets": targets, "segment_ids": segment_ids, "positions": positions,
            "loss_weights": loss_weights, "lang": lang}


def test_batch_arrays_split_over_the_sequence_axis():
    mesh = mesh_lib.make_mesh({"data": 2, "sequence": 4})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "tensor": 1, "sequence": 4}
    spec = rules_lib.spec_for(BATCH_AXES, (4, 64), dict(mesh.shape))
    assert spec == jax.sharding.PartitionSpec("data", "sequence")
    # sequence=1 (the default) leaves the sequence whole, as before the axis existed
    assert rules_lib.spec_for(BATCH_AXES, (8, 64), {"data": 8}) == jax.sharding.PartitionSpec("data", None)


def test_seq_len_must_divide_over_the_sequence_axis():
    cfg = get_shape("tiny", vocab_size=VOCAB)
    message = r"data.seq_len 66 is not divisible by the mesh.s sequence axis \(mesh.sequence\) 4"
    with pytest.raises(ValueError, match=message):
        checks.check_run(cfg, {"data": 2, "sequence": 4}, batch_size=4, seq_len=66, keys=checks.TRAIN_KEYS)
    checks.check_run(cfg, {"data": 2, "sequence": 4}, batch_size=4, seq_len=64, keys=checks.TRAIN_KEYS)


def _loss_and_gradients(cfg, mesh, batch):
    """test_train._gradients with the loss too, in one compile: the summed next-token loss and its gradients,
    parameters and batch sharded on `mesh`, gathered to the host."""
    sharding = jax.sharding.NamedSharding(mesh, rules_lib.spec_for(BATCH_AXES, batch["tokens"].shape,
                                                                   dict(mesh.shape)))
    with jax.set_mesh(mesh):
        params = init_sharded(cfg, mesh, seed=0)
        fn = jax.jit(jax.value_and_grad(lambda p, b: step_lib.loss_sums(cfg, p, b, 0.0, 2)["nll"]))
        return jax.device_get(fn(params, pipeline.to_device(batch, sharding)))


def test_one_device_equals_data_2_sequence_4_on_packed_rows():
    cfg = get_shape("tiny", vocab_size=VOCAB)
    batch = _packed_batch()
    one = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
    cp = mesh_lib.make_mesh({"data": 2, "sequence": 4})
    (loss1, grads1), (loss8, grads8) = _loss_and_gradients(cfg, one, batch), _loss_and_gradients(cfg, cp, batch)
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    # Every gradient agrees, to summation-order noise relative to its largest entry (as test_train's 1-vs-8).
    for (path, g1), g8 in zip(jax.tree_util.tree_flatten_with_path(grads1)[0], jax.tree.leaves(grads8)):
        np.testing.assert_allclose(g8, g1, rtol=0, atol=1e-5 * np.abs(g1).max(), err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("mesh_sizes,heads,kv_heads,packed", [
    ({"data": 2, "sequence": 2, "tensor": 2}, 4, 2, True),
    ({"data": 4, "sequence": 2}, 4, 1, False),
], ids=["gqa-packed-tp", "mqa-causal"])
def test_splash_with_the_sequence_split_matches_xla(mesh_sizes, heads, kv_heads, packed, monkeypatch):
    """model.attention="splash" on a sequence axis: each shard's queries against all-gathered K/V, its causal
    offset its shard's; outputs and dq/dk/dv equal the reference's."""
    from test_splash_attention import SEQ, _compare, _packed, _qkv
    from xfer_jax.model import splash_attention as splash

    calls = []
    real = splash._context_parallel
    monkeypatch.setattr(splash, "_context_parallel", lambda *a, **k: calls.append(1) or real(*a, **k))
    mesh = mesh_lib.make_mesh(mesh_sizes)
    q, k, v = _qkv(4, heads, kv_heads)
    segment_ids = _packed(4) if packed else None
    with jax.set_mesh(mesh):
        def put(x, names):
            return jax.device_put(x, jax.sharding.NamedSharding(mesh, rules_lib.spec_for(names, x.shape,
                                                                                         dict(mesh.shape))))
        q = put(q, ("batch", "seq", "act_heads", None))
        k, v = (put(x, ("batch", "seq", "act_kv_heads", None)) for x in (k, v))
        if packed:
            segment_ids = put(segment_ids, ("batch", "seq"))
        assert q.sharding.spec[1] == "sequence" and SEQ // mesh.shape["sequence"] == 128
        _compare(q, k, v, segment_ids)
    assert calls, "the context-parallel path was not taken"


def test_llama3_at_32k_tokens_plans_and_compiles_on_8_devices(capsys):
    """Llama-3.1-8B's layer (one of them: compile time does not grow with the scanned depth) at 32,768 tokens on
    (fsdp=2, sequence=4), splash attention: `xfer bench --compile_only` compiles the real train step on abstract
    arrays, and the planner's bytes per device are within 25% of the compiler's."""
    from xfer_jax import cli

    argv = ["bench", "--shape", "llama3_1_8b", "--num_layers", "1", "--batch_size", "1", "--seq_len", "32768",
            "--mesh", "fsdp=2,sequence=4", "--remat", "full", "--attention", "splash"]
    assert cli.main([*argv, "--compile_only"]) == 0
    compiled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert compiled["rows"] == 2 and compiled["mesh"]["sequence"] == 4  # 1 row per device, 4 devices a row
    assert 0.8 < compiled["plan_total_gb"] / compiled["xla_args_plus_temp_gb"] < 1.25, compiled
    assert cli.main([*argv, "--plan", "--chip", "v5p"]) == 0
    planned = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert planned["plan_total_gb"] == pytest.approx(compiled["plan_total_gb"], rel=1e-3)
    assert planned["attention"] == "splash" and planned["plan_fits"] and planned["projected_step_s"] > 0


def test_logits_and_greedy_generation_on_a_sequence_mesh_equal_one_device():
    """`xfer eval` / `xfer serve` with --mesh data=2,sequence=4: a forward over packed rows splits the sequence
    like training; prefill (a bucketed prompt length) and one-token decode steps shard what divides and keep the
    rest whole. Logits and greedy tokens equal one device's."""
    from xfer_jax import forward
    from xfer_jax.eval.generate import Generator
    from xfer_jax.eval.sampling import Sampling
    from xfer_jax.parallel.placement import Placement

    cfg = get_shape("tiny", vocab_size=VOCAB)
    mesh = mesh_lib.make_mesh({"data": 2, "sequence": 4})
    params = jax.device_get(init_sharded(cfg, mesh, 0))
    one, split = forward.LoadedModel(cfg, params), forward.LoadedModel(cfg, params, Placement(mesh))
    batch = _packed_batch()
    args = (batch["tokens"], batch["positions"], batch["segment_ids"])
    np.testing.assert_allclose(split.logits(*args), one.logits(*args), atol=2e-5, rtol=1e-5)
    prompts = [[int(t) for t in np.random.RandomState(n).randint(3, VOCAB, size=n)] for n in (5, 19)]
    runs = [Generator(m, eos_id=2, batch_size=2).run(prompts, Sampling(max_new_tokens=12))[0] for m in (one, split)]
    assert [r.tokens for r in runs[1]] == [r.tokens for r in runs[0]]
