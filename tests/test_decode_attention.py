"""The one-kernel decoding attention (Pallas; interpreted on CPU) equals the XLA reference, `cached_attention`,
for every layer of a stacked cache, with left padding, grouped queries and cache lengths that are not a power of
two; a scale or mask error shows up here even where greedy decoding would hide it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xfer_jax.model.attention import cached_attention
from xfer_jax.model.config import LlamaConfig
from xfer_jax.model.llama import apply_rope, rope_frequencies, rope_tables
from xfer_jax.model.decode_attention import _chunk, decode_attention


LLAMA3 = dict(rope_theta=500000.0, rope_type="llama3", rope_factor=8.0, rope_low_freq_factor=1.0,
              rope_high_freq_factor=4.0, rope_original_max_position_embeddings=16)


@pytest.mark.parametrize("batch,heads,kv_heads,head_dim,slots,rope", [(1, 4, 4, 16, 48, {}), (3, 8, 2, 32, 80, LLAMA3)],
                         ids=["mha-plain-rope", "gqa-llama3-rope"])
def test_decode_attention_equals_cached_attention(batch, heads, kv_heads, head_dim, slots, rope):
    layers, index = 3, slots // 2
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    q = 2 * jax.random.normal(kq, (batch, 1, heads, head_dim))
    k_all = 2 * jax.random.normal(kk, (layers, batch, slots, kv_heads, head_dim))
    v_all = jax.random.normal(kv, (layers, batch, slots, kv_heads, head_dim))
    valid = np.zeros((batch, slots), bool)
    valid[:, : index + 1] = True
    valid[1:, :7] = False  # left padding in the other rows
    valid = jnp.asarray(valid)
    visible = (valid & (jnp.arange(slots) <= index)).astype(jnp.int32)
    inv_freq = rope_frequencies(LlamaConfig(hidden_size=heads * head_dim, num_heads=heads, num_kv_heads=kv_heads, **rope))
    cos, sin = rope_tables(jnp.array([[index], [index - 7], [index - 7]])[:batch], inv_freq)
    # the kernel reads the query heads before RoPE from the fused projection's layout, [B, 1, K, G + 2, D]
    group = heads // kv_heads
    fused = jnp.concatenate([q.reshape(batch, 1, kv_heads, group, head_dim),
                             jnp.full((batch, 1, kv_heads, 2, head_dim), 1e9)], axis=3)  # k/v rows: never read
    for layer in range(layers):
        ref = cached_attention(apply_rope(q, cos, sin), k_all[layer], v_all[layer], index, valid)
        out = decode_attention(fused / 3, group, jnp.full((batch,), 3.0), cos, sin, k_all, v_all, layer, visible)
        np.testing.assert_allclose(out, ref, atol=2e-6, rtol=2e-5)


def test_chunk_divides_slots_and_fits_registers():
    assert _chunk(384, 1, 128) == 32 and _chunk(48, 1, 128) == 16 and _chunk(384, 16, 64) == 16
