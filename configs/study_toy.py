"""The transfer study in miniature, on a CPU in minutes: `xfer study --config configs/study_toy.py`.

The paper's arms (../shared/PAPER.md) at toy scale, on the fetched corpus and chatterbot-corpus pairs:
  vocabulary       original vs extended, new rows by random / mean / subword_mean
  further pretrain 0 and three budgets growing 3× (40k, 120k, 360k tokens), zh-only vs zh 0.7 + en 0.3, and
                   zh 0.9 + en 0.1 under the English-retention guard
  instructions     small (50 zh pairs) vs large (all 459), LoRA, about 5 epochs each
The base is English-centric, not English-only, as LLaMA is: a 3,000-piece BPE trained on English plus 300
Chinese documents (so, like LLaMA's, it holds the commonest Chinese characters and spells the rest in bytes),
and the `tiny` model trained on en 0.95 / zh 0.05. docs/study/toy.md reports what this run shows.
"""
import ml_collections

B1, B2, B3 = 40_000, 120_000, 360_000  # further-pretraining budgets in tokens (budget 0 is the base itself)


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.out_dir = "runs/study_toy"
    c.seed = 0
    c.target_lang = "zh"
    c.base_lang = "en"
    c.max_chars = 3_000_000  # per language, `xfer data fetch`'s default: a fetched cache is reused as is

    # base: "train" (a BPE made here, below), "llama" (LLaMA-2's tokenizer), "llama3" / "llama3_1" (Llama-3's /
    # Llama-3.1's real tokenizer.json, 128,256 ids: the target becomes a byte-level BPE of target_vocab tokens,
    # base_* and target_coverage do not apply; a 128k-row LM head makes every step ~10x dearer: configs/demo_llama3.py)
    c.tokenizers = ml_collections.ConfigDict(dict(
        base="train", base_vocab=3000, base_coverage=0.9995, base_documents={"en": 0, "zh": 300},
        target_vocab=4000, target_coverage=0.99, pad_to_multiple=64,
    ))
    c.model = ml_collections.ConfigDict(dict(
        shape="tiny", overrides={}, dtype="float32", param_dtype="float32", remat="none", attention="xla",
        scan_layers=True, seq_len=128, batch_size=8, loss_chunk=0,
    ))
    c.base = ml_collections.ConfigDict(dict(tokens=800_000, lr=3e-3, mixture={"en": 0.95, "zh": 0.05}))
    c.pretrain = ml_collections.ConfigDict(dict(
        lr=2e-3, mixtures={"zh": {"zh": 1.0}, "zh_en": {"zh": 0.7, "en": 0.3}, "zh_guard": {"zh": 0.9, "en": 0.1}},
        # zh_guard starts at zh 0.9 / en 0.1 and lets the English-retention guard (train/guard.py) move English's
        # share to keep its held-out bits/char within 5% of the start, checked every 10 steps (docs/study/toy.md
        # compares budgets and gains)
        guards={"zh_guard": dict(languages=["en"], every=10, budget=0.05, gain=0.25)},
    ))
    c.instruct = ml_collections.ConfigDict(dict(
        mode="lora", lr=2e-3, seq_len=0, batch_size=0,  # rows: 0 = the model's seq_len and batch_size
        sizes={"small": dict(examples=50, steps=16), "large": dict(examples=0, steps=150)},
    ))
    c.eval = ml_collections.ConfigDict(dict(
        batch_size=16, max_heldout_documents=0,  # per language, evenly spaced through heldout.txt; 0: all
        prompts=0, max_new_tokens=48, repetition_penalty=1.2,  # prompts: held-out target pairs answered; 0: all
    ))
    budgets = [0, B1, B2, B3]
    c.grid = [
        # the paper's perplexity table (zh-only) and its mixed column (Open Chinese LLaMA: zh + en)
        dict(vocab=["original"], mixture=["zh", "zh_en"], budget=budgets),
        # the extended vocabulary (LLaMA-EXT), by init strategy, further pretrained on Chinese as the paper did
        dict(vocab=["random", "mean", "subword_mean"], mixture=["zh"], budget=budgets),
        # the instruction-scale table: small vs large instruction sets on top of each budget
        dict(vocab=["original"], mixture=["zh"], budget=[0, B1, B3], instruct=["small", "large"]),
        dict(vocab=["subword_mean"], mixture=["zh"], budget=[B3], instruct=["small", "large"]),
        dict(vocab=["original"], mixture=["zh_en"], budget=[B3], instruct=["small", "large"]),
        # the English-retention guard against target-only and the fixed mixture
        dict(vocab=["original"], mixture=["zh_guard"], budget=[B1, B3]),
    ]
    return c
