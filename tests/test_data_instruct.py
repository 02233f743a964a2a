"""Instruction data: BELLE / Bactrian-X / Alpaca / ShareGPT readers, templates, loss masks checked against the
template text after packing, and truncation that never cuts a prompt."""
import json
import re

import numpy as np
import pytest

from xfer_jax.data import instruct, pipeline
from xfer_jax.data.issues import BadInputError
from xfer_jax.data.tokenizer import Tokenizer

SEQ_LEN = 1024


@pytest.fixture(scope="module")
def tokenizer(llama_tokenizer):
    return Tokenizer.load(llama_tokenizer)


@pytest.fixture(scope="module")
def pairs(corpus_dir):
    """(instruction, response) pairs of real text: a document asks for the one that follows it."""
    pairs = []
    for lang in ("zh", "en"):
        docs = [d for d in (corpus_dir / lang / "train.txt").read_text().splitlines() if 10 < len(d) < 100][:40]
        pairs += [(f"续写：{a}" if lang == "zh" else f"Continue: {a}", b) for a, b in zip(docs[::2], docs[1::2])]
    return pairs


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def make_config(sources, llama_tokenizer, template="alpaca", **overrides):
    cfg = pipeline.default_data_config()
    cfg.sources = sources
    cfg.tokenizer = str(llama_tokenizer)
    cfg.seq_len, cfg.batch_size, cfg.packing_bins = SEQ_LEN, 4, 4
    cfg.instruct.template = template
    cfg.update(overrides)
    return cfg


def conversations_in(batches):
    """Per packed segment: (tokens, targets, loss weights)."""
    for batch in batches:
        for row in range(len(batch["tokens"])):
            ids = batch["segment_ids"][row]
            for segment in np.unique(ids[ids > 0]):
                index = ids == segment
                yield batch["tokens"][row][index], batch["targets"][row][index], batch["loss_weights"][row][index]


def test_readers_for_belle_bactrian_alpaca_sharegpt():
    belle = {"instruction": "写一首诗", "input": "", "output": "床前明月光"}
    bactrian = {"instruction": "Translate", "input": "bonjour", "id": "fr-1", "output": "hello"}
    sharegpt = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                                  {"from": "gpt", "value": "Hello!"}, {"from": "human", "value": "Bye"},
                                  {"from": "gpt", "value": "Goodbye."}]}
    parse_belle, _ = instruct.RECORD_PARSERS["belle"]
    parse_bactrian, _ = instruct.RECORD_PARSERS["bactrian_x"]
    parse_sharegpt, _ = instruct.RECORD_PARSERS["sharegpt"]
    assert parse_belle(belle) == instruct.Conversation(turns=(("写一首诗", "床前明月光"),))
    assert parse_bactrian(bactrian) == instruct.Conversation(turns=(("Translate\nbonjour", "hello"),))
    assert parse_sharegpt(sharegpt) == instruct.Conversation(
        turns=(("Hi", "Hello!"), ("Bye", "Goodbye.")), system="Be brief.")


@pytest.mark.parametrize("template", sorted(instruct.TEMPLATES))
def test_loss_mask_covers_exactly_the_responses(tmp_path, llama_tokenizer, tokenizer, pairs, template):
    records = [{"instruction": q, "input": "", "output": a} for q, a in pairs]
    path = write_jsonl(tmp_path / "belle.jsonl", records)
    cfg = make_config([dict(lang="zh", path=str(path), format="belle")], llama_tokenizer, template)
    batches = [next(iter_) for iter_ in [pipeline.make_train_iterator(cfg, tokenizer=tokenizer)] for _ in range(6)]
    chat = instruct.TEMPLATES[template]
    by_prompt = {chat.prompt_text(q, None, first_turn=True): a for q, a in pairs}
    checked = 0
    for tokens, targets, weights in conversations_in(batches):
        first_response = int(np.argmax(weights))  # weights[i] is the loss on targets[i] = tokens[i + 1]
        prompt_text = tokenizer.decode(tokens[: first_response + 1])
        assert prompt_text in by_prompt, prompt_text  # every prompt token has weight 0 ...
        assert np.all(weights[: first_response] == 0)
        response = targets[weights == 1]  # ... and the weighted targets are the response and its EOS
        assert response[-1] == tokenizer.eos_id
        assert tokenizer.decode(response[:-1]) == by_prompt[prompt_text]
        assert weights[-1] == 0 and targets[-1] == 0
        checked += 1
    assert checked >= 6


def test_multi_turn_llama2_chat_masks_every_answer(tmp_path, llama_tokenizer, tokenizer, pairs):
    turns = pairs[-6:]  # English: three turns fit one row
    messages = [{"from": "system", "value": "You are a helpful assistant."}]
    for q, a in turns[:3]:
        messages += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"conversations": messages}])
    cfg = make_config([dict(lang="en", path=str(path), format="sharegpt")], llama_tokenizer, "llama2_chat",
                      batch_size=1, packing_bins=1)
    batch = next(pipeline.make_train_iterator(cfg, tokenizer=tokenizer))
    tokens, targets, weights = next(conversations_in([batch]))  # the first of the repeated conversation
    answers = np.split(np.arange(len(weights)), np.flatnonzero(np.diff(weights)) + 1)
    answer_runs = [run for run in answers if weights[run[0]] == 1]
    assert [tokenizer.decode(targets[run][:-1]) for run in answer_runs] == [a for _, a in turns[:3]]
    prompt_runs = [run for run in answers if weights[run[0]] == 0][:3]
    first_prompt = tokenizer.decode(tokens[: prompt_runs[0][-1] + 2])
    assert first_prompt == f"[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n{turns[0][0]} [/INST]"
    assert np.sum(tokens == tokenizer.bos_id) == 3  # LLaMA-2 chat: every turn starts with BOS


def test_truncation_never_cuts_a_prompt(tokenizer):
    chat = instruct.TEMPLATES["plain"]
    conversation = instruct.Conversation(turns=(("question one", " ".join(["answer"] * 40)), ("question two", "short")))
    prompt = tokenizer.encode(chat.prompt_text("question one", None, True))
    tokens, mask = instruct.encode_conversation(conversation, tokenizer, chat, max_len=len(prompt) + 10)
    assert len(tokens) == len(prompt) + 10 and list(tokens[: len(prompt)]) == prompt
    assert list(mask) == [0] * len(prompt) + [1] * 10  # the response is cut, its kept tokens keep their loss
    full, full_mask = instruct.encode_conversation(conversation, tokenizer, chat, max_len=10_000)
    second_prompt = len(prompt) + int(np.argmin(full_mask[len(prompt):]))  # where turn two's prompt starts
    tokens, mask = instruct.encode_conversation(conversation, tokenizer, chat, max_len=second_prompt + 2)
    np.testing.assert_array_equal(tokens, full[:second_prompt])  # the cut prompt went, with its answer
    assert tokenizer.decode(tokens).endswith("answer") and mask[-1] == 1


def test_prompt_too_long_is_skipped_and_counted_or_refused(tmp_path, llama_tokenizer, tokenizer, pairs):
    records = [{"instruction": q, "output": a} for q, a in pairs[:5]]
    records.insert(2, {"instruction": "很长的问题 " * 300, "output": "答"})
    path = write_jsonl(tmp_path / "alpaca.jsonl", records)
    cfg = make_config([dict(lang="zh", path=str(path), format="alpaca")], llama_tokenizer)
    metrics = pipeline.make_train_iterator(cfg, tokenizer=tokenizer).metrics()
    assert metrics["data/skipped/prompt_too_long"] == 1 and metrics["data/documents/zh"] == 5
    cfg.strict = True
    with pytest.raises(BadInputError, match=re.escape(f"{path}:3: prompt too long")):
        pipeline.make_train_iterator(cfg, tokenizer=tokenizer)


def test_instruction_data_refuses_concat_packing(tmp_path, llama_tokenizer, tokenizer, pairs):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": q, "output": a} for q, a in pairs[:3]])
    cfg = make_config([dict(lang="zh", path=str(path), format="alpaca")], llama_tokenizer, packing="concat")
    with pytest.raises(ValueError, match="first_fit"):
        pipeline.make_train_iterator(cfg, tokenizer=tokenizer)


def test_custom_template_from_config():
    cfg = pipeline.default_data_config().instruct
    cfg.prompt, cfg.system = "{system}Q: {user}\nA:", "Answer in one line."
    assert instruct.template_from_config(cfg).prompt_text("hi", None, True) == "Answer in one line.\n\nQ: hi\nA:"
    cfg.prompt = "Q: {question}\nA:"
    with pytest.raises(ValueError, match="bad placeholder 'question'"):
        instruct.template_from_config(cfg)
    cfg.prompt = "{system} A:"
    with pytest.raises(ValueError, match="no {user} placeholder"):
        instruct.template_from_config(cfg)


def test_real_belle_and_bactrian_x_files_mix_with_their_masks(instruct_dir, llama_tokenizer, tokenizer):
    """chatterbot-corpus pairs written as BELLE (zh) and Bactrian-X (de) JSONL, mixed 0.5 / 0.5."""
    sources = [dict(lang="zh", path=str(instruct_dir / "zh" / "train.jsonl"), format="belle", weight=0.5),
               dict(lang="de", path=str(instruct_dir / "de" / "train.jsonl"), format="bactrian_x", weight=0.5)]
    cfg = make_config(sources, llama_tokenizer, "alpaca", seq_len=256, batch_size=8, packing_bins=8)
    chat = instruct.TEMPLATES["alpaca"]
    answers = {}  # (lang, rendered prompt) -> the outputs given for it
    for lang in ("zh", "de"):
        for line in (instruct_dir / lang / "train.jsonl").read_text().splitlines():
            record = json.loads(line)
            user = record["instruction"].strip() + (f"\n{record['input'].strip()}" if record["input"].strip() else "")
            answers.setdefault((lang, chat.prompt_text(user, None, True)), set()).add(record["output"].strip())
    iterator = pipeline.make_train_iterator(cfg, tokenizer=tokenizer)
    batches = [next(iterator) for _ in range(4)]
    checked = 0
    for batch in batches:
        for row in range(len(batch["tokens"])):
            ids = batch["segment_ids"][row]
            for segment in np.unique(ids[ids > 0]):
                index = ids == segment
                tokens, targets, weights = (batch[k][row][index] for k in ("tokens", "targets", "loss_weights"))
                lang = ("zh", "de")[batch["lang"][row][index][0]]
                prompt = tokenizer.decode(tokens[: int(np.argmax(weights)) + 1])
                assert tokenizer.decode(targets[weights == 1][:-1]) in answers[(lang, prompt)]
                checked += 1
    assert checked > 50 and iterator.metrics()["data/skipped/total"] == 0
