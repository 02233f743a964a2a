"""Prompt files, instruction templates and text: what `xfer eval generate` and `xfer serve` put around the
token-level Generator.

A prompt file is JSON lines — {"instruction", optional "input", or "prompt" for raw text that skips the
template; optional "id", "lang", "category", "reference" or "output"} — or plain text, one instruction per
line. Instructions are rendered with the training templates of `xfer_jax.data.instruct`, so a tuned model
is asked in the format it learned — `tokenizer` renders the tokenizer's own chat template with
add_generation_prompt, its text encoded with the template's special tokens parsed. Every other field travels
through to the output records.
"""
import json

from xfer_jax import paths
from xfer_jax.data import chat_template, instruct
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.eval.generate import Generator, Stats
from xfer_jax.eval.sampling import Sampling

TEMPLATE_CHOICES = tuple(sorted(instruct.TEMPLATES)) + (instruct.TOKENIZER_TEMPLATE, "none")


def check_template(name: str) -> None:
    if name not in TEMPLATE_CHOICES:
        raise ValueError(f"template {name!r}: choose one of {TEMPLATE_CHOICES}")


def template(name: str, tokenizer: Tokenizer | None = None) -> instruct.Template | None:
    """The named template; `tokenizer` (its own chat template) needs the tokenizer."""
    check_template(name)
    if name == instruct.TOKENIZER_TEMPLATE:
        if tokenizer is None:
            raise ValueError("template 'tokenizer' renders the tokenizer's own chat template: pass the tokenizer")
        return chat_template.from_tokenizer(tokenizer, "--template tokenizer")
    return None if name == "none" else instruct.TEMPLATES[name]


def read_prompts(path) -> list[dict]:
    """Records with at least `instruction` or `prompt`, and an `id` (the line number when absent)."""
    path = paths.path(path, "--prompts")
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            records.append({"id": line_no, "instruction": line.strip()})
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line_no}: not JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(record, dict) or not (record.get("instruction") or record.get("prompt")):
            raise ValueError(f"{path}:{line_no}: a prompt record needs a non-empty 'instruction' (or raw 'prompt')")
        records.append({"id": line_no, **record})
    if not records:
        raise ValueError(f"prompt file {path} holds no prompt")
    return records


def render(record: dict, chat: instruct.Template | None, system: str | None = None) -> str:
    """The text the model sees: a raw `prompt` as is, else the instruction (+ input) in the template."""
    if record.get("prompt"):
        return record["prompt"]
    user = record["instruction"].strip()
    if (record.get("input") or "").strip():
        user = f"{user}\n{record['input'].strip()}"  # as the training data parser joins them
    if isinstance(chat, chat_template.JinjaTemplate):
        return chat.render(chat.messages((), system, open_user=user), add_generation_prompt=True)
    return user if chat is None else chat.prompt_text(user, system, first_turn=True)


def prompt_ids(record: dict, text: str, tokenizer: Tokenizer, chat: instruct.Template | None) -> list[int]:
    """Token ids of `render`'s text: a Jinja template's text places its own BOS and special tokens."""
    if isinstance(chat, chat_template.JinjaTemplate) and not record.get("prompt"):
        return chat.encode(tokenizer, text)
    return tokenizer.encode(text, bos=True)


def stop_cutter(tokenizer: Tokenizer, stops: tuple[str, ...]):
    """stop_fn for Generator.run: the fewest leading tokens whose text holds a stop string, or None."""
    if not stops:
        return None

    def holds(tokens) -> bool:
        text = tokenizer.decode(tokens)
        return any(s in text for s in stops)

    def cut(tokens: list[int]) -> int | None:
        if not holds(tokens):
            return None
        lo, hi = 0, len(tokens)  # holds(tokens[:hi]) is true; find the smallest such hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if holds(tokens[:mid]) else (mid, hi)
        return hi

    return cut


def before_stop(text: str, stops: tuple[str, ...]) -> str:
    """The text up to (not including) the earliest stop string."""
    ends = [text.find(s) for s in stops if s in text]
    return text[: min(ends)] if ends else text


def respond(generator: Generator, tokenizer: Tokenizer, prompts: list[list[int]], sampling: Sampling,
            progress: bool = False) -> tuple[list[dict], Stats]:
    """Responses to prompt token ids: {response, finish_reason ("stop" | "length"), prompt_tokens, new_tokens}."""
    results, stats = generator.run(prompts, sampling, stop_cutter(tokenizer, sampling.stop), progress)
    return [{"response": before_stop(tokenizer.decode(r.tokens), sampling.stop),
             "finish_reason": "stop" if r.finish_reason in ("eos", "stop") else "length",
             "prompt_tokens": r.prompt_tokens, "new_tokens": len(r.tokens)} for r in results], stats


def chat_ids(messages: list[dict], tokenizer: Tokenizer, chat: instruct.Template) -> list[int]:
    """Token ids of a chat (optional system message, then user/assistant turns ending with a user turn),
    built turn by turn as the instruction-tuning data encodes them, with the last answer left open (a Jinja
    template: rendered whole with add_generation_prompt)."""
    system = messages[0]["content"] if messages and messages[0].get("role") == "system" else None
    turns = messages[1:] if system is not None else messages
    roles = [m.get("role") for m in turns]
    if not turns or roles != ["user", "assistant"] * (len(turns) // 2) + ["user"]:
        raise ValueError(f"messages must alternate user/assistant after an optional system message and end with a "
                         f"user message; got roles {[m.get('role') for m in messages]}")
    if not all(isinstance(m.get("content"), str) for m in messages):
        raise ValueError("every message needs a string 'content'")
    if isinstance(chat, chat_template.JinjaTemplate):
        pairs = [(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns) - 1, 2)]
        text = chat.render(chat.messages(pairs, system, open_user=turns[-1]["content"]), add_generation_prompt=True)
        return chat.encode(tokenizer, text)
    ids: list[int] = []
    for i in range(0, len(turns), 2):
        text = chat.prompt_text(turns[i]["content"], system, first_turn=i == 0)
        ids += tokenizer.encode(text, bos=i == 0 or chat.bos_each_turn)
        if i + 1 < len(turns):
            ids += tokenizer.encode(turns[i + 1]["content"], bos=False, eos=True)
    return ids


def generate_file(generator: Generator, tokenizer: Tokenizer, path, sampling: Sampling, template_name: str,
                  system: str | None = None, progress: bool = True) -> tuple[list[dict], Stats]:
    """Every record of a prompt file with its rendered prompt and response added."""
    records = read_prompts(path)
    chat = template(template_name, tokenizer)
    texts = [render(r, chat, system) for r in records]
    ids = [prompt_ids(r, t, tokenizer, chat) for r, t in zip(records, texts)]
    outputs, stats = respond(generator, tokenizer, ids, sampling, progress)
    return [{**r, "rendered_prompt": text, **out} for r, text, out in zip(records, texts, outputs)], stats


def markdown(result: dict, records: list[dict], examples: int = 5) -> str:
    st = result["stats"]
    text = (f"# Generations of `{result['ckpt']}`\n\n{st['prompts']} prompts ({result['template']} template), "
            f"{st['new_tokens']} new tokens: {st['tokens_per_s']:.1f} tokens/s overall, "
            f"{st['decode_tokens_per_s']:.1f} tokens/s decoding, {st['prefill_tokens_per_s']:.1f} prompt tokens/s "
            f"prefilling (compilation, {st['compile_s']:.1f} s, excluded).\n\nSampling: `{result['sampling']}`\n")
    for r in records[:examples]:
        text += f"\n## {r['id']}\n\n**Prompt:** {r.get('instruction') or r.get('prompt')}\n\n**Response** " \
                f"({r['new_tokens']} tokens, {r['finish_reason']}): {r['response']}\n"
    return text
