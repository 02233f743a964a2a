"""Recipe (b): full further pretraining on the language mixture, then LoRA instruction tuning.

    xfer train --config configs/recipe_pretrain_then_lora.py:pretrain --config.init_from=ckpts/llama2_7b
    xfer train --config configs/recipe_pretrain_then_lora.py:instruct

The study's main path (PAPER.md): every weight moves during further pretraining (lr 2e-4, configs/pretrain.py's
zh 0.7 / en 0.3 mixture), then only adapters on all seven projections learn the instruction data
(configs/instruct.py:lora). Stage 2 starts from stage 1's checkpoint (runs/recipe_pretrain_then_lora/pretrain/ckpt).
"""
import pathlib

from xfer_jax.config_files import load_module

STAGES = ("pretrain", "instruct")
ROOT = "runs/recipe_pretrain_then_lora"


def get_config(stage: str = "pretrain"):
    if stage not in STAGES:
        raise ValueError(f"configs/recipe_pretrain_then_lora.py:{stage}: stages are {STAGES}, run in this order")
    instruct = load_module(pathlib.Path(__file__).with_name("instruct.py"))
    if stage == "pretrain":
        c = instruct.sibling_config("pretrain")
        c.optim.lr = 2e-4
        c.init_from = ""
    else:
        c = instruct.get_config("lora")
        c.init_from = f"{ROOT}/pretrain/ckpt"
    c.train.out_dir = f"{ROOT}/{stage}"
    return c
