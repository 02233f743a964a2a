"""`xfer eval choice`: multiple-choice exams scored by log-likelihood, per subject and on average.

The prompt is the published k-shot format — MMLU's "The following are multiple choice questions (with
answers) about {subject}." / C-Eval's "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。", then k
solved dev questions, then the question — ending in the answer cue ("Answer:" / "答案："). The model's
choice is the continuation with the highest log-likelihood: the answer letter (default), or with
`mode="text"` the option's own text (summed, and per UTF-8 byte as `accuracy_norm`).

A prompt longer than the model's window loses shots from the front, then (zero-shot) its oldest tokens;
both are counted in the result. Letters are single tokens for LLaMA's vocabulary, so every question is one
row whose last position is read at each letter; multi-token continuations get a row each.
"""
import dataclasses

import numpy as np
from tqdm import tqdm

from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.eval import report
from xfer_jax.eval.exams import Exam, Question
from xfer_jax.eval.scoring import bucket
from xfer_jax.forward import LoadedModel

HEADERS = {"mmlu": "The following are multiple choice questions (with answers) about {subject}.\n\n",
           "ceval": "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"}
CUES = {"en": ("Answer:", " "), "zh": ("答案：", "")}  # answer cue, separator before the continuation


@dataclasses.dataclass
class Request:
    question: Question
    context: list[int]
    continuations: list[list[int]]
    shots: int  # shots that fit
    truncated: bool  # zero-shot and still too long: the context lost its oldest tokens


def solved(exam: Exam, q: Question) -> str:
    cue, sep = CUES[exam.language]
    return f"{q.body}\n{cue}{sep}{q.answer}\n\n"


def prompt(exam: Exam, q: Question, shots: list[Question]) -> str:
    header = HEADERS.get(exam.format, "").format(subject=exam.names.get(q.subject, q.subject))
    return header + "".join(solved(exam, s) for s in shots) + f"{q.body}\n{CUES[exam.language][0]}"


def continuation_texts(exam: Exam, q: Question, mode: str) -> list[str]:
    sep = CUES[exam.language][1]
    if mode == "letter":
        return [sep + letter for letter in q.letters]
    return [sep + text for text in q.options]


def split_tokens(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context ids and continuation ids as the model would see the joined text (joint tokenisation)."""
    ctx = tokenizer.encode(context, bos=True)
    whole = tokenizer.encode(context + continuation, bos=True)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, tokenizer.encode(continuation, bos=False)  # the join merged across the boundary


def build_request(exam: Exam, q: Question, tokenizer: Tokenizer, shots: int, mode: str, max_len: int) -> Request:
    """Tokenised prompt and continuations, shots dropped from the front until it fits `max_len`."""
    dev = exam.dev.get(q.subject, [])[:shots]
    if shots and len(dev) < shots:
        raise ValueError(f"subject {q.subject!r} has {len(dev)} dev questions, {shots} shots asked (use --shots)")
    texts = continuation_texts(exam, q, mode)
    for used in range(len(dev), -1, -1):
        context = prompt(exam, q, dev[len(dev) - used:])
        pairs = [split_tokens(tokenizer, context, t) for t in texts]
        longest = max(len(ctx) + len(cont) for ctx, cont in pairs)
        if longest <= max_len or used == 0:
            break
    ctx = pairs[0][0]
    conts = [cont for _, cont in pairs]
    room = max_len - max(map(len, conts))
    truncated = len(ctx) > room
    if truncated:  # keep BOS and the question's end
        ctx = ctx[:1] + ctx[len(ctx) - room + 1:]
    return Request(q, ctx, conts, used, truncated)


def rows_of(request: Request) -> list[tuple[list[int], list[int], list[int], int | None]]:
    """(tokens, query positions, query tokens, option) rows scoring every continuation of one request;
    option None: the row reads every option's single token at the context's last position."""
    ctx, conts = request.context, request.continuations
    if all(len(c) == 1 for c in conts):
        return [(ctx, [len(ctx) - 1] * len(conts), [c[0] for c in conts], None)]
    return [(ctx + c[:-1], list(range(len(ctx) - 1, len(ctx) - 1 + len(c))), c, option)
            for option, c in enumerate(conts)]


def score(model: LoadedModel, requests: list[Request], batch_size: int, progress: bool, greedy: bool = False):
    """Summed log-likelihood of each continuation of each request; with `greedy`, (sums, flags): is each
    continuation the model's most likely token at every one of its positions (lm-eval's is_greedy)."""
    rows = [(i, row) for i, r in enumerate(requests) for row in rows_of(r)]
    rows.sort(key=lambda item: len(item[1][0]))  # similar lengths share a batch
    width = max(len(row[1]) for _, row in rows)
    sums = [np.zeros(len(r.continuations)) for r in requests]
    flags = [np.zeros(len(r.continuations), bool) for r in requests]
    for start in tqdm(range(0, len(rows), batch_size), desc="choice", unit="batch", disable=not progress):
        chunk = rows[start:start + batch_size]
        length = bucket(max(len(row[0]) for _, row in chunk))
        tokens, qpos, qtok = (np.zeros((batch_size, n), np.int32) for n in (length, width, width))
        for b, (_, (toks, pos, tok, _)) in enumerate(chunk):
            tokens[b, :len(toks)], qpos[b, :len(pos)], qtok[b, :len(tok)] = toks, pos, tok
        if greedy:
            logp, best = model.logprobs(tokens, qpos, qtok, greedy=True)
        else:
            logp, best = model.logprobs(tokens, qpos, qtok), np.zeros(qpos.shape, bool)
        for b, (i, (_, pos, _, option)) in enumerate(chunk):
            if option is None:
                sums[i][:], flags[i][:] = logp[b, :len(pos)], best[b, :len(pos)]
            else:
                sums[i][option], flags[i][option] = logp[b, :len(pos)].sum(), best[b, :len(pos)].all()
    return (sums, flags) if greedy else sums


def evaluate(model, tokenizer: Tokenizer, exam: Exam, *, shots: int, mode: str = "letter", batch_size: int = 8,
             max_len: int | None = None, limit: int = 0, progress: bool = True) -> tuple[dict, list[dict]]:
    """(result, per-question predictions). `limit` scores only the first N questions of each subject."""
    if mode not in ("letter", "text"):
        raise ValueError(f"mode {mode!r}: choose 'letter' or 'text'")
    max_len = min(max_len or model.cfg.max_position_embeddings, model.cfg.max_position_embeddings)
    questions = [q for qs in exam.test.values() for q in (qs[:limit] if limit else qs)]
    if mode == "text":
        unsplit = [q.where for q in questions if q.options is None]
        if unsplit:
            raise ValueError(f"mode='text' needs option texts; {len(unsplit)} questions have none, e.g. {unsplit[0]}")
    requests = [build_request(exam, q, tokenizer, shots, mode, max_len) for q in questions]
    if not requests:
        raise ValueError(f"no question to score ({len(exam.skipped)} skipped)")
    sums = score(model, requests, batch_size, progress)
    predictions = []
    for r, s in zip(requests, sums):
        pred = {"where": r.question.where, "subject": r.question.subject, "answer": r.question.answer,
                "predicted": r.question.letters[int(np.argmax(s))], "logprobs": [float(x) for x in s],
                "shots": r.shots}
        if mode == "text":
            per_byte = s / np.array([max(len(t.encode("utf-8")), 1) for t in r.question.options])
            pred["predicted_norm"] = r.question.letters[int(np.argmax(per_byte))]
        predictions.append(pred)
    return summarize(exam, predictions, shots, mode, requests), predictions


def summarize(exam: Exam, predictions: list[dict], shots: int, mode: str, requests: list[Request]) -> dict:
    subjects = {}
    for p in predictions:
        entry = subjects.setdefault(p["subject"], {"questions": 0, "correct": 0, "correct_norm": 0})
        entry["questions"] += 1
        entry["correct"] += p["predicted"] == p["answer"]
        entry["correct_norm"] += p.get("predicted_norm") == p["answer"]
    for entry in subjects.values():
        entry["accuracy"] = entry["correct"] / entry["questions"]
        if mode == "text":
            entry["accuracy_norm"] = entry["correct_norm"] / entry["questions"]
        del entry["correct_norm"]
    total = sum(e["questions"] for e in subjects.values())
    result = {
        "format": exam.format, "language": exam.language, "shots": shots, "mode": mode, "questions": total,
        "subjects": subjects,
        "accuracy_macro": float(np.mean([e["accuracy"] for e in subjects.values()])),
        "accuracy_micro": sum(e["correct"] for e in subjects.values()) / total,
        "chance": float(np.mean([1 / len(r.question.letters) for r in requests])),
        "prompts_with_fewer_shots": sum(r.shots < shots for r in requests),
        "prompts_truncated": sum(r.truncated for r in requests),
        "skipped": exam.skipped,
    }
    if mode == "text":
        result["accuracy_norm_macro"] = float(np.mean([e["accuracy_norm"] for e in subjects.values()]))
    return result


def markdown(result: dict) -> str:
    norm = result["mode"] == "text"
    text = (f"# {result['format']} — {result['shots']}-shot, scored by the {result['mode']}\n\n"
            f"{result['questions']} questions in {len(result['subjects'])} subjects: accuracy "
            f"{result['accuracy_macro']:.4f} (mean over subjects), {result['accuracy_micro']:.4f} (over questions); "
            f"chance {result['chance']:.3f}.\n")
    if norm:
        text += f"Per-byte normalised: {result['accuracy_norm_macro']:.4f} (mean over subjects).\n"
    if result["prompts_with_fewer_shots"] or result["prompts_truncated"]:
        text += (f"\n{result['prompts_with_fewer_shots']} prompts dropped shots to fit the window; "
                 f"{result['prompts_truncated']} lost their oldest tokens.\n")
    rows = [[s, e["questions"], e["accuracy"]] + ([e["accuracy_norm"]] if norm else [])
            for s, e in sorted(result["subjects"].items())]
    text += "\n" + report.table(["subject", "questions", "accuracy"] + (["accuracy (per byte)"] if norm else []), rows)
    if result["skipped"]:
        text += f"\n\n{len(result['skipped'])} records skipped:\n" + "\n".join(f"- {s}" for s in result["skipped"][:20])
    return text


def charts(result: dict) -> dict[str, str]:
    subjects = sorted(result["subjects"])
    return {"accuracy.svg": report.bar_chart(
        f"{result['format']} accuracy per subject (dashed: chance)", subjects,
        {"accuracy": [result["subjects"][s]["accuracy"] for s in subjects]}, reference=result["chance"])}
