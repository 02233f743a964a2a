"""Instruction tuning (the study's third arm): LoRA or full fine-tuning on instruction/response pairs.

    xfer train --config configs/instruct.py:lora --config.init_from=runs/pretrain/ckpt
    xfer train --config configs/instruct.py:lora_embed ...   # + embed_tokens, lm_head trained (modules_to_save)
    xfer train --config configs/instruct.py:full ...

Prompts are rendered by `data.instruct.template` (alpaca) and carry loss weight 0; responses and their EOS
carry 1 (xfer_jax/data/instruct.py). `template="tokenizer"` renders the tokenizer's own chat template instead
(an HF tokenizer with `chat_template`, e.g. Llama-3-Instruct: loss on the assistant text and its `<|eot_id|>`;
xfer_jax/data/chat_template.py); `data.instruct.system` is then its default system message.
Defaults follow the Chinese-LLaMA line's public scripts (PAPER.md): LoRA r=8, alpha 32, dropout 0.05 on all
seven projections, lr 1e-4, cosine, 3% warmup, block 512; full fine-tuning takes lr 2e-5 (the paper gives no
hyper-parameters). The default data are chatterbot-corpus
pairs (`python -m xfer_jax.data.instruct_fetch`): Chinese as BELLE records, English as Bactrian-X; point
`data.sources` at real BELLE / Bactrian-X / Alpaca / ShareGPT files (format belle | bactrian_x | alpaca |
sharegpt). Everything else (mesh, rules, train.*) is configs/pretrain.py's.
"""
import pathlib

import ml_collections

from xfer_jax.config_files import load_config
from xfer_jax.data.registry import default_cache_root
from xfer_jax.model.config import LORA_TARGETS

CACHE = str(default_cache_root())
ADAPTERS = r"_lora_[ab]$"
# mode -> (train.trainable patterns, LoRA rank, learning rate)
MODES = {
    "lora": ([ADAPTERS], 8, 1e-4),
    "lora_embed": ([ADAPTERS, "^embed_tokens$", "^lm_head$"], 8, 1e-4),
    "full": ([], 0, 2e-5),
}


def sibling_config(name: str, *args) -> ml_collections.ConfigDict:
    """get_config(*args) of configs/<name>.py (config files are loaded by path, not imported as a package)."""
    return load_config(pathlib.Path(__file__).with_name(f"{name}.py"), *args)


def instruct_source(lang: str, split: str = "train", weight: float = 1.0) -> dict:
    """A cached chatterbot-corpus file: BELLE's format for Chinese, Bactrian-X's for the other languages."""
    return dict(lang=lang, path=f"{CACHE}/instruct/{lang}/{split}.jsonl", weight=weight,
                format="belle" if lang == "zh" else "bactrian_x")


def get_config(mode: str = "lora") -> ml_collections.ConfigDict:
    if mode not in MODES:
        raise ValueError(f"configs/instruct.py:{mode}: choose one of {sorted(MODES)}")
    trainable, rank, lr = MODES[mode]
    c = sibling_config("pretrain")
    c.model.lora_rank = rank  # 0: no adapters (full fine-tuning)
    c.model.lora_alpha = 32.0  # the update is scaled by alpha / rank
    c.model.lora_dropout = 0.05  # on the adapters' input only; drawn from (train.seed, step)
    c.model.lora_targets = LORA_TARGETS  # any of q_proj k_proj v_proj o_proj gate_proj up_proj down_proj

    c.data.sources = [instruct_source("zh", weight=0.5), instruct_source("en", weight=0.5)]
    c.data.heldout = [instruct_source("zh", "heldout"), instruct_source("en", "heldout")]
    c.data.languages = ["zh", "en"]
    c.data.seq_len = 512
    # alpaca | llama2_chat | plain | tokenizer: the tokenizer's own Jinja chat template (tokenizer_config.json's
    # chat_template, e.g. Llama-3-Instruct), loss on each assistant turn's text and end-of-turn tokens
    c.data.instruct.template = "alpaca"

    c.optim.lr = lr
    c.optim.warmup_steps = 0.03
    c.optim.weight_decay = 0.0
    c.train.trainable = trainable  # regexes over parameter paths; empty = all
    c.train.out_dir = f"runs/instruct_{mode}"
    return c
