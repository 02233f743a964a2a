"""LLaMA-2's real tokenizer, rebuilt from llama.cpp's GGUF vocabulary and checked against its references.

The tokenizer cache holds `tokenizer.model` (a sentencepiece ModelProto rebuilt from llama.cpp's GGUF copy of
LLaMA-2's vocabulary), llama.cpp's reference tokenisations it was checked against, and their licence. It also
keeps llama.cpp's Llama-3 vocabulary (`ggml-vocab-llama-bpe.gguf` and its references) from the same sdist, so
fetching Llama-3's tokenizer afterwards (xfer_jax.data.hf_vocab) needs no second 77 MB download.
"""
from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path

from xfer_jax import paths
from xfer_jax.data.registry import MARKER, download_pypi, log, mark_complete
from xfer_jax.errors import FetchError

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
LLAMA_VOCAB = "ggml-vocab-llama-spm.gguf"
LLAMA_BPE_VOCAB = "ggml-vocab-llama-bpe.gguf"  # Llama-3's vocabulary, checked by xfer_jax.data.hf_vocab
LLAMA_MODELS_DIR = "vendor/llama.cpp/models/"
LLAMA_CPP_LICENCE = "vendor/llama.cpp/LICENSE"
REFERENCE_SEPARATOR = "\n__ggml_vocab_test__\n"


def fetch_llama_tokenizer(cache_dir: str | Path, *, sdist: Path | None = None) -> Path:
    """LLaMA-2's real 32,000-piece sentencepiece model, rebuilt from llama.cpp's GGUF vocabulary and verified.

    The llama-cpp-python sdist vendors llama.cpp's `models/ggml-vocab-llama-spm.gguf` (tokens, scores, types)
    with reference tokenisations (`.inp`/`.out`); the model is written only after it reproduces all of them.
    `sdist`: a local copy of the sdist to read instead of downloading it.
    """
    cache_dir = Path(cache_dir)
    model_path = cache_dir / "tokenizer.model"
    if (cache_dir / MARKER).exists() and model_path.exists():
        return model_path
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / MARKER).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="xfer-fetch-") as work:
        if sdist is None:
            log(f"downloading the {LLAMA_CPP_PYTHON} sdist (~77 MB) for llama.cpp's LLaMA vocabulary")
            sdist = download_pypi(LLAMA_CPP_PYTHON, Path(work), sdist=True)
        extract_llama_vocab(sdist, cache_dir, (LLAMA_VOCAB, LLAMA_BPE_VOCAB))
    model = llama_model_proto(cache_dir / LLAMA_VOCAB)
    mismatches = reference_mismatches(model.SerializeToString(), cache_dir)
    if mismatches:
        raise RuntimeError(f"the rebuilt LLaMA tokenizer disagrees with llama.cpp on {len(mismatches)} reference "
                           f"texts, first {mismatches[0]}")
    paths.write_bytes(model_path, model.SerializeToString())
    sources = {"package": "llama-cpp-python", "registry": "pypi", "version": LLAMA_CPP_PYTHON.split("==")[1],
               "licence": "MIT (llama.cpp); vocabulary from LLaMA 2 (Llama 2 Community License)",
               "licence_file": "LICENSE-llama.cpp",
               "files": [LLAMA_MODELS_DIR + vocab + suffix for vocab in (LLAMA_VOCAB, LLAMA_BPE_VOCAB)
                         for suffix in ("", ".inp", ".out")]}
    paths.write_text(cache_dir / "SOURCES.json", json.dumps(sources, indent=1) + "\n")
    mark_complete(cache_dir)
    log(f"LLaMA tokenizer: {model_path} ({len(model.pieces):,} pieces, matches llama.cpp's references)")
    return model_path


def extract_llama_vocab(sdist: Path, dest: Path, vocabs: tuple[str, ...] = (LLAMA_VOCAB,)) -> None:
    """Stream the sdist once, keeping only the vocabularies, their reference tokenisations and llama.cpp's licence."""
    wanted = {LLAMA_MODELS_DIR + v + s: v + s for v in vocabs for s in ("", ".inp", ".out")}
    wanted[LLAMA_CPP_LICENCE] = "LICENSE-llama.cpp"
    with tarfile.open(sdist, "r|gz") as tar:
        for member in tar:
            name = member.name.split("/", 1)[-1]
            if name in wanted and member.isfile():
                paths.write_bytes(dest / wanted.pop(name), tar.extractfile(member).read())
    if wanted:
        raise FetchError(f"{sdist.name} lacks {', '.join(wanted)}; pin {LLAMA_CPP_PYTHON}")


def llama_model_proto(gguf_path: Path):
    """A sentencepiece ModelProto with LLaMA's pieces, scores and types and its trainer/normalizer settings."""
    try:
        import gguf
    except ImportError as err:
        raise ImportError("reading llama.cpp's vocabulary needs the `gguf` package: pip install gguf") from err
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    fields = gguf.GGUFReader(str(gguf_path)).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    scores = fields["tokenizer.ggml.scores"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    model = sp_pb2.ModelProto()
    piece_type = sp_pb2.ModelProto.SentencePiece.Type
    for token, score, kind in zip(tokens, scores, types, strict=True):
        # GGUF token types use sentencepiece's numbering; mapping by name keeps that assumption checked.
        name = gguf.TokenType(kind).name
        model.pieces.add(piece=token, score=score, type=piece_type.Value(name))
    set_llama_specs(model, sp_pb2, len(tokens))
    return model


def set_llama_specs(model, sp_pb2, vocab_size: int) -> None:
    """The trainer and normalizer settings of LLaMA's tokenizer.model (those that affect encoding and more)."""
    trainer = model.trainer_spec
    trainer.model_type = sp_pb2.TrainerSpec.BPE
    trainer.vocab_size = vocab_size
    trainer.character_coverage = 0.99995
    trainer.max_sentencepiece_length = 16
    trainer.split_by_unicode_script = True
    trainer.split_by_whitespace = True
    trainer.split_by_number = True
    trainer.split_digits = True
    trainer.allow_whitespace_only_pieces = True
    trainer.byte_fallback = True
    trainer.vocabulary_output_piece_score = True
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = 0, 1, 2, -1
    trainer.unk_piece, trainer.bos_piece, trainer.eos_piece, trainer.pad_piece = "<unk>", "<s>", "</s>", "<pad>"
    trainer.unk_surface = " \u2047 "
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.precompiled_charsmap = b""
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True


def llama_reference_cases(cache_dir: str | Path, vocab: str = LLAMA_VOCAB) -> list[tuple[str, list[int]]]:
    """llama.cpp's reference tokenisations of `vocab`: (text, ids without BOS) pairs from its `.inp`/`.out` files."""
    cache_dir = Path(cache_dir)
    texts = (cache_dir / (vocab + ".inp")).read_text(encoding="utf-8").split(REFERENCE_SEPARATOR)
    if texts and texts[-1] == "":
        texts.pop()  # the file ends with a separator
    ids = [[int(t) for t in line.split()] for line in (cache_dir / (vocab + ".out")).read_text().splitlines()]
    if len(texts) != len(ids):
        raise ValueError(f"{cache_dir}: {len(texts)} reference texts but {len(ids)} tokenisations")
    return list(zip(texts, ids))


def reference_mismatches(model_bytes: bytes, cache_dir: Path) -> list[tuple[str, list[int], list[int]]]:
    """(text, ours, llama.cpp's) for every reference text our model tokenises differently."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=model_bytes)
    cases = llama_reference_cases(cache_dir)
    return [(text, ours, ref) for text, ref in cases if (ours := processor.encode(text)) != ref]
