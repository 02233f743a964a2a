"""The model on a (data=2, fsdp=2, tensor=2) mesh of 8 simulated CPU devices: same logits, real shards."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from hf_helpers import tiny_hf_model
from xfer_jax import forward
from xfer_jax.convert import hf
from xfer_jax.model import params as model_params
from xfer_jax.model.shapes import get_shape
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.parallel import rules as rules_lib
from xfer_jax.model.sharding import init_sharded, param_shardings


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    tiny_hf_model(num_kv_heads=2, vocab=320).save_pretrained(root / "hf")
    hf.hf_to_orbax(root / "hf", root / "ckpt", log=lambda *_: None)
    return root / "ckpt"


def test_eight_devices_match_one(ckpt):
    assert len(jax.devices()) == 8
    tokens = np.random.RandomState(0).randint(0, 320, size=(4, 11))
    single = forward.load(ckpt).logits(tokens)
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded = forward.load(ckpt, mesh=mesh)
    np.testing.assert_allclose(sharded.logits(tokens), single, atol=1e-5, rtol=0)

    # Parameters are split as the default rules say, not replicated.
    q = sharded.params["layers"]["q_proj"]  # [layers, embed, heads, head_dim]
    assert q.sharding.spec == P(None, "fsdp", "tensor", None)
    assert q.addressable_shards[0].data.shape == (3, 32, 2, 16)
    assert sharded.params["embed_tokens"].sharding.spec == P("tensor", "fsdp")
    assert sharded.params["layers"]["down_proj"].sharding.spec == P(None, "tensor", "fsdp")
    assert sharded.params["norm"].sharding.spec == P(None)


def test_rules_from_config_decide_sharding():
    cfg = get_shape("tiny")
    mesh = mesh_lib.make_mesh({"fsdp": 8})
    pure_fsdp = [(name, "fsdp" if name == "embed" else (None if name != "batch" else ("data", "fsdp")))
                 for name, _ in rules_lib.DEFAULT_RULES]
    shardings = param_shardings(cfg, mesh, pure_fsdp)
    assert shardings["layers"]["gate_proj"].spec == P(None, "fsdp", None)
    assert shardings["lm_head"].spec == P("fsdp", None)


def test_indivisible_dimension_is_replicated():
    mesh_shape = {"data": 1, "fsdp": 2, "tensor": 2}
    # 49,953-piece vocabulary (Chinese LLaMA) on tensor=2: the vocab axis stays whole, embed still splits.
    assert rules_lib.spec_for(("vocab", "embed"), (49953, 4096), mesh_shape) == P(None, "fsdp")
    assert rules_lib.spec_for(("vocab", "embed"), (49952, 4096), mesh_shape) == P("tensor", "fsdp")


def test_init_directly_sharded():
    cfg = get_shape("tiny")
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    params = init_sharded(cfg, mesh, seed=3)
    reference = model_params.init_params(cfg, seed=3)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert params["layers"]["k_proj"].sharding.spec == P(None, "fsdp", "tensor", None)


@pytest.mark.parametrize("sizes,message", [
    ({"data": 3, "fsdp": 1, "tensor": 1}, "needs 3 devices but 8 are available"),
    ({"data": 3, "fsdp": -1}, "does not divide the 8"),
    ({"data": -1, "fsdp": -1}, "at most one axis"),
    ({"pipeline": 2}, "unknown mesh axes"),
])
def test_bad_mesh_is_explained(sizes, message):
    with pytest.raises(ValueError, match=message):
        mesh_lib.make_mesh(sizes)
