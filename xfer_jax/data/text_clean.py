"""Text cleaning for the corpus: one document a line, and a stable hash that orders and splits documents.

Every document is cleaned the same way (docs/corpus.md): terminal colours and control characters dropped,
every line break `str.splitlines()` knows becomes a space, whitespace runs become one space; wrapped lines
join with a space except where a CJK character sits on either side.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Iterable, Iterator

# Every character that str.splitlines() treats as a line break: none may survive inside a document.
LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def is_wide(char: str) -> bool:
    """CJK characters are written without spaces between them, so wrapped lines join without one."""
    return unicodedata.east_asian_width(char) in ("W", "F")


def join_lines(lines: Iterable[str]) -> str:
    """Join wrapped lines into one: a space between words, none where either side is a CJK character."""
    out = ""
    for line in (line.strip() for line in lines):
        if not line:
            continue
        if out and not (is_wide(out[-1]) or is_wide(line[0])):
            out += " "
        out += line
    return out


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes, also the nested broken ones fortune files hold (ESC[;ESC[34;1mm)."""
    while (stripped := ANSI_ESCAPE.sub("", text)) != text:
        text = stripped
    return text


def clean_document(text: str) -> str:
    """One line per document: colours and control characters dropped, line breaks and whitespace runs one space."""
    text = CONTROL_CHARS.sub("", LINE_BREAKS.sub(" ", strip_ansi(text)))
    return re.sub(r"\s+", " ", text).strip()


def doc_hash(text: str) -> int:
    """A stable 64-bit hash of a document (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


def in_hash_order(pairs: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """Spread a capped selection over the whole source instead of taking its first chapters."""
    yield from sorted(pairs, key=lambda pair: doc_hash(pair[1]))
