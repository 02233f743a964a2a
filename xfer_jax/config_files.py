"""Config files (configs/*.py) are scripts loaded by path, as ml_collections' config_flags loads them, not an
importable package. This is the one loader: stage configs that build on each other, the study, the data CLI,
tools and tests all go through it."""
import importlib.util
import pathlib
import types

import ml_collections

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_module(path: str | pathlib.Path) -> types.ModuleType:
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(f"xfer_file_{path.stem}", path)
    if spec is None or not path.is_file():
        raise FileNotFoundError(f"{path}: no such Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path: str | pathlib.Path, *args) -> ml_collections.ConfigDict:
    """`get_config(*args)` of the file at `path`."""
    return load_module(path).get_config(*args)


def project_config(name: str, *args) -> ml_collections.ConfigDict:
    """`get_config(*args)` of the repository's configs/<name>.py."""
    return load_config(CONFIGS / f"{name}.py", *args)


def _config_arg(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _keys(config, prefix: str = "") -> list[str]:
    """Every dotted key path of a ConfigDict, folders included."""
    out = []
    for key, value in config.items():
        out.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            out += _keys(value, f"{prefix}{key}.")
    return out


def explain_error(argv: list[str], error: Exception, default: str | None = None) -> str:
    """What went wrong with `--config FILE[:arg] --config.a.b=v ...`, naming the override's whole key path and
    the nearest valid keys when a key does not exist (config_flags alone says only "'b'"). `default`: the
    config file used when argv names none."""
    import difflib

    spec = _config_arg(argv) or default
    if spec is None:
        return str(error)
    path, _, arg = spec.partition(":")
    try:
        config = load_config(path, *([arg] if arg else []))
    except Exception as e:  # the file itself is broken: that is the error to show
        return f"--config={spec}: {type(e).__name__}: {e}"
    keys = _keys(config)
    for a in argv:
        if not a.startswith("--config."):
            continue
        key = a[len("--config."):].split("=", 1)[0]
        if key in keys:
            continue
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
        near = [k for m, k in leaves.items() if len(m) > 1 and m != leaf and (leaf.startswith(m) or m.startswith(leaf))]
        near += [k for k in difflib.get_close_matches(key, keys, n=3, cutoff=0.6) if k not in near]
        near += [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=3, cutoff=0.6)
                 if leaves[m] not in near]
        hint = f"; did you mean {', '.join('--config.' + k for k in near[:3])}?" if near else ""
        return f"--config.{key}: {path} has no key {key!r}{hint}"
    return str(error)


def asks_help(argv: list[str]) -> bool:
    """Whether a `--config` verb's argv asks for its usage (absl has no -h of its own here)."""
    return any(a in ("-h", "--help") for a in argv)


def parse_flags(prog: str, argv: list[str], *, default: str | None = None, define=None):
    """Parse `--config FILE[:arg] --config.key=value ... [other flags]` for a verb: the FlagValues with the
    loaded, locked `.config`. `define(flag_values)` adds the verb's other flags. A bad flag or key raises
    ValueError with a one-line explanation. argv is what is parsed, never sys.argv (so a verb called from
    Python sees its own overrides)."""
    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()
    if define:
        define(values)
    try:  # overrides are defined (and the file loaded) here already, from argv
        config_flags.DEFINE_config_file("config", default, "stage config file (configs/*.py)", flag_values=values,
                                        lock_config=True, sys_argv=[prog, *argv])
        values([prog, *argv])
    except (flags.Error, KeyError, AttributeError, ValueError, TypeError) as e:
        raise ValueError(explain_error(argv, e, default)) from e
    return values
