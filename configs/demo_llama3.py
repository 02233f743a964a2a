"""`xfer demo --config configs/demo_llama3.py`: the demo's whole pipeline with Llama-3's real tokenizer as the base.

    xfer demo --config configs/demo_llama3.py [--out runs/demo_llama3] [--cache .cache]
    xfer demo --config configs/demo_llama3.py --config.tokenizers.base=llama3_1   # Llama-3.1's files instead

What configs/demo.py does, on Llama-3's 128,256-id byte-level BPE instead of an English BPE made here
(`xfer data fetch --tokenizer llama3`, cached): a random `tiny` model (hidden 64, 2 layers, GQA) over that
vocabulary is trained on English, its vocabulary is extended for Chinese (an 8,000-token byte-level BPE trained
with Llama-3's own pre-tokeniser, `xfer vocab train --kind hf`, merged with every base id kept, new rows by
`subword_mean`), further pretrained on zh 0.7 / en 0.3, LoRA + embedding tuned on chatterbot-corpus pairs,
measured and exported to Hugging Face format. With 128k rows the LM head is nearly all of a step's work (about
0.65 s for 8 × 64 tokens on 2 CPU cores), so the rows are shorter, the runs shorter and the evaluations read 40
held-out documents per language; docs/demo.md has the measured run.

`tokenizers.base`: "llama3" (Meta-Llama-3's files: eos <|end_of_text|>, and a tokenizer.json that adds no BOS,
so the transformers check adds it by hand, as a user of those files must) or "llama3_1" (eos <|eot_id|>, BOS
added by the files). `target_coverage` is sentencepiece's and does not apply; `base_vocab` / `base_documents`
apply only to `base="train"`.
"""
import pathlib

from xfer_jax.config_files import load_config


def get_config():
    c = load_config(pathlib.Path(__file__).with_name("demo.py"))
    c.out_dir = "runs/demo_llama3"
    c.tokenizers.base = "llama3"
    c.tokenizers.target_vocab = 8000  # byte-level BPE tokens, the 256 bytes included; most are in Llama-3 already
    c.model.overrides = {}  # `tiny` as it is: hidden 64, MLP 176, 2 layers, 4 heads, 2 kv heads
    c.model.seq_len = 64
    c.base.steps, c.pretrain.steps, c.instruct.steps = 150, 150, 60
    c.eval.max_heldout_documents = 40
    c.eval.curve_points = 2
    return c
