"""Append a target-language byte-level BPE's tokens, and the merges that build them, to a base tokenizer.json.

    xfer vocab merge --base llama3/tokenizer.json --add vocab/zh_bpe.json --out vocab/llama3_zh/tokenizer.json

Every base id is kept: the base model's vocabulary, and its added tokens (Llama-3: 128,000 BPE tokens, then 256
specials at 128,000-128,255). New tokens take the ids after the highest one (Llama-3: from 128,256), padding
last. Their merges go after every base merge, so a base merge always outranks a new one: on any text the base's
merges run exactly as before, and a new merge can only act afterwards, on the base's final split.

What is appended: the added tokenizer's merges in its order (most frequent first). A merge is skipped when its
result is already a token, when the result holds no character of a target script (vocab/bytelevel.py: then the
result could occur in base-language text and change its encoding), or past `max_added`. For the rest, the
merged tokenizer (base merges + the new ones so far) splits the new token's bytes; a split into two parts gives
its merge directly (usually the added tokenizer's own), a longer split is folded left (else right) through new
intermediate pieces, each of which must itself be new and hold a target character. Every new token is then
checked reachable: the merged BPE, applied to the token's bytes alone, yields exactly that token (in Python
while building, then by the `tokenizers` library before anything is written).

Padding (`pad_to_multiple`) appends special added tokens `<|xfer_pad_N|>`, reserved tokens in Llama-3's style:
no merge produces them, and the project's tokenizer wrapper never matches special tokens in text.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

from xfer_jax import paths
from xfer_jax.vocab.bpe_train import check_base
from xfer_jax.vocab.bytelevel import PROTECTED_SCRIPTS, ScriptRule, merge_pairs, token_bytes

PAD_TOKEN = "<|xfer_pad_{}|>"
CONFIG = "tokenizer_config.json"


@dataclasses.dataclass(frozen=True)
class BpeMergeOptions:
    max_added: int = 0  # 0: every new token (intermediate pieces count)
    pad_to_multiple: int = 0  # 0: no padding
    protect_scripts: tuple[str, ...] = PROTECTED_SCRIPTS  # (): append every new token, base text may change


@dataclasses.dataclass
class BpeMergeStats:
    base_tokens: int  # the base BPE model's vocabulary
    base_added_tokens: int  # its special / added tokens
    first_new_id: int
    added_model_merges: int
    already_in_base: int
    skipped_protected: int  # the result holds no target-script character
    skipped_unbuildable: int  # no chain of new, target-script pieces builds it
    capped: int
    added: int  # new tokens, each with its merge (intermediate pieces included)
    intermediate: int  # of those, pieces the added tokenizer does not have
    padding: int
    merged_size: int  # ids in use: highest id + 1


def bpe(word: str, ranks: dict) -> list[str]:
    """`tokenizers`' BPE on one pre-token: repeatedly merge the adjacent pair of lowest rank, leftmost first."""
    parts = list(word)
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get((parts[i], parts[i + 1]))
            if rank is not None and (best is None or rank < best):
                best, at = rank, i
        if best is None:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def fold(parts: list[str], left: bool) -> list[tuple[str, str]]:
    """The merges that join `parts` into one, left to right (or right to left)."""
    if left:
        chain, acc = [], parts[0]
        for p in parts[1:]:
            chain.append((acc, p))
            acc += p
        return chain
    chain, acc = [], parts[-1]
    for p in reversed(parts[:-1]):
        chain.append((p, acc))
        acc = p + acc
    return chain


def plan(token: str, ranks: dict, vocab: dict, rule: ScriptRule) -> list[tuple[str, str]] | None:
    """New merges that make `token` reachable from the current split of its bytes, or None."""
    parts = bpe(token, ranks)
    if len(parts) < 2:
        return None
    for left in (True, False):
        chain = fold(parts, left)
        pieces = [a + b for a, b in chain[:-1]]
        if all(p not in vocab and rule.is_target(token_bytes(p)) for p in pieces) and len(set(pieces)) == len(pieces):
            return chain
        if len(parts) == 2:
            break
    return None


def merge_bpe(base: dict, add: dict, options: BpeMergeOptions = BpeMergeOptions()) -> tuple[dict, BpeMergeStats]:
    """(merged tokenizer.json, stats) from two parsed byte-level BPE tokenizer.json files (left untouched)."""
    if options.max_added < 0 or options.pad_to_multiple < 0:
        raise ValueError("max_added and pad_to_multiple must be >= 0 (0 means no cap / no padding)")
    rule = ScriptRule(options.protect_scripts)
    base_vocab, specials = base["model"]["vocab"], base.get("added_tokens", [])
    vocab = contiguous(base_vocab, specials)
    first = next_id = len(vocab)
    ranks = {pair: i for i, pair in enumerate(merge_pairs(base["model"]))}  # a repeated pair: the last rank, as tokenizers
    rank = len(base["model"]["merges"])
    add_vocab, add_merges = add["model"]["vocab"], merge_pairs(add["model"])
    new: list[tuple[str, str]] = []
    counts = dict(already_in_base=0, skipped_protected=0, skipped_unbuildable=0, capped=0)
    for a, b in add_merges:
        token = a + b
        if token in vocab:
            counts["already_in_base"] += token in base_vocab
            continue
        data = token_bytes(token)
        if data is None or not rule.is_target(data):
            counts["skipped_protected"] += 1
            continue
        chain = plan(token, ranks, vocab, rule)
        if chain is None:
            counts["skipped_unbuildable"] += 1
            continue
        if options.max_added and len(new) + len(chain) > options.max_added:
            counts["capped"] += 1
            continue
        for pair in chain:
            ranks[pair], vocab[pair[0] + pair[1]] = rank + len(new), next_id
            new.append(pair)
            next_id += 1
        if bpe(token, ranks) != [token]:  # a split the fold did not foresee: undo this token's chain
            for pair in chain:
                del ranks[pair], vocab[pair[0] + pair[1]]
            del new[len(new) - len(chain):]
            next_id -= len(chain)
            counts["skipped_unbuildable"] += 1

    padding = -next_id % options.pad_to_multiple if options.pad_to_multiple else 0
    taken = set(vocab) | {t["content"] for t in specials}
    pads = []
    for i in range(padding):
        name = PAD_TOKEN.format(i)
        if name in taken:
            raise ValueError(f"the base already holds {name!r}, the name reserved for padding tokens; "
                             f"merge without --pad_to_multiple")
        vocab[name] = next_id + i
        pads.append({"id": next_id + i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
                     "normalized": False, "special": True})
    spelt_as_strings = all(isinstance(m, str) for m in base["model"]["merges"][:1])
    merged = dict(base, added_tokens=[*specials, *pads], model=dict(
        base["model"], vocab=vocab,
        merges=[*base["model"]["merges"], *(f"{a} {b}" if spelt_as_strings else [a, b] for a, b in new)]))
    stats = BpeMergeStats(
        base_tokens=len(base_vocab), base_added_tokens=len(specials), first_new_id=first,
        added_model_merges=len(add_merges), added=len(new),
        intermediate=sum(a + b not in add_vocab for a, b in new), padding=padding, merged_size=next_id + padding,
        **counts)
    return merged, stats


def contiguous(vocab: dict[str, int], specials: list[dict]) -> dict[str, int]:
    """The model vocabulary with the added tokens written in at their ids, which must leave no gap.

    `tokenizers` ignores the ids in "added_tokens" when it loads a file: a token the model lacks gets the next
    id after the model's vocabulary *count*. Llama-3's specials sit after its 128,000 BPE tokens, so appending
    BPE tokens after them would renumber every special. Written into the model's vocabulary, each special
    keeps its id (no merge builds one, and a pre-token never spells one), and new tokens follow."""
    full = dict(vocab)
    for t in specials:
        if full.setdefault(t["content"], t["id"]) != t["id"]:
            raise ValueError(f"added token {t['content']!r} has id {t['id']} but the model's vocabulary gives it "
                             f"{full[t['content']]}; the base tokenizer.json is inconsistent")
    ids = sorted(full.values())
    if ids != list(range(len(ids))):
        gap = next(i for i, v in enumerate(ids) if v != i)
        raise ValueError(f"the base's ids are not contiguous (none is {gap}), so `tokenizers` would renumber its "
                         f"added tokens once tokens are appended")
    return full


def new_tokens(base: dict, merged: dict) -> dict[str, int]:
    """{token: id} of the BPE tokens `merged` has beyond `base` (its specials and padding excluded)."""
    old = {**base["model"]["vocab"], **{t["content"]: t["id"] for t in merged.get("added_tokens", [])}}
    return {t: i for t, i in merged["model"]["vocab"].items() if t not in old}


def padding_ids(doc: dict) -> list[int]:
    """Ids of the padding tokens `merge_bpe` appended (added tokens with the reserved name)."""
    head, tail = PAD_TOKEN.split("{}")
    return [t["id"] for t in doc.get("added_tokens", []) if t["content"].startswith(head) and t["content"].endswith(tail)
            and t["content"][len(head):len(t["content"]) - len(tail)].isdigit()]


def unreachable(merged: dict, tokens: dict[str, int]) -> list[str]:
    """The new tokens that the `tokenizers` library's BPE, on the token's bytes alone, does not yield whole.
    `ignore_merges` is switched off for the check: it would emit any vocabulary entry whole, merges or not."""
    from tokenizers import Tokenizer

    doc = dict(merged, model=dict(merged["model"], ignore_merges=False))
    model = Tokenizer.from_str(json.dumps(doc)).model
    return [t for t, i in tokens.items() if [(x.value, x.id) for x in model.tokenize(t)] != [(t, i)]]


def tokenizer_config(base_path: pathlib.Path, merged: dict, pads: list[int]) -> dict:
    """The base's tokenizer_config.json (chat template, special tokens; a chat_template.jinja beside it written
    in, as the wrapper reads it) with the padding tokens declared; a minimal one naming PreTrainedTokenizerFast
    when the base has none."""
    from xfer_jax.data.tokenizer import hf_config_bytes

    raw = hf_config_bytes(base_path)
    config = json.loads(raw) if raw is not None else {}
    if not base_path.with_name(CONFIG).is_file():
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False, **config}
    if "added_tokens_decoder" in config:
        by_id = {t["id"]: t for t in merged["added_tokens"]}
        config["added_tokens_decoder"] = dict(config["added_tokens_decoder"], **{
            str(i): {k: v for k, v in by_id[i].items() if k != "id"} for i in pads})
    return config


def merge_bpe_files(base, add, out, options: BpeMergeOptions = BpeMergeOptions(), *,
                    overwrite: bool = False) -> BpeMergeStats:
    """`merge_bpe` on files: OUT (DIR/tokenizer.json) and DIR/tokenizer_config.json, DIR built whole and swapped in.

    Everything is checked first: both inputs byte-level BPE with the same text pipeline, DIR empty (or
    --overwrite) and apart from the inputs, every new token reachable in the `tokenizers` library."""
    from tokenizers import Tokenizer

    out = paths.path(out, "--out")
    if out.name != "tokenizer.json":
        raise ValueError(f"--out {out}: name the file tokenizer.json (e.g. vocab/llama3_zh/tokenizer.json), so its "
                         f"directory loads in transformers")
    directory = out.parent
    paths.check_apart(directory, {"--base": base, "--add": add}, "--out's directory")
    paths.check_empty_or_overwrite(directory, overwrite, "--out's directory")
    base_doc, add_doc = check_base(base, "--base"), check_base(add, "--add")
    for key in ("normalizer", "pre_tokenizer"):
        if base_doc.get(key) != add_doc.get(key):
            raise ValueError(f"--add {add} has another {key} than --base {base}, so its tokens need not fit the "
                             f"base's pre-tokens; train it with `xfer vocab train --kind hf --base {base}`")
    merged, stats = merge_bpe(base_doc, add_doc, options)
    lost = unreachable(merged, new_tokens(base_doc, merged))
    if lost:  # a bug in merge_bpe, never a user error: nothing is written
        raise RuntimeError(f"{len(lost)} appended tokens are not reachable by the merged BPE, e.g. {lost[:3]}")
    text = json.dumps(merged, ensure_ascii=False)
    Tokenizer.from_str(text)  # the library must load what is written
    config = tokenizer_config(pathlib.Path(base), merged, padding_ids(merged))
    with paths.replace_dir(directory, overwrite, "--out's directory") as tmp:
        paths.write_text(tmp / CONFIG, json.dumps(config, ensure_ascii=False, indent=2))
        paths.write_text(tmp / out.name, text)
    return stats


def check_same_kind(base, add, roles: tuple[str, str] = ("--base", "--add")) -> str:
    """"hf" or "sentencepiece": the kind both files are; one line naming the file and the fix when they differ."""
    from xfer_jax.data.tokenizer import kind_of

    kinds, (b, a) = (kind_of(base), kind_of(add)), roles
    if kinds == ("sentencepiece", "hf"):
        raise ValueError(f"{a} {add} is a Hugging Face tokenizer.json but {b} {base} is a sentencepiece model; "
                         f"use like with like: train the added vocabulary with `xfer vocab train --kind "
                         f"sentencepiece` and merge it onto the .model, or use a byte-level BPE tokenizer.json as {b}")
    if kinds == ("hf", "sentencepiece"):
        raise ValueError(f"{a} {add} is a sentencepiece model but {b} {base} is a byte-level BPE tokenizer.json; "
                         f"use like with like: train the added vocabulary with `xfer vocab train --kind hf --base "
                         f"{base}` and merge it onto {base}")
    return kinds[0]
