"""What the demo and the study measure on a checkpoint, through the project's evaluation code (xfer eval).

- Held-out text: per language ppl (per token), bits per character and tokens per character (`xfer eval ppl`).
  Only bits per character compare an extended vocabulary with the original one.
- Held-out instructions: the loss of the reference responses given their prompts (the training template),
  as per-token ppl and as bits per response character (comparable across vocabularies).
- Responses: greedy answers to held-out instructions (`xfer eval generate`), scored by chrF against the
  reference answer (xfer_jax/study/chrf.py), by the share that ended by themselves (EOS before the token
  limit), and by their code-switching rate (`xfer eval codeswitch`).
"""
from __future__ import annotations

import json
import math
import pathlib

from xfer_jax import forward
from xfer_jax.data import pipeline
from xfer_jax.eval import codeswitch, perplexity, prompts
from xfer_jax.eval.generate import Generator, stop_ids
from xfer_jax.eval.sampling import Sampling
from xfer_jax.study.chrf import chrf
from xfer_jax.study.stage_configs import instruction_source, project_config


def spec_template(spec) -> str:
    """The instruction template the tuning stage trains with (configs/instruct.py's data.instruct.template)."""
    return project_config("instruct", spec.instruct.mode).data.instruct.template


def text(model, tokenizer, corpus, langs, *, seq_len: int, batch_size: int) -> dict[str, dict]:
    """{lang: ppl, bits_per_char, tokens_per_char, ...} over every document of CORPUS/{lang}/heldout.txt."""
    files = {lang: [str(pathlib.Path(corpus) / lang / "heldout.txt")] for lang in langs}
    data_cfg = perplexity.heldout_config(files, seq_len=min(seq_len, model.cfg.max_position_embeddings),
                                         batch_size=batch_size)
    return perplexity.evaluate(model, tokenizer, data_cfg, progress=False)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def instructions(model, tokenizer, instruct_dir, langs, *, template: str, seq_len: int,
                 batch_size: int) -> dict[str, dict]:
    """{lang: loss, ppl, response_bits_per_char, pairs} of the held-out pairs' reference responses."""
    data_cfg = pipeline.default_data_config()
    data_cfg.heldout = [instruction_source(instruct_dir, lang, "heldout") for lang in langs]
    data_cfg.languages = list(langs)
    data_cfg.instruct.template = template
    data_cfg.seq_len, data_cfg.batch_size = min(seq_len, model.cfg.max_position_embeddings), batch_size
    scored = perplexity.evaluate(model, tokenizer, data_cfg, progress=False)
    out = {}
    for lang, m in scored.items():
        records = read_jsonl(pathlib.Path(instruct_dir) / lang / "heldout.jsonl")
        response_chars = sum(len(r["output"].strip()) for r in records)
        out[lang] = {"pairs": len(records), "response_tokens": m["tokens"], "loss": m["loss"], "ppl": m["ppl"],
                     "response_bits_per_char": m["nll_nats"] / math.log(2) / response_chars}
    return out


def responses(model, tokenizer, records: list[dict], *, template: str, max_new_tokens: int,
              repetition_penalty: float, batch_size: int) -> list[dict]:
    """Greedy responses to instruction records ({instruction, output, lang}); each record gains `response`,
    `finish_reason` and `chrf` (against its `output`)."""
    chat = prompts.template(template)
    ids = [tokenizer.encode(prompts.render(r, chat), bos=True) for r in records]
    generator = Generator(model, eos_id=stop_ids(tokenizer.eos_id, model.cfg), batch_size=batch_size,
                          vocab_size=tokenizer.vocab_size)
    sampling = Sampling(max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty)
    outputs, _ = prompts.respond(generator, tokenizer, ids, sampling)
    return [{**r, **o, "chrf": chrf(o["response"], r["output"])} for r, o in zip(records, outputs)]


def held_out_prompts(instruct_dir, langs, per_language: int) -> list[dict]:
    """The first `per_language` held-out pairs of each language (all when 0), tagged with their language."""
    records = []
    for lang in langs:
        pairs = read_jsonl(pathlib.Path(instruct_dir) / lang / "heldout.jsonl")
        records += [{"id": f"{lang}-{i}", "lang": lang, **r} for i, r in enumerate(pairs[: per_language or None])]
    return records


def switching(records: list[dict], field: str = "response") -> dict[str, dict]:
    """Code-switching per expected language of `field` (responses, or `output` for the references' own rate)."""
    langs = tuple(dict.fromkeys([r["lang"] for r in records] + ["en"]))
    summary, _ = codeswitch.evaluate([{**r, "response": r[field]} for r in records], codeswitch.Detector(langs))
    return {lang: {"switch_rate": s["switch_rate"], "mean_share": s["mean_share"], "responses": s["responses"]}
            for lang, s in summary.items()}


def response_quality(records: list[dict]) -> dict[str, dict]:
    """Per language: mean chrF, share of responses that ended with EOS, mean length in characters, and
    the code-switching rate of the responses and of the reference answers."""
    out = {}
    responses_switch, references_switch = switching(records), switching(records, "output")
    for lang in dict.fromkeys(r["lang"] for r in records):
        mine = [r for r in records if r["lang"] == lang]
        out[lang] = {"responses": len(mine), "chrf": sum(r["chrf"] for r in mine) / len(mine),
                     "ended": sum(r["finish_reason"] == "stop" for r in mine) / len(mine),
                     "chars": sum(len(r["response"]) for r in mine) / len(mine),
                     "switch_rate": responses_switch[lang]["switch_rate"],
                     "reference_switch_rate": references_switch[lang]["switch_rate"]}
    return out


def checkpoint(out: pathlib.Path, *, ckpt, corpus, instruct_dir, spec, langs, instruction_langs=None,
               text_eval: bool = True, instruction_eval: bool = True, prompts_per_language: int = -1) -> dict:
    """One load of CKPT, then what is asked: held-out text of `langs`; held-out instructions of
    `instruction_langs` (default `langs`); and (prompts_per_language >= 0; 0 = all) responses to that many
    held-out instructions per language, written to OUT/generations.jsonl."""
    model, tokenizer = forward.load_with_tokenizer(ckpt)  # one device, the tokenizer the checkpoint carries
    e, template = spec.eval, spec_template(spec)
    instruction_langs = list(instruction_langs or langs)
    result = {"ckpt": str(ckpt), "vocab": tokenizer.vocab_size}
    if text_eval:
        result["text"] = text(model, tokenizer, corpus, langs, seq_len=spec.model.seq_len, batch_size=e.batch_size)
    if instruction_eval:
        result["instructions"] = instructions(model, tokenizer, instruct_dir, instruction_langs, template=template,
                                              seq_len=spec.model.seq_len, batch_size=e.batch_size)
    if prompts_per_language >= 0:
        records = responses(model, tokenizer, held_out_prompts(instruct_dir, instruction_langs, prompts_per_language),
                            template=template, max_new_tokens=e.max_new_tokens,
                            repetition_penalty=e.repetition_penalty, batch_size=e.batch_size)
        (out / "generations.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                               encoding="utf-8")
        result["responses"] = response_quality(records)
        result["examples"] = [{k: r[k] for k in ("lang", "instruction", "output", "response")} for r in records]
    return result
