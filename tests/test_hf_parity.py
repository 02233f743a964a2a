"""JAX logits equal transformers' LlamaForCausalLM logits (fp32), with MHA, GQA and tied embeddings, plain RoPE and
Llama 3.1's scaled RoPE."""
import numpy as np
import pytest
import transformers

from hf_helpers import LLAMA3_ROPE, hf_logits, tiny_hf_model
from xfer_jax import forward
from xfer_jax.convert import hf
from xfer_jax.model.config import LLAMA3_ROPE_FIELDS
from xfer_jax.model.llama import rope_frequencies
from xfer_jax.model.shapes import get_shape


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


@pytest.mark.parametrize("tie", [False, True], ids=["gqa2", "gqa2-tied"])
def test_llama3_rope_logits_match_transformers_past_the_original_context(tmp_path, tie):
    """rope_type llama3 (original context 32, factor 8) at 96 positions: the frequencies are transformers' bit for
    bit in all three bands (kept, interpolated, stretched), and the logits agree far past the original context."""
    model = tiny_hf_model(num_kv_heads=2, tie=tie, layers=2, rope_scaling=LLAMA3_ROPE, qk_gain=4.0)
    model.save_pretrained(tmp_path / "hf")
    hf.hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", log=lambda *_: None)
    loaded = forward.load(tmp_path / "ckpt")
    assert loaded.cfg.rope_type == "llama3" and loaded.cfg.rope_original_max_position_embeddings == 32
    plain = loaded.cfg.replace(rope_type="default", **dict.fromkeys(LLAMA3_ROPE_FIELDS))
    inv_freq = rope_frequencies(loaded.cfg)
    np.testing.assert_array_equal(inv_freq, model.model.rotary_emb.inv_freq.numpy())
    ratio = inv_freq / rope_frequencies(plain)
    assert ratio[0] == 1 and ratio[-1] == np.float32(1 / 8) and ((ratio < 1) & (ratio > 1 / 8)).sum() == 2

    tokens = np.random.RandomState(5).randint(0, model.config.vocab_size, size=(2, 96))
    ref, ours = hf_logits(model, tokens), loaded.logits(tokens)
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) <= 1e-5
    unscaled = forward.LoadedModel(plain, loaded.params).logits(tokens)
    assert np.abs(unscaled - ref).max() > 1e-2 * np.abs(ref).max()  # plain RoPE would not pass: attention sees it


@pytest.mark.parametrize("shape", ["llama3_8b", "llama3_1_8b", "llama3_2_1b"])
def test_published_llama3_frequencies_are_transformers_bit_for_bit(shape):
    """The shapes' exported config.json builds, in transformers, the very frequencies the model here rotates by."""
    cfg = get_shape(shape)
    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in cfg.to_hf().items() if k not in ("architectures", "model_type")})
    assert hf_cfg.rope_parameters["rope_type"] == cfg.rope_type
    hf_freq = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(hf_cfg).inv_freq.numpy()
    np.testing.assert_array_equal(rope_frequencies(cfg), hf_freq)
