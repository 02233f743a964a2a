"""`xfer study` (main) and `xfer demo` (demo_main), and the flags they share: an ml_collections config file
with `--config.key=value` overrides (as `xfer train` takes), and where the run lives and where the data is.
The work is the library's: xfer_jax/study/study.py (run_study) and xfer_jax/study/demo.py (run_demo).

    --config FILE[:arg]   the experiment (configs/demo.py, configs/study_*.py)
    --out DIR             the run directory (default: the config's out_dir)
    --cache DIR           the data cache: corpus/, instruct/, llama_tokenizer/ (default: $XFER_CACHE, else .cache)
    --fresh               delete the run directory first and start over
"""
from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Callable

from absl import flags
from absl import logging as absl_logging

from xfer_jax import config_files, paths
from xfer_jax.data.registry import default_cache_root
from xfer_jax.errors import run_verb


def parse(argv: list[str], prog: str, default_config: str, usage: str,
          extra: Callable[[flags.FlagValues], None] | None = None):
    """The parsed flags (`.config`, `.out`, `.cache`, `.fresh` and the extras), or None after printing the
    usage (-h) or why the flags are wrong."""
    def define(values):
        flags.DEFINE_string("out", None, "run directory (default: the config's out_dir)", flag_values=values)
        flags.DEFINE_string("cache", None, "data cache folder (default: $XFER_CACHE, else ./.cache)", flag_values=values)
        flags.DEFINE_boolean("fresh", False, "delete the run directory first and start over", flag_values=values)
        if extra:
            extra(values)

    if config_files.asks_help(argv):
        values = flags.FlagValues()
        define(values)
        print(usage + "\nflags:")
        print(f"  --config: experiment config file (default {default_config})")
        print("\n".join(f"  --{name}: {values[name].help}" for name in values))
        return None
    try:
        values = config_files.parse_flags(prog, argv, default=default_config, define=define)
    except ValueError as e:
        print(f"{prog}: config error: {e}", file=sys.stderr)
        return None
    values.cache = values.cache or str(default_cache_root())
    absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax's notices, one per checkpoint read
    return values


def prepare_flag(values: flags.FlagValues) -> None:
    flags.DEFINE_boolean("prepare", False, "only fetch the data the config needs into --cache (to carry it to a "
                         "machine without network), then stop", flag_values=values)


def main(argv: list[str]) -> int:
    """`xfer study`: every run of the config's grid (finished ones skipped), then the report (or, with --prepare,
    only the data)."""
    from xfer_jax.study import data, study

    args = parse(argv, "xfer study", study.DEFAULT_CONFIG, study.__doc__, prepare_flag)
    if args is None:
        return 0 if config_files.asks_help(argv) else 2
    spec = args.config

    def body() -> int:
        if args.prepare:
            print(json.dumps(data.prepare(args.cache, spec), indent=1))
            return 0
        import jax

        out = study_dir(args.out or spec.out_dir)
        # Runs of equal shape and length (two mixtures, two init strategies) compile to the same programs:
        # compiled once, kept on disk, reused by the others and by a resumed study (unless the environment
        # already names a cache: JAX_COMPILATION_CACHE_DIR).
        if jax.config.jax_compilation_cache_dir is None:
            jax.config.update("jax_compilation_cache_dir", str(out.resolve() / "jax_cache"))
        print(study.run_study(spec, out, args.cache, args.fresh)["markdown"])
        return 0

    return run_verb("xfer study", body)


def study_dir(value) -> pathlib.Path:
    """A demo's or study's run directory: local (a study runs on one machine and rewrites its small JSON
    markers and plots often); to keep it in a bucket, copy the finished folder (`gcloud storage cp -r`)."""
    return paths.local_path(value, "--out (or the config's out_dir)", "write the run locally and copy the "
                            "finished folder to the bucket (gcloud storage cp -r)")


def demo_main(argv: list[str]) -> int:
    """`xfer demo`: every stage of the demo (finished ones skipped); prints the summary."""
    from xfer_jax.study import demo

    args = parse(argv, "xfer demo", demo.DEFAULT_CONFIG, demo.__doc__)
    if args is None:
        return 0 if config_files.asks_help(argv) else 2

    def body() -> int:
        print(demo.run_demo(args.config, study_dir(args.out or args.config.out_dir), args.cache, args.fresh))
        return 0

    return run_verb("xfer demo", body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
