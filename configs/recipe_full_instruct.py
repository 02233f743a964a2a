"""Recipe (c): full instruction tuning of a base model, every weight trained on the instruction data.

    xfer train --config configs/recipe_full_instruct.py --config.init_from=ckpts/llama2_7b

The study's instruction-tuning arm without adapters (PAPER.md: 1K / 5K / 950K BELLE examples; Bactrian-X for
other languages): configs/instruct.py:full (lr 2e-5, cosine, 3% warmup, no weight decay), one stage whose
output (runs/recipe_full_instruct/instruct/ckpt) exports with plain `xfer convert orbax-to-hf`.
"""
import pathlib

from xfer_jax.config_files import load_config

STAGES = ("instruct",)
ROOT = "runs/recipe_full_instruct"


def get_config(stage: str = "instruct"):
    if stage not in STAGES:
        raise ValueError(f"configs/recipe_full_instruct.py:{stage}: the only stage is {STAGES[0]!r}")
    c = load_config(pathlib.Path(__file__).with_name("instruct.py"), "full")
    c.train.out_dir = f"{ROOT}/{stage}"
    return c
