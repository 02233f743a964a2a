"""The demo's closing summary: one table of every checkpoint the pipeline made, in the order it made them,
with what each cost and what it scored, then the tokenizer, the responses and the Hugging Face check."""
from __future__ import annotations

from xfer_jax.eval.report import table


def _fmt(value, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def checkpoints_table(rows: dict[str, dict], langs: list[str]) -> str:
    """rows: {stage: {"train": run_training's result or None, "eval": measure.checkpoint's result}}."""
    head = ["checkpoint", "vocab", "steps", "tokens", "train s", "train loss"]
    head += [f"{lang} bits/char" for lang in langs] + [f"{lang} ppl" for lang in langs]
    head += [f"{lang} instr. bits/char" for lang in langs]
    body = []
    for name, row in rows.items():
        run, ev = row.get("train") or {}, row["eval"]
        text, instr = ev.get("text", {}), ev.get("instructions", {})
        body.append([name, ev["vocab"], run.get("steps", 0), f"{run.get('tokens', 0):,}",
                     _fmt(run.get("seconds"), ".0f"), _fmt(run.get("loss"))]
                    + [_fmt(text.get(lang, {}).get("bits_per_char")) for lang in langs]
                    + [_fmt(text.get(lang, {}).get("ppl"), ".1f") for lang in langs]
                    + [_fmt(instr.get(lang, {}).get("response_bits_per_char")) for lang in langs])
    return table(head, body)


def efficiency_table(report: dict) -> str:
    names = list(report["tokenizers"])
    rows = [[lang] + [e["tokenizers"][n]["tokens_per_char"] for n in names] for lang, e in report["languages"].items()]
    return table(["lang"] + [f"{n} tokens/char" for n in names], rows)


def responses_table(quality: dict) -> str:
    rows = [[lang, q["responses"], q["chrf"], q["ended"], q["chars"], q["switch_rate"], q["reference_switch_rate"]]
            for lang, q in quality.items()]
    return table(["lang", "responses", "chrF", "ended by EOS", "mean chars", "code-switch rate",
                  "references' rate"], rows)


def summary(*, rows, langs, efficiency, merge, final_eval, hf_check, timings, curves: str, examples: int = 2) -> str:
    text = "# xfer demo: summary\n\n" + checkpoints_table(rows, langs)
    text += ("\n\nbits/char: held-out documents of the fetched corpus, comparable across vocabularies; ppl is per "
             "token (compare only rows with the same vocab); instr. bits/char: held-out chatterbot-corpus answers "
             "given their prompts, per answer character.\n")
    text += (f"\n## Vocabulary\n\n{merge['base_pieces']:,} base pieces + {merge['added']:,} target pieces + "
             f"{merge['padding']} padding = {merge['merged_pieces']:,}\n\n" + efficiency_table(efficiency))
    text += "\n\n## Responses of the tuned model (greedy, held-out instructions)\n\n"
    text += responses_table(final_eval["responses"])
    shown = {}
    for ex in final_eval["examples"]:
        if shown.setdefault(ex["lang"], 0) < examples:
            shown[ex["lang"]] += 1
            text += f"\n\n- **{ex['instruction']}** → {ex['response']!r} (reference: {ex['output']!r})"
    text += (f"\n\n## Hugging Face export\n\n`{hf_check['hf_dir']}` reloaded in transformers; greedy answer to "
             f"{hf_check['instruction']!r}: {hf_check['transformers_response']!r}; same prompt ids as xfer: "
             f"{hf_check['prompt_ids_equal']}"
             + (" (BOS added by hand: the tokenizer's files add none)" if hf_check.get("bos_added_by_hand") else "")
             + f"; same {hf_check['new_tokens']} new tokens as xfer's decoder: "
             f"{hf_check['greedy_tokens_equal']}.\n")
    text += "\n## Time per stage\n\n" + table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()])
    text += f"\n\n![loss curves]({curves})\n"
    return text
