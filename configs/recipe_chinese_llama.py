"""Recipe (a), Chinese-LLaMA: embeddings-only warm-up, then LoRA + embeddings further pretraining, then
LoRA instruction tuning (with embed_tokens / lm_head trained, Chinese-Alpaca's modules_to_save).

    xfer train --config configs/recipe_chinese_llama.py:embed --config.init_from=ckpts/llama2_7b_ext
    xfer train --config configs/recipe_chinese_llama.py:lora
    xfer train --config configs/recipe_chinese_llama.py:instruct

Stage 1 freezes the transformer and trains only the (new) embeddings and the LM head, so new token rows
settle before anything else moves; stage 2 adds LoRA (PAPER.md: r=8, alpha 32, dropout 0.05, all seven
projections; Chinese-LLaMA-2 used r=64, alpha 128) and keeps training both; stage 3 merges stage 2's
adapters into the weights and tunes fresh ones on instruction data. Each stage starts from the previous
one's checkpoint (runs/recipe_chinese_llama/<stage>/ckpt); stage 1 starts from a base checkpoint, typically
one whose vocabulary was extended. On a CPU with the `tiny` shape, pass --config.data.seq_len=128 to every
stage (the instruction stage's 512-token rows exceed tiny's 256 positions).
"""
import pathlib

from xfer_jax.config_files import load_module

STAGES = ("embed", "lora", "instruct")
ROOT = "runs/recipe_chinese_llama"
EMBEDDINGS = ["^embed_tokens$", "^lm_head$"]


def get_config(stage: str = "embed"):
    if stage not in STAGES:
        raise ValueError(f"configs/recipe_chinese_llama.py:{stage}: stages are {STAGES}, run in this order")
    instruct = load_module(pathlib.Path(__file__).with_name("instruct.py"))
    if stage == "instruct":
        c = instruct.get_config("lora_embed")
    else:
        c = instruct.sibling_config("pretrain")
        c.optim.lr = 2e-4
        c.train.trainable = EMBEDDINGS
        if stage == "lora":
            lora = instruct.get_config("lora").model
            for field in ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets"):
                c.model[field] = lora[field]
            c.train.trainable = [instruct.ADAPTERS, *EMBEDDINGS]
    index = STAGES.index(stage)
    c.init_from = f"{ROOT}/{STAGES[index - 1]}/ckpt" if index else ""
    c.train.out_dir = f"{ROOT}/{stage}"
    return c
