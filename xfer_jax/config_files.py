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
