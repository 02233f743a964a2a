"""`xfer train --config configs/<stage>.py[:arg] [--config.key=value ...]`."""
import sys

from xfer_jax import config_files
from xfer_jax.errors import run_verb
from xfer_jax.parallel.launch import maybe_initialize_distributed


USAGE = """usage: xfer train --config FILE[:arg] [--config.KEY=VALUE ...]

Trains as the config file says (configs/pretrain.py documents every field; configs/instruct.py adds LoRA and
instruction data). Any field can be overridden: --config.train.steps=200 --config.mesh.fsdp=4. Resumes from
<train.out_dir>/ckpt when it holds a checkpoint of the same run; SIGTERM/SIGINT save and exit 128+signal."""


def main(argv: list[str]) -> int:
    if config_files.asks_help(argv):
        print(USAGE)
        return 0
    try:
        flag_values = config_files.parse_flags("xfer train", argv)
    except ValueError as e:
        print(f"xfer train: config error: {e}", file=sys.stderr)
        return 2
    if flag_values.config is None:
        print("xfer train: --config is required (e.g. --config configs/pretrain.py)", file=sys.stderr)
        return 2
    maybe_initialize_distributed()
    from xfer_jax.train.loop import train

    def body() -> int:
        summary = train(flag_values.config)
        print(f"xfer train: done at step {summary['step']} (loss {summary.get('loss', float('nan')):.4f}, "
              f"{summary['skipped']} skipped updates)")
        return 0

    return run_verb("xfer train", body, (FloatingPointError,))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
