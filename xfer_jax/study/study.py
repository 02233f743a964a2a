"""`xfer study --config configs/study_*.py`: the paper's arms as a grid of resumable runs, one report.

    xfer study --config configs/study_toy.py [--out runs/study_toy] [--cache .cache] [--fresh]
    xfer study --config configs/study_gpu.py --cache .cache/study_gpu --prepare   # fetch what to carry, stop

Stages (folders of the run directory; a finished one is skipped, so rerunning continues where it stopped):
  tokenizers, efficiency   the base and extended vocabularies, tokens per character of each
  heldout                  the held-out documents the evaluations read (all, or an evenly spaced sample)
  init, base               the English-centric base model
  vocab/<init>             the base extended to the merged vocabulary, new rows by <init>
  pretrain/<point>         further pretraining of a vocabulary on a mixture for a token budget
  instruct/<point>-<size>  LoRA instruction tuning of a point on `size` target-language pairs
  eval/<run>               held-out bits per character (points), instruction loss and responses (tunings)
  jax_cache/               compiled programs shared by runs of equal shape and length
Then OUT/report/: report.md, report.json and the figures (xfer_jax/study/study_report.py).
"""
from __future__ import annotations

import json

from xfer_jax.study import data, grid as grid_lib, measure, stage_configs, study_report, tokenizers, training
from xfer_jax.study.runner import RunDir

DEFAULT_CONFIG = str(stage_configs.CONFIGS / "study_toy.py")
NOT_SETTINGS = ("grid", "out_dir")  # growing the grid or moving the run keeps finished runs valid


def settings(spec) -> dict:
    return {k: v for k, v in json.loads(spec.to_json_best_effort()).items() if k not in NOT_SETTINGS}


def pretrain_point(run, spec, point, start: dict, paths, tokenizer) -> dict:
    """The checkpoint of a point: its vocabulary's start at budget 0, else a further-pretraining run."""
    if not point.budget:
        return start
    return run.stage(f"pretrain/{point.name}", training.run_training, stage_configs.pretrain(
        spec, corpus=paths["corpus"], tokenizer=tokenizer, mixture=spec.pretrain.mixtures[point.mixture],
        steps=stage_configs.steps_for(point.budget, spec), lr=spec.pretrain.lr,
        out_dir=run.folder(f"pretrain/{point.name}"), init_from=start["ckpt"],
        guard=(spec.pretrain.get("guards") or {}).get(point.mixture)))


def tune(run, spec, tuning, point_ckpt: str, paths, tokenizer) -> dict:
    size = spec.instruct.sizes[tuning.size]
    return run.stage(f"instruct/{tuning.name}", training.run_training, stage_configs.instruct(
        spec, instruct_dir=paths["instruct"], tokenizer=tokenizer, mode=spec.instruct.mode,
        mixture={spec.target_lang: 1.0}, max_examples=size.examples, steps=size.steps, lr=spec.instruct.lr,
        out_dir=run.folder(f"instruct/{tuning.name}"), init_from=point_ckpt))


def run_study(spec, out, cache, fresh: bool = False) -> dict:
    """Every run of the grid (finished ones skipped), then the report; returns the report's JSON."""
    grid = grid_lib.expand(spec.grid, mixtures=spec.pretrain.mixtures, sizes=spec.instruct.sizes)
    run = RunDir(out, settings(spec), fresh=fresh, name="xfer study")
    run.say(f"grid: {len(grid.points)} checkpoints ({sum(p.budget > 0 for p in grid.points)} pretraining runs), "
            f"{len(grid.tunings)} instruction-tuning runs; data: {cache}")
    paths = data.prepare(cache, spec)
    langs, target = stage_configs.languages(spec), [spec.target_lang]
    tok = run.stage("tokenizers", tokenizers.build, corpus=paths["corpus"],
                    llama_tokenizer=paths.get("llama_tokenizer"), spec=spec)
    efficiency = run.stage("efficiency", tokenizers.efficiency, corpus=paths["corpus"], languages=langs,
                           tokenizers={"original": tok["base"], "extended": tok["merged"]})
    eval_corpus = run.stage("heldout", data.heldout_subset, corpus=paths["corpus"], langs=langs,
                            max_documents=spec.eval.max_heldout_documents)["corpus"]
    init = run.stage("init", training.random_base, tokenizer=tok["base"], spec=spec)
    base = run.stage("base", training.run_training, stage_configs.pretrain(
        spec, corpus=paths["corpus"], tokenizer=tok["base"], mixture=spec.base.mixture,
        steps=stage_configs.steps_for(spec.base.tokens, spec), lr=spec.base.lr, out_dir=run.folder("base"),
        init_from=init["ckpt"]))
    starts = {v: base if v == grid_lib.ORIGINAL else run.stage(
        f"vocab/{v}", training.extended, ckpt=base["ckpt"], base_tokenizer=tok["base"],
        merged_tokenizer=tok["merged"], init=v, seed=spec.seed) for v in grid.vocabs}

    def tokenizer(vocab: str) -> str:
        return tok["base"] if vocab == grid_lib.ORIGINAL else tok["merged"]

    points, tunings = {}, {}
    for point in grid.points:
        made = pretrain_point(run, spec, point, starts[point.vocab], paths, tokenizer(point.vocab))
        points[point.name] = {"run": made, "eval": run.stage(
            f"eval/{point.name}", measure.checkpoint, ckpt=made["ckpt"], corpus=eval_corpus,
            instruct_dir=paths["instruct"], spec=spec, langs=langs, instruction_langs=target)}
    for tuning in grid.tunings:
        made = tune(run, spec, tuning, points[tuning.point.name]["run"]["ckpt"], paths, tokenizer(tuning.point.vocab))
        tunings[tuning.name] = {"run": made, "eval": run.stage(
            f"eval/{tuning.name}", measure.checkpoint, ckpt=made["ckpt"], corpus=eval_corpus,
            instruct_dir=paths["instruct"], spec=spec, langs=target, text_eval=False,
            prompts_per_language=spec.eval.prompts)}
    report = study_report.write(run.root / "report", spec=spec, grid=grid, base=base, init=init, tok=tok,
                                efficiency=efficiency, points=points, tunings=tunings, timings=run.timings)
    run.say(f"done: {run.root / 'report' / 'report.md'}")
    return report
