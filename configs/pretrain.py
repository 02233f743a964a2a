"""Further pretraining on a weighted mixture of language streams (the study's second arm).

    xfer train --config configs/pretrain.py --config.init_from=ckpts/llama2_7b --config.train.steps=1000
    xfer train --config configs/pretrain.py:zh_only          # target-only mixture (wrecks English, per the paper)

Defaults train the `tiny` shape from scratch on the fetched demo corpus (`xfer data fetch`), zh 0.7 / en 0.3,
with LLaMA-2's tokenizer: minutes on a CPU.
"""
import ml_collections

from xfer_jax.data.pipeline import default_data_config
from xfer_jax.data.registry import default_cache_root
from xfer_jax.parallel.rules import DEFAULT_RULES
from xfer_jax.train import guard, wandb_log
from xfer_jax.train.optim import default_optim_config

CACHE = str(default_cache_root())


def corpus_source(lang: str, split: str = "train", weight: float = 1.0) -> dict:
    return dict(lang=lang, path=f"{CACHE}/corpus/{lang}/{split}.txt", format="text", weight=weight)


def get_config(mixture: str = "mixed") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.init_from = ""  # an xfer_jax checkpoint (from `xfer convert hf-to-orbax`); empty: random init of model.shape

    c.model = ml_collections.ConfigDict()
    c.model.shape = "tiny"  # a name from configs/models.py; ignored with init_from (the checkpoint decides)
    c.model.vocab_size = 0  # 0: the tokenizer's size
    c.model.dtype = "float32"  # compute dtype ("bfloat16" on accelerators)
    c.model.param_dtype = "float32"
    c.model.remat = "none"  # none | full | dots | dots_no_batch | save_attn_out | minimal
    c.model.attention = "auto"  # cuDNN on NVIDIA GPUs (bf16/fp16), splash on TPUs, xla on CPU (model/attention.py)
    c.model.scan_layers = True  # False: unrolled layers, fastest on GPU for shallow models, longer compiles
    c.model.fuse_projections = True  # q/k/v and gate/up as one GEMM each; False for MQA on tensor=2 (llama.py)

    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, sequence=1))  # -1: the rest of the devices
    c.rules = [list(r) for r in DEFAULT_RULES]  # logical axis -> mesh axes; decides every sharding

    c.data = default_data_config()
    weights = {"mixed": {"zh": 0.7, "en": 0.3}, "zh_only": {"zh": 1.0}}[mixture]
    c.data.sources = [corpus_source(lang, "train", w) for lang, w in weights.items()]
    c.data.heldout = [corpus_source(lang, "heldout") for lang in ("zh", "en")]
    c.data.languages = ["zh", "en"]
    c.data.tokenizer = f"{CACHE}/llama_tokenizer/tokenizer.model"
    c.data.seq_len = 128
    c.data.batch_size = 8
    c.data.guard = guard.default_config()  # English-retention guard: languages=["en"] turns it on (train/guard.py)

    c.optim = default_optim_config()
    c.optim.lr = 1e-3

    c.train = ml_collections.ConfigDict()
    c.train.out_dir = "runs/pretrain"
    c.train.steps = 100
    c.train.seed = 0
    c.train.grad_accum = 1
    c.train.z_loss = 0.0
    c.train.loss_chunk = 0  # >0: cross-entropy over sequence chunks of this length, never all fp32 logits at once
    c.train.nan_policy = "skip"  # skip: drop the update and count it; stop: raise naming the step
    c.train.trainable = []  # regexes over parameter paths; empty = all (e.g. ["embed_tokens", "lm_head"])
    c.train.frozen = []
    c.train.log_every = 10
    c.train.eval_every = 50
    c.train.eval_batches = 4  # 0: all held-out batches
    c.train.save_every = 50
    c.train.keep = 3
    c.train.async_save = True
    c.train.progress_bar = True
    c.train.wandb = wandb_log.default_config()  # mode "offline" | "online" mirrors the metrics to W&B (off here)
    return c
