"""Instruction data: record readers (BELLE, Bactrian-X, Alpaca, ShareGPT), prompt templates, loss masks.

A record becomes a `Conversation` (optional system text, then user/assistant turns). A `ChatTemplate`
renders it into alternating prompt and response segments, each encoded separately, so the loss mask is
exact by construction: a token is a response token (mask 1, EOS included) or a prompt token (mask 0),
never a token straddling both. Truncation to the row length only ever cuts from the end: a response may
lose its tail (its kept tokens keep their loss), a prompt is never cut (a prompt that does not fit is
dropped with everything after it), and an example whose first prompt cannot fit is refused as bad input.

`template="tokenizer"` renders with the tokenizer's own Jinja chat template instead (Llama-3-Instruct and
any other HF chat model): `xfer_jax/data/chat_template.py` splits the rendering into prompt and response
pieces exactly (the assistant text and its end-of-turn tokens carry loss), and the same truncation applies.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from xfer_jax.data import chat_template
from xfer_jax.data.issues import BadRecord
from xfer_jax.data.tokenizer import Tokenizer

USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant", "chatgpt", "bing", "bard", "model")


@dataclasses.dataclass(frozen=True)
class Conversation:
    turns: tuple[tuple[str, str], ...]  # (user text, assistant text) pairs
    system: str | None = None  # None: the template's default system text


def _required_text(record: dict, field: str) -> str:
    if field not in record:
        raise BadRecord("missing_field", f"no field {field!r} (fields: {sorted(record)})")
    value = record[field]
    if not isinstance(value, str):
        raise BadRecord("missing_field", f"field {field!r} is {type(value).__name__}, not a string")
    if not value.strip():
        raise BadRecord("empty_document", f"field {field!r} is empty")
    return value


def parse_instruction_record(record) -> Conversation:
    """BELLE / Alpaca / Bactrian-X: `instruction`, optional `input`, `output` (Bactrian-X's `id` is ignored).

    A non-empty `input` is appended to the instruction after a newline, as Chinese-LLaMA-Alpaca does.
    """
    if not isinstance(record, dict):
        raise BadRecord("missing_field", f"record is a JSON {type(record).__name__}, not an object")
    instruction = _required_text(record, "instruction").strip()
    extra = record.get("input") or ""
    if not isinstance(extra, str):
        raise BadRecord("missing_field", f"field 'input' is {type(extra).__name__}, not a string")
    user = f"{instruction}\n{extra.strip()}" if extra.strip() else instruction
    return Conversation(turns=((user, _required_text(record, "output").strip()),))


def parse_sharegpt_record(record) -> Conversation:
    """ShareGPT: `conversations` = [{from, value}, ...], an optional leading system turn, then user/assistant."""
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        raise BadRecord("missing_field", "no list field 'conversations'")
    messages = record["conversations"]
    system = None
    if messages and isinstance(messages[0], dict) and messages[0].get("from") == "system":
        system, messages = _required_text(messages[0], "value").strip(), messages[1:]
    if len(messages) < 2:
        raise BadRecord("empty_document", "conversation has no user/assistant exchange")
    turns = []
    for i in range(0, len(messages) - 1, 2):
        user, answer = messages[i], messages[i + 1]
        if not (isinstance(user, dict) and isinstance(answer, dict)):
            raise BadRecord("bad_conversation", f"message {i} or {i + 1} is not an object")
        if user.get("from") not in USER_ROLES or answer.get("from") not in ASSISTANT_ROLES:
            raise BadRecord(
                "bad_conversation",
                f"messages {i}, {i + 1} are from {user.get('from')!r}, {answer.get('from')!r}; "
                f"expected a user role {USER_ROLES} then an assistant role {ASSISTANT_ROLES}",
            )
        turns.append((_required_text(user, "value").strip(), _required_text(answer, "value").strip()))
    return Conversation(turns=tuple(turns), system=system)


INSTRUCTION_FIELDS = ("instruction", "input", "output")
# format -> (record parser, the fields it reads: the columns to load from Parquet)
RECORD_PARSERS = {
    "alpaca": (parse_instruction_record, INSTRUCTION_FIELDS),
    "belle": (parse_instruction_record, INSTRUCTION_FIELDS),
    "bactrian_x": (parse_instruction_record, INSTRUCTION_FIELDS),
    "sharegpt": (parse_sharegpt_record, ("conversations",)),
}


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """`prompt` is formatted with {system} (first turn only, rendered through `system_format`) and {user}.

    Every response is encoded as its own segment and followed by EOS. With `bos_each_turn` every turn
    starts with BOS (LLaMA-2 chat), otherwise only the first one does.
    """

    prompt: str
    system_format: str = "{system}\n\n"
    default_system: str = ""
    bos_each_turn: bool = False

    def prompt_text(self, user: str, system: str | None, first_turn: bool) -> str:
        system = self.default_system if system is None else system
        rendered_system = self.system_format.format(system=system) if (first_turn and system) else ""
        return self.prompt.format(system=rendered_system, user=user)

    def encode_segments(self, conversation: Conversation, tokenizer: Tokenizer) -> list[tuple[list[int], bool]]:
        """(ids, is_response): each turn's prompt, then its response followed by EOS."""
        segments = []
        for i, (user, answer) in enumerate(conversation.turns):
            prompt = self.prompt_text(user, conversation.system, first_turn=i == 0)
            segments += [(tokenizer.encode(prompt, bos=i == 0 or self.bos_each_turn), False),
                         (tokenizer.encode(answer, bos=False, eos=True), True)]
        return segments


TEMPLATES = {
    "alpaca": ChatTemplate(
        prompt="{system}### Instruction:\n{user}\n\n### Response:\n",
        default_system=(
            "Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request."
        ),
    ),
    "llama2_chat": ChatTemplate(
        prompt="[INST] {system}{user} [/INST]",
        system_format="<<SYS>>\n{system}\n<</SYS>>\n\n",
        bos_each_turn=True,
    ),
    "plain": ChatTemplate(prompt="{system}{user}\n"),
}
TOKENIZER_TEMPLATE = "tokenizer"  # data.instruct.template: the tokenizer's own chat template (chat_template.py)
Template = ChatTemplate | chat_template.JinjaTemplate


def template_from_config(cfg, tokenizer: Tokenizer | None = None) -> Template:
    """`cfg.template` names a TEMPLATES entry; non-empty `cfg.prompt` / `cfg.system_format` / `cfg.system` override it.

    "tokenizer": the tokenizer's chat template, `cfg.system` its default system message; refused (naming the
    key) when the tokenizer has none or when the template cannot be split exactly into prompt and response.
    """
    if cfg.template == TOKENIZER_TEMPLATE:
        setting = f"data.instruct.template={TOKENIZER_TEMPLATE!r}"
        for key in ("prompt", "system_format"):
            if cfg[key]:
                raise ValueError(f"data.instruct.{key} is for the fixed templates; {setting} renders the "
                                 "tokenizer's own chat template (set it to '')")
        if tokenizer is None:
            raise ValueError(f"{setting} needs the tokenizer")
        template = chat_template.from_tokenizer(tokenizer, setting, default_system=cfg.system)
        template.check_split(tokenizer, setting)
        return template
    if cfg.template not in TEMPLATES:
        raise ValueError(f"data.instruct.template={cfg.template!r}: expected one of "
                         f"{sorted(TEMPLATES) + [TOKENIZER_TEMPLATE]}")
    template = TEMPLATES[cfg.template]
    overrides = {
        field: cfg[key] for field, key in
        (("prompt", "prompt"), ("system_format", "system_format"), ("default_system", "system")) if cfg[key]
    }
    template = dataclasses.replace(template, **overrides)
    try:
        rendered = template.prompt_text("\0user\0", "\0system\0", first_turn=True)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"data.instruct prompt/system_format: bad placeholder {e}; use only {{system}} and {{user}}") from None
    if "\0user\0" not in rendered:
        raise ValueError(f"data.instruct.prompt={template.prompt!r} has no {{user}} placeholder")
    return template


def conversation_segments(conversation: Conversation, tokenizer: Tokenizer, template: Template):
    """(ids, is_response) pieces of the whole conversation; a Jinja template's refusal is a bad record."""
    if isinstance(template, ChatTemplate):
        return template.encode_segments(conversation, tokenizer)
    try:
        return template.encode_segments(template.messages(conversation.turns, conversation.system), tokenizer)
    except chat_template.ChatTemplateError as e:
        raise BadRecord("bad_conversation", str(e)) from None


def encode_conversation(
    conversation: Conversation, tokenizer: Tokenizer, template: Template, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (tokens, response_mask), both of length <= max_len; mask 1 on response tokens (their EOS or
    end-of-turn tokens included). A prompt must fit whole, with room for a response token after it unless it
    is the last piece (a Jinja template's text after the last answer, loss 0)."""
    tokens, mask = [], []
    segments = conversation_segments(conversation, tokenizer, template)
    for i, (ids, response) in enumerate(segments):
        room = max_len - len(tokens)
        if response:
            ids = ids[:room]
        elif len(ids) + (i + 1 < len(segments)) > room:  # never cut a prompt: drop it and every later turn
            break
        tokens += ids
        mask += [int(response)] * len(ids)
        if len(tokens) >= max_len:
            break
    if not tokens:
        raise BadRecord("prompt_too_long", f"the first prompt does not leave a response token within {max_len} tokens")
    return np.asarray(tokens, np.int32), np.asarray(mask, np.int32)
