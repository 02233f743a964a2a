"""What `xfer demo` and `xfer study` share on the command line: an ml_collections config file with
`--config.key=value` overrides (as `xfer train` takes), and where the run lives and where the data is.

    --config FILE[:arg]   the experiment (configs/demo.py, configs/study_*.py)
    --out DIR             the run directory (default: the config's out_dir)
    --cache DIR           the data cache: corpus/, instruct/, llama_tokenizer/ (default: $XFER_CACHE, else .cache)
    --fresh               delete the run directory first and start over
"""
from __future__ import annotations

import sys
from collections.abc import Callable

from absl import flags
from absl import logging as absl_logging

from xfer_jax import config_files
from xfer_jax.data.registry import default_cache_root



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

    if any(a in ("-h", "--help") for a in argv):
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
