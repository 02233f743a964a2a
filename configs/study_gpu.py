"""The transfer study at a scale where its effects show, on one GPU in about ten minutes.

    xfer study --config configs/study_gpu.py --cache .cache/study_gpu --prepare      # once, with network
    xfer study --config configs/study_gpu.py --cache .cache/study_gpu                 # on the GPU machine

configs/study_toy.py's arms with LLaMA-2's real 32,000-piece tokenizer as the original vocabulary and the
paper's 20,000-piece Chinese model appended (as Chinese-LLaMA did), a ≈100M-parameter body (the `small`
shape widened: hidden 768, 12 layers, 12 heads, MLP 2048) trained in bf16 with cuDNN attention on
unrolled layers, and more of the corpus (`max_chars` 20M: 16.1M characters of en, all 3.9M of zh; a 25 MB cache).

Sized for about ten minutes of one H200 from a measurement on the GPU machine (the first 445 s of a first
version of this config, on a lease that came as 4 H200s, so fsdp=4): 350k tokens/s per GPU in steady state
(28% MFU; 0.023 s per 8×1024-token step per GPU), half the 10× of TinyLlama's 72k tokens/s first assumed,
and 8-18 s of fixed cost per run (compiling the unrolled layers, restoring and saving a 1.6 GB checkpoint
with optimizer state). So on one H200: base 16M tokens + further pretraining 104M (2M / 6M / 18M tokens for 4
series: original zh-only and zh+en, extended by random and by subword_mean, zh-only) = 120M tokens ≈ 340 s
(5.7 min) of steps, plus ≈ 4 min for the fixed costs of 19 runs (six of them small LoRA runs) and the
evaluations (docs/study/gpu.md). Runs of equal shape and length share compiled code through the
persistent compilation cache in OUT/jax_cache. Disk: ≈ 28 GB of checkpoints (each run keeps its last).
"""
import ml_collections

B1, B2, B3 = 2_000_000, 6_000_000, 18_000_000


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.out_dir = "runs/study_gpu"
    c.seed = 0
    c.target_lang = "zh"
    c.base_lang = "en"
    c.max_chars = 20_000_000  # per language: en gets 16.1M characters, zh all 3.9M its sources hold

    c.tokenizers = ml_collections.ConfigDict(dict(
        base="llama",  # LLaMA-2's tokenizer from the cache (base_vocab etc. are for base="train")
        target_vocab=20000, target_coverage=0.9995, pad_to_multiple=128,
    ))
    c.model = ml_collections.ConfigDict(dict(
        shape="small", overrides={"hidden_size": 768, "intermediate_size": 2048, "num_layers": 12, "num_heads": 12,
                                  "num_kv_heads": 12, "max_position_embeddings": 1024},
        dtype="bfloat16", param_dtype="float32", remat="none", attention="cudnn", scan_layers=False,
        seq_len=1024, batch_size=32, loss_chunk=0,
    ))
    c.base = ml_collections.ConfigDict(dict(tokens=16_000_000, lr=1e-3, mixture={"en": 0.95, "zh": 0.05}))
    c.pretrain = ml_collections.ConfigDict(dict(
        lr=5e-4, mixtures={"zh": {"zh": 1.0}, "zh_en": {"zh": 0.7, "en": 0.3}},
    ))
    c.instruct = ml_collections.ConfigDict(dict(
        mode="lora", lr=1e-3, seq_len=256, batch_size=16,  # ≈70 pairs a step: 8 epochs of each set
        sizes={"small": dict(examples=50, steps=6), "large": dict(examples=0, steps=48)},
    ))
    c.eval = ml_collections.ConfigDict(dict(
        batch_size=16, max_heldout_documents=0,  # per language, evenly spaced through heldout.txt; 0: all
        prompts=0, max_new_tokens=64, repetition_penalty=1.2,  # prompts: held-out target pairs answered; 0: all
    ))
    budgets = [0, B1, B2, B3]
    c.grid = [
        dict(vocab=["original"], mixture=["zh", "zh_en"], budget=budgets),
        dict(vocab=["random", "subword_mean"], mixture=["zh"], budget=budgets),  # `mean`: see configs/study_toy.py
        dict(vocab=["original"], mixture=["zh"], budget=[0, B3], instruct=["small", "large"]),
        dict(vocab=["subword_mean"], mixture=["zh"], budget=[B3], instruct=["small", "large"]),
    ]
    return c
