"""`xfer eval ppl`: perplexity, bits per character and bits per byte per language over held-out files.

Perplexity per token cannot compare a model with an extended vocabulary to one without (the extended one
spends fewer tokens on the same text), so every language also gets the same summed negative log-likelihood
divided by the text's characters and UTF-8 bytes, in bits. The NLL covers every predicted token of every
document, its end-of-document token included, so both tokenizers pay for the same events.

Documents are packed into rows by the data pipeline's `make_eval_batches` (each document sees only itself;
one longer than a row is cut into row-sized windows, each predicting the next window's first token).
"""
import math

from tqdm import tqdm

from xfer_jax.eval import report, scoring
from xfer_jax.data import pipeline
from xfer_jax.data.issues import InputIssues
from xfer_jax.data.readers import open_source
from xfer_jax.data.sources import specs_from_config


def heldout_config(files: dict[str, list[str]], *, seq_len: int, batch_size: int, text_field: str = "text"):
    """A data config whose held-out sources are `files` ({lang: [path, ...]}); format from each extension."""
    cfg = pipeline.default_data_config()
    cfg.heldout = [dict(lang=lang, path=path, text_field=text_field,
                        format="jsonl" if path.endswith((".jsonl", ".json")) else "text")
                   for lang, paths in files.items() for path in paths]
    cfg.languages = list(files)
    cfg.seq_len, cfg.batch_size = seq_len, batch_size
    return cfg


def heldout_bytes(data_cfg) -> dict[str, int]:
    """UTF-8 bytes of every held-out document, per language (characters come from the pipeline's own count)."""
    totals: dict[str, int] = {}
    for spec in specs_from_config(data_cfg.heldout, "data.heldout"):
        table = open_source(spec, InputIssues(strict=data_cfg.strict))
        totals[spec.lang] = totals.get(spec.lang, 0) + sum(_utf8_len(table[i]) for i in range(len(table)))
    return totals


def _utf8_len(doc) -> int:
    if isinstance(doc, str):
        return len(doc.encode("utf-8"))
    parts = [doc.system or ""] + [text for turn in doc.turns for text in turn]
    return sum(len(p.encode("utf-8")) for p in parts)


def language_metrics(nll: float, tokens: float, eval_set, n_bytes: int) -> dict:
    """Per-token perplexity and per-character / per-byte bits from one language's summed NLL (nats)."""
    bits = nll / math.log(2)
    return {
        "documents": eval_set.documents, "characters": eval_set.characters, "bytes": n_bytes, "tokens": int(tokens),
        "nll_nats": nll, "loss": nll / tokens, "ppl": math.exp(nll / tokens),
        "bits_per_char": bits / eval_set.characters, "bits_per_byte": bits / n_bytes,
        "tokens_per_char": tokens / eval_set.characters,
    }


def evaluate(model, tokenizer, data_cfg, *, progress: bool = True) -> dict[str, dict]:
    """{lang: metrics} for one loaded model over the held-out sources of `data_cfg`."""
    eval_sets = pipeline.make_eval_batches(data_cfg, tokenizer=tokenizer)
    n_bytes = heldout_bytes(data_cfg)
    total = sum(len(s.batches) for s in eval_sets.values())
    results = {}
    with tqdm(total=total, desc="ppl", unit="batch", disable=not progress) as bar:
        for lang, eval_set in eval_sets.items():
            nll = weight = 0.0
            for batch in eval_set.batches:
                batch_nll, batch_weight = scoring.loss_sums(model, batch)
                nll, weight = nll + batch_nll, weight + batch_weight
                bar.update(1)
            if int(weight) != eval_set.tokens:
                raise RuntimeError(f"{lang}: scored {weight:.0f} target tokens, the pipeline counted {eval_set.tokens}")
            results[lang] = language_metrics(nll, weight, eval_set, n_bytes[lang])
    return results


def compare(new: dict[str, dict], base: dict[str, dict]) -> dict[str, dict]:
    """Per language present in both: how the new checkpoint moved against the baseline.

    `bpc_delta` > 0 means the text got harder to predict; `retention` = baseline bpc / new bpc (1.0 = kept,
    below 1 = lost). Per-character numbers stay valid when the two tokenizers differ; `ppl_ratio` does not."""
    return {
        lang: {
            "bpc_delta": new[lang]["bits_per_char"] - base[lang]["bits_per_char"],
            "bpb_delta": new[lang]["bits_per_byte"] - base[lang]["bits_per_byte"],
            "retention": base[lang]["bits_per_char"] / new[lang]["bits_per_char"],
            "ppl_ratio": new[lang]["ppl"] / base[lang]["ppl"],
            "same_tokens": new[lang]["tokens"] == base[lang]["tokens"],
        }
        for lang in new if lang in base
    }


def markdown(result: dict) -> str:
    runs = result["runs"]
    rows = [[name, lang, m["documents"], m["characters"], m["tokens"], m["tokens_per_char"], m["ppl"],
             m["bits_per_char"], m["bits_per_byte"]]
            for name, run in runs.items() for lang, m in run["languages"].items()]
    text = "# Perplexity and bits per character\n\n"
    text += "\n".join(f"- {name}: `{run['ckpt']}`" for name, run in runs.items())
    text += "\n\n" + report.table(["model", "lang", "docs", "chars", "tokens", "tokens/char", "ppl", "bits/char",
                                    "bits/byte"], rows)
    if "delta" in result:
        text += ("\n\n## Against the baseline\n\nretention = baseline bits/char ÷ model bits/char (1 = kept, < 1 = "
                 "lost); per-token ppl ratios compare only checkpoints that share a tokenizer.\n\n")
        text += report.table(["lang", "Δ bits/char", "Δ bits/byte", "retention", "ppl ratio", "same tokens"],
                             [[lang, d["bpc_delta"], d["bpb_delta"], d["retention"], d["ppl_ratio"], d["same_tokens"]]
                              for lang, d in result["delta"].items()])
    return text


def charts(result: dict) -> dict[str, str]:
    langs = list(dict.fromkeys(lang for run in result["runs"].values() for lang in run["languages"]))
    series = {name: [run["languages"].get(lang, {}).get("bits_per_char", 0.0) for lang in langs]
              for name, run in result["runs"].items()}
    return {"bits_per_char.svg": report.bar_chart("Bits per character (lower is better)", langs, series)}
