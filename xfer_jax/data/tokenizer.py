"""The project's one tokenizer wrapper: one interface, two backends chosen by file.

    Tokenizer.load("tok.model")          sentencepiece: a ModelProto (LLaMA-2, every vocabulary merged onto it)
    Tokenizer.load("dir/tokenizer.json") Hugging Face `tokenizers` (byte-level BPE: Llama-3, Qwen), with the
                                         sibling tokenizer_config.json when present (bos/eos/pad tokens,
                                         chat_template; a sibling chat_template.jinja, which transformers 5's
                                         save_pretrained writes instead, takes priority as it does there and is
                                         carried inside the config from then on: `hf_config_bytes`); whether
                                         bos is added by default (`add_bos`) is tokenizer.json's
                                         post-processor's choice, as in transformers
    Tokenizer.load("dir")                the directory's tokenizer.json, else its tokenizer.model
    (each of these may be in a bucket, gs://...; `save_files` writes to one as well)

Both give the same interface: encode / encode_batch / decode, vocab_size (HF: added tokens included, 128,256
for Llama-3), bos/eos/pad/unk ids (-1 where the tokenizer defines none), special_ids, id_to_piece /
piece_to_id, chat_template, sha256 (over canonical bytes, recorded with shards and checkpoints), files() /
save_files(dir) (what a checkpoint or export carries: tokenizer.model, or tokenizer.json +
tokenizer_config.json), and pickling (as those files, so Grain worker processes can carry it).

Special tokens are only ever ids: no text encodes to one. sentencepiece never matches control pieces in text;
the HF backend sets `encode_special_tokens`, so "<|eot_id|>" in a document is ordinary bytes, never 128009.
The one exception is text a chat template rendered: `encode_template` reads the spellings of special tokens
there as those tokens. `decode` drops special tokens in both backends (sentencepiece decodes control pieces
to "").

For sentencepiece the proto is the source of truth (vocabulary extension edits it): `proto()` hands a copy
out for surgery and `Tokenizer.from_proto` loads an edited one back; `proto()` refuses an HF tokenizer.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import re

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from xfer_jax import paths

SP_FILE = "tokenizer.model"
HF_FILE = "tokenizer.json"
HF_CONFIG = "tokenizer_config.json"
HF_TEMPLATE = "chat_template.jinja"  # transformers 5 saves a single chat template here, not in HF_CONFIG
FILES = (SP_FILE, HF_FILE, HF_CONFIG)  # every name a tokenizer is stored under
KINDS = ("sentencepiece", "hf")
_DIGESTS: dict[str, str] = {}  # hash of a tokenizer's files -> Tokenizer.sha256 (see there)


def resolve(path: str | pathlib.Path) -> paths.Path:
    """The file `Tokenizer.load(path)` reads: `path` itself (a .model or a tokenizer.json; a
    tokenizer_config.json stands for its sibling tokenizer.json), or a directory's tokenizer.json, else its
    tokenizer.model. Local or in a bucket (gs://...; a down endpoint or missing bucket is one line at once)."""
    path = paths.path(path, "tokenizer")
    if paths.is_url(path):
        paths.check_reachable(path, "tokenizer", must_exist=False)
    if path.is_dir():
        for name in (HF_FILE, SP_FILE):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"tokenizer directory {path} holds neither {HF_FILE} nor {SP_FILE}")
    if path.name == HF_CONFIG:
        path = path.with_name(HF_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer model not found: {path} (expected a sentencepiece .model file, a "
                                f"Hugging Face {HF_FILE}, or a directory holding either)")
    return path


def hf_config_bytes(tokenizer_json: str | pathlib.Path) -> bytes | None:
    """The tokenizer_config.json beside a tokenizer.json as the wrapper carries it: with a sibling
    chat_template.jinja (what transformers 5's save_pretrained writes, dropping the key from the config) written in
    as its `chat_template`, which it overrides as in transformers' from_pretrained; None when there is neither."""
    config, template = (paths.path(tokenizer_json).with_name(n) for n in (HF_CONFIG, HF_TEMPLATE))
    raw = config.read_bytes() if config.is_file() else None
    if not template.is_file():
        return raw
    doc = json.loads(raw) if raw is not None else {}
    doc["chat_template"] = template.read_text(encoding="utf-8")
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")


def kind_of(path: str | pathlib.Path) -> str:
    """"hf" for a tokenizer.json (or a directory holding one), else "sentencepiece"."""
    return "hf" if resolve(path).suffix == ".json" else "sentencepiece"


class Tokenizer:
    """Encode/decode text; ids follow the tokenizer (LLaMA-2: unk 0, bos 1, eos 2; Llama-3: bos 128000)."""

    def __init__(self, model_bytes: bytes, source: str = SP_FILE):
        """A sentencepiece tokenizer from a serialized ModelProto (what every caller before HF support passed)."""
        self._backend = _SentencePiece(model_bytes, source)

    @classmethod
    def from_hf(cls, tokenizer_json: bytes, config_json: bytes | None = None, source: str = HF_FILE) -> Tokenizer:
        """A Hugging Face tokenizer from tokenizer.json's bytes (and tokenizer_config.json's, when there is one)."""
        tok = cls.__new__(cls)
        tok._backend = _HuggingFace(tokenizer_json, config_json, source)
        return tok

    @classmethod
    def load(cls, path: str | pathlib.Path) -> Tokenizer:
        """A .model (sentencepiece), a tokenizer.json (HF, reading tokenizer_config.json beside it), or a
        directory holding either (tokenizer.json first)."""
        file = resolve(path)
        if file.suffix != ".json":
            return cls(file.read_bytes(), source=str(file))
        return cls.from_hf(file.read_bytes(), hf_config_bytes(file), source=str(file))

    @classmethod
    def from_proto(cls, proto: sentencepiece_model_pb2.ModelProto) -> Tokenizer:
        return cls(proto.SerializeToString())

    # ---- what the tokenizer is ----
    @property
    def kind(self) -> str:
        """"sentencepiece" or "hf"."""
        return self._backend.kind

    def proto(self) -> sentencepiece_model_pb2.ModelProto:
        """A fresh, editable copy of the ModelProto (sentencepiece only)."""
        if self.kind != "sentencepiece":
            raise TypeError(f"{self._backend.source} is a Hugging Face tokenizer.json (byte-level BPE), not a "
                            f"sentencepiece model: it has no ModelProto to edit")
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(self._backend.model_bytes)
        return proto

    def sha256(self) -> str:
        """Fingerprint of the tokenizer, recorded with pre-tokenised shards and checkpoints. sentencepiece: of
        the model's bytes (the .model file's hash); HF: of a canonical form of what decides ids (tokenizer.json
        parsed, without truncation/padding; the special ids, bos/eos defaults and chat template), so re-indented
        JSON or an export's model_max_length does not change it."""
        backend = self._backend
        if backend.digest is None:
            # The canonical form of a 128k-id tokenizer.json takes a second to build, and every stage loads the
            # same files again: remembered by the hash of the files' bytes, which decide it.
            key = hashlib.sha256(b"".join(hashlib.sha256(name.encode() + b"\0" + content).digest()
                                          for name, content in sorted(backend.files.items()))).hexdigest()
            if key not in _DIGESTS:
                _DIGESTS[key] = hashlib.sha256(backend.canonical_bytes()).hexdigest()
            backend.digest = _DIGESTS[key]
        return backend.digest

    def files(self) -> dict[str, bytes]:
        """{file name: content} a checkpoint or export carries: tokenizer.model, or tokenizer_config.json (when
        the tokenizer has one) + tokenizer.json, as loaded (tokenizer.json last: it is the one `load` finds)."""
        return dict(self._backend.files)

    def save_files(self, directory: str | pathlib.Path) -> list[paths.Path]:
        """Write files() into `directory` (local or a bucket), each atomically, in files() order."""
        directory = paths.path(directory, "tokenizer directory")
        return [paths.write_bytes(directory / name, content) for name, content in self.files().items()]

    def save(self, path: str | pathlib.Path) -> None:
        """sentencepiece: the model to `path`. HF: files() into `path` (a directory, or a tokenizer.json path)."""
        if self.kind == "sentencepiece":
            paths.write_bytes(path, self._backend.model_bytes)
            return
        path = paths.path(path, "tokenizer path")
        self.save_files(path.parent if path.name == HF_FILE else path)

    # ---- ids ----
    def encode(self, text: str, bos: bool | None = True, eos: bool | None = False) -> list[int]:
        """Ids of `text`, with bos/eos when asked (None: the tokenizer's own default, `add_bos` / `add_eos`)."""
        return self._backend.encode_batch([text], *self._flags(bos, eos), 1)[0]

    def encode_batch(self, texts: list[str], bos: bool | None = True, eos: bool | None = False,
                     num_threads: int = 1) -> list[list[int]]:
        """encode() of each text (num_threads: sentencepiece's; the HF backend batches in Rust)."""
        return self._backend.encode_batch(list(texts), *self._flags(bos, eos), num_threads)

    def _flags(self, bos: bool | None, eos: bool | None) -> tuple[bool, bool]:
        bos = self.add_bos if bos is None else bos
        eos = self.add_eos if eos is None else eos
        return bos and self.bos_id >= 0, eos and self.eos_id >= 0

    def encode_template(self, text: str) -> list[int]:
        """Ids of chat-template text, in which (unlike any other text) the spellings of special tokens are those
        tokens ("<|eot_id|>" -> 128009); no bos/eos added, the template writes its own. Only for text a chat
        template rendered (xfer_jax.data.chat_template), never for documents or user messages."""
        return self._backend.encode_template(text)

    def decode(self, ids) -> str:
        """Text of `ids`; special tokens decode to nothing."""
        return self._backend.decode([int(i) for i in ids])

    def id_to_piece(self, i: int) -> str:
        return self._backend.id_to_piece(int(i))

    def piece_to_id(self, piece: str) -> int:
        """The id of a vocabulary entry (special tokens included); unk_id when there is none."""
        return self._backend.piece_to_id(piece)

    @property
    def vocab_size(self) -> int:
        """Ids in use: sentencepiece's pieces; HF: the vocabulary plus added tokens (highest id + 1)."""
        return self._backend.vocab_size

    @property
    def bos_id(self) -> int:
        return self._backend.bos_id

    @property
    def eos_id(self) -> int:
        """The tokenizer's own eos (Llama-3 base: 128001; a model config may list more stop ids)."""
        return self._backend.eos_id

    @property
    def pad_id(self) -> int:
        """The tokenizer's pad id; -1 when it defines none (LLaMA). Packed rows pad with 0 regardless."""
        return self._backend.pad_id

    @property
    def unk_id(self) -> int:
        return self._backend.unk_id

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids of the special tokens no text encodes to (sentencepiece: control pieces; HF: special added tokens)."""
        return self._backend.special_ids

    @property
    def add_bos(self) -> bool:
        """Whether the tokenizer's own files add bos (sentencepiece: True, as LlamaTokenizer; HF: whether
        tokenizer.json's post-processor does, which is what transformers' fast tokenizer follows; a
        tokenizer_config.json `add_bos_token` beside a tokenizer.json is ignored there, and here)."""
        return self._backend.add_bos

    @property
    def add_eos(self) -> bool:
        return self._backend.add_eos

    @property
    def chat_template(self) -> str | None:
        """tokenizer_config.json's Jinja chat template (HF); None for sentencepiece or when there is none."""
        return self._backend.chat_template

    @property
    def source(self) -> str:
        """Where it was loaded from (for messages)."""
        return self._backend.source

    def __repr__(self) -> str:
        return f"Tokenizer({self.kind}, {self.vocab_size} ids, {self.source})"

    # ---- pickling (Grain workers): sentencepiece as the model bytes (as before), HF as its files ----
    def __getstate__(self):
        if self.kind == "sentencepiece":
            return self._backend.model_bytes
        return {"kind": "hf", "files": self.files(), "source": self.source}

    def __setstate__(self, state) -> None:
        if isinstance(state, (bytes, bytearray)):
            self._backend = _SentencePiece(bytes(state))
        else:
            files = state["files"]
            self._backend = _HuggingFace(files[HF_FILE], files.get(HF_CONFIG), state.get("source", HF_FILE))


class _SentencePiece:
    kind = "sentencepiece"
    add_bos, add_eos, chat_template = True, False, None

    def __init__(self, model_bytes: bytes, source: str = SP_FILE):
        self.model_bytes, self.source, self.digest = model_bytes, source, None
        self.files = {SP_FILE: model_bytes}
        self.sp = sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        self.vocab_size = sp.vocab_size()
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = sp.bos_id(), sp.eos_id(), sp.pad_id(), sp.unk_id()
        self.special_ids = tuple(i for i in range(self.vocab_size) if sp.is_control(i))

    def canonical_bytes(self) -> bytes:
        return self.model_bytes

    def encode_batch(self, texts, bos, eos, num_threads) -> list[list[int]]:
        return self.sp.encode(texts, add_bos=bos, add_eos=eos, num_threads=num_threads)

    def encode_template(self, text: str) -> list[int]:
        """Control pieces by their spelling, the text between them encoded as plain text."""
        specials = {self.sp.id_to_piece(i): i for i in self.special_ids}
        if not specials:
            return self.sp.encode(text)
        pattern = re.compile("|".join(re.escape(p) for p in sorted(specials, key=len, reverse=True)))
        ids, start = [], 0
        for match in pattern.finditer(text):
            ids += self.sp.encode(text[start:match.start()]) if match.start() > start else []
            ids.append(specials[match.group()])
            start = match.end()
        return ids + (self.sp.encode(text[start:]) if start < len(text) else [])

    def decode(self, ids) -> str:
        return self.sp.decode(ids)

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def piece_to_id(self, piece: str) -> int:
        return self.sp.piece_to_id(piece)


class _HuggingFace:
    kind = "hf"

    def __init__(self, tokenizer_json: bytes, config_json: bytes | None, source: str):
        try:
            from tokenizers import Tokenizer as RustTokenizer
        except ImportError as err:
            raise ImportError(f"{source}: a tokenizer.json needs the `tokenizers` package: pip install tokenizers") \
                from err
        self.source, self.digest, self.template_tok = source, None, None
        self.files = ({HF_CONFIG: config_json} if config_json is not None else {}) | {HF_FILE: tokenizer_json}
        try:
            self.tok = tok = RustTokenizer.from_str(tokenizer_json.decode("utf-8"))
            self.config = json.loads(config_json) if config_json is not None else {}
        except Exception as err:  # tokenizers' parse error is a plain Exception
            raise ValueError(f"{source}: not a Hugging Face tokenizer.json + tokenizer_config.json ({err})") from err
        tok.no_truncation()
        tok.no_padding()
        tok.encode_special_tokens = True  # special tokens never come from text
        vocab = tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1
        self.special_ids = tuple(sorted(i for i, t in tok.get_added_tokens_decoder().items() if t.special))
        # What tokenizer.json's post-processor adds around a text: its bos/eos when tokenizer_config names none.
        bare, full = tok.encode("a", add_special_tokens=False).ids, tok.encode("a", add_special_tokens=True).ids
        start = next((k for k in range(len(full)) if full[k:k + len(bare)] == bare), 0)
        prefix, suffix = full[:start], full[start + len(bare):]
        model_unk = getattr(tok.model, "unk_token", None)
        self.bos_id = self._token_id("bos_token", prefix[0] if prefix else -1)
        self.eos_id = self._token_id("eos_token", suffix[-1] if suffix else -1)
        self.pad_id = self._token_id("pad_token", -1)
        self.unk_id = self._token_id("unk_token", vocab.get(model_unk, -1) if model_unk else -1)
        # As transformers' fast tokenizers do (5.x drops add_bos_token/add_eos_token when there is a tokenizer.json):
        # whether bos/eos go around a text is tokenizer.json's post-processor's choice.
        self.add_bos = self.bos_id >= 0 and self.bos_id in prefix
        self.add_eos = self.eos_id >= 0 and self.eos_id in suffix
        template = self.config.get("chat_template")
        if isinstance(template, list):  # [{"name": ..., "template": ...}]: the default one
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default", next(iter(named.values()), None))
        self.chat_template = template

    def _token_id(self, key: str, default: int) -> int:
        """tokenizer_config.json's `key` (a string or an AddedToken dict) as an id; `default` when unnamed."""
        value = self.config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if value is None:
            return default
        found = self.tok.token_to_id(value)
        if found is None:
            raise ValueError(f"{self.source}: tokenizer_config.json's {key} {value!r} is not in the vocabulary")
        return found

    def canonical_bytes(self) -> bytes:
        doc = json.loads(self.files[HF_FILE])
        doc.pop("truncation", None)
        doc.pop("padding", None)
        canonical = {"kind": self.kind, "tokenizer": doc, "bos_id": self.bos_id, "eos_id": self.eos_id,
                     "pad_id": self.pad_id, "unk_id": self.unk_id, "add_bos": self.add_bos, "add_eos": self.add_eos,
                     "chat_template": self.chat_template}
        return json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def encode_batch(self, texts, bos, eos, num_threads) -> list[list[int]]:
        encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        head, tail = [self.bos_id] if bos else [], [self.eos_id] if eos else []
        return [head + e.ids + tail for e in encode(texts, add_special_tokens=False)]

    def encode_template(self, text: str) -> list[int]:
        if self.template_tok is None:  # a second instance: the shared one never toggles encode_special_tokens
            from tokenizers import Tokenizer as RustTokenizer

            self.template_tok = RustTokenizer.from_str(self.files[HF_FILE].decode("utf-8"))
            self.template_tok.no_truncation()
            self.template_tok.no_padding()
        return self.template_tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def id_to_piece(self, i: int) -> str:
        piece = self.tok.id_to_token(i)
        if piece is None:
            raise IndexError(f"id {i} is not in {self.source}'s vocabulary ({self.vocab_size} ids)")
        return piece

    def piece_to_id(self, piece: str) -> int:
        found = self.tok.token_to_id(piece)
        return self.unk_id if found is None else found
