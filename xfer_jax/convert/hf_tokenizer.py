"""A sentencepiece model as Hugging Face tokenizer files that encode as the model does, or a refusal; and a
Hugging Face tokenizer (tokenizer.json: Llama-3's byte-level BPE) as it is (`hf_tokenizer_files`).

transformers' LlamaTokenizer ignores the model's `normalizer_spec`: it assumes LLaMA's settings (BPE with byte
fallback, `identity` normalisation, a dummy prefix, whitespace kept as is). A model with exactly those settings
(LLaMA's own, and every vocabulary merged onto it) is exported as tokenizer.model + a tokenizer_config.json
naming LlamaTokenizer. Any other model would silently tokenise differently in transformers: under sentencepiece's
default `nmt_nfkc`, full-width `，` is `,` to sentencepiece but three byte pieces to LlamaTokenizer. Such a model
gets a tokenizer.json that spells out sentencepiece's own pipeline (the proto's precompiled charsmap, its
whitespace rules and dummy prefix, BPE merges ranked by score) and a tokenizer_config.json naming
PreTrainedTokenizerFast, so AutoTokenizer loads tokenizer.json as written. Before anything is written, that
tokenizer encodes probe texts (full-width punctuation and Latin, ideographic space, runs of spaces, every piece
of the vocabulary) and must give sentencepiece's ids, or the export is refused naming the setting.

What remains different is tokenizers' Precompiled itself (the normaliser transformers uses for every NFKC
sentencepiece model): it matches sentencepiece on every single code point, and on the real corpus (16,378 lines,
12 languages: 0 differ), but applies the charsmap per character inside a grapheme of 6+ bytes and by shortest
rule inside a shorter one, so fully decomposed (NFD) text can differ: Hangul jamo, kana + combining voiced mark
(also half-width `ｶﾞ`), a letter + two combining marks (5% of the corpus lines once NFD-transformed). Wrapping it
in NFC fixes those but breaks text sentencepiece leaves half-composed (`ê` + U+0300, in the Vietnamese corpus).
"""
from __future__ import annotations

import json
import re

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

Piece = pb.ModelProto.SentencePiece
SPACE = "\u2581"
SPECIAL_TYPES = (Piece.CONTROL, Piece.UNKNOWN)
PROBES = (
    "Hello world, this is a test.", "tabs\tand\nnewlines\r\n", "  two  spaces,  and a trailing one ", " leading",
    " ", "", "我们的模型会说中文。", "你好，世界！时间：十点？（是的）【注】《书》、“引号”", "ＡＢＣｘｙｚ１２３＋－＝",
    "全角\u3000空格\u3000\u3000两个", "Ünïcödé — ok? e\u0301 ﬁ ① ㈱ ½ ｶﾀｶﾅ", "한국어", "🙂 emoji",
    "zero\u200bwidth nbsp\u00a0here", "Numbers 3.14 and 1,000,000!", "ti\xea\u0300ng Vi\u1ec7t",
)


def proto_of(model: bytes, source) -> pb.ModelProto:
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(model)
    except Exception as e:  # protobuf's DecodeError
        raise ValueError(f"{source}: not a sentencepiece model ({e})") from e
    return proto


def llama_differences(proto: pb.ModelProto) -> list[str]:
    """The settings in which `proto` differs from what LlamaTokenizer assumes ([] = LlamaTokenizer is exact)."""
    spec, trainer = proto.normalizer_spec, proto.trainer_spec
    wrong = []
    if spec.precompiled_charsmap:
        wrong.append(f"normalization_rule_name={spec.name or 'custom'}")
    for flag, llama in (("add_dummy_prefix", True), ("remove_extra_whitespaces", False), ("escape_whitespaces", True)):
        if getattr(spec, flag) != llama:
            wrong.append(f"{flag}={getattr(spec, flag)}")
    if trainer.model_type != pb.TrainerSpec.BPE:
        wrong.append(f"model_type={pb.TrainerSpec.ModelType.Name(trainer.model_type)}")
    if not trainer.byte_fallback:
        wrong.append("byte_fallback=False")
    return wrong


def check_reproducible(proto: pb.ModelProto, source) -> None:
    """Refuse, naming the setting, what tokenizer.json has no equivalent for."""
    trainer, spec = proto.trainer_spec, proto.normalizer_spec
    if trainer.model_type not in (pb.TrainerSpec.BPE, pb.TrainerSpec.UNIGRAM):
        raise ValueError(f"{source}: model_type={pb.TrainerSpec.ModelType.Name(trainer.model_type)} has no Hugging "
                         f"Face tokenizer equivalent here; train the tokenizer with model_type bpe (LLaMA's)")
    if trainer.treat_whitespace_as_suffix:
        raise ValueError(f"{source}: treat_whitespace_as_suffix=True cannot be reproduced in tokenizer.json; "
                         f"train the tokenizer without it")
    if not spec.escape_whitespaces:
        raise ValueError(f"{source}: escape_whitespaces=False cannot be reproduced in tokenizer.json; "
                         f"train the tokenizer without it")


def _model(proto: pb.ModelProto):
    """BPE with sentencepiece's merge order (the pair whose result scores highest first), or Unigram."""
    from tokenizers import models

    trainer = proto.trainer_spec
    if trainer.model_type == pb.TrainerSpec.UNIGRAM:
        floor = min((p.score for p in proto.pieces), default=0.0) - 1e4  # never chosen: sentencepiece skips them
        vocab = [(p.piece, p.score if p.type in (Piece.NORMAL, Piece.USER_DEFINED) else floor) for p in proto.pieces]
        return models.Unigram(vocab, unk_id=trainer.unk_id, byte_fallback=trainer.byte_fallback)
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    normal = {p.piece: (p.score, i) for i, p in enumerate(proto.pieces) if p.type == Piece.NORMAL}
    ranked = sorted((-score, i, piece[:k], piece[k:]) for piece, (score, i) in normal.items()
                    for k in range(1, len(piece)) if piece[:k] in normal and piece[k:] in normal)
    user_defined = any(p.type == Piece.USER_DEFINED for p in proto.pieces)
    return models.BPE(vocab=vocab, merges=[(a, b) for *_, a, b in ranked], unk_token=trainer.unk_piece,
                      fuse_unk=True, byte_fallback=trainer.byte_fallback, dropout=None, ignore_merges=user_defined)


def _normalizer(spec):
    """sentencepiece's order: charsmap, extra spaces, whitespace escaping, (legacy) dummy prefix on a leading ▁."""
    from tokenizers import Regex, normalizers

    steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
    if spec.remove_extra_whitespaces:  # spaces only: sentencepiece leaves other whitespace alone here
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    steps.append(normalizers.Replace(" ", SPACE))
    if spec.add_dummy_prefix:  # Metaspace adds no prefix to text already starting with ▁; sentencepiece does
        steps.append(normalizers.Replace(Regex(f"\\A{SPACE}"), SPACE * 2))
    return normalizers.Sequence(steps)


def fast_tokenizer(proto: pb.ModelProto, bos: str | None):
    """A `tokenizers.Tokenizer` following the proto's own settings; BOS added as LlamaTokenizer adds it."""
    from tokenizers import AddedToken, Regex, Tokenizer, pre_tokenizers, processors

    tok = Tokenizer(_model(proto))
    spec = proto.normalizer_spec
    tok.normalizer = _normalizer(spec)
    pre = [pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=False)]
    pre = pre if spec.add_dummy_prefix else []
    user_defined = [p.piece for p in proto.pieces if p.type == Piece.USER_DEFINED]
    if user_defined:  # sentencepiece emits them whole and never merges across them
        pattern = "|".join(map(re.escape, sorted(user_defined, key=len, reverse=True)))
        pre.append(pre_tokenizers.Split(Regex(pattern), behavior="isolated"))
    if pre:
        tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tok.decoder = _decoder(spec, proto.trainer_spec.byte_fallback)
    tok.add_special_tokens([AddedToken(p.piece, normalized=False, special=True)
                            for p in proto.pieces if p.type in SPECIAL_TYPES])
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def _decoder(spec, byte_fallback: bool):
    """▁ back to spaces, byte pieces back to UTF-8, and the dummy prefix's space dropped once at the start."""
    from tokenizers import decoders

    steps = [decoders.Replace(SPACE, " ")] + ([decoders.ByteFallback()] if byte_fallback else [])
    if spec.add_dummy_prefix:  # Strip works per token: fuse first, so only the text's first space goes
        steps += [decoders.Fuse(), decoders.Strip(content=" ", left=1)]
    elif byte_fallback:
        steps.append(decoders.Fuse())
    return decoders.Sequence(steps)


def probe_texts(proto: pb.ModelProto) -> list[str]:
    """PROBES, plus every piece a user's text could spell (alone and run together with its neighbours)."""
    surfaces = [p.piece.replace(SPACE, " ") for p in proto.pieces if p.type in (Piece.NORMAL, Piece.USER_DEFINED)]
    runs = ["".join(surfaces[i:i + 8]) for i in range(0, len(surfaces), 8)]
    return list(PROBES) + surfaces + runs


def check_same_encoding(proto: pb.ModelProto, model: bytes, tok, source, differences: list[str]) -> None:
    """Every probe text gives sentencepiece's ids (and decodes to sentencepiece's text), or a refusal."""
    sp = spm.SentencePieceProcessor(model_proto=model)
    texts = probe_texts(proto)
    ours = sp.encode(texts)
    theirs = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    for text, a, b in zip(texts, ours, theirs):
        if a != b:
            raise ValueError(f"{source}: its settings ({', '.join(differences)}) cannot be exported exactly: "
                             f"{text!r} is {a} in sentencepiece but {b} in the Hugging Face tokenizer; "
                             f"train the tokenizer with LLaMA's settings (xfer vocab train --normalization identity)")
    for text, ids in zip(PROBES, ours):  # an unknown piece decodes to " ⁇ " in sentencepiece only: a display choice
        if sp.unk_id() not in ids and tok.decode(ids) != sp.decode(ids):
            raise ValueError(f"{source}: its settings ({', '.join(differences)}) cannot be exported exactly: "
                             f"{ids} decodes to {sp.decode(ids)!r} in sentencepiece but {tok.decode(ids)!r} in "
                             f"the Hugging Face tokenizer")


def special_tokens(model: bytes) -> dict[str, str]:
    sp = spm.SentencePieceProcessor(model_proto=model)
    piece = lambda i: sp.id_to_piece(i) if 0 <= i < sp.get_piece_size() else None  # noqa: E731
    special = {"bos_token": piece(sp.bos_id()), "eos_token": piece(sp.eos_id()), "unk_token": piece(sp.unk_id())}
    if sp.pad_id() >= 0:
        special["pad_token"] = piece(sp.pad_id())
    return {k: v for k, v in special.items() if v is not None}


def tokenizer_files(model: bytes, max_length: int, source="tokenizer.model") -> dict[str, bytes]:
    """{file name: content} of the tokenizer files; every check runs here, so a refusal writes nothing."""
    proto = proto_of(model, source)
    special = special_tokens(model)
    differences = llama_differences(proto)
    config = {"add_bos_token": True, "add_eos_token": False, "model_max_length": max_length,
              "clean_up_tokenization_spaces": False, **special}
    files = {"tokenizer.model": model}
    if not differences:
        config = {"tokenizer_class": "LlamaTokenizer", **config, "legacy": True, "sp_model_kwargs": {}}
    else:
        check_reproducible(proto, source)
        try:
            tok = fast_tokenizer(proto, special.get("bos_token"))
        except ImportError as e:
            raise ImportError(f"{source} ({', '.join(differences)}) needs a tokenizer.json, which is built with the "
                              f"`tokenizers` package: pip install tokenizers") from e
        check_same_encoding(proto, model, tok, source, differences)
        files["tokenizer.json"] = tok.to_str(pretty=True).encode()
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **config}
    files["special_tokens_map.json"] = json.dumps(special, indent=2).encode()
    files["tokenizer_config.json"] = json.dumps(config, indent=2).encode()
    return files


def hf_tokenizer_files(tokenizer, max_length: int) -> dict[str, bytes]:
    """An HF tokenizer (the wrapper, kind "hf") exported as it is: tokenizer.json byte for byte, and its
    tokenizer_config.json with `model_max_length` set (and, where the config lacks them, the tokenizer class and
    the bos/eos/pad tokens the wrapper uses), so AutoTokenizer loads a fast tokenizer with the same ids. Whether
    it adds bos is the files' own choice (tokenizer.json's post-processor), as the wrapper's `add_bos` reports.
    Text that spells a special token ("<|eot_id|>") is the one difference: transformers matches it as the token
    (unless called with split_special_tokens=True), the wrapper never does."""
    files = tokenizer.files()
    config = json.loads(files.get("tokenizer_config.json", b"{}"))
    config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    for key, i in (("bos_token", tokenizer.bos_id), ("eos_token", tokenizer.eos_id), ("pad_token", tokenizer.pad_id)):
        if i >= 0 and config.get(key) is None:
            config[key] = tokenizer.id_to_piece(i)
    config["model_max_length"] = max_length
    return {"tokenizer.json": files["tokenizer.json"],
            "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False).encode("utf-8")}
