"""Byte-level BPE (Llama-3's tokenizer.json) seen as bytes: the 256-character alphabet, a token's bytes, the check
that a tokenizer.json is byte-level BPE, and which tokens may be appended without touching base-language text.

Why a script rule decides what is appended. In a merged BPE every base merge ranks before every new one, so the
base's merges run to completion first; what can change base text is a new merge firing afterwards, on two
adjacent base tokens of the base's final split. A new merge whose result contains a character of a target
script (Han, Hiragana, Cyrillic, ...) fires only on text that contains that character: UTF-8 is
self-synchronising, so a complete character's bytes (or the lead byte + continuation bytes that start one)
occur inside other text only as that character. So with every new token holding such a character, any text
written only in the protected scripts (default Latin, Common: punctuation, symbols, emoji, digits, spaces;
Inherited: combining marks) keeps its base encoding, id for id. Under Llama-3's `ignore_merges`, a pre-token
that is itself a vocabulary entry is emitted whole; no protected pre-token equals a new token, for the same
reason. Unassigned code points count as protected (they could be assigned later).
"""
from __future__ import annotations

import functools
import itertools
import json

import regex

from xfer_jax import paths

PROTECTED_SCRIPTS = ("Latin", "Common", "Inherited")


@functools.cache
def byte_to_char() -> dict[int, str]:
    """GPT-2's byte -> printable character table: the alphabet of every byte-level BPE (ByteLevel.alphabet())."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@functools.cache
def char_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_char().items()}


def token_bytes(token: str) -> bytes | None:
    """The bytes a byte-level token stands for; None when it holds a character outside the alphabet."""
    table = char_to_byte()
    try:
        return bytes(table[c] for c in token)
    except KeyError:
        return None


def bytes_token(data: bytes) -> str:
    table = byte_to_char()
    return "".join(table[b] for b in data)


def byte_level_problem(doc: dict) -> str | None:
    """Why a parsed tokenizer.json is not byte-level BPE (None when it is): model BPE, a ByteLevel pre-tokenizer
    (alone or in a Sequence) and a ByteLevel decoder, no byte fallback, no word prefix/suffix."""
    model = doc.get("model") or {}
    if model.get("type") != "BPE":
        return f"its model is {model.get('type')!r}, not BPE"
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return "its BPE marks word pieces (continuing_subword_prefix / end_of_word_suffix)"
    pre = doc.get("pre_tokenizer") or {}
    pres = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if not any(p.get("type") == "ByteLevel" for p in pres):
        return f"its pre_tokenizer ({pre.get('type')}) has no ByteLevel step"
    dec = doc.get("decoder") or {}
    decs = dec.get("decoders", []) if dec.get("type") == "Sequence" else [dec]
    if not any(d.get("type") == "ByteLevel" for d in decs):
        return f"its decoder ({dec.get('type')}) is not ByteLevel"
    if any(token_bytes(t) is None for t in model.get("vocab", {})):
        return "its vocabulary holds characters outside the 256-byte alphabet"
    return None


def load_json(path, role: str) -> dict:
    """A tokenizer.json parsed, with an error naming the file and its role."""
    try:
        return json.loads(paths.path(path, role).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{role} {path}: not a tokenizer.json ({e})") from e


def merge_pairs(model: dict) -> list[tuple[str, str]]:
    """A BPE model's merges as pairs, whichever way the file spells them ("a b" or ["a", "b"])."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in model.get("merges", [])]


class ScriptRule:
    """Which byte strings contain a character of a target script (any script not protected). With no protected
    script every token counts as target: all of the added tokenizer's tokens may be appended."""

    def __init__(self, protected: tuple[str, ...] = PROTECTED_SCRIPTS):
        self.protected = tuple(protected)
        for name in self.protected:
            try:
                regex.compile(rf"\p{{Script={name}}}")
            except regex.error as e:
                raise ValueError(f"--protect_scripts: unknown Unicode script {name!r} (e.g. Latin, Common, "
                                 f"Inherited, Cyrillic, Han)") from e
        alternatives = [rf"\p{{Script={s}}}" for s in self.protected] + [r"\p{Cn}", r"\p{Cs}", r"\p{Co}"]
        self.pattern = regex.compile("[" + "".join(alternatives) + "]") if self.protected else None

    def char_is_target(self, c: str) -> bool:
        return self.pattern is None or self.pattern.match(c) is None

    @functools.lru_cache(maxsize=None)
    def prefix_is_target(self, prefix: bytes) -> bool:
        """Whether every character that starts with these bytes (a lead byte + fewer continuation bytes than
        it needs) is of a target script."""
        need = utf8_length(prefix[0]) - len(prefix)
        found = False
        for tail in itertools.product(range(0x80, 0xC0), repeat=need):
            try:
                c = (prefix + bytes(tail)).decode("utf-8")
            except UnicodeDecodeError:  # overlong, surrogate, beyond U+10FFFF
                continue
            if not self.char_is_target(c):
                return False
            found = True
        return found

    def is_target(self, data: bytes) -> bool:
        """Whether `data` (a token's bytes) holds a complete target character, or ends in the start of one that
        can only be a target character. Leading continuation bytes (the tail of some character) never count."""
        if self.pattern is None:
            return True
        i = 0
        while i < len(data) and 0x80 <= data[i] <= 0xBF:
            i += 1
        while i < len(data):
            n = utf8_length(data[i])
            if n == 0:  # a byte that never starts a character
                i += 1
                continue
            if i + n > len(data):
                return self.prefix_is_target(bytes(data[i:]))
            try:
                c = data[i:i + n].decode("utf-8")
            except UnicodeDecodeError:  # a malformed sequence: step past its lead byte only
                i += 1
                continue
            if self.char_is_target(c):
                return True
            i += n
        return False


def utf8_length(lead: int) -> int:
    """Bytes of the character a lead byte starts (0: not a lead byte)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0
