"""`xfer demo`: the whole transfer pipeline on real text, on a CPU, in a few minutes.

    xfer demo [--config configs/demo.py] [--out runs/demo] [--cache .cache] [--fresh] [--config.pretrain.steps=800]

An English-centric base is made here (a 3,000-piece English BPE, and the `tiny` shape widened to hidden 128
trained on English only), its vocabulary is extended for Chinese (a 4,000-piece Chinese BPE merged in, new
rows by `subword_mean`), it is further pretrained on zh 0.7 / en 0.3, instruction-tuned with LoRA + trained
embeddings (Chinese-LLaMA's recipe, configs/instruct.py:lora_embed) on real chatterbot-corpus Q/A pairs,
measured, and exported to Hugging Face format. Sized for 10 minutes on 2 busy CPU cores: ≈3.5 minutes idle (docs/demo.md).
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.out_dir = "runs/demo"
    c.seed = 0
    c.target_lang = "zh"  # the language moved into
    c.base_lang = "en"  # the base model's language
    c.max_chars = 3_000_000  # per language, `xfer data fetch`'s default (a fetched cache is reused as is)

    c.tokenizers = ml_collections.ConfigDict(dict(
        base="train",  # train: an English BPE made here; llama: LLaMA-2's tokenizer from the cache
        base_vocab=3000, base_coverage=0.9995, base_documents={"en": 0},  # lang -> documents sampled (0: all)
        target_vocab=4000, target_coverage=0.99, pad_to_multiple=64,
    ))
    c.model = ml_collections.ConfigDict(dict(
        shape="tiny", overrides={"hidden_size": 128, "intermediate_size": 344},  # any LlamaConfig shape field
        dtype="float32", param_dtype="float32", remat="none", attention="xla", scan_layers=True,
        seq_len=128, batch_size=8, loss_chunk=0,
    ))
    c.base = ml_collections.ConfigDict(dict(steps=600, lr=3e-3, mixture={"en": 1.0}))
    c.extend = ml_collections.ConfigDict(dict(init="subword_mean"))
    c.pretrain = ml_collections.ConfigDict(dict(steps=500, lr=2e-3, mixture={"zh": 0.7, "en": 0.3}))
    c.instruct = ml_collections.ConfigDict(dict(
        mode="lora_embed",  # configs/instruct.py: lora | lora_embed | full
        steps=200, lr=1e-3, mixture={"zh": 0.5, "en": 0.5}, max_examples=0,
        seq_len=0, batch_size=0,  # rows: 0 = the model's seq_len and batch_size
    ))
    c.eval = ml_collections.ConfigDict(dict(
        batch_size=16, log_every=0, curve_points=4,  # log_every 0: 20 loss points a stage; curve_points: held-out
        max_heldout_documents=0,  # per language, evenly spaced through heldout.txt; 0: all
        prompts_per_language=8, max_new_tokens=48, repetition_penalty=1.2,
        hf_instruction="你好吗", hf_max_new_tokens=24,
    ))
    return c
