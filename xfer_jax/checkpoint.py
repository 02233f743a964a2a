"""The one checkpoint layout every stage reads and writes.

    DIR/
      tokenizer.model           the tokenizer the checkpoint's vocabulary belongs to (optional): a sentencepiece
      | tokenizer.json          model, or a Hugging Face tokenizer.json with its tokenizer_config.json (one kind
        tokenizer_config.json   only; `tokenizer_path` names the file to load, tokenizer.json first)
      <step>/params/            Orbax PyTree of the parameter dict (see xfer_jax.model.params)
      <step>/meta/              JSON: model config, step, format version, and whatever the stage adds
      <step>/opt_state/         a train state's optimizer state (save_train_state; only the trained parameters')
      <step>/data/              a train state's data-iterator position, one file per process

Steps are written by Orbax's CheckpointManager, which commits a step only once every item is on disk, so a
step half-written when a process died is never listed as the latest. Restoring takes target shardings, so a
checkpoint saved on one mesh loads onto any other.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from xfer_jax import paths
from xfer_jax.model import params as model_params
from xfer_jax.model.config import LlamaConfig

FORMAT = "xfer_jax/1"
TOKENIZER_FILE = "tokenizer.model"  # sentencepiece
HF_TOKENIZER_FILE, HF_TOKENIZER_CONFIG = "tokenizer.json", "tokenizer_config.json"
TOKENIZER_FILES = (HF_TOKENIZER_FILE, TOKENIZER_FILE, HF_TOKENIZER_CONFIG)  # what tokenizer_path looks for first


def manager(ckpt_dir: str | os.PathLike, *, max_to_keep: int | None = None, save_interval_steps: int = 1,
            async_save: bool = False, read_only: bool = False) -> ocp.CheckpointManager:
    """The Orbax CheckpointManager over DIR (a local path made absolute, or a URL: Orbax writes gs:// itself and
    marks a step complete there by its commit_success.txt; created unless read_only)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=save_interval_steps,
        enable_async_checkpointing=async_save,
        read_only=read_only,
        create=not read_only,
    )
    return ocp.CheckpointManager(paths.path(ckpt_dir, "checkpoint directory"), options=options)


def meta_dict(cfg: LlamaConfig, step: int, **extra) -> dict:
    return {"format": FORMAT, "model": cfg.to_dict(), "step": int(step), **extra}


def save(ckpt_dir, cfg: LlamaConfig, params: dict, *, step: int = 0, tokenizer=None,
         extra_meta: dict | None = None, overwrite: bool = False) -> paths.Path:
    """Write params (+ meta, + the tokenizer's files: `write_tokenizer`) as step `step` of DIR and wait until
    it is committed.

    An existing step is replaced only with `overwrite`; otherwise it is an error, never a silent skip."""
    ckpt_dir = paths.path(ckpt_dir, "checkpoint directory")
    check_writable(ckpt_dir, step, overwrite)
    with manager(ckpt_dir) as mgr:
        if step in mgr.all_steps():
            mgr.delete(step)
        mgr.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            meta=ocp.args.JsonSave(meta_dict(cfg, step, **(extra_meta or {}))),
        ))
        mgr.wait_until_finished()
    if tokenizer is not None:
        write_tokenizer(ckpt_dir, tokenizer)
    return ckpt_dir


def tokenizer_files(tokenizer) -> dict[str, bytes]:
    """{name: content} a checkpoint carries for `tokenizer`: a tokenizer wrapper (its `files()`), or a path (a
    .model file, a tokenizer.json with its sibling tokenizer_config.json, or a directory holding either)."""
    if hasattr(tokenizer, "files"):
        return tokenizer.files()
    path = paths.path(tokenizer, "tokenizer")
    if path.is_dir():
        path = next((path / n for n in (HF_TOKENIZER_FILE, TOKENIZER_FILE) if (path / n).is_file()),
                    path / TOKENIZER_FILE)
    if path.suffix != ".json":
        return {TOKENIZER_FILE: path.read_bytes()}
    if path.with_name("chat_template.jinja").is_file():  # the wrapper writes it into the config; a path would drop it
        raise ValueError(f"{path} has a chat_template.jinja beside it: pass Tokenizer.load({str(path)!r}), which "
                         f"carries the template inside tokenizer_config.json, not the path")
    config = path.with_name(HF_TOKENIZER_CONFIG)
    return {**({HF_TOKENIZER_CONFIG: config.read_bytes()} if config.is_file() else {}),
            HF_TOKENIZER_FILE: path.read_bytes()}


def write_tokenizer(ckpt_dir, tokenizer) -> None:
    """Write the tokenizer's files beside the steps, each atomically. The file `tokenizer_path` finds and any
    file of another tokenizer go first and that file is written last, so at no moment does it name a mix of two
    tokenizers: a crash leaves the old one, none, or the new one whole."""
    ckpt_dir = paths.path(ckpt_dir, "checkpoint directory")
    files = tokenizer_files(tokenizer)
    main = HF_TOKENIZER_FILE if HF_TOKENIZER_FILE in files else TOKENIZER_FILE
    for name in TOKENIZER_FILES:
        if name == main or name not in files:
            (ckpt_dir / name).unlink(missing_ok=True)
    for name in sorted(files, key=lambda n: n == main):
        paths.write_bytes(ckpt_dir / name, files[name])


def save_train_state(mgr: ocp.CheckpointManager, step: int, state: dict, *, cfg: LlamaConfig, data_args,
                     tokenizer=None, force: bool = False, **extra_meta) -> None:
    """Step `step` of a run: params, opt_state, meta (model config, step, skipped updates, `extra_meta`) and the
    data iterator's position (`data_args`, its Orbax save args). `tokenizer` (a wrapper or a path) is written
    beside the steps (process 0, `write_tokenizer`), as the first save of a run does. With async saving, commits
    after `mgr.wait_until_finished`."""
    if tokenizer is not None and jax.process_index() == 0:
        write_tokenizer(mgr.directory, tokenizer)
    meta = meta_dict(cfg, step, skipped=int(state["skipped"]), **extra_meta)
    mgr.save(step, force=force, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state["params"]),
        opt_state=ocp.args.StandardSave(state["opt_state"]),
        meta=ocp.args.JsonSave(meta),
        data=data_args,
    ))


def restore_train_state(mgr: ocp.CheckpointManager, step: int, abstract_state: dict, data_args) -> dict:
    """The train state {step, params, opt_state, skipped} saved at `step`, each leaf in the sharding of
    `abstract_state` (any mesh); `data_args` (the iterator's Orbax restore args) restores the data position."""
    restored = mgr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state["params"]),
        opt_state=ocp.args.StandardRestore(abstract_state["opt_state"]),
        meta=ocp.args.JsonRestore(),
        data=data_args,
    ))
    meta = restored["meta"]
    put = lambda key: jax.device_put(jnp.asarray(meta[key], jnp.int32), abstract_state[key].sharding)  # noqa: E731
    return {"step": put("step"), "params": restored["params"], "opt_state": restored["opt_state"],
            "skipped": put("skipped")}


def check_writable(ckpt_dir, step: int, overwrite: bool) -> None:
    """Fail before any work if DIR already holds `step` and we may not replace it."""
    if not overwrite and (paths.path(ckpt_dir, "checkpoint directory") / str(step) / "meta").exists():
        raise FileExistsError(f"{ckpt_dir} already holds step {step}; choose another output directory or pass --overwrite")


def _check_dir(ckpt_dir: paths.Path) -> None:
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"checkpoint directory {ckpt_dir} does not exist (make one with `xfer convert hf-to-orbax`)")


def committed_step(ckpt_dir) -> int | None:
    """The newest step Orbax finalised in DIR, read from the directory listing alone: no CheckpointManager, so
    no cross-process barrier — every process of a multi-host run can ask at any time and gets the same answer.
    A step counts once finalised: renamed from its tmp name on disk, holding commit_success.txt on gs://."""
    ckpt_dir = paths.path(ckpt_dir, "checkpoint directory")
    paths.forget_listings(ckpt_dir)  # another process's commit must show
    steps = ocp.utils.checkpoint_steps(ckpt_dir)
    return max(steps) if steps else None


def latest_step(ckpt_dir) -> int:
    ckpt_dir = paths.path(ckpt_dir, "checkpoint directory")
    _check_dir(ckpt_dir)
    step = committed_step(ckpt_dir)
    if step is None:
        raise FileNotFoundError(f"{ckpt_dir} holds no complete checkpoint step (an interrupted save is never used)")
    return step


def read_meta(ckpt_dir, step: int | None = None) -> dict:
    ckpt_dir = paths.path(ckpt_dir, "checkpoint directory")
    step = latest_step(ckpt_dir) if step is None else step
    meta_file = ckpt_dir / str(step) / "meta" / "metadata"
    if not meta_file.exists():
        raise FileNotFoundError(f"{meta_file} is missing: {ckpt_dir} step {step} is not an xfer_jax checkpoint")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def tokenizer_path(ckpt_dir) -> paths.Path | None:
    """The checkpoint's tokenizer file to load (tokenizer.json, else tokenizer.model), None when it carries none."""
    ckpt_dir = paths.path(ckpt_dir, "checkpoint directory")
    return next((ckpt_dir / n for n in (HF_TOKENIZER_FILE, TOKENIZER_FILE) if (ckpt_dir / n).exists()), None)


def load_params(ckpt_dir, *, step: int | None = None, shardings: dict | None = None,
                **run_overrides) -> tuple[LlamaConfig, dict]:
    """(config, params) from DIR. `shardings` places each array (any mesh); without it, arrays land on host
    memory as numpy. `run_overrides` changes how the model runs (dtype, remat, attention), never its shape;
    `param_dtype` given here casts the stored arrays on restore."""
    ckpt_dir = paths.path(ckpt_dir, "checkpoint directory")
    step = latest_step(ckpt_dir) if step is None else step
    meta = read_meta(ckpt_dir, step)
    cfg = LlamaConfig.from_dict(meta["model"]).replace(**run_overrides)
    abstract = model_params.abstract_params(cfg)
    stored = _stored_shapes(ckpt_dir, step)
    _check_shapes(ckpt_dir, step, abstract, stored)
    if shardings is None:
        target = jax.tree.map(lambda a: np.empty(a.shape, a.dtype), abstract)
        args = ocp.args.PyTreeRestore(target, restore_args=jax.tree.map(
            lambda a: ocp.RestoreArgs(restore_type=np.ndarray, dtype=a.dtype), abstract))
    else:
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        args = ocp.args.StandardRestore(target)
    with manager(ckpt_dir, read_only=True) as mgr:
        restored = mgr.restore(step, args=ocp.args.Composite(params=args))
    return cfg, restored["params"]


def _stored_shapes(ckpt_dir: paths.Path, step: int) -> dict:
    item = ckpt_dir / str(step) / "params"
    if not item.is_dir():
        raise FileNotFoundError(f"{ckpt_dir} step {step} has no `params` item ({item} is missing)")
    tree = ocp.StandardCheckpointer().metadata(item).item_metadata
    return jax.tree.map(lambda m: tuple(m.shape), dict(tree))


def _check_shapes(ckpt_dir, step, abstract: dict, stored: dict) -> None:
    """Name every parameter whose stored shape differs from what the config says, before restoring."""
    flat_want = dict(jax.tree_util.tree_flatten_with_path(abstract)[0])
    flat_have = dict(jax.tree_util.tree_flatten_with_path(stored, is_leaf=lambda x: isinstance(x, tuple))[0])
    name = jax.tree_util.keystr
    want = {name(k): v.shape for k, v in flat_want.items()}
    have = {name(k): v for k, v in flat_have.items()}
    problems = [f"missing {k} (expected shape {want[k]})" for k in sorted(set(want) - set(have))]
    problems += [f"unexpected {k} (shape {have[k]})" for k in sorted(set(have) - set(want))]
    problems += [f"{k}: stored shape {have[k]}, config expects {want[k]}"
                 for k in sorted(set(want) & set(have)) if tuple(have[k]) != tuple(want[k])]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"checkpoint {ckpt_dir} step {step} does not match the model config: "
                         + "; ".join(problems[:3]) + more)


# How a run executes, free to change between a save and a resume; every other model field fixes the math.
RUN_FIELDS = ("dtype", "param_dtype", "remat", "attention", "attention_block_size", "attention_max_segments",
              "decode_attention", "scan_layers", "fuse_projections")


def check_resume(ckpt_dir, cfg: LlamaConfig, *, tokenizer, trainable: list[str], languages: list[str],
                 fix: str, tokenizer_source: str | None = None) -> int | None:
    """The step a run resumes from (None: a fresh start), after checking that the checkpoint in DIR is the
    same run: model, tokenizer, trained parameters and languages. Reads only, so a refused resume changes
    nothing; each mismatch is one line naming the setting, both values, the checkpoint and `fix`.

    `tokenizer` is the run's tokenizer wrapper: its `sha256()` is compared with the one the checkpoint's meta
    records, else (an older checkpoint) with the stored tokenizer's; `tokenizer_source` names it in messages
    (default: its `source`)."""
    ckpt_dir = paths.path(ckpt_dir, "checkpoint directory")
    step = committed_step(ckpt_dir) if ckpt_dir.is_dir() else None
    if step is None:
        return None
    meta = read_meta(ckpt_dir, step)
    where = f"checkpoint {ckpt_dir} (step {step})"
    saved = json.loads(json.dumps(LlamaConfig.from_dict(meta["model"]).to_dict()))
    wanted = json.loads(json.dumps(cfg.to_dict()))
    for key in wanted:
        if key not in RUN_FIELDS and saved[key] != wanted[key]:
            raise ValueError(f"model.{key}={wanted[key]!r} but {where} was trained with {saved[key]!r}; {fix}")
    _check_shapes(ckpt_dir, step, model_params.abstract_params(cfg), _stored_shapes(ckpt_dir, step))
    theirs = meta.get("tokenizer_sha256")
    stored = tokenizer_path(ckpt_dir) or ckpt_dir / TOKENIZER_FILE
    if theirs is None and stored.exists():
        theirs = type(tokenizer).load(stored).sha256()  # checkpoint.py imports no data/: the wrapper's own loader
    if theirs is not None and theirs != tokenizer.sha256():
        name = tokenizer_source or tokenizer.source
        raise ValueError(f"data.tokenizer={name} differs from the tokenizer of {where} ({stored}); resume with "
                         f"--config.data.tokenizer={stored}, or {fix}")
    for name, key, ours in (("train.trainable", "trainable", trainable), ("data languages", "languages", languages)):
        if key in meta and list(meta[key]) != list(ours):
            raise ValueError(f"{name} {list(ours)} but {where} has {list(meta[key])}; {fix}")
    return step
