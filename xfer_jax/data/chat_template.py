"""The tokenizer's own chat template (Jinja, `chat_template` in tokenizer_config.json), rendered as transformers'
`apply_chat_template` renders it, and split into prompt and response text for a loss on the assistant turns only.

Rendering copies transformers (utils/chat_template_utils.py): an immutable sandboxed Jinja environment with
trim_blocks and lstrip_blocks, the loop-control extension, `raise_exception`, `strftime_now`, a `tojson` that
does not escape HTML, guarded `dict` and `namespace`, the `{% generation %}` tag, and the variables `messages`,
`tools`, `documents`, `add_generation_prompt` and the tokenizer's named special tokens (`bos_token`,
`eos_token`, ...: transformers' `special_tokens_map`). Extra variables a template reads (Qwen3's
`enable_thinking`: apply_chat_template's **kwargs) are set by `kwargs`; one the template never reads is refused
by name, since transformers would ignore it silently and the rendering would not be what was asked for.

The split (`JinjaTemplate.segments`) is text that concatenates to the whole rendering, each piece a prompt
piece or a response piece (loss 1). Two ways, both exact or refused:
- the template marks assistant text with `{% generation %}...{% endgeneration %}`: those spans are responses
  (what transformers' `return_assistant_tokens_mask` marks);
- otherwise the prefix chain: for each assistant message k, P = render(messages[:k], add_generation_prompt)
  — the prompt a model is given at inference — must be a prefix of H = render(messages[:k+1]), and every H a
  prefix of the next P and of the whole rendering. The response is H minus P: exactly what the template
  writes for that assistant turn after its generation prompt, i.e. what the model must generate, its
  end-of-turn text included (Llama-3: the trimmed content and `<|eot_id|>`); everything else is prompt. A
  template that rewrites earlier turns, or writes a generation prompt whatever `add_generation_prompt` says,
  breaks the chain and is refused with the reason.
Encoding each piece separately must give the ids of the whole rendering (`encode_segments` checks), so no
token straddles a prompt/response boundary.

Template text is encoded with its special tokens parsed (`<|begin_of_text|>`, `<|eot_id|>` become their ids),
unlike plain text: by `tokenizer.encode_template(text)` where the wrapper has it, else here by splitting the
text at the spellings of the tokenizer's special ids and encoding the text between them as plain text, which
is what HF `tokenizers` does for added tokens without lstrip/rstrip (Llama-3's).
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import re

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.nodes
import jinja2.sandbox
import jinja2.utils

# Private-use characters the `{% generation %}` tag writes around its text; stripped before anything is returned.
_OPEN, _CLOSE = "\U000f00a0", "\U000f00a1"
_MARKS = re.compile(f"[{_OPEN}{_CLOSE}]")
GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


class ChatTemplateError(ValueError):
    """The template refused the conversation (raise_exception, undefined variables, syntax) or cannot split it."""


class SplitError(ChatTemplateError):
    """The rendering cannot be split exactly into prompt and response pieces."""


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: the text assistant tokens come from (transformers' tag)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

    def _mark(self, caller):
        return f"{_OPEN}{caller()}{_CLOSE}"


class _TemplateDict:
    """`dict(...)` and `dict.fromkeys(...)` without the class itself (transformers' guard)."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """A Jinja namespace refusing underscore names (transformers' guard against reaching CPython internals)."""

    def __init__(*args, **kwargs):
        self, attrs = args[0], dict(*args[1:], **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attribute {name!r}")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    if tuple(int(p) for p in re.findall(r"\d+", jinja2.__version__)[:3]) < (3, 1, 6):
        raise ImportError(f"chat templates need jinja2>=3.1.6 (older sandboxes leak), not {jinja2.__version__}")
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, dict=_TemplateDict(), namespace=_Namespace,
                       strftime_now=lambda fmt: datetime.datetime.now().strftime(fmt))
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template is not valid Jinja: {e.message} (line {e.lineno})") from None


RESERVED = ("messages", "tools", "documents", "add_generation_prompt")  # what rendering itself sets


def template_reads(source: str) -> frozenset[str]:
    """The variables a template reads that it does not set itself (jinja2.meta on its syntax tree: a variable read
    before the template sets its default, as `date_string` in Meta's Llama-3.1 template, counts; so does a name
    only set inside a branch, as Qwen3's `content`)."""
    env = compile_template(source).environment
    return frozenset(jinja2.meta.find_undeclared_variables(env.parse(source)))


@dataclasses.dataclass(frozen=True)
class JinjaTemplate:
    """A Jinja chat template with the tokenizer's special-token variables; `default_system` is the system
    message a conversation without one gets ("" = none: the template's own default applies); `kwargs` the
    extra variables apply_chat_template(**kwargs) would pass (`{"enable_thinking": False}` for Qwen3)."""

    source: str
    variables: dict = dataclasses.field(default_factory=dict)  # bos_token, eos_token, ...
    default_system: str = ""
    kwargs: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        reserved = sorted(set(self.kwargs) & {*RESERVED, *self.variables})
        if reserved:
            raise ValueError(f"chat template variable {reserved[0]!r} is set by the renderer, not by kwargs")
        unread = sorted(set(self.kwargs) - template_reads(self.source))
        if unread:
            raise ValueError(f"the chat template reads no variable {unread[0]!r}; it reads "
                             f"{', '.join(sorted(template_reads(self.source) - set(RESERVED))) or 'none'}")

    @staticmethod
    def encode(tokenizer, text: str) -> list[int]:
        """Ids of template text, its special tokens parsed (no BOS/EOS added: the template writes its own)."""
        if callable(getattr(tokenizer, "encode_template", None)):
            return list(tokenizer.encode_template(text))
        pattern, specials = _specials(tokenizer)
        ids, start = [], 0
        for match in pattern.finditer(text) if specials else ():
            if match.start() > start:
                ids += tokenizer.encode(text[start:match.start()], bos=False, eos=False)
            ids.append(specials[match.group()])
            start = match.end()
        return ids + (tokenizer.encode(text[start:], bos=False, eos=False) if start < len(text) else [])

    @property
    def marks_generation(self) -> bool:
        return bool(GENERATION_TAG.search(self.source))

    def _render(self, messages: list[dict], add_generation_prompt: bool, now: datetime.datetime) -> str:
        try:
            return compile_template(self.source).render({
                **self.variables, **self.kwargs, "messages": messages, "tools": None, "documents": None,
                "add_generation_prompt": add_generation_prompt, "strftime_now": now.strftime})
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"the chat template refused the conversation: {e.message or e}") from None

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The text transformers' apply_chat_template(messages, tokenize=False, ...) gives."""
        return _MARKS.sub("", self._render(messages, add_generation_prompt, datetime.datetime.now()))

    def messages(self, turns, system: str | None = None, open_user: str | None = None) -> list[dict]:
        """Chat messages of (user, assistant) turns, the system text (None: `default_system`), a last user text."""
        system = self.default_system if system is None else system
        out = [{"role": "system", "content": system}] if system else []
        for user, answer in turns:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        return out + ([{"role": "user", "content": open_user}] if open_user is not None else [])

    def segments(self, messages: list[dict]) -> list[tuple[str, bool]]:
        """(text, is_response) pieces, non-empty, concatenating to render(messages); see the module docstring."""
        now = datetime.datetime.now()  # one clock for every rendering of the conversation (strftime_now)
        if self.marks_generation:
            return self._marked_segments(self._render(messages, False, now))
        full = self._render(messages, False, now)
        pieces, done, last = [], 0, 0  # full[:done] is the rendering of messages[:last]
        rewrites = "the template rewrites earlier turns or writes a generation prompt whatever add_generation_prompt is"
        for k, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            prompt = self._render(messages[:k], True, now)
            history = self._render(messages[: k + 1], False, now)
            if not prompt.startswith(full[:done]):
                raise SplitError(f"rendering messages[:{k}] with add_generation_prompt=True does not start with "
                                 f"rendering messages[:{last}]: {rewrites}")
            if not history.startswith(prompt):
                raise SplitError(f"rendering messages[:{k}] with add_generation_prompt=True is not a prefix of "
                                 f"rendering messages[:{k + 1}]: the generation prompt is not what the template "
                                 "writes before an assistant turn")
            if not full.startswith(history):
                raise SplitError(f"rendering messages[:{k + 1}] is not a prefix of rendering all "
                                 f"{len(messages)} messages: {rewrites}")
            response, content = history[len(prompt):], message.get("content")
            if isinstance(content, str) and content.strip() not in response:
                raise SplitError(f"the text the template writes for assistant message {k} does not hold its content")
            pieces += [(full[done:len(prompt)], False), (response, True)]
            done, last = len(history), k + 1
        pieces.append((full[done:], False))
        return [(text, response) for text, response in pieces if text]

    @staticmethod
    def _marked_segments(text: str) -> list[tuple[str, bool]]:
        pieces, inside = [], False
        for part in re.split(f"([{_OPEN}{_CLOSE}])", text):
            if part in (_OPEN, _CLOSE):
                if (part == _OPEN) == inside:
                    raise SplitError("the template's {% generation %} blocks are nested or unbalanced")
                inside = part == _OPEN
            elif part:
                pieces.append((part, inside))
        if not any(response for _, response in pieces):
            raise SplitError("the template's {% generation %} blocks marked no text of this conversation")
        return pieces

    def encode_segments(self, messages: list[dict], tokenizer) -> list[tuple[list[int], bool]]:
        """(ids, is_response) per piece, encoded with the template's special tokens parsed
        (`encode`); refused unless they concatenate to the ids of the whole rendering."""
        pieces = self.segments(messages)
        encoded = [(self.encode(tokenizer, text), response) for text, response in pieces]
        whole = self.encode(tokenizer, "".join(text for text, _ in pieces))
        if [i for ids, _ in encoded for i in ids] != list(whole):
            raise SplitError("a token spans a prompt/response boundary (encoding the pieces apart changes the ids)")
        return encoded

    def check_split(self, tokenizer, setting: str) -> None:
        """Refuses, naming `setting`, a template whose probe conversation (system or not, two turns) cannot be
        split exactly."""
        turns = (("Hello!", "Hi, how can I help?"), ("Name a colour.", "Blue."))
        attempts = [self.messages(turns, "You are a helpful assistant."), self.messages(turns, "")]
        for i, messages in enumerate(attempts):
            try:
                self.encode_segments(messages, tokenizer)
                return
            except SplitError as e:
                raise ValueError(
                    f"{setting}: the chat template cannot be split exactly into prompt and response ({e}); "
                    "mark the assistant text with {% generation %}...{% endgeneration %} in the template, or "
                    "choose a fixed template") from None
            except ChatTemplateError as e:  # perhaps no system role: try without one
                if i == len(attempts) - 1:
                    raise ValueError(f"{setting}: {e}") from None


@functools.lru_cache(maxsize=8)
def _specials(tokenizer) -> tuple[re.Pattern, dict[str, int]]:
    """The spellings of the tokenizer's special ids (longest first) and their ids."""
    specials = {tokenizer.id_to_piece(i): i for i in tokenizer.special_ids}
    return re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True))), specials


def from_tokenizer(tokenizer, setting: str, default_system: str = "", kwargs: dict | None = None) -> JinjaTemplate:
    """The tokenizer's chat template (`tokenizer.chat_template`; a named set picks 'default', as transformers
    does) with its special tokens as variables (`special_tokens_map` where the tokenizer has one, else
    bos/eos/unk/pad_token spelt from their ids) and `kwargs` (extra template variables, refused by name when the
    template reads none of that name); a clear error naming `setting` when it has none."""
    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, list):  # [{"name": ..., "template": ...}, ...] in tokenizer_config.json
        source = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
    if isinstance(source, dict):
        source = source.get("default")
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"{setting}: the tokenizer has no chat template (no 'chat_template' in its "
                         "tokenizer_config.json, or no 'default' one); choose a fixed template instead")
    try:
        compile_template(source)  # a syntax error fails here, not at the first record
    except ChatTemplateError as e:
        raise ValueError(f"{setting}: {e}") from None
    variables = getattr(tokenizer, "special_tokens_map", None)
    if variables is None:
        ids = {"bos_token": tokenizer.bos_id, "eos_token": tokenizer.eos_id, "unk_token": tokenizer.unk_id,
               "pad_token": tokenizer.pad_id}
        variables = {name: tokenizer.id_to_piece(i) for name, i in ids.items() if i >= 0}
    variables = {k: v for k, v in dict(variables).items() if isinstance(v, str)}
    try:
        return JinjaTemplate(source, variables, default_system, dict(kwargs or {}))
    except ValueError as e:
        raise ValueError(f"{setting}: {e}") from None
