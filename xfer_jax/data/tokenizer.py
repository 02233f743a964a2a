"""The project's one tokenizer wrapper: a sentencepiece model held as its ModelProto.

LLaMA ships its vocabulary as a sentencepiece ModelProto, and vocabulary extension edits that proto
(appends pieces) rather than re-training, so the proto is the source of truth here: `proto()` hands a
copy out for surgery and `Tokenizer.from_proto` loads an edited one back. The wrapper pickles as the
serialized proto, so Grain worker processes can carry it.
"""
from __future__ import annotations

import hashlib
import pathlib

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from xfer_jax import paths


class Tokenizer:
    """Encode/decode text with a sentencepiece model; ids follow the model (LLaMA: unk 0, bos 1, eos 2)."""

    def __init__(self, model_bytes: bytes):
        self._model_bytes = model_bytes
        self._sp = spm.SentencePieceProcessor(model_proto=model_bytes)

    @classmethod
    def load(cls, path: str | pathlib.Path) -> Tokenizer:
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model not found: {path} (expected a sentencepiece .model file)")
        return cls(path.read_bytes())

    @classmethod
    def from_proto(cls, proto: sentencepiece_model_pb2.ModelProto) -> Tokenizer:
        return cls(proto.SerializeToString())

    def save(self, path: str | pathlib.Path) -> None:
        paths.write_bytes(path, self._model_bytes)

    def proto(self) -> sentencepiece_model_pb2.ModelProto:
        """A fresh, editable copy of the ModelProto."""
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(self._model_bytes)
        return proto

    def sha256(self) -> str:
        """Fingerprint of the model, recorded with pre-tokenised shards."""
        return hashlib.sha256(self._model_bytes).hexdigest()

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        return self._sp.encode(text, add_bos=bos, add_eos=eos)

    def encode_batch(
        self, texts: list[str], bos: bool = True, eos: bool = False, num_threads: int = 1
    ) -> list[list[int]]:
        return self._sp.encode(texts, add_bos=bos, add_eos=eos, num_threads=num_threads)

    def decode(self, ids) -> str:
        return self._sp.decode([int(i) for i in ids])

    @property
    def vocab_size(self) -> int:
        return self._sp.vocab_size()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    @property
    def pad_id(self) -> int:
        """The model's pad id; -1 when the model defines none (LLaMA). Packed rows pad with 0 regardless."""
        return self._sp.pad_id()

    @property
    def unk_id(self) -> int:
        return self._sp.unk_id()

    def __getstate__(self) -> bytes:
        return self._model_bytes

    def __setstate__(self, model_bytes: bytes) -> None:
        self.__init__(model_bytes)
