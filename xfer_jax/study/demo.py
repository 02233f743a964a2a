"""`xfer demo`: the transfer pipeline end to end on real text, small enough for a CPU (configs/demo.py).

    xfer demo [--config configs/demo.py] [--out runs/demo] [--cache .cache] [--fresh] [--config.base.steps=300]

Stages, each writing a folder of the run directory and skipped when it finished before (rerun to resume):
  tokenizers   an English BPE base vocabulary, a Chinese BPE, the two merged (xfer vocab train/merge)
  efficiency   tokens per character of both vocabularies on held-out zh/en (xfer vocab report)
  heldout      the held-out documents the evaluations read (all, or an evenly spaced sample)
  init, base   a random `tiny` model, trained on English only: the English-centric base (xfer train)
  extend       its vocabulary grown to the merged tokenizer, new rows by subword_mean (xfer vocab extend)
  pretrain     further pretraining on zh 0.7 / en 0.3 (xfer train, configs/pretrain.py)
  instruct     LoRA + embeddings on chatterbot-corpus Q/A pairs (configs/instruct.py:lora_embed)
  eval/*       bits per character and ppl per language, held-out instruction loss, greedy responses scored by
               chrF, end-of-answer rate and code-switching (xfer eval ppl/generate/codeswitch)
  export       Hugging Face directory, LoRA merged (xfer convert orbax-to-hf --merge_lora)
  transformers the export reloaded in transformers, one greedy answer compared with xfer's own decoder
Then OUT/summary.md (printed) and OUT/curves.png (the loss curves of the three training stages).
"""
from __future__ import annotations

import json

from xfer_jax.study import data, demo_report, export, measure, plots, stage_configs, tokenizers, training
from xfer_jax.study.runner import RunDir

DEFAULT_CONFIG = str(stage_configs.CONFIGS / "demo.py")


def run_demo(spec, out, cache, fresh: bool = False) -> str:
    """Every stage in order (finished ones skipped); returns the summary's Markdown."""
    run = RunDir(out, json.loads(spec.to_json_best_effort()), fresh=fresh, name="xfer demo")
    langs = stage_configs.languages(spec)
    run.say(f"data: {cache}")
    paths = data.prepare(cache, spec)
    corpus, instruct_dir = paths["corpus"], paths["instruct"]
    tok = run.stage("tokenizers", tokenizers.build, corpus=corpus, llama_tokenizer=paths.get("llama_tokenizer"),
                    spec=spec)
    efficiency = run.stage("efficiency", tokenizers.efficiency, corpus=corpus, languages=langs,
                           tokenizers={"base": tok["base"], "extended": tok["merged"]})
    init = run.stage("init", training.random_base, tokenizer=tok["base"], spec=spec)
    e = spec.eval
    eval_corpus = run.stage("heldout", data.heldout_subset, corpus=corpus, langs=langs,
                            max_documents=e.max_heldout_documents)["corpus"]

    def curve(steps: int, eval_langs) -> dict:
        """In-run held-out evaluations for the loss curves: `curve_points` a stage (0: none, nothing to compile)."""
        return {"heldout": tuple(eval_langs) if e.curve_points else (), "log_every": e.log_every,
                "eval_every": max(1, steps // max(1, e.curve_points))}

    base = run.stage("base", training.run_training, stage_configs.pretrain(
        spec, corpus=corpus, tokenizer=tok["base"], mixture=spec.base.mixture, steps=spec.base.steps,
        lr=spec.base.lr, out_dir=run.folder("base"), init_from=init["ckpt"],
        **curve(spec.base.steps, [spec.base_lang])))
    ext = run.stage("extend", training.extended, ckpt=base["ckpt"], base_tokenizer=tok["base"],
                    merged_tokenizer=tok["merged"], init=spec.extend.init, seed=spec.seed)
    pre = run.stage("pretrain", training.run_training, stage_configs.pretrain(
        spec, corpus=corpus, tokenizer=tok["merged"], mixture=spec.pretrain.mixture, steps=spec.pretrain.steps,
        lr=spec.pretrain.lr, out_dir=run.folder("pretrain"), init_from=ext["ckpt"],
        **curve(spec.pretrain.steps, langs)))
    tuned = run.stage("instruct", training.run_training, stage_configs.instruct(
        spec, instruct_dir=instruct_dir, tokenizer=tok["merged"], mode=spec.instruct.mode,
        mixture=spec.instruct.mixture, max_examples=spec.instruct.max_examples, steps=spec.instruct.steps,
        lr=spec.instruct.lr, out_dir=run.folder("instruct"), init_from=pre["ckpt"],
        **curve(spec.instruct.steps, langs)))

    rows = {}
    for name, made in (("base", base), ("extended", ext), ("pretrained", pre), ("instructed", tuned)):
        final = name == "instructed"
        rows[name] = {"train": made if "steps" in made else None, "eval": run.stage(
            f"eval/{name}", measure.checkpoint, ckpt=made["ckpt"], corpus=eval_corpus, instruct_dir=instruct_dir,
            spec=spec, langs=langs, prompts_per_language=e.prompts_per_language if final else -1)}
    hf = run.stage("export", export.export, ckpt=tuned["ckpt"])
    hf_check = run.stage("transformers", export.reload_and_generate, ckpt=tuned["ckpt"], hf_dir=hf["hf_dir"],
                         instruction=e.hf_instruction, template=measure.spec_template(spec),
                         max_new_tokens=e.hf_max_new_tokens)

    curves = plots.loss_curves({"1. base (en)": base["run_dir"], "2. further pretraining (zh+en)": pre["run_dir"],
                                "3. instruction tuning (LoRA)": tuned["run_dir"]},
                               run.root / "curves.png", title="xfer demo: loss per stage")
    text = demo_report.summary(rows=rows, langs=langs, efficiency=efficiency, merge=tok["merge"],
                               final_eval=rows["instructed"]["eval"], hf_check={**hf_check, **hf},
                               timings=run.timings, curves=curves.name)
    (run.root / "summary.md").write_text(text, encoding="utf-8")
    run.say(f"done: {run.root / 'summary.md'}, {curves}")
    return text
