"""`train(config)`: further pretraining (or training from scratch) on any mesh, resumable at any step.

The loop only wires stages: placement → model config and train setup (train/setup.py) → data iterator →
state (resumed, imported or random) → compiled step → for each step: run, log, evaluate, checkpoint (the
layout is checkpoint.py's: save_train_state / restore_train_state). Everything it does is decided by the
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
from tqdm import tqdm

from xfer_jax import checkpoint, paths
from xfer_jax.errors import Interrupted
from xfer_jax.data import pipeline
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.model import attention as attention_lib
from xfer_jax.parallel import mesh as mesh_lib
from xfer_jax.parallel.placement import Placement
from xfer_jax.train import checks, guard as guard_lib, lora_setup, metrics as metrics_lib, setup as setup_lib
from xfer_jax.train import step as step_lib


class Trainer:
    """Holds what the loop needs; `run()` trains until train.steps or a signal."""

    def __init__(self, config):
        self.config = config
        checks.check_paths(config)
        self.out = paths.path(config.train.out_dir, "train.out_dir")  # a folder, or a URL (gs://bucket/run)
        self.placement = Placement(mesh_lib.make_mesh(dict(config.mesh)), tuple(tuple(r) for r in config.rules))
        self.mesh = self.placement.mesh
        self.tokenizer = Tokenizer.load(config.data.tokenizer)
        self.cfg = setup_lib.model_config(config.model, init_from=config.init_from,
                                          tokenizer_size=self.tokenizer.vocab_size)
        checks.check_config(config, self.mesh, self.cfg)
        self.languages = pipeline.languages(config.data)
        self.setup = setup_lib.build(self.cfg, self.placement, optim_cfg=config.optim, total_steps=config.train.steps,
                                     batch_shape=(config.data.batch_size, config.data.seq_len),
                                     trainable=config.train.trainable, frozen=config.train.frozen)
        self.mask, self.sizes, self.batch_sharding = self.setup.mask, self.setup.sizes, self.setup.batch_sharding
        # Everything above only reads; this decides whether the run directory belongs to this config. Only
        # after it passes does anything under out_dir change.
        self.resume_step = checkpoint.check_resume(
            self.out / "ckpt", self.cfg, tokenizer=self.tokenizer, tokenizer_source=config.data.tokenizer,
            languages=self.languages, trainable=lora_setup.trainable_paths(self.mask),
            fix=f"or start a new run with another --config.train.out_dir (not {self.out})")
        self._tokenizer_unsaved = self.resume_step is None or checkpoint.tokenizer_path(self.out / "ckpt") is None
        self.data = pipeline.make_train_iterator(config.data, sharding=self.batch_sharding, tokenizer=self.tokenizer)
        try:
            self.manager = checkpoint.manager(self.out / "ckpt", max_to_keep=config.train.keep,
                                              async_save=config.train.async_save)
            self.writer = metrics_lib.MetricWriter(self.out, resume_step=self.resume_step or 0,
                                                   wandb=config.train.get("wandb"), config_dict=config.to_dict())
        except BaseException:
            self.data.close()
            raise
        self._signal = None
        self._guard, self._guard_saved = None, None  # the English-retention guard (train/guard.py), if on

    # ---- state ----
    def initial_state(self) -> dict:
        if self.resume_step is not None:
            return self.restore(self.resume_step)
        state = self.setup.fresh_state(self.config.train.seed, self.config.init_from)
        if self.config.init_from:
            print(f"initialised from {self.config.init_from}")
        return state

    def restore(self, step: int) -> dict:
        state = checkpoint.restore_train_state(self.manager, step, self.setup.abstract_state, self.data.restore_args())
        self._guard_saved = checkpoint.read_meta(self.out / "ckpt", step).get("guard")
        print(f"resumed from {self.out / 'ckpt'} step {step} (mesh {dict(self.mesh.shape)})")
        return state

    def save(self, state: dict, step: int, force: bool = False) -> None:
        # The checkpoint carries its vocabulary (exports get tokenizer files): the wrapper's files (tokenizer.model,
        # or tokenizer.json + tokenizer_config.json), written once, with the first step of a run (a resume has
        # checked that data.tokenizer equals it).
        tokenizer = self.tokenizer if self._tokenizer_unsaved else None
        self._tokenizer_unsaved = False
        checkpoint.save_train_state(self.manager, step, state, cfg=self.cfg, data_args=self.data.save_args(),
                                    tokenizer=tokenizer, force=force, languages=self.languages,
                                    trainable=lora_setup.trainable_paths(self.mask),
                                    tokenizer_sha256=self.tokenizer.sha256(),
                                    config=json.loads(self.config.to_json_best_effort()),
                                    **({"guard": self._guard.state()} if self._guard else {}))
        self.writer.flush()  # in a bucket, the logs up to this step become visible with its checkpoint

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
        train_step = self.setup.train_step(accum=config.train.grad_accum, z_loss=config.train.z_loss,
                                           num_langs=len(self.languages), loss_chunk=config.train.loss_chunk,
                                           seed=config.train.seed)
        eval_fn = jax.jit(lambda p, b: step_lib.eval_step(p, b, cfg=self.cfg, num_langs=len(self.languages)))
        eval_sets = pipeline.make_eval_batches(config.data, tokenizer=self.tokenizer) if config.data.heldout else {}
        self._start_guard(state, eval_sets, eval_fn)
        guard = self._guard
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        tokens_per_step = config.data.batch_size * config.data.seq_len
        print(lora_setup.format_report(self.sizes))
        print(f"attention: {attention_lib.describe(self.cfg, config.data.batch_size, config.data.seq_len)}")
        bar = tqdm(total=total, initial=start_step, desc="train", unit="step", disable=not config.train.progress_bar)
        last = {}
        try:
            with self.placement.context():
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
                    guard_step = guard is not None and step % config.data.guard.every == 0
                    if step % config.train.log_every == 0 or step == total or guard_step:
                        evaluated = eval_sets and (step % config.train.eval_every == 0 or step == total)
                        if evaluated:
                            last.update(self.evaluate(state["params"], eval_sets, eval_fn))
                        if guard_step:  # before the save: the checkpoint holds the weights the next batch uses
                            last.update(self._guard_check(guard, step, state["params"], eval_sets, eval_fn, last))
                        last.update(self.data.metrics())
                        self.writer.write(step, last)
                        tqdm.write(metrics_lib.format_line(step, total, last))
                        if evaluated or step == total:
                            self.writer.draw_curves()  # OUT/curves.png: smoothed train loss, held-out points
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

    # ---- the English-retention guard (train/guard.py) ----
    def _start_guard(self, state, eval_sets, eval_fn) -> None:
        """`self._guard` for a run with data.guard.languages, its baseline measured on the parameters the run
        starts from (a resumed run has it, with the weights, in its checkpoint's meta)."""
        if not guard_lib.enabled(self.config.data):
            return
        guard = guard_lib.Guard(self.config.data, self.data.mixer(), [s["lang"] for s in self.config.data.sources],
                                self._guard_saved)
        if guard.baseline is None:
            with self.placement.context():
                guard.set_baseline(self._guard_losses(guard, state["params"], eval_sets, eval_fn, {}))
            print(f"guard: baseline held-out loss {_rounded(guard.baseline)}, weights "
                  f"{_rounded(guard.language_weights())}")
        self._guard = guard

    def _guard_losses(self, guard, params, eval_sets, eval_fn, measured: dict) -> dict[str, float]:
        protected = {lang: eval_sets[lang] for lang in guard.cfg.languages}
        if not all(f"eval/{lang}/loss" in measured for lang in protected):
            measured = self.evaluate(params, protected, eval_fn)
        return {lang: measured[f"eval/{lang}/loss"] for lang in protected}

    def _guard_check(self, guard, step, params, eval_sets, eval_fn, last) -> dict:
        record, changed = guard.check(self._guard_losses(guard, params, eval_sets, eval_fn, last))
        if changed:
            rises = {k.split("/")[-1]: f"{v:+.2%}" for k, v in record.items() if k.startswith("guard/rise/")}
            tqdm.write(f"guard: step {step}: held-out rise {rises} -> weights {_rounded(guard.language_weights())}")
        return record

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


def _rounded(weights: dict) -> dict:
    return {k: round(v, 4) for k, v in weights.items()}


def train(config) -> dict:
    return Trainer(config).run()
