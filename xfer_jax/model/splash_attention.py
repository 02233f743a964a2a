"""Splash attention (JAX's Pallas TPU kernel, `jax.experimental.pallas.ops.tpu.splash_attention`) for training.

Same signature as the `xla` reference (model/attention.py): q [B, T, H, D], k/v [B, S, K, D] with H a multiple
of K, `segment_ids` [B, S] (0 = padding, 1.. = document) or None; causal (aligned at the end, as the reference)
and packed-segment masks. The kernel works on one example, [heads, seq, head_dim], and is vmapped over the
batch. Grouped-query attention needs no repeated K/V: the kernel's MHA form maps query head h to kv head
h // (H / K) in its index maps (and accumulates dk/dv over a group); with one kv head the MQA form is used.

The kernel does not scale the logits: q is multiplied by 1/sqrt(D) first, the reference's scale.

Under a mesh (`jax.set_mesh`, e.g. `Placement.context`) the call runs in `jax.shard_map`: batch split as the
rules' "batch" axis says, heads as "act_heads" / "act_kv_heads". The sequence stays whole unless the rules put
"seq" on a mesh axis of size > 1 (context parallelism, mesh.sequence): then each shard keeps its own queries,
all-gathers K/V and the kv segment ids over that axis, and runs the kernel whose causal offset is its shard's
(one kernel per shard index, chosen by `lax.switch`; the kernel's mask is static). The gather's transpose
reduce-scatters dK/dV. Off TPU the kernel runs in Pallas interpret mode (slow: tests and CPU checks only).

Shapes the kernel cannot serve are named by `unsupported`; `model/attention.py` sends those to the reference
with one logged line per shape.
"""
import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.sharding import PartitionSpec

from xfer_jax.parallel.rules import spec_for

DEFAULT_BLOCK = 512  # q and kv tile; capped to the sequence (cfg.attention_block_size)
LANES = 128  # the kernel's tiles are multiples of the TPU lane width


def block_sizes_for(q_len: int, kv_len: int, block: int = DEFAULT_BLOCK) -> tuple[int, int]:
    """(q tile, kv tile): `block`, capped to each sequence."""
    return min(block, q_len), min(block, kv_len)


def unsupported(q_shape, k_shape, block: int = DEFAULT_BLOCK) -> str | None:
    """Why the kernel cannot serve these shapes (None: it can). q [B, T, H, D], k [B, S, K, D]."""
    _, t, h, d = q_shape
    _, s, kv, dk = k_shape
    bq, bkv = block_sizes_for(t, s, block)
    if dk != d or h % kv:
        return f"q {tuple(q_shape)} and k {tuple(k_shape)} do not pair (head_dim, H a multiple of K)"
    if t > s:
        return f"query length {t} exceeds key length {s}"
    if bq % LANES or bkv % LANES:
        return f"tiles ({bq}, {bkv}) for seq ({t}, {s}) are not multiples of {LANES}"
    if t % bq or s % bkv:
        return f"seq ({t}, {s}) is not a multiple of the tiles ({bq}, {bkv})"
    if d % 8:
        return f"head_dim {d} is not a multiple of 8"
    return None


def _interpret() -> bool:
    return jax.default_backend() != "tpu"


@functools.lru_cache(maxsize=64)
def _kernel(heads: int, q_len: int, kv_len: int, bq: int, bkv: int, mqa: bool, interpret: bool, offset=None):
    """The kernel for one example of `heads` query heads, built once per shape (the mask's block tables are
    computed in numpy) and held as concrete arrays, never tracers: cached across traces. Query row i sees key
    j iff j <= i + offset (default: the queries are the last `q_len` of the keys)."""
    offset = kv_len - q_len if offset is None else offset
    mask = splash_mask.MultiHeadMask([splash_mask.CausalMask((q_len, kv_len), offset=offset)] * heads)
    sizes = splash.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq, block_kv_dkv=bkv,
                              block_kv_dkv_compute=bkv, block_q_dq=bq, block_kv_dq=bkv)
    make = splash.make_splash_mqa_single_device if mqa else splash.make_splash_mha_single_device
    with jax.ensure_compile_time_eval():
        return make(mask, block_sizes=sizes, interpret=interpret)


def _local(q, k, v, segment_ids, block: int, offset=None, q_segment_ids=None):
    """The kernel on arrays held whole (one device, or one shard inside shard_map). With `q_segment_ids` the
    queries' segment ids are given apart from the keys' (`segment_ids`), as under context parallelism."""
    b, t, h, d = q.shape
    s, kv = k.shape[1], k.shape[2]
    mqa = kv == 1
    kernel = _kernel(h, t, s, *block_sizes_for(t, s, block), mqa, _interpret(), offset)
    q = (q * jnp.asarray(1.0 / math.sqrt(d), q.dtype)).transpose(0, 2, 1, 3)  # [B, H, T, D]
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, S, D]
    if mqa:
        k, v = k[:, 0], v[:, 0]  # [B, S, D]
    if segment_ids is None:
        out = jax.vmap(kernel)(q, k, v)
    else:
        seg = segment_ids.astype(jnp.int32)
        q_seg = seg[:, s - t:] if q_segment_ids is None else q_segment_ids.astype(jnp.int32)
        ids = splash.SegmentIds(q=q_seg, kv=seg)
        out = jax.vmap(lambda q, k, v, ids: kernel(q, k, v, segment_ids=ids))(q, k, v, ids)
    return out.transpose(0, 2, 1, 3)  # [B, T, H, D]


def _specs(q_shape, k_shape, mesh_shape: dict) -> tuple[PartitionSpec, PartitionSpec, PartitionSpec]:
    """(q/out, k/v, segment ids) specs from the rules: batch and heads split, sequence and head_dim whole.
    Query heads split only with their kv heads (each shard then holds whole groups), or over one kv head."""
    q_spec = spec_for(("batch", None, "act_heads", None), q_shape, mesh_shape)
    k_spec = spec_for(("batch", None, "act_kv_heads", None), k_shape, mesh_shape)
    if q_spec[2] != k_spec[2] and k_shape[2] > 1:
        q_spec = PartitionSpec(q_spec[0], None, k_spec[2], None)
    return q_spec, k_spec, PartitionSpec(q_spec[0], None)


def splash_attention(q, k, v, segment_ids, *, block_size: int = DEFAULT_BLOCK):
    """Causal (+ same-segment) attention by the splash kernel; shapes must pass `unsupported`."""
    reason = unsupported(q.shape, k.shape, block_size)
    if reason:
        raise ValueError(f"splash attention cannot serve these shapes: {reason}")
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or math.prod(mesh.shape.values()) == 1:
        return _local(q, k, v, segment_ids, block_size)
    q_spec, k_spec, seg_spec = _specs(q.shape, k.shape, dict(mesh.shape))
    seq_axes = _sequence_axes(q.shape, k.shape, dict(mesh.shape), block_size)
    if seq_axes:
        return _context_parallel(q, k, v, segment_ids, mesh, q_spec, k_spec, seq_axes, block_size)
    return _sharded(functools.partial(_local, block=block_size), mesh, q_spec, k_spec, seg_spec, q, k, v, segment_ids)


def _sharded(body, mesh, q_spec, k_spec, seg_spec, q, k, v, segment_ids):
    """body(q, k, v, segment_ids) per shard under shard_map (segment ids passed only when there are some)."""
    if segment_ids is None:
        fn = jax.shard_map(lambda q, k, v: body(q, k, v, None), mesh=mesh, in_specs=(q_spec, k_spec, k_spec),
                           out_specs=q_spec, check_vma=False)
        return fn(q, k, v)
    fn = jax.shard_map(body, mesh=mesh, in_specs=(q_spec, k_spec, k_spec, seg_spec), out_specs=q_spec,
                       check_vma=False)
    return fn(q, k, v, segment_ids)


def _sequence_axes(q_shape, k_shape, mesh_shape: dict, block: int) -> tuple[str, ...]:
    """The mesh axes the rules split "seq" over, when context parallelism applies: self-attention (T == S)
    whose per-shard query length the kernel can tile; else () and the sequence is gathered whole."""
    spec = spec_for(("batch", "seq"), (q_shape[0], q_shape[1]), mesh_shape)
    axes = spec[1]
    if axes is None or q_shape[1] != k_shape[1]:
        return ()
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    local = q_shape[1] // math.prod(mesh_shape[a] for a in axes)
    if unsupported((q_shape[0], local) + tuple(q_shape[2:]), k_shape, block):
        return ()
    return axes


def _context_parallel(q, k, v, segment_ids, mesh, q_spec, k_spec, seq_axes, block: int):
    """Queries split over `seq_axes`; K/V (and kv segment ids) all-gathered inside shard_map; shard i's
    queries start at global position i * local length, its kernel's causal offset."""
    n = math.prod(mesh.shape[a] for a in seq_axes)
    local = q.shape[1] // n
    seq = seq_axes[0] if len(seq_axes) == 1 else seq_axes
    q_spec = PartitionSpec(q_spec[0], seq, q_spec[2], None)
    k_spec = PartitionSpec(k_spec[0], seq, k_spec[2], None)
    seg_spec = PartitionSpec(q_spec[0], seq)

    def body(q, k, v, seg):
        gather = functools.partial(jax.lax.all_gather, axis_name=seq_axes, axis=1, tiled=True)
        k, v = gather(k), gather(v)
        kv_seg = None if seg is None else gather(seg)
        index = jax.lax.axis_index(seq_axes)
        branches = [functools.partial(_local, block=block, offset=i * local, q_segment_ids=seg)
                    for i in range(n)]
        return jax.lax.switch(index, [lambda q, k, v, s, f=f: f(q, k, v, s) for f in branches], q, k, v, kv_seg)

    return _sharded(body, mesh, q_spec, k_spec, seg_spec, q, k, v, segment_ids)
