"""Trainer configs for the demo's and the study's stages, built from the project's own stage configs.

Every training stage starts from configs/pretrain.py or configs/instruct.py:<mode>, exactly what `xfer train`
runs, and changes only what the experiment decides: which text (paths under the `--cache` folder, not the
configs' $XFER_CACHE, so a carried cache works on a machine without network), the mixture, the steps, the
learning rate, the run fields of the model (dtype, attention kernel, layer scan) and where it writes.

`data.languages` is the experiment's fixed pair [target_lang, base_lang] in every stage, so the compiled
train step of two runs differs only where their shapes or schedules do.
"""
from __future__ import annotations

import math
import pathlib

import ml_collections

from xfer_jax.checkpoint import RUN_FIELDS
from xfer_jax.config_files import CONFIGS, load_config


def project_config(name: str, *args) -> ml_collections.ConfigDict:
    """get_config(*args) of configs/<name>.py, loaded by path as `xfer train --config` does."""
    path = CONFIGS / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the study builds its stages on the project's configs/")
    return load_config(path, *args)


def languages(spec) -> list[str]:
    """[target language, base language]: the order of every stage's per-language metrics."""
    return [spec.target_lang, spec.base_lang]


def steps_for(tokens: int, spec) -> int:
    """Optimizer steps that consume at least `tokens` tokens (rows of seq_len, batch_size rows a step)."""
    return max(1, math.ceil(tokens / (spec.model.seq_len * spec.model.batch_size)))


def _common(c, spec, *, tokenizer, steps: int, lr: float, out_dir, init_from, log_every: int, eval_every: int):
    """What every stage sets; `log_every` 0 logs 20 times a run (enough points for a loss curve)."""
    c.init_from = str(init_from)
    for field in RUN_FIELDS:  # how the study runs its model: whichever of these its spec sets
        if field in spec.model:
            c.model[field] = spec.model[field]
    c.data.tokenizer = str(tokenizer)
    c.data.languages = languages(spec)
    c.data.seq_len, c.data.batch_size = spec.model.seq_len, spec.model.batch_size
    c.optim.lr = lr
    c.train.out_dir = str(out_dir)
    c.train.steps, c.train.seed = steps, spec.seed
    c.train.loss_chunk = spec.model.loss_chunk
    c.train.save_every, c.train.keep, c.train.async_save, c.train.progress_bar = steps, 1, False, False
    c.train.log_every = max(1, min(log_every or steps // 20, steps))
    c.train.eval_every = eval_every or steps
    c.train.eval_batches = 4
    return c


def pretrain(spec, *, corpus, tokenizer, mixture: dict, steps: int, lr: float, out_dir, init_from,
             heldout: tuple[str, ...] = (), log_every: int = 0, eval_every: int = 0,
             guard: dict | None = None) -> ml_collections.ConfigDict:
    """configs/pretrain.py on CORPUS/{lang}/train.txt weighted by `mixture`; `heldout` languages are evaluated
    during the run (a few batches, for the loss curves); the study evaluates every document afterwards. `guard`:
    data.guard settings (the English-retention guard; its languages are held out too, it measures them)."""
    c = _common(project_config("pretrain"), spec, tokenizer=tokenizer, steps=steps, lr=lr, out_dir=out_dir,
                init_from=init_from, log_every=log_every, eval_every=eval_every)
    if guard:
        c.data.guard.update(dict(guard))
        heldout = tuple(dict.fromkeys((*heldout, *guard["languages"])))
    corpus = pathlib.Path(corpus)
    c.data.sources = [dict(lang=lang, path=str(corpus / lang / "train.txt"), format="text", weight=float(w))
                      for lang, w in mixture.items()]
    c.data.heldout = [dict(lang=lang, path=str(corpus / lang / "heldout.txt"), format="text") for lang in heldout]
    return c


def instruction_source(instruct_dir, lang: str, split: str, **extra) -> dict:
    """A chatterbot-corpus file of `fetch_instruct`: BELLE's format for Chinese, Bactrian-X's for the rest."""
    return dict(lang=lang, path=str(pathlib.Path(instruct_dir) / lang / f"{split}.jsonl"),
                format="belle" if lang == "zh" else "bactrian_x", **extra)


def instruct(spec, *, instruct_dir, tokenizer, mode: str, mixture: dict, max_examples: int, steps: int, lr: float,
             out_dir, init_from, heldout: tuple[str, ...] = (), log_every: int = 0,
             eval_every: int = 0) -> ml_collections.ConfigDict:
    """configs/instruct.py:<mode> on the cached instruction pairs; `max_examples` > 0 keeps a fixed random
    sample of that many pairs per language (the instruction-scale arm), 0 keeps them all. Rows are
    `instruct.seq_len` × `instruct.batch_size` where the spec sets them (short pairs fill long rows many to
    one, so a big pretraining batch would see a small instruction set many times in one step)."""
    c = _common(project_config("instruct", mode), spec, tokenizer=tokenizer, steps=steps, lr=lr, out_dir=out_dir,
                init_from=init_from, log_every=log_every, eval_every=eval_every)
    c.data.seq_len = spec.instruct.get("seq_len") or c.data.seq_len
    c.data.batch_size = spec.instruct.get("batch_size") or c.data.batch_size
    c.data.sources = [instruction_source(instruct_dir, lang, "train", weight=float(w), max_documents=max_examples)
                      for lang, w in mixture.items()]
    c.data.heldout = [instruction_source(instruct_dir, lang, "heldout") for lang in heldout]
    return c
