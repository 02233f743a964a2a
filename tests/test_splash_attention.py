"""attention="splash": the Pallas TPU splash kernel (interpret mode on CPU) against the xla reference.

Outputs and gradients w.r.t. q, k, v agree to 1e-5 of the largest entry in fp32 (MHA, GQA, MQA; one causal
sequence and packed rows with padding), alone and under a (data=2, fsdp=2, tensor=2) mesh; a tiny model's loss
and gradients with attention="splash" equal attention="xla" on that mesh; a shape the kernel cannot serve runs
the reference with one logged line.
"""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xfer_jax.model import attention as attention_lib
from xfer_jax.model import splash_attention as splash
from xfer_jax.model.attention import xla_attention
from xfer_jax.model.config import LlamaConfig
from xfer_jax.model.shapes import get_shape
from xfer_jax.model.sharding import init_sharded
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.parallel import rules as rules_lib
from xfer_jax.train import step as step_lib

SEQ, BLOCK, HEAD_DIM = 256, 128, 64


def _qkv(batch, heads, kv_heads, seq=SEQ, head_dim=HEAD_DIM, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(batch, seq, heads, head_dim), (batch, seq, kv_heads, head_dim), (batch, seq, kv_heads, head_dim)]
    return [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]


def _packed(batch, seq=SEQ):
    """Rows of several documents (boundaries off the 128-token tiles) and trailing padding (segment 0)."""
    ids = np.zeros((batch, seq), np.int32)
    for row in range(batch):
        bounds = [0, 37 + 11 * row, 130 + row, 200 + 5 * row, seq - 19 * (row % 2)]
        for doc, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            ids[row, start:end] = doc + 1
    return jnp.asarray(ids)


def _value_and_grads(fn, q, k, v, segment_ids):
    """The outputs and the gradients w.r.t. q, k, v of a fixed random projection of them (so no gradient is
    trivially uniform), in one compiled function."""
    w = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape), jnp.float32)

    def run(q, k, v, segment_ids):
        out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, segment_ids), q, k, v)
        return out, vjp(w)

    return jax.jit(run)(q, k, v, segment_ids)


def _assert_close(got, want, name):
    """Agreement to 1e-5 of the largest entry (summation order differs between a tiled and a full softmax)."""
    got, want = np.asarray(got), np.asarray(want)
    scale = np.abs(want).max()
    assert scale > 0, name
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale, err_msg=name)


def _compare(q, k, v, segment_ids):
    splash_fn = lambda *a: splash.splash_attention(*a, block_size=BLOCK)  # noqa: E731
    out, grads = _value_and_grads(splash_fn, q, k, v, segment_ids)
    ref_out, ref_grads = _value_and_grads(xla_attention, q, k, v, segment_ids)
    _assert_close(out, ref_out, "output")
    for name, g, r in zip("qkv", grads, ref_grads):
        _assert_close(g, r, f"d{name}")


@pytest.mark.parametrize("heads,kv_heads,packed", [(4, 4, False), (4, 2, True), (4, 1, True)],
                         ids=["mha-causal", "gqa-packed", "mqa-packed"])
def test_matches_xla_reference(heads, kv_heads, packed):
    q, k, v = _qkv(2, heads, kv_heads)
    _compare(q, k, v, _packed(2) if packed else None)


@pytest.mark.parametrize("mesh_sizes,heads,kv_heads", [
    ({"data": 2, "fsdp": 2, "tensor": 2}, 4, 2),  # heads and kv heads split over tensor: MQA per shard
    ({"data": 2, "fsdp": 2, "tensor": 2}, 4, 1),  # one kv head, kept whole; query heads split
    ({"data": 1, "fsdp": 2, "tensor": 4}, 8, 2),  # tensor=4 does not divide 2 kv heads: heads kept whole
], ids=["gqa-tp2", "mqa-tp2", "gqa-tp4"])
def test_matches_xla_reference_under_a_mesh(mesh_sizes, heads, kv_heads):
    mesh = mesh_lib.make_mesh(mesh_sizes)
    q, k, v = _qkv(4, heads, kv_heads)
    segment_ids = _packed(4)
    with jax.set_mesh(mesh):
        put = lambda x, names: jax.device_put(x, jax.sharding.NamedSharding(  # noqa: E731
            mesh, rules_lib.spec_for(names, x.shape, dict(mesh.shape))))
        q = put(q, ("batch", "seq", "act_heads", None))
        k, v = (put(x, ("batch", "seq", "act_kv_heads", None)) for x in (k, v))
        segment_ids = put(segment_ids, ("batch", "seq"))
        jaxpr = str(jax.make_jaxpr(lambda *a: splash.splash_attention(*a, block_size=BLOCK))(q, k, v, segment_ids))
        assert "shard_map" in jaxpr and "pallas_call" in jaxpr
        _compare(q, k, v, segment_ids)


def _packed_batch(cfg, rows=4, seq=SEQ):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, size=(rows, seq), dtype=np.int32)
    segment_ids = np.asarray(_packed(rows, seq))
    starts = np.maximum.accumulate(np.where(np.diff(segment_ids, prepend=-1, axis=1) != 0, np.arange(seq), 0), axis=1)
    return {"tokens": tokens, "targets": np.roll(tokens, -1, axis=1), "segment_ids": segment_ids,
            "positions": (np.arange(seq) - starts).astype(np.int32),
            "loss_weights": (segment_ids > 0).astype(np.float32), "lang": np.zeros((rows, seq), np.int32)}


def _loss_and_grads(cfg, mesh, batch):
    with jax.set_mesh(mesh):
        params = init_sharded(cfg, mesh, seed=0)
        sharding = jax.sharding.NamedSharding(mesh, rules_lib.spec_for(("batch", "seq"), (4, SEQ), dict(mesh.shape)))
        batch = {name: jax.device_put(x, sharding) for name, x in batch.items()}
        fn = jax.jit(jax.value_and_grad(lambda p, b: step_lib.loss_sums(cfg, p, b, 0.0, 1)["nll"]))
        return jax.device_get(fn(params, batch))


def test_model_loss_and_gradients_match_xla_on_a_mesh(caplog):
    """The tiny GQA model (4 heads, 2 kv heads, head_dim 16) on packed rows: splash under shard_map on
    data=2, fsdp=2, tensor=2 gives xla's loss and every parameter gradient."""
    cfg = get_shape("tiny", attention="splash", attention_block_size=BLOCK)
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    batch = _packed_batch(cfg)
    with caplog.at_level(logging.WARNING, logger=attention_lib.__name__):
        loss, grads = _loss_and_grads(cfg, mesh, batch)
    assert not [r for r in caplog.records if "xla reference" in r.getMessage()], "splash fell back to xla"
    ref_loss, ref_grads = _loss_and_grads(cfg.replace(attention="xla"), mesh, batch)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    flat = jax.tree_util.tree_flatten_with_path(ref_grads)[0]
    for (path, r), g in zip(flat, jax.tree.leaves(grads)):
        _assert_close(g, r, jax.tree_util.keystr(path))


def test_unservable_shape_falls_back_to_xla_with_one_log_line(caplog):
    q, k, v = _qkv(1, 4, 2, seq=200)  # 200 is not a multiple of a 128-token tile
    with caplog.at_level(logging.WARNING, logger=attention_lib.__name__):
        outs = [attention_lib.attention(q, k, v, None, "splash", block_size=BLOCK) for _ in range(3)]
    lines = [r for r in caplog.records if "splash" in r.getMessage()]
    assert len(lines) == 1 and "not a multiple" in lines[0].getMessage(), [r.getMessage() for r in lines]
    for out in outs:
        np.testing.assert_array_equal(out, xla_attention(q, k, v, None))
    with pytest.raises(ValueError, match="cannot serve"):
        splash.splash_attention(q, k, v, None, block_size=BLOCK)


def test_block_sizes_cap_to_the_sequence():
    assert splash.block_sizes_for(256, 256, 512) == (256, 256)
    assert splash.block_sizes_for(8192, 8192, 512) == (512, 512)
    assert splash.unsupported((1, 2048, 32, 128), (1, 2048, 8, 128), 512) is None
    assert "not a multiple" in splash.unsupported((1, 2304, 32, 128), (1, 2304, 8, 128), 512)
    assert "multiples of 128" in splash.unsupported((1, 64, 4, 16), (1, 64, 2, 16), 512)


def test_auto_resolves_by_backend_and_config_accepts_the_names():
    assert [attention_lib.resolve("auto", b) for b in ("gpu", "tpu", "cpu")] == ["cudnn", "splash", "xla"]
    assert attention_lib.resolve("splash", "gpu") == "splash"
    assert get_shape("tiny", attention="auto").attention == "auto"
    assert LlamaConfig().attention == "auto" and LlamaConfig().attention_block_size == 512
    with pytest.raises(ValueError, match="attention_block_size=100"):
        get_shape("tiny", attention_block_size=100)
    q, k, v = _qkv(1, 4, 2, seq=16, head_dim=16)
    np.testing.assert_array_equal(attention_lib.attention(q, k, v, None, "auto"), xla_attention(q, k, v, None))


def test_choose_names_the_kernel_and_why_it_fell_back():
    """`choose` is the one decision: cuDNN refuses float32 and CPU, splash a sequence off its tile; each
    hands the call to xla with the reason, which `describe` puts in the run log and bench records."""
    q, k = (2, 256, 4, 64), (2, 256, 2, 64)
    choose = attention_lib.choose
    assert choose("auto", q, k, "bfloat16", backend="cpu") == ("xla", None)
    assert choose("auto", q, k, "bfloat16", backend="tpu", block_size=128) == ("splash", None)
    kernel, reason = choose("auto", q, k, "float32", backend="gpu")
    assert kernel == "xla" and "bfloat16 or float16, not float32" in reason
    kernel, reason = choose("cudnn", q, k, "bfloat16", backend="cpu")
    assert kernel == "xla" and "NVIDIA GPU" in reason
    kernel, reason = choose("auto", (2, 200, 4, 64), (2, 200, 2, 64), "bfloat16", backend="tpu")
    assert kernel == "xla" and "multiple" in reason
    cfg = get_shape("tiny", dtype="float32")
    assert attention_lib.describe(cfg, 2, 256, backend="cpu") == "auto → xla"
    assert attention_lib.describe(cfg, 2, 256, backend="gpu").startswith("auto → cudnn → xla (cuDNN flash")
    assert "interpret" in attention_lib.describe(cfg.replace(attention="splash", attention_block_size=128), 2, 256)


def test_cudnn_packed_layout_offsets_and_lengths():
    """cuDNN's packed layout takes each row's documents as (offset, length), -1 past the last; trailing padding
    becomes one more segment so every position belongs to one (the GPU check: tools/check_attention.py)."""
    seg = jnp.array([[1, 1, 2, 2, 2, 3, 0, 0], [1] * 8, [1, 2, 3, 4, 5, 0, 0, 0]])
    lengths, offsets = attention_lib.segment_layout(attention_lib._pad_as_segment(seg), 4)
    np.testing.assert_array_equal(lengths, [[2, 3, 1, 2], [8, -1, -1, -1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(offsets, [[0, 2, 5, 6, -1], [0, -1, -1, -1, -1], [0, 1, 2, 3, -1]])
    assert int(jnp.max(attention_lib._pad_as_segment(seg))) == 6  # row 3: 6 segments > 4, so the dense path
    with pytest.raises(ValueError, match="attention_max_segments=-1"):
        get_shape("tiny", attention_max_segments=-1)
