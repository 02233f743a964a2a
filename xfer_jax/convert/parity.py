"""`xfer parity`: a random LLaMA → xfer_jax checkpoint → HF export → transformers, and the logit gap.

The smallest real end-to-end job: it exercises the model, the checkpoint layout, the exporter and the
tokenizer files, and checks our logits against transformers' LlamaForCausalLM (needs torch).
"""
import argparse
import pathlib
import sys
import time

import jax
import numpy as np

from xfer_jax import checkpoint, forward
from xfer_jax.convert import hf
from xfer_jax.model import params as model_params
from xfer_jax.model.shapes import SHAPES, get_shape

SAMPLE_TEXT = "Language capability transfer moves an English-centric LLaMA into new languages. 语言能力迁移。"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xfer parity", description=__doc__)
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    p.add_argument("--out", default="runs/parity", help="working directory (checkpoint and HF export)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.model to carry (its size sets the vocabulary)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed |logit difference|")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    import torch
    import transformers

    out = pathlib.Path(args.out)
    overrides = {}
    tokens = np.random.RandomState(args.seed).randint(0, 512, size=(2, 37))
    if args.tokenizer:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
        overrides["vocab_size"] = sp.get_piece_size()
        ids = [sp.bos_id()] + sp.encode(SAMPLE_TEXT)
        tokens = np.array([ids, ids[::-1]])
    cfg = get_shape(args.shape, **overrides)
    tokens = tokens % cfg.vocab_size
    start = time.time()
    params = jax.tree.map(np.asarray, model_params.init_params(cfg, args.seed))
    checkpoint.save(out / "ckpt", cfg, params, tokenizer=args.tokenizer, overwrite=True)
    hf.orbax_to_hf(out / "ckpt", out / "hf", overwrite=True)  # a re-run replaces its own earlier export
    ours = forward.logits(out / "ckpt", tokens)
    model = transformers.AutoModelForCausalLM.from_pretrained(out / "hf", torch_dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.as_tensor(tokens)).logits.numpy()
    gap = float(np.abs(ours - ref).max())
    same_argmax = float((ours.argmax(-1) == ref.argmax(-1)).mean())
    print(f"shape {args.shape}: {cfg.num_params():,} parameters, vocab {cfg.vocab_size}, tokens {tokens.shape}")
    print(f"checkpoint {out / 'ckpt'} -> HF {out / 'hf'} -> transformers {transformers.__version__}")
    print(f"max |logit difference| {gap:.2e} (allowed {args.atol:.0e}); same next-token argmax {same_argmax:.0%}")
    if args.tokenizer:
        tok = transformers.AutoTokenizer.from_pretrained(out / "hf")
        same = tok(SAMPLE_TEXT).input_ids == list(tokens[0])
        print(f"AutoTokenizer from the export encodes like sentencepiece: {same}")
        if not same:
            return 1
    print(f"done in {time.time() - start:.1f}s: {'PARITY OK' if gap <= args.atol else 'PARITY FAILED'}")
    return 0 if gap <= args.atol else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
