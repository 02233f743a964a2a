"""`xfer <verb> ...`: one entry point; each verb lives in its own module and is imported only when used.

Every verb module exposes `main(argv: list[str]) -> int`, so `xfer convert ...` and
`python -m xfer_jax.convert.cli ...` behave the same.
"""
import importlib
import sys

VERBS = {
    "convert": ("xfer_jax.convert.cli", "HF <-> Orbax checkpoint conversion"),
    "data": ("xfer_jax.data.cli", "fetch corpora, tokenise sources into ArrayRecord shards"),
    "train": ("xfer_jax.train.cli", "further pretraining / training on any mesh (ml_collections config)"),
    "bench": ("xfer_jax.train.bench", "time the train step on synthetic tokens (tokens/s, TFLOP/s, MFU)"),
    "vocab": ("xfer_jax.vocab.cli", "vocabulary extension: train, merge, extend a checkpoint, report efficiency"),
    "parity": ("xfer_jax.convert.parity", "random tiny LLaMA -> HF export -> transformers logit parity"),
    "sweep": ("xfer_jax.sweep_cli", "time the train step over meshes x shapes x batches (CSV, plots); --plan: memory"),
    "eval": ("xfer_jax.eval.cli", "ppl/bits per char, exams, generation, code-switching, judge (JSON + Markdown report)"),
    "serve": ("xfer_jax.eval.serve", "a checkpoint behind the OpenAI chat API (/v1/chat/completions)"),
    "demo": ("xfer_jax.study.demo", "the transfer pipeline end to end on real text, on a CPU in minutes"),
    "study": ("xfer_jax.study.study", "the paper's arms as a resumable grid, gathered into one report"),
}


def usage() -> str:
    lines = ["usage: xfer <verb> [args...]", "", "verbs:"]
    lines += [f"  {verb:<10} {help_}" for verb, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"xfer: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(VERBS[verb][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
