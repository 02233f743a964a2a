"""Weights & Biases, where users already look: the trainer's metrics, its config and its held-out evaluations.

Off unless `train.wandb.mode` is "online" or "offline" (TensorBoard + metrics.jsonl are always written). Offline
runs keep everything under the run directory's `wandb/` folder and contact no server (`wandb sync` uploads them
later). A resumed run continues the same W&B run: its id is kept in the run directory (`wandb_id`), and
steps are logged with the trainer's own step numbers.

    --config.train.wandb.mode=offline --config.train.wandb.project=zh-transfer [--config.train.wandb.tags=...]
"""
import importlib.util
import uuid

import ml_collections

from xfer_jax import paths

MODES = ("disabled", "offline", "online")
KEYS = ("mode", "project", "entity", "name", "tags", "dir")


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(mode="disabled", project="xfer_jax", entity="", name="", tags=[], dir=""))


def check(wandb_cfg, out_dir) -> None:
    """Every key is honoured or refused by name, before the run directory changes."""
    if wandb_cfg is None:
        return
    unknown = sorted(set(wandb_cfg.keys()) - set(KEYS))
    if unknown:
        raise ValueError(f"train.wandb.{unknown[0]} is not a W&B setting here; the keys are {', '.join(KEYS)}")
    if wandb_cfg.mode not in MODES:
        raise ValueError(f"train.wandb.mode={wandb_cfg.mode!r}; choose one of {', '.join(MODES)}")
    if wandb_cfg.mode == "disabled":
        return
    if importlib.util.find_spec("wandb") is None:
        raise ValueError(f"train.wandb.mode={wandb_cfg.mode!r} needs the wandb package: pip install wandb "
                         f"(or set train.wandb.mode=disabled)")
    if paths.is_url(out_dir) and not wandb_cfg.dir:
        raise ValueError(f"train.wandb.dir: W&B writes its files locally, and train.out_dir={str(out_dir)!r} is a "
                         f"bucket; give a local folder, e.g. --config.train.wandb.dir=/tmp/wandb")


class WandbSink:
    """One W&B run for one training run (process 0 only; the caller decides)."""

    def __init__(self, wandb_cfg, out_dir, config_dict: dict):
        import wandb

        id_file = out_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        if not id_file.exists():
            paths.write_text(id_file, run_id + "\n")
        self._run = wandb.init(project=wandb_cfg.project, entity=wandb_cfg.entity or None, name=wandb_cfg.name or None,
                               tags=list(wandb_cfg.tags), mode=wandb_cfg.mode, dir=wandb_cfg.dir or str(out_dir),
                               id=run_id, resume="allow", config=config_dict, settings=wandb.Settings(silent=True))

    def log(self, step: int, record: dict) -> None:
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if scalars:
            self._run.log(scalars, step=step)

    def close(self) -> None:
        self._run.finish()
