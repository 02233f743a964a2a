"""`xfer train` with the instruction configs: full fine-tuning learns responses (prompts carry no loss), and the
staged recipes chain their stages with freezing patterns that match their models."""
import json

import jax
import numpy as np
import pytest
import torch
import transformers

from lora_helpers import load_config, save_base, use_test_data
from xfer_jax import checkpoint, forward
from xfer_jax.convert import hf, peft as peft_export
from xfer_jax.data import pipeline
from xfer_jax.model import params as model_params
from xfer_jax.model.config import LORA_TARGETS
from xfer_jax.model.shapes import get_shape
from xfer_jax.train import lora_setup, optim, setup as setup_lib
from xfer_jax.train.loop import train

RECIPES = {
    "recipe_chinese_llama": ("embed", "lora", "instruct"),
    "recipe_pretrain_then_lora": ("pretrain", "instruct"),
    "recipe_full_instruct": ("instruct",),
}


def test_full_instruction_tuning_learns_responses_only(instruct_dir, small_tokenizer, tmp_path):
    c = use_test_data(load_config("instruct", "full"), instruct_dir, small_tokenizer, tmp_path / "run")
    c.train.steps, c.train.eval_every, c.train.save_every = 30, 30, 30
    c.optim.lr, c.optim.warmup_steps = 3e-3, 0
    summary = train(c)
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert records[0]["trainable_params"] == records[0]["params"]  # full: everything trains
    first, last = np.mean([r["loss"] for r in records[:3]]), np.mean([r["loss"] for r in records[-3:]])
    assert last < first - 1.0, (first, last)
    assert summary["eval/zh/loss"] < first and summary["eval/en/loss"] < first

    iterator = pipeline.make_train_iterator(c.data)  # the trainer's first batch: same config, same seed
    batch = next(iterator)
    iterator.close()
    assert records[0]["target_tokens"] == batch["loss_weights"].sum()
    assert batch["loss_weights"].sum() < 0.8 * (batch["segment_ids"] > 0).sum()  # prompts are not learned


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_stages_chain_and_train_what_they_say(recipe):
    adapters = {f"layers/{t}_lora_{ab}" for t in LORA_TARGETS for ab in "ab"}
    embeddings = {"embed_tokens", "lm_head"}
    all_true = jax.tree.map(lambda _: True, model_params.abstract_params(get_shape("tiny")))
    everything = set(lora_setup.trainable_paths(all_true))
    expected = {"recipe_chinese_llama": [embeddings, embeddings | adapters, embeddings | adapters],
                "recipe_pretrain_then_lora": [everything, adapters], "recipe_full_instruct": [everything]}[recipe]
    stages = [load_config(recipe, stage) for stage in RECIPES[recipe]]
    for before, after in zip(stages, stages[1:]):
        assert after.init_from == f"{before.train.out_dir}/ckpt"
    for c, want in zip(stages, expected):
        cfg = setup_lib.model_config(c.model)  # the shape alone: no init_from checkpoint needed
        mask = optim.trainable_mask(model_params.abstract_params(cfg), list(c.train.trainable), list(c.train.frozen))
        assert set(lora_setup.trainable_paths(mask)) == want
    with pytest.raises(ValueError, match="stage"):
        load_config(recipe, "nope")


@pytest.mark.slow
def test_recipe_a_runs_end_to_end_and_exports(corpus_dir, instruct_dir, small_tokenizer, tmp_path):
    """Chinese-LLaMA's three stages on the tiny shape, then the merged and the PEFT exports of the last one."""
    init_from, _, _ = save_base(tmp_path / "base", small_tokenizer)
    for stage in RECIPES["recipe_chinese_llama"]:
        c = use_test_data(load_config("recipe_chinese_llama", stage), instruct_dir, small_tokenizer, tmp_path / stage)
        for entry in list(c.data.sources) + list(c.data.heldout):
            if entry["format"] == "text":
                entry["path"] = str(corpus_dir / entry["lang"] / entry["path"].split("/")[-1])
        c.init_from = str(init_from)
        c.train.steps, c.train.eval_every = 4, 4
        c.optim.lr = 1e-2
        train(c)
        init_from = tmp_path / stage / "ckpt"
    tokens = np.random.RandomState(0).randint(3, 2000, size=(2, 16))
    ours = forward.logits(init_from, tokens)
    assert checkpoint.read_meta(init_from)["model"]["lora_rank"] == 8
    hf.orbax_to_hf(init_from, tmp_path / "merged", merge_lora=True)
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        np.testing.assert_allclose(merged(torch.as_tensor(tokens)).logits.numpy(), ours, atol=1e-4)
    peft_export.orbax_to_peft(init_from, tmp_path / "adapter")  # adapters + embed_tokens/lm_head (modules_to_save)
