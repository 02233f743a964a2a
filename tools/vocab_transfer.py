"""A tiny transfer run: an English base, its vocabulary extended to Chinese by each init strategy, then further
trained on a zh+en mixture; loss and bits per character before and after, side by side.

  python tools/vocab_transfer.py --out runs/vocab_transfer [--base_steps 500] [--steps 200] [--corpus .cache/corpus]
                                 [--base_vocab 2000 | --base_tokenizer .cache/llama_tokenizer/tokenizer.model]
                                 [--zh_vocab 4000] [--strategies random,mean,noisy_mean,subword_mean]

Stages (each a public function of the project; this script only wires them):
  1. tokenizers  `vocab train` an English BPE model (the base; or take --base_tokenizer) and a Chinese one on
                 the real corpus, `vocab merge` them (padded to a multiple of 64).
  2. base        `train` the `tiny` shape on English only (configs/pretrain.py).
  3. per arm     `vocab extend` with the strategy (arm `none` keeps the base vocabulary: the paper's other arm),
                 evaluate on held-out zh and en, `train` STEPS on zh 0.7 / en 0.3, evaluate again.
Held-out numbers cover every held-out document. Per-token losses of different tokenizers are not comparable,
bits per character are: bpc = summed NLL / (ln 2 × characters). `new mass` is the mean probability the model
gives to the new rows at a held-out position: where the strategies differ most at step 0.
Writes OUT/results.json and OUT/results.md (the Markdown table docs/vocab.md quotes).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib

import jax
import jax.numpy as jnp
from absl import logging as absl_logging

from xfer_jax import checkpoint
from xfer_jax.data import pipeline
from xfer_jax.data.sources import SourceSpec
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.model import params as model_params
from xfer_jax.train.loop import train
from xfer_jax.vocab.merge import MergeOptions, merge_files
from xfer_jax.vocab.resize import STRATEGIES, ExtendOptions, extend
from xfer_jax.vocab.train import TrainOptions, train_tokenizer
from xfer_jax.config_files import project_config

REPO = pathlib.Path(__file__).resolve().parents[1]

MIXTURE = {"zh": 0.7, "en": 0.3}


def build_tokenizers(args, out: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """(base English model, merged English+Chinese model)."""
    corpus = pathlib.Path(args.corpus)
    en = pathlib.Path(args.base_tokenizer) if args.base_tokenizer else train_tokenizer(
        [SourceSpec(lang="en", path=str(corpus / "en" / "train.txt"))], out / "en.model",
        TrainOptions(vocab_size=args.base_vocab, character_coverage=0.9995))
    zh = train_tokenizer([SourceSpec(lang="zh", path=str(corpus / "zh" / "train.txt"))], out / "zh.model",
                         TrainOptions(vocab_size=args.zh_vocab, character_coverage=args.zh_coverage))
    merged = out / "merged.model"
    stats = merge_files(en, zh, merged, MergeOptions(pad_to_multiple=64), overwrite=True)  # the tool's own output
    print(f"merged tokenizer: {stats.base_pieces} + {stats.added} + {stats.padding} padding = {stats.merged_pieces}")
    return en, merged


def pretrain_config():
    """configs/pretrain.py's get_config() (a file, not a package: loaded by path, as `xfer train` does)."""
    return project_config("pretrain")


def train_config(args, tokenizer, out_dir, steps: int, weights: dict[str, float], init_from: str = ""):
    c = pretrain_config()
    corpus = pathlib.Path(args.corpus)
    c.init_from = init_from
    c.data.tokenizer = str(tokenizer)
    c.data.sources = [dict(lang=lang, path=str(corpus / lang / "train.txt"), format="text", weight=w)
                      for lang, w in weights.items()]
    c.data.heldout = []  # evaluated below, on every held-out document
    c.data.seq_len, c.data.batch_size = args.seq_len, args.batch_size
    c.optim.lr = args.lr
    c.train.out_dir, c.train.steps, c.train.seed = str(out_dir), steps, args.seed
    c.train.save_every, c.train.log_every, c.train.async_save, c.train.progress_bar = steps, 1, False, False
    return c


@functools.partial(jax.jit, static_argnames=("cfg", "old_vocab"))
def _eval_sums(params, batch, *, cfg, old_vocab: int):
    logits = model_params.apply(cfg, params, batch["tokens"], batch["positions"], batch["segment_ids"])
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
    new_mass = jnp.exp(logp[..., old_vocab:]).sum(-1)
    w = batch["loss_weights"]
    return {"nll": (nll * w).sum(), "new_mass": (new_mass * w).sum(), "weight": w.sum()}


def evaluate(ckpt_dir, tokenizer, args, old_vocab: int) -> dict:
    """Per language: loss per token, bits per character, mean probability on rows >= old_vocab."""
    cfg, params = checkpoint.load_params(ckpt_dir)
    data = train_config(args, tokenizer, "unused", 1, {}).data
    data.heldout = [dict(lang=lang, path=str(pathlib.Path(args.corpus) / lang / "heldout.txt"), format="text")
                    for lang in MIXTURE]
    out = {}
    for lang, eval_set in pipeline.make_eval_batches(data, tokenizer=Tokenizer.load(tokenizer)).items():
        sums = [jax.device_get(_eval_sums(params, b, cfg=cfg, old_vocab=old_vocab)) for b in eval_set.batches]
        nll, mass, weight = (sum(float(s[k]) for s in sums) for k in ("nll", "new_mass", "weight"))
        out[lang] = {"loss": nll / weight, "bpc": nll / (math.log(2) * eval_set.characters),
                     "new_mass": mass / weight, "tokens_per_char": eval_set.tokens / eval_set.characters}
    return out


def run_arm(arm: str, args, out: pathlib.Path, base_ckpt, base_tok, merged_tok, base_vocab: int) -> dict:
    tokenizer = base_tok if arm == "none" else merged_tok
    start = base_ckpt
    if arm != "none":
        start = extend(base_ckpt, merged_tok, out / arm / "extended", ExtendOptions(strategy=arm, seed=args.seed),
                       base_tokenizer=base_tok, overwrite=True)
    before = evaluate(start, tokenizer, args, base_vocab)
    summary = train(train_config(args, tokenizer, out / arm / "run", args.steps, MIXTURE, init_from=str(start)))
    after = evaluate(out / arm / "run" / "ckpt", tokenizer, args, base_vocab)
    first = [json.loads(line) for line in open(out / arm / "run" / "metrics.jsonl")][0]
    return {"arm": arm, "vocab": checkpoint.read_meta(start)["model"]["vocab_size"], "before": before,
            "after": after, "first_step_loss": first["loss"], "last_step_loss": summary["loss"]}


def markdown(results: list[dict], steps: int) -> str:
    head = ["arm", "vocab", "zh tok/char", "zh bpc @0", "en bpc @0", "new mass zh @0", "new mass en @0",
            "train loss step 1", f"train loss step {steps}", f"zh bpc @{steps}", f"en bpc @{steps}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        b, a = r["before"], r["after"]
        lines.append("| " + " | ".join([
            r["arm"], str(r["vocab"]), f"{b['zh']['tokens_per_char']:.3f}", f"{b['zh']['bpc']:.3f}",
            f"{b['en']['bpc']:.3f}", f"{b['zh']['new_mass']:.3f}", f"{b['en']['new_mass']:.3f}",
            f"{r['first_step_loss']:.3f}", f"{r['last_step_loss']:.3f}", f"{a['zh']['bpc']:.3f}", f"{a['en']['bpc']:.3f}",
        ]) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/vocab_transfer")
    p.add_argument("--corpus", default=str(REPO / ".cache" / "corpus"))
    p.add_argument("--base_tokenizer", default="", help="use this base (e.g. LLaMA's tokenizer.model) instead of "
                   "training an English one of --base_vocab pieces")
    p.add_argument("--base_vocab", type=int, default=2000)
    p.add_argument("--zh_vocab", type=int, default=4000)
    p.add_argument("--zh_coverage", type=float, default=0.99)
    p.add_argument("--base_steps", type=int, default=500)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated; arm `none` always runs")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax's read-only-manager notices, one per evaluation
    out = pathlib.Path(args.out).resolve()
    base_tok, merged_tok = build_tokenizers(args, out / "tokenizers")
    base_vocab = Tokenizer.load(base_tok).vocab_size
    train(train_config(args, base_tok, out / "base", args.base_steps, {"en": 1.0}))
    arms = ["none"] + [s for s in args.strategies.split(",") if s]
    results = [run_arm(arm, args, out, out / "base" / "ckpt", base_tok, merged_tok, base_vocab) for arm in arms]
    table = markdown(results, args.steps)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    (out / "results.md").write_text(table)
    print(table)
    return results


if __name__ == "__main__":
    main()
