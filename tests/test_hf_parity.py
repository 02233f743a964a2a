"""JAX logits equal transformers' LlamaForCausalLM logits (fp32), with MHA, GQA and tied embeddings."""
import numpy as np
import pytest

from hf_helpers import hf_logits, tiny_hf_model
from xfer_jax import forward
from xfer_jax.convert import hf


@pytest.mark.parametrize("kv_heads,tie", [(4, False), (2, False), (1, False), (2, True)], ids=["mha", "gqa2", "mqa", "gqa2-tied"])
@pytest.mark.parametrize("seq_len", [1, 7, 33])
def test_logits_match_transformers(tmp_path_factory, kv_heads, tie, seq_len):
    model = tiny_hf_model(num_kv_heads=kv_heads, tie=tie)
    root = tmp_path_factory.mktemp("parity")
    model.save_pretrained(root / "hf")
    hf.hf_to_orbax(root / "hf", root / "ckpt", log=lambda *_: None)
    tokens = np.random.RandomState(seq_len).randint(0, model.config.vocab_size, size=(3, seq_len))
    ref = hf_logits(model, tokens)
    ours = forward.logits(root / "ckpt", tokens)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-4
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) <= 1e-5


def test_packed_documents_do_not_see_each_other(tmp_path):
    """A row packing two documents gives each document the logits it gets alone."""
    model = tiny_hf_model(num_kv_heads=2)
    model.save_pretrained(tmp_path / "hf")
    hf.hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", log=lambda *_: None)
    rng = np.random.RandomState(1)
    a, b = rng.randint(0, 320, size=9), rng.randint(0, 320, size=6)
    packed = np.concatenate([a, b])[None]
    segments = np.array([[1] * 9 + [2] * 6])
    positions = np.array([list(range(9)) + list(range(6))])
    loaded = forward.load(tmp_path / "ckpt")
    out = loaded.logits(packed, positions, segments)[0]
    np.testing.assert_allclose(out[:9], hf_logits(model, a[None])[0], atol=1e-4)
    np.testing.assert_allclose(out[9:], hf_logits(model, b[None])[0], atol=1e-4)
