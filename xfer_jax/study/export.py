"""The hand-back: export the tuned checkpoint to Hugging Face format (LoRA merged, extended vocabulary kept)
and prove the export is usable by loading it in `transformers` and generating from it.

The proof compares with our own decoder: transformers' greedy continuation of one prompt, tokenised by
transformers' tokenizer, against xfer's KV-cache generation from the same checkpoint. Equal token ids mean
the weights, the vocabulary and the decoding all crossed over.
"""
from __future__ import annotations

import pathlib

from xfer_jax import forward
from xfer_jax.convert.hf import orbax_to_hf
from xfer_jax.eval import prompts
from xfer_jax.eval.generate import Generator, stop_ids
from xfer_jax.eval.sampling import Sampling


def export(out: pathlib.Path, *, ckpt) -> dict:
    """OUT/hf: config.json, safetensors and tokenizer files that AutoModelForCausalLM/AutoTokenizer load."""
    hf_dir = orbax_to_hf(ckpt, out / "hf", merge_lora=True, overwrite=True, log=lambda *_: None)  # stage re-run
    return {"hf_dir": str(hf_dir), "files": sorted(p.name for p in pathlib.Path(hf_dir).iterdir())}


def ours(ckpt, prompt: str, max_new_tokens: int) -> tuple[list[int], tuple[int, ...]]:
    """xfer's greedy continuation of the raw prompt text (BOS + ids, as transformers' tokenizer adds BOS), and
    the end-of-sequence ids it stopped on (the tokenizer's and the model config's)."""
    model, tokenizer = forward.load_with_tokenizer(ckpt)
    eos_ids = stop_ids(tokenizer.eos_id, model.cfg)
    generator = Generator(model, eos_id=eos_ids, batch_size=1, vocab_size=tokenizer.vocab_size)
    results, _ = generator.run([tokenizer.encode(prompt, bos=True)], Sampling(max_new_tokens=max_new_tokens))
    return results[0].tokens, eos_ids


def theirs(hf_dir, prompt: str, max_new_tokens: int, eos_ids: tuple[int, ...]) -> tuple[list[int], list[int], str, bool]:
    """(prompt ids, new ids up to the first EOS, decoded text, whether BOS was added by hand) from transformers on
    the exported directory, greedy. Tokenizer files whose post-processor adds no BOS (Meta-Llama-3's first
    tokenizer.json) get it by hand, as their users must: the model was trained with one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    ids = tokenizer(prompt)["input_ids"]
    by_hand = tokenizer.bos_token_id is not None and ids[:1] != [tokenizer.bos_token_id]
    ids = [tokenizer.bos_token_id] + ids if by_hand else ids
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=list(eos_ids), pad_token_id=eos_ids[0])
    new = out[0, len(ids):].tolist()
    new = new[: min((new.index(i) for i in eos_ids if i in new), default=len(new))]
    return ids, new, tokenizer.decode(new, skip_special_tokens=True), by_hand


def reload_and_generate(out: pathlib.Path, *, ckpt, hf_dir, instruction: str, template: str,
                        max_new_tokens: int) -> dict:
    """Generate once in transformers from the export; say whether it matches xfer's tokens and ids."""
    tokenizer = forward.tokenizer_for(ckpt)
    prompt = prompts.render({"instruction": instruction}, prompts.template(template))
    xfer_new, eos_ids = ours(ckpt, prompt, max_new_tokens)
    hf_prompt, hf_new, text, by_hand = theirs(hf_dir, prompt, max_new_tokens, eos_ids)
    return {"instruction": instruction, "transformers_response": text, "prompt_ids_equal":
            hf_prompt == tokenizer.encode(prompt, bos=True), "new_tokens": len(hf_new),
            "greedy_tokens_equal": hf_new == xfer_new, **({"bos_added_by_hand": True} if by_hand else {})}
