"""`train(config)`: further pretraining (or training from scratch) on any mesh, resumable at any step.

The loop only wires stages: mesh → model config → data iterator → state (resumed, imported or random)
→ compiled step → for each step: run, log, evaluate, checkpoint. Everything it does is decided by the
ml_collections config (configs/pretrain.py documents every field).

Resumption is exact: the checkpoint holds params, optimizer state, step, the skipped-update count and the
data iterator's position, and nothing in the step draws randomness outside (seed, step). SIGTERM/SIGINT
finish the current step, save, and exit with 128+signal so a scheduler can requeue the same command.
"""
import json
import math
import signal
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from tqdm import tqdm

from xfer_jax import checkpoint, paths
from xfer_jax.errors import Interrupted
from xfer_jax.data import pipeline
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.model import params as model_params
from xfer_jax.model.config import LlamaConfig
from xfer_jax.model.shapes import get_shape
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.parallel import rules as rules_lib
from xfer_jax.parallel.sharding import init_sharded, param_shardings
from xfer_jax.train import metrics as metrics_lib
from xfer_jax.train import lora_setup, optim, state as state_lib, step as step_lib

RUN_FIELDS = checkpoint.RUN_FIELDS  # model.* keys that say how to run the model, not what it is


def model_config(config, tokenizer: Tokenizer) -> LlamaConfig:
    """Shape from `init_from`'s checkpoint or from `model.shape`; how to run it and its LoRA from `model.*`."""
    run = {f: config.model[f] for f in RUN_FIELDS if f in config.model}
    if config.init_from:
        cfg = LlamaConfig.from_dict(checkpoint.read_meta(config.init_from)["model"]).replace(**run)
    else:
        vocab = config.model.vocab_size or tokenizer.vocab_size
        cfg = get_shape(config.model.shape, vocab_size=vocab, **run)
    cfg = cfg.replace(**lora_setup.lora_fields(config.model))
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(f"data.tokenizer has {tokenizer.vocab_size} pieces but the model's vocabulary is "
                         f"{cfg.vocab_size}; extend the model (`xfer vocab extend`) or set model.vocab_size")
    return cfg


def check_paths(config) -> None:
    """Every path the run reads or writes is one this project can use (no gs:// yet), named by its key."""
    paths.local_path(config.train.out_dir, "train.out_dir")
    paths.local_path(config.data.tokenizer, "data.tokenizer")
    if config.init_from:
        paths.local_path(config.init_from, "init_from")
    for group in ("sources", "heldout"):
        for i, entry in enumerate(config.data.get(group) or []):
            paths.local_path(entry["path"], f"data.{group}[{i}].path")


def check_config(config, mesh: jax.sharding.Mesh, cfg: LlamaConfig) -> None:
    """Errors a user can fix, raised before anything compiles."""
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    batch, accum = config.data.batch_size, config.train.grad_accum
    if batch % (accum * dp):
        raise ValueError(f"data.batch_size={batch} must be divisible by train.grad_accum × data × fsdp = "
                         f"{accum} × {dp}; change the batch size or the mesh")
    if config.data.seq_len > cfg.max_position_embeddings:
        raise ValueError(f"data.seq_len={config.data.seq_len} exceeds the model's max_position_embeddings="
                         f"{cfg.max_position_embeddings}")
    if config.train.nan_policy not in ("skip", "stop"):
        raise ValueError(f"train.nan_policy={config.train.nan_policy!r}; choose 'skip' or 'stop'")
    if config.train.steps <= 0:
        raise ValueError("train.steps must be positive")


class Trainer:
    """Holds what the loop needs; `run()` trains until train.steps or a signal."""

    def __init__(self, config):
        self.config = config
        check_paths(config)
        self.out = paths.local_path(config.train.out_dir, "train.out_dir")
        self.rules = tuple(tuple(r) for r in config.rules)
        self.mesh = mesh_lib.make_mesh(dict(config.mesh))
        self.tokenizer = Tokenizer.load(config.data.tokenizer)
        self.cfg = model_config(config, self.tokenizer)
        check_config(config, self.mesh, self.cfg)
        self.languages = pipeline.languages(config.data)

        abstract = model_params.abstract_params(self.cfg)
        self.param_shardings = param_shardings(self.cfg, self.mesh, self.rules)
        self.mask = optim.trainable_mask(abstract, list(config.train.trainable), list(config.train.frozen))
        trainable, _ = optim.split_trainable(abstract, self.mask)
        self.tx = optim.make_optimizer(config.optim, config.train.steps, trainable)
        self.schedule = optim.learning_rate(config.optim, config.train.steps)
        self.state_shardings = state_lib.state_shardings(self.param_shardings, abstract, self.tx, self.mask, self.mesh)
        self.abstract_state = state_lib.abstract_state(abstract, self.tx, self.mask, self.state_shardings)
        self.sizes = lora_setup.state_report(self.abstract_state, self.mask)
        batch_spec = rules_lib.spec_for(("batch", "seq"), (config.data.batch_size, config.data.seq_len),
                                        dict(self.mesh.shape), self.rules)
        self.batch_sharding = NamedSharding(self.mesh, batch_spec)
        # Everything above only reads; this decides whether the run directory belongs to this config. Only
        # after it passes does anything under out_dir change.
        self.resume_step = checkpoint.check_resume(
            self.out / "ckpt", self.cfg, tokenizer=config.data.tokenizer, languages=self.languages,
            trainable=lora_setup.trainable_paths(self.mask),
            fix=f"or start a new run with another --config.train.out_dir (not {self.out})")
        self.tokenizer_sha256 = checkpoint.file_sha256(config.data.tokenizer)
        self._tokenizer_unsaved = self.resume_step is None or checkpoint.tokenizer_path(self.out / "ckpt") is None
        self.data = pipeline.make_train_iterator(config.data, sharding=self.batch_sharding, tokenizer=self.tokenizer)
        try:
            self.manager = checkpoint.manager(self.out / "ckpt", max_to_keep=config.train.keep,
                                              async_save=config.train.async_save)
            self.writer = metrics_lib.MetricWriter(self.out, resume_step=self.resume_step or 0)
        except BaseException:
            self.data.close()
            raise
        self._signal = None

    # ---- state ----
    def initial_state(self) -> dict:
        if self.resume_step is not None:
            return self.restore(self.resume_step)
        run = {f: getattr(self.cfg, f) for f in RUN_FIELDS}
        with jax.set_mesh(self.mesh), rules_lib.use_rules(self.rules):
            if self.config.init_from:
                params = lora_setup.initial_params(self.config.init_from, self.cfg, self.mesh, self.rules,
                                                   self.config.train.seed, **run)
                print(f"initialised from {self.config.init_from}")
            else:
                params = init_sharded(self.cfg, self.mesh, self.config.train.seed, self.rules)
            create = jax.jit(lambda p: state_lib.new_state(p, self.tx, self.mask), out_shardings=self.state_shardings)
            return create(params)

    def restore(self, step: int) -> dict:
        a = self.abstract_state
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(a["params"]),
            opt_state=ocp.args.StandardRestore(a["opt_state"]),
            meta=ocp.args.JsonRestore(),
            data=self.data.restore_args(),
        ))
        meta = restored["meta"]
        print(f"resumed from {self.out / 'ckpt'} step {step} (mesh {dict(self.mesh.shape)})")
        put = lambda v: jax.device_put(jnp.asarray(v, jnp.int32), self.state_shardings["step"])  # noqa: E731
        return {"step": put(meta["step"]), "params": restored["params"], "opt_state": restored["opt_state"],
                "skipped": put(meta["skipped"])}

    def save(self, state: dict, step: int, force: bool = False) -> None:
        if self._tokenizer_unsaved and jax.process_index() == 0:
            # The checkpoint carries its vocabulary (exports get tokenizer files): written once, with the first
            # step of a run (a resume has checked that data.tokenizer equals it).
            paths.copy_file(self.config.data.tokenizer, self.out / "ckpt" / checkpoint.TOKENIZER_FILE)
        self._tokenizer_unsaved = False
        meta = checkpoint.meta_dict(self.cfg, step, skipped=int(state["skipped"]), languages=self.languages,
                                    trainable=lora_setup.trainable_paths(self.mask),
                                    tokenizer_sha256=self.tokenizer_sha256,
                                    config=json.loads(self.config.to_json_best_effort()))
        self.manager.save(step, force=force, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state["params"]),
            opt_state=ocp.args.StandardSave(state["opt_state"]),
            meta=ocp.args.JsonSave(meta),
            data=self.data.save_args(),
        ))

    # ---- evaluation ----
    def evaluate(self, params, eval_sets, eval_fn) -> dict:
        record = {}
        for lang, eval_set in eval_sets.items():
            nll = weight = 0.0
            for batch in eval_set.batches[: self.config.train.eval_batches or None]:
                sums = eval_fn(params, pipeline.to_device(batch, self.batch_sharding))
                nll, weight = nll + float(sums["nll"]), weight + float(sums["weight"])
            loss = nll / max(weight, 1.0)
            record[f"eval/{lang}/loss"] = loss
            record[f"eval/{lang}/ppl"] = math.exp(min(loss, 50.0))
        return record

    # ---- the loop ----
    def _on_signal(self, signum, _frame):
        self._signal = signum

    def run(self) -> dict:
        try:
            state = self.initial_state()
        except BaseException:
            self.close()
            raise
        return self._train(state)

    def close(self) -> None:
        self.writer.close()
        self.manager.close()
        self.data.close()

    def _train(self, state) -> dict:
        config, total = self.config, self.config.train.steps
        start_step = int(state["step"])
        step_kwargs = dict(cfg=self.cfg, tx=self.tx, schedule=self.schedule, mask=self.mask,
                           accum=config.train.grad_accum, z_loss=config.train.z_loss, num_langs=len(self.languages),
                           loss_chunk=config.train.loss_chunk,
                           dropout_key=lora_setup.dropout_key(self.cfg, config.train.seed))
        train_step = step_lib.compile_train_step(self.state_shardings, self.batch_sharding, **step_kwargs)
        eval_fn = jax.jit(lambda p, b: step_lib.eval_step(p, b, cfg=self.cfg, num_langs=len(self.languages)))
        eval_sets = pipeline.make_eval_batches(config.data, tokenizer=self.tokenizer) if config.data.heldout else {}
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        tokens_per_step = config.data.batch_size * config.data.seq_len
        print(lora_setup.format_report(self.sizes))
        bar = tqdm(total=total, initial=start_step, desc="train", unit="step", disable=not config.train.progress_bar)
        last = {}
        try:
            with jax.set_mesh(self.mesh), rules_lib.use_rules(self.rules):
                for step in range(start_step + 1, total + 1):
                    t0 = time.perf_counter()
                    batch = next(self.data)
                    state, m = train_step(state, batch)
                    m = jax.device_get(m)
                    seconds = time.perf_counter() - t0
                    if not m["finite"] and config.train.nan_policy == "stop":
                        raise FloatingPointError(
                            f"step {step}: loss {m['loss']} / grad norm {m['grad_norm']} is not finite; the update was "
                            f"not applied. Lower optim.lr, inspect the data, or set train.nan_policy='skip'")
                    last = self._record(step, m, seconds, tokens_per_step, int(state["skipped"]), step == start_step + 1)
                    if step % config.train.log_every == 0 or step == total:
                        if eval_sets and (step % config.train.eval_every == 0 or step == total):
                            last.update(self.evaluate(state["params"], eval_sets, eval_fn))
                        last.update(self.data.metrics())
                        self.writer.write(step, last)
                        tqdm.write(metrics_lib.format_line(step, total, last))
                    bar.update(1)
                    bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{last['tokens_per_s']:,.0f}")
                    if step % config.train.save_every == 0 or step == total:
                        self.save(state, step)
                    if self._signal is not None:
                        self.save(state, step, force=True)
                        self.manager.wait_until_finished()
                        raise Interrupted(self._signal, step)
            self.manager.wait_until_finished()
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
            self.close()
        return {"step": total, "skipped": int(state["skipped"]), **last}

    def _record(self, step, m, seconds, tokens, skipped, compiling) -> dict:
        record = {"loss": float(m["loss"]), "ppl": math.exp(min(float(m["loss"]), 50.0)),
                  "z_loss": float(m["z_loss"]), "grad_norm": float(m["grad_norm"]), "lr": float(m["lr"]),
                  "target_tokens": float(m["tokens"]), "step_time_s": seconds, "skipped_updates": skipped,
                  "compile_step": compiling, **(self.sizes if compiling else {})}
        record.update(metrics_lib.throughput(self.cfg, self.config.data.seq_len, tokens, seconds, self.mesh.size))
        record.update(metrics_lib.memory_gb())
        for i, lang in enumerate(self.languages):
            if m["lang_tokens"][i] > 0:
                record[f"loss/{lang}"] = float(m["lang_loss"][i])
        return record


def train(config) -> dict:
    return Trainer(config).run()
