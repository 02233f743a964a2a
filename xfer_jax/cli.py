"""`xfer <verb> ...`: the verb table and nothing else; each verb's `<package>/cli.py` is imported only when used.

A verb is "module:function", the function taking argv and returning the exit code; the module's `main` is
the package's first verb, so `xfer convert ...` and `python -m xfer_jax.convert.cli ...` behave the same.
Nothing imports this module (user errors and `run_verb` live in xfer_jax/errors.py).
"""
import importlib
import sys

VERBS = {
    "convert": ("xfer_jax.convert.cli:main", "HF <-> Orbax checkpoint conversion"),
    "data": ("xfer_jax.data.cli:main", "fetch corpora, tokenise sources into ArrayRecord shards"),
    "train": ("xfer_jax.train.cli:main", "further pretraining / training on any mesh (ml_collections config)"),
    "bench": ("xfer_jax.perf.cli:bench_main", "time the train step on synthetic tokens (tokens/s, TFLOP/s, MFU)"),
    "vocab": ("xfer_jax.vocab.cli:main", "vocabulary extension: train, merge, extend a checkpoint, report efficiency"),
    "parity": ("xfer_jax.convert.cli:parity_main", "random tiny LLaMA -> HF export -> transformers logit parity"),
    "sweep": ("xfer_jax.perf.cli:sweep_main", "time the train step over meshes x shapes x batches (CSV, plots); --plan: memory"),
    "eval": ("xfer_jax.eval.cli:main", "ppl/bits per char, exams, generation, code-switching, judge (JSON + Markdown report)"),
    "serve": ("xfer_jax.eval.cli:serve_main", "a checkpoint behind the OpenAI chat API (/v1/chat/completions)"),
    "demo": ("xfer_jax.study.cli:demo_main", "the transfer pipeline end to end on real text, on a CPU in minutes"),
    "study": ("xfer_jax.study.cli:main", "the paper's arms as a resumable grid, gathered into one report"),
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
    module, function = VERBS[verb][0].split(":")
    return getattr(importlib.import_module(module), function)(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
