"""`xfer parity`: a random LLaMA → xfer_jax checkpoint → HF export → transformers, and the logit gap.

The smallest real end-to-end job: it exercises the model, the checkpoint layout, the exporter and the
tokenizer files, and checks our logits against transformers' LlamaForCausalLM (needs torch).
"""
import functools
import time

import jax
import numpy as np

from xfer_jax import checkpoint, paths
from xfer_jax.convert import hf
from xfer_jax.model import params as model_params
from xfer_jax.model.shapes import get_shape

SAMPLE_TEXT = "Language capability transfer moves an English-centric LLaMA into new languages. 语言能力迁移。"


def check(shape: str = "tiny", out: str = "runs/parity", tokenizer: str | None = None, seed: int = 0,
          atol: float = 1e-4) -> int:
    """Build, export and compare (printing each step); 0 when the logits agree within `atol` (and, with a
    tokenizer, the exported AutoTokenizer encodes like sentencepiece), else 1."""
    import torch
    import transformers

    out = paths.local_path(out, "--out", "transformers loads the export from local disk here; name a local folder")
    overrides = {}
    tokens = np.random.RandomState(seed).randint(0, 512, size=(2, 37))
    if tokenizer:
        from xfer_jax.data.tokenizer import Tokenizer

        tok = Tokenizer.load(tokenizer)  # a .model or a tokenizer.json
        overrides["vocab_size"] = tok.vocab_size
        ids = tok.encode(SAMPLE_TEXT, bos=None)  # bos as the tokenizer's own files add it (as AutoTokenizer does)
        tokens = np.array([ids, ids[::-1]])
    cfg = get_shape(shape, **overrides)
    tokens = tokens % cfg.vocab_size
    start = time.time()
    params = jax.tree.map(np.asarray, model_params.init_params(cfg, seed))
    checkpoint.save(out / "ckpt", cfg, params, tokenizer=tokenizer, overwrite=True)
    hf.orbax_to_hf(out / "ckpt", out / "hf", overwrite=True)  # a re-run replaces its own earlier export
    saved_cfg, saved = checkpoint.load_params(out / "ckpt")  # the logits of what was written, read back
    ours = np.asarray(jax.jit(functools.partial(model_params.apply, saved_cfg))(saved, np.asarray(tokens, np.int32)))
    model = transformers.AutoModelForCausalLM.from_pretrained(out / "hf", torch_dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.as_tensor(tokens)).logits.numpy()
    gap = float(np.abs(ours - ref).max())
    same_argmax = float((ours.argmax(-1) == ref.argmax(-1)).mean())
    print(f"shape {shape}: {cfg.num_params():,} parameters, vocab {cfg.vocab_size}, tokens {tokens.shape}")
    print(f"checkpoint {out / 'ckpt'} -> HF {out / 'hf'} -> transformers {transformers.__version__}")
    print(f"max |logit difference| {gap:.2e} (allowed {atol:.0e}); same next-token argmax {same_argmax:.0%}")
    if tokenizer:
        tok = transformers.AutoTokenizer.from_pretrained(out / "hf")
        same = tok(SAMPLE_TEXT).input_ids == list(tokens[0])
        print(f"AutoTokenizer from the export encodes like our tokenizer: {same}")
        if not same:
            return 1
    print(f"done in {time.time() - start:.1f}s: {'PARITY OK' if gap <= atol else 'PARITY FAILED'}")
    return 0 if gap <= atol else 1
