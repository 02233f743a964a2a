"""Hugging Face LLaMA, Mistral, Qwen2 and Qwen3 directories ⇄ xfer_jax checkpoints, tensor by tensor.

HF stores each linear layer as [out, in] per layer; we store [in, ..., out] with all layers stacked. The
family table (`xfer_jax.model.family`) says, for every parameter, which HF tensor it is and how many leading
axes of ours are the matmul's input (`n_in`); the transform is then a transpose plus a reshape, the same rule
both ways. RoPE needs no permutation: our q/k keep HF's rotate-half layout.

Host memory holds at most one copy of the model: reading maps the source files (or, in an object store, reads
each tensor's byte range: `safetensors_io`) and fills one stacked array at a time; writing produces one HF
tensor at a time straight into its shard file. Either side may be a gs:// (or other `paths`) URL: an export
there is built on local disk and uploaded with config.json last (`paths.replace_dir`).
"""
import json
import math
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from xfer_jax import checkpoint, paths
from xfer_jax.convert import hf_tokenizer
from xfer_jax.convert.safetensors_io import SafetensorsFile, write_shard
from xfer_jax.data import tokenizer as tokenizer_lib
from xfer_jax.model import family, lora_params, params as model_params
from xfer_jax.model.config import LlamaConfig

# Buffers some exporters save that carry no parameters.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


# n_in: how many of our leading axes are the matmul's input (family.Param.n_in); None: HF's layout is ours;
# 0 (a bias): HF's is the flat [out] vector.
def hf_shape(ours: tuple[int, ...], n_in: int | None) -> tuple[int, ...]:
    if n_in == 0:
        return (math.prod(ours),)
    return ours if n_in is None else (math.prod(ours[n_in:]), math.prod(ours[:n_in]))


def to_ours(hf: np.ndarray, ours_shape: tuple[int, ...], n_in: int | None) -> np.ndarray:
    return hf if n_in is None else hf.T.reshape(ours_shape)


def to_hf(ours: np.ndarray, n_in: int | None) -> np.ndarray:
    if n_in == 0:
        return ours.reshape(-1)
    return ours if n_in is None else ours.reshape(math.prod(ours.shape[:n_in]), -1).T


def tensor_plan(cfg: LlamaConfig) -> list[tuple[str, tuple, tuple[int, ...], int | None]]:
    """Every HF tensor in HF order: (HF name, our path, our per-tensor shape, n_in), from the family table.

    Our path is ("layers", name, i) for layer i of a stacked parameter, else (name,). HF's order is the table's,
    with the stacked rows written out once per layer where the first of them stands.
    """
    rows = family.table(cfg)
    stacked = [p for p in rows if p.stacked]
    start = rows.index(stacked[0])
    plan = [(p.hf_name(), (p.name,), p.shape(cfg), p.n_in) for p in rows[:start]]
    for i in range(cfg.num_layers):
        plan += [(p.hf_name(i), ("layers", p.name, i), p.shape(cfg)[1:], p.n_in) for p in stacked]
    return plan + [(p.hf_name(), (p.name,), p.shape(cfg), p.n_in) for p in rows[start:] if not p.stacked]


class HFWeights:
    """All tensors of an HF directory, whichever files hold them: safetensors (single or indexed) or
    pytorch_model*.bin (needs torch; local only). `get(name)` returns a numpy array without loading other tensors."""

    def __init__(self, hf_dir):
        self.dir = hf_dir = paths.path(hf_dir, "--hf_dir")
        self._where: dict[str, paths.Path] = {}
        self._open: dict[paths.Path, object] = {}
        st_index, bin_index = hf_dir / "model.safetensors.index.json", hf_dir / "pytorch_model.bin.index.json"
        if st_index.exists() or bin_index.exists():
            index = st_index if st_index.exists() else bin_index
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{index}: not a valid weight index ({e}); expected a JSON object with 'weight_map'") from e
            for name, file in weight_map.items():
                self._where[name] = hf_dir / file
            for file in set(self._where.values()):
                if not file.exists():
                    raise FileNotFoundError(f"{index} lists {file.name}, which is missing from {hf_dir}")
        else:
            files = sorted(hf_dir.glob("*.safetensors")) or sorted(hf_dir.glob("pytorch_model*.bin"))
            if not files:
                raise FileNotFoundError(f"{hf_dir} holds no model.safetensors, *.safetensors or pytorch_model*.bin")
            for file in files:
                for name in self._file(file).names():
                    self._where[name] = file
        for file in sorted(set(self._where.values())):  # validate every file up front (truncation, dtypes)
            self._file(file)

    def _file(self, path):
        if path not in self._open:
            self._open[path] = SafetensorsFile(path) if path.suffix == ".safetensors" else _TorchBinFile(path)
        return self._open[path]

    def names(self) -> set[str]:
        return set(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._file(self._where[name]).shape(name)

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(self._file(self._where[name]).dtype(name))

    def get(self, name: str) -> np.ndarray:
        file = self._where[name]
        f = self._file(file)
        if name not in f.names():
            raise KeyError(f"{file}: the index says it holds {name}, but it does not")
        return f.get(name)


class _TorchBinFile:
    """A pytorch_model*.bin state dict, memory-mapped through torch (only when torch is installed; a local file:
    torch reads a pickle archive whole, which from an object store would mean downloading it whole)."""

    def __init__(self, path):
        if paths.is_url(path):
            raise ValueError(f"{path}: pytorch_model*.bin is read from local disk only; convert the model to "
                             f"safetensors (read tensor by tensor from {str(path).split('://')[0]}://) or copy the "
                             f"directory to a local path")
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"{path}: reading pytorch_model*.bin needs torch (pip install 'xfer_jax[test]'); "
                              f"or convert the directory to safetensors") from e
        try:
            self._sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as e:  # torch raises many types for corrupt archives
            raise ValueError(f"{path}: cannot read PyTorch weights ({e}); the file may be truncated") from e

    def names(self) -> list[str]:
        return list(self._sd)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._sd[name].shape)

    def dtype(self, name: str) -> np.dtype:
        return self.get(name).dtype  # a view of the mapped archive: nothing is read

    def get(self, name: str) -> np.ndarray:
        import ml_dtypes
        import torch

        t = self._sd[name]
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()


def read_hf_config(hf_dir, **run) -> LlamaConfig:
    path = paths.path(hf_dir, "--hf_dir") / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: an HF model directory needs config.json to decide the shape")
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from e
    return LlamaConfig.from_hf(hf, source=str(path), **run)


def check_tensors(weights: HFWeights, cfg: LlamaConfig, plan) -> None:
    """Every expected tensor present with the shape config.json implies, and nothing unexplained."""
    expected = {hf_name: hf_shape(shape, n_in) for hf_name, _, shape, n_in in plan}
    present = {n for n in weights.names() if not n.endswith(IGNORED_SUFFIXES)}
    if cfg.tie_word_embeddings:
        present.discard("lm_head.weight")  # some exporters save the tied copy
    missing = sorted(set(expected) - present, key=_natural)
    extra = sorted(present - set(expected), key=_natural)
    if missing:
        raise ValueError(f"{weights.dir}: {len(missing)} tensor(s) missing, e.g. {missing[:5]}; "
                         f"config.json says num_hidden_layers={cfg.num_layers}, tie_word_embeddings={cfg.tie_word_embeddings}")
    if extra:
        raise ValueError(f"{weights.dir}: {len(extra)} unexpected tensor(s), e.g. {extra[:5]}; "
                         f"is this a {cfg.to_hf()['architectures'][0]} with {cfg.num_layers} layers?")
    for name, want in expected.items():
        have = weights.shape(name)
        if have != want:
            raise ValueError(
                f"{weights.dir}: tensor {name} has shape {have}, but config.json implies {want} "
                f"(hidden_size={cfg.hidden_size}, intermediate_size={cfg.intermediate_size}, "
                f"num_attention_heads={cfg.num_heads}, num_key_value_heads={cfg.num_kv_heads}, vocab_size={cfg.vocab_size})"
            )


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def hf_to_orbax(hf_dir, out_dir, *, param_dtype: str | None = None, overwrite: bool = False, log=print) -> pathlib.Path:
    """Import an HF LLaMA directory as step 0 of an xfer_jax checkpoint, carrying its tokenizer (`hf_tokenizer`).

    `param_dtype` None keeps the file's dtype (lossless); "float32" upcasts for training. `hf_dir` may be a URL
    (gs://...): its JSON and tokenizer files are read from there and its safetensors by byte range.
    """
    hf_dir = paths.path(hf_dir, "--hf_dir")
    paths.check_reachable(hf_dir, "--hf_dir", must_exist=True)
    checkpoint.check_writable(out_dir, 0, overwrite)
    cfg = read_hf_config(hf_dir)
    source = hf_tokenizer_source(hf_dir)  # loaded by the wrapper: its files are what the checkpoint carries
    tokenizer = tokenizer_lib.Tokenizer.load(source) if source else None
    weights = HFWeights(hf_dir)
    plan = tensor_plan(cfg)
    check_tensors(weights, cfg, plan)
    file_dtype = weights.dtype("model.embed_tokens.weight")
    cfg = cfg.replace(param_dtype=param_dtype or file_dtype.name)
    dtype = np_dtype(cfg.param_dtype)
    abstract = model_params.abstract_params(cfg)
    params = {k: (np.empty(v.shape, dtype) if not isinstance(v, dict) else {n: np.empty(a.shape, dtype) for n, a in v.items()})
              for k, v in abstract.items()}
    start = time.time()
    for i, (hf_name, path, shape, n_in) in enumerate(plan):
        value = to_ours(weights.get(hf_name), shape, n_in).astype(dtype, copy=False)
        if path[0] == "layers":
            params["layers"][path[1]][path[2]] = value
        else:
            params[path[0]][...] = value
        _progress(log, i + 1, len(plan), start, hf_name)
    out = checkpoint.save(out_dir, cfg, params, tokenizer=tokenizer, extra_meta={"source": os.fspath(hf_dir)},
                          overwrite=overwrite)
    log(f"wrote {out} ({cfg.num_params():,} parameters, {cfg.param_dtype})"
        + ("" if tokenizer is not None else f"; note: {hf_dir} has no tokenizer.model or tokenizer.json"))
    return out


def hf_tokenizer_source(hf_dir) -> paths.Path | None:
    """The tokenizer an import carries: tokenizer.model when the directory has one (LLaMA-2's, and our own
    exports, ship it beside a derived tokenizer.json; it is what vocabulary extension edits), else tokenizer.json
    (with its tokenizer_config.json, and a chat_template.jinja where transformers 5 saved one: Llama-3), else None."""
    hf_dir = paths.path(hf_dir, "--hf_dir")
    return next((hf_dir / name for name in ("tokenizer.model", "tokenizer.json") if (hf_dir / name).is_file()), None)


def np_dtype(name: str) -> np.dtype:
    """numpy dtype for a name, bfloat16 included (through ml_dtypes, as jax registers it)."""
    return np.dtype(jnp.dtype(name))


def _progress(log, done: int, total: int, start: float, name: str, unit: str = "tensors") -> None:
    if done == total or done % max(1, total // 10) == 0:
        elapsed = time.time() - start
        eta = elapsed / done * (total - done)
        log(f"  {done}/{total} {unit} ({name}) {elapsed:.1f}s elapsed, ETA {eta:.1f}s")


def orbax_to_hf(ckpt_dir, out_dir, *, dtype: str | None = None, step: int | None = None,
                max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, merge_lora: bool = False, overwrite: bool = False,
                log=print) -> paths.Path:
    """Export an xfer_jax checkpoint as an HF directory that transformers loads (weights, config, tokenizer).

    LoRA adapters have no place in a plain *ForCausalLM: `merge_lora` writes W + (alpha/r)·A·B; without it a
    checkpoint that carries adapters is refused (xfer_jax.convert.peft exports them in PEFT's format).
    A non-empty `out_dir` is refused unless `overwrite`: files of an earlier export beside the new ones would be
    what transformers loads (model.safetensors wins over a new index). Checked first, before the slow load.
    `out_dir` may be a URL (gs://...): the export is built on local disk and uploaded, config.json last."""
    check_output(out_dir, "--out", overwrite)
    paths.check_apart(out_dir, {"--ckpt": ckpt_dir})
    cfg, params = checkpoint.load_params(ckpt_dir, step=step)
    if cfg.lora_rank:
        if not merge_lora:
            raise ValueError(
                f"{ckpt_dir} carries LoRA adapters (rank {cfg.lora_rank}, alpha {cfg.lora_alpha}, on "
                f"{', '.join(cfg.lora_targets)}), which a Hugging Face {cfg.to_hf()['architectures'][0]} cannot "
                f"hold: pass --merge_lora to write merged full weights, or export the adapters in PEFT format with "
                f"`xfer convert orbax-to-peft --ckpt {ckpt_dir} --out ADAPTER_DIR --base_out BASE_DIR`")
        log(f"merging the rank-{cfg.lora_rank} LoRA adapters into {', '.join(cfg.lora_targets)}")
        cfg, params = lora_params.merge(cfg, params)
        params = jax.tree.map(np.asarray, params)
    return write_hf(cfg, params, out_dir, tokenizer=checkpoint.tokenizer_path(ckpt_dir), dtype=dtype,
                    max_shard_bytes=max_shard_bytes, overwrite=overwrite, log=log)


def check_output(out_dir, flag: str, overwrite: bool) -> paths.Path:
    """An export's output folder before any work: its store answers and its bucket exists (a URL), and it is
    empty or `overwrite` (a file where the folder belongs, never)."""
    out = paths.path(out_dir, flag)
    paths.check_reachable(out, flag, must_exist=False)
    return paths.check_empty_or_overwrite(out, overwrite, flag)


def write_hf(cfg: LlamaConfig, params: dict, out_dir, *, tokenizer=None, dtype: str | None = None,
             max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, overwrite: bool = False, log=print) -> paths.Path:
    """Write `params` (host arrays of a model without adapters) as an HF directory.

    Every check runs before anything is written; the files go into a sibling that replaces `out_dir` whole
    (`paths.replace_dir`), so `out_dir` never mixes two exports and a failed export leaves the old one intact."""
    write = hf_writer(cfg, params, tokenizer=tokenizer, dtype=dtype, max_shard_bytes=max_shard_bytes, log=log)
    with paths.replace_dir(out_dir, overwrite, "--out") as tmp:
        summary = write(tmp)
    log(f"wrote {out_dir}: {summary}")
    return paths.path(out_dir, "--out")


def hf_writer(cfg: LlamaConfig, params: dict, *, tokenizer=None, dtype: str | None = None,
              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, log=print):
    """Check everything an HF export needs (shapes, dtype, tokenizer) and return `write(dir) -> summary`,
    which only writes: callers writing several directories (PEFT adapter + base) check all before any write."""
    out_dtype = np.dtype(params["embed_tokens"].dtype) if dtype is None else np_dtype(dtype)
    plan = tensor_plan(cfg)
    check_params(cfg, params, plan)
    by_name = {hf_name: (path, n_in) for hf_name, path, _, n_in in plan}
    shards = _pack([(hf_name, hf_shape(shape, n_in), out_dtype) for hf_name, _, shape, n_in in plan], max_shard_bytes)
    hf_config = {**cfg.to_hf(), "torch_dtype": out_dtype.name}
    generation = {k: hf_config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                  if hf_config.get(k) is not None}  # from to_hf, so an eos list passes through
    tokenizer_files, note = {}, "; no tokenizer.model or tokenizer.json in the checkpoint, so no tokenizer files"
    if tokenizer is not None and tokenizer_lib.kind_of(tokenizer) == "hf":
        tokenizer_files = hf_tokenizer.hf_tokenizer_files(tokenizer_lib.Tokenizer.load(tokenizer),
                                                          cfg.max_position_embeddings)
        note = ""
    elif tokenizer is not None:
        tokenizer = tokenizer_lib.resolve(tokenizer)
        model = paths.path(tokenizer).read_bytes()
        tokenizer_files = hf_tokenizer.tokenizer_files(model, cfg.max_position_embeddings, source=tokenizer)
        differences = hf_tokenizer.llama_differences(hf_tokenizer.proto_of(model, tokenizer))
        note = "" if not differences else (
            f"; tokenizer.json reproduces {', '.join(differences)} (fully decomposed text can still differ: "
            f"see xfer_jax/convert/hf_tokenizer.py)")

    def produce(hf_name):
        path, n_in = by_name[hf_name]
        value = params["layers"][path[1]][path[2]] if path[0] == "layers" else params[path[0]]
        return to_hf(value, n_in)

    def write(out: pathlib.Path) -> str:
        weight_map, total = {}, 0
        start = time.time()
        for k, shard in enumerate(shards):
            name = "model.safetensors" if len(shards) == 1 else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            total += write_shard(out / name, shard, produce)
            weight_map.update({spec[0]: name for spec in shard})
            _progress(log, k + 1, len(shards), start, name, "shards")
        if len(shards) > 1:
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            paths.write_text(out / "model.safetensors.index.json", json.dumps(index, indent=2))
        paths.write_text(out / "config.json", json.dumps(hf_config, indent=2))
        paths.write_text(out / "generation_config.json", json.dumps(generation, indent=2))
        for name, content in tokenizer_files.items():
            paths.write_bytes(out / name, content)
        return f"{len(shards)} shard(s), {total / 1e9:.3f} GB, {out_dtype.name}{note}"

    return write


def check_params(cfg: LlamaConfig, params: dict, plan) -> None:
    """Every tensor the plan will read exists with the shape the config implies (before a shard is started)."""
    for hf_name, path, shape, _ in plan:
        if path[0] == "layers":
            value = params.get("layers", {}).get(path[1])
            have = None if value is None else tuple(value.shape)
            want = (cfg.num_layers, *shape)
        else:
            value = params.get(path[0])
            have, want = (None if value is None else tuple(value.shape)), tuple(shape)
        if have != want:
            raise ValueError(f"parameter {'/'.join(map(str, path[:2]))} (for {hf_name}) has shape {have}, "
                             f"but the model config implies {want}")


def _pack(specs, max_bytes: int) -> list[list]:
    """Group tensors in order into shards of at most `max_bytes` (a single larger tensor gets its own shard)."""
    shards, current, size = [], [], 0
    for spec in specs:
        nbytes = math.prod(spec[1]) * spec[2].itemsize
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(spec)
        size += nbytes
    if current:
        shards.append(current)
    return shards


def write_tokenizer_files(tokenizer_model, out, max_length: int) -> None:
    """tokenizer.model plus the files that make AutoTokenizer encode exactly as it does (xfer_jax.convert.hf_tokenizer):
    LlamaTokenizer's JSON files for LLaMA's settings, a tokenizer.json for any other normalisation; or a refusal."""
    for name, content in hf_tokenizer.tokenizer_files(paths.path(tokenizer_model).read_bytes(), max_length,
                                                      source=tokenizer_model).items():
        paths.write_bytes(paths.path(out) / name, content)
