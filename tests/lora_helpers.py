"""Shared by the LoRA and instruction-tuning tests: stage configs on the real instruction pairs, a tiny base."""
import pathlib

import jax
import numpy as np
import sentencepiece as spm

from xfer_jax import checkpoint
from xfer_jax.model import params as model_params
from xfer_jax.model.shapes import get_shape
from xfer_jax.config_files import project_config



def load_config(name: str, *args):
    """get_config(*args) of configs/<name>.py, loaded by path as `xfer train --config` does."""
    return project_config(name, *args)


def use_test_data(c, instruct_dir, tokenizer, out_dir):
    """Point a stage config at the cached instruction pairs and the small tokenizer; short rows, log every step."""
    for entry in list(c.data.sources) + list(c.data.heldout):
        entry["path"] = str(instruct_dir / entry["lang"] / pathlib.Path(entry["path"]).name)
    c.data.tokenizer = str(tokenizer)
    c.data.seq_len, c.data.batch_size = 128, 8
    c.train.out_dir = str(out_dir)
    c.train.progress_bar = False
    c.train.log_every = 1
    c.train.async_save = False
    return c


def save_base(path, tokenizer, seed: int = 0):
    """A random `tiny` LLaMA (GQA) over the tokenizer's vocabulary, saved as step 0 of a checkpoint."""
    cfg = get_shape("tiny", vocab_size=spm.SentencePieceProcessor(model_file=str(tokenizer)).get_piece_size())
    params = jax.tree.map(np.asarray, model_params.init_params(cfg, seed))
    checkpoint.save(path, cfg, params, tokenizer=tokenizer)
    return path, cfg, params
