"""The study's report: the analogues of the paper's tables, the findings checked, figures, every number.

OUT/report.md    for people: tokens per character per vocabulary; target and English bits per character
                 (and per-token ppl) against the further-pretraining budget, one row per vocabulary × mixture
                 (the paper's perplexity table); instruction tuning by instruction-set size on top of each
                 budget (the paper's instruction-scale table); the five findings with their evidence; the runs
OUT/report.json  for scripts: the config, the grid, every stage's result
OUT/*.png        bits per character against the budget; the instruction arm; loss curves
At most eight files, so the folder comes back whole from a machine that returns only a few.
"""
from __future__ import annotations

import json
import pathlib

from xfer_jax.eval.report import table
from xfer_jax.study import findings as findings_lib, plots
from xfer_jax.study.demo_report import efficiency_table
from xfer_jax.study.grid import NO_MIXTURE, Point, size_order, tokens_label


def _series_label(vocab: str, mixture: str) -> str:
    return f"{vocab} / {mixture}"


def text_table(grid, points, lang: str) -> str:
    """Rows: vocabulary × mixture; columns: budgets; cells: bits/char (per-token ppl)."""
    budgets = sorted({p.budget for p in grid.points})
    rows = []
    for (vocab, mixture), line in grid.series().items():
        cells = {p.budget: points[p.name]["eval"]["text"][lang] for p in line}
        rows.append([_series_label(vocab, mixture)] + [
            f"{cells[b]['bits_per_char']:.3f} ({cells[b]['ppl']:.1f})" if b in cells else "—" for b in budgets])
    return table(["vocabulary / mixture"] + [f"{tokens_label(b)} tokens" for b in budgets], rows)


def instruct_table(spec, grid, points, tunings) -> str:
    """Rows: tuned points; per size: held-out response bits/char, ppl, chrF, share ended by EOS, switch rate."""
    t, sizes = spec.target_lang, size_order(spec.instruct.sizes)
    head = ["checkpoint", "untuned bits/char"]
    for s in sizes:
        head += [f"{s} bits/char", f"{s} ppl", f"{s} chrF", f"{s} ended", f"{s} switch"]
    rows = []
    for point in dict.fromkeys(tu.point for tu in grid.tunings):
        row = [point.name, points[point.name]["eval"]["instructions"][t]["response_bits_per_char"]]
        for s in sizes:
            entry = tunings.get(f"{point.name}-{s}")
            if entry is None:
                row += ["—"] * 5
                continue
            ins, res = entry["eval"]["instructions"][t], entry["eval"]["responses"][t]
            row += [ins["response_bits_per_char"], ins["ppl"], res["chrf"], res["ended"], res["switch_rate"]]
        rows.append(row)
    return table(head, rows)


def runs_table(grid, base, points, tunings) -> str:
    runs = {"base": base, **{p.name: points[p.name]["run"] for p in grid.points if p.budget},
            **{k: v["run"] for k, v in tunings.items()}}
    return table(["run", "steps", "tokens", "seconds", "tokens/s (wall, compilation included)", "last loss"],
                 [[name, r["steps"], f"{r['tokens']:,}", f"{r['seconds']:.0f}", f"{r['wall_tokens_per_s']:,.0f}",
                   r["loss"]] for name, r in runs.items()])


def instruction_lines(grid) -> dict[str, list]:
    """'vocab / mixture · size' → its tunings by budget; a vocabulary's budget-0 tuning starts each of its lines."""
    lines: dict[str, list] = {}
    for tu in grid.tunings:
        if tu.point.budget:
            lines.setdefault(f"{_series_label(*tu.point.series)} · {tu.size}", []).append(tu)
    for tu in grid.tunings:
        if not tu.point.budget:
            starts = [k for k, v in lines.items() if v[0].point.vocab == tu.point.vocab and v[0].size == tu.size]
            for key in starts or [f"{tu.point.vocab} · {tu.size}"]:
                lines.setdefault(key, []).insert(0, tu)
    return lines


def figures(out: pathlib.Path, spec, grid, base, points, tunings) -> list[str]:
    langs = [spec.target_lang, spec.base_lang]
    panels = {f"{lang} held-out bits/char": {
        _series_label(*key): [(p.budget, points[p.name]["eval"]["text"][lang]["bits_per_char"]) for p in line]
        for key, line in grid.series().items()} for lang in langs}
    made = [plots.series(panels, out / "bits_per_char.png", xlabel="further-pretraining tokens",
                         ylabel="bits per character", title="Held-out text against the further-pretraining budget")]
    if tunings:
        t = spec.target_lang
        scores = {"bpc": lambda e: e["instructions"][t]["response_bits_per_char"],
                  "chrf": lambda e: e["responses"][t]["chrf"]}
        lines = {k: {} for k in scores}
        for key, tuned in instruction_lines(grid).items():
            for k, score in scores.items():
                lines[k][key] = [(tu.point.budget, score(tunings[tu.name]["eval"])) for tu in tuned]
        made.append(plots.series({f"{t} held-out response bits/char": lines["bpc"], f"{t} response chrF":
                                  lines["chrf"]}, out / "instruction.png", xlabel="further-pretraining tokens",
                                 ylabel="", title="Instruction tuning: set size against further pretraining"))
    largest = {}
    for p in grid.points:
        if p.budget and p.budget >= largest.get(p.series, Point("", NO_MIXTURE, 0)).budget:
            largest[p.series] = p
    curves = {"base": base["run_dir"], **{f"{p.name}": points[p.name]["run"]["run_dir"] for p in largest.values()}}
    made.append(plots.loss_curves(curves, out / "curves.png", title="Training loss (largest budget of each series)"))
    return [pathlib.Path(m).name for m in made]


def markdown(spec, init, tok, efficiency, grid, points, tunings, base, checked, images, timings) -> str:
    m = init["model"]
    total = sum(timings.values())
    text = (f"# Transfer study: {spec.base_lang} → {spec.target_lang}\n\n"
            f"Model: {m['num_layers']} layers, hidden {m['hidden_size']}, {m['num_heads']} heads "
            f"({m['num_kv_heads']} kv), {init['params_without_embedding']:,} parameters besides the embedding; base "
            f"trained on {base['tokens']:,} tokens of {dict(spec.base.mixture)}. Vocabulary: "
            f"{tok['merge']['base_pieces']:,} original pieces, {tok['merge']['merged_pieces']:,} extended "
            f"({tok['merge']['added']:,} {spec.target_lang} pieces + {tok['merge']['padding']} padding). "
            f"{len(points)} checkpoints, {len(tunings)} instruction-tuned models; stages took {total / 60:.1f} "
            f"minutes in all.\n\n## Tokens per character (held-out text)\n\n{efficiency_table(efficiency)}\n")
    for lang, what in ((spec.target_lang, "target"), (spec.base_lang, "English")):
        text += (f"\n## {what.capitalize()} language ({lang}): held-out bits per character (per-token ppl) against "
                 f"further-pretraining tokens\n\n{text_table(grid, points, lang)}\n")
    text += ("\nPer-token ppl compares rows of the same vocabulary only; bits per character compare all. Mixtures: "
             + "; ".join(f"{k} = {dict(v)}" for k, v in spec.pretrain.mixtures.items()) + ".\n")
    if tunings:
        sizes = "; ".join(f"{k}: {spec.instruct.sizes[k].examples or 'all'} pairs, {spec.instruct.sizes[k].steps} "
                          f"steps" for k in size_order(spec.instruct.sizes))
        text += (f"\n## Instruction tuning ({spec.instruct.mode}; {sizes})\n\n"
                 f"{instruct_table(spec, grid, points, tunings)}\n\nbits/char and ppl: the held-out reference "
                 f"answers given their prompts; chrF: greedy responses against the reference answers (0-100, "
                 f"xfer_jax/study/chrf.py), the cheap response-quality proxy; ended: share of responses closed by "
                 f"EOS; switch: share of responses with a run in another language.\n")
    text += "\n## The paper's findings\n\n" + table(
        ["finding", "here", "evidence", "rule"],
        [[c["finding"], c["status"], c["evidence"], c["rule"]] for c in checked])
    text += "\n\n## Runs\n\n" + runs_table(grid, base, points, tunings) + "\n\n"
    text += "\n".join(f"![{name}]({name})" for name in images) + "\n"
    return text


def write(out: pathlib.Path, *, spec, grid, base, init, tok, efficiency, points, tunings, timings) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    checked = findings_lib.check(spec, grid, points, tunings)
    images = figures(out, spec, grid, base, points, tunings)
    text = markdown(spec, init, tok, efficiency, grid, points, tunings, base, checked, images, timings)
    report = {"config": json.loads(spec.to_json_best_effort()), "model": init, "tokenizers": tok,
              "efficiency": efficiency, "base": base, "points": points, "tunings": tunings, "findings": checked,
              "timings": timings}
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(text, encoding="utf-8")
    return {**report, "markdown": text}
