"""Record parsing shared by every reader: bytes → text or JSON → a document, or a BadRecord saying why not.

A document is a `str`, an `instruct.Conversation`, or (format 'tokens') an int32 array of token ids.
"""
from __future__ import annotations

import json

from xfer_jax.data import instruct
from xfer_jax.data.issues import BadRecord
from xfer_jax.data.sources import SourceSpec


class TextField:
    """Parses a record (a string, or a dict/row holding `field`) into a stripped, non-empty document text."""

    def __init__(self, field: str):
        self.field = field

    def __call__(self, record) -> str:
        value = record
        if isinstance(record, dict):
            if self.field not in record:
                raise BadRecord("missing_field", f"no field {self.field!r} (fields: {sorted(record)})")
            value = record[self.field]
        if isinstance(value, bytes):
            value = decode_utf8(value)
        if not isinstance(value, str):
            raise BadRecord("missing_field", f"field {self.field!r} is {type(value).__name__}, not text")
        value = value.strip()
        if not value:
            raise BadRecord("empty_document", "no text")
        return value


def decode_utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRecord("invalid_utf8", f"byte {e.start}: {e.reason}") from None


def decode_json(raw: bytes):
    try:
        return json.loads(decode_utf8(raw))
    except json.JSONDecodeError as e:
        raise BadRecord("malformed_json", f"column {e.colno}: {e.msg}") from None


def document_characters(doc) -> int:
    """Characters of a text or Conversation document (bits per character, tokens per character)."""
    if isinstance(doc, instruct.Conversation):
        return len(doc.system or "") + sum(len(user) + len(answer) for user, answer in doc.turns)
    if isinstance(doc, str):
        return len(doc)
    raise TypeError("pre-tokenised documents have no characters: use raw text for held-out data")


def record_parser(spec: SourceSpec):
    """(parse, fields): the record parser of a spec and the fields it reads."""
    if spec.is_instruct:
        return instruct.RECORD_PARSERS[spec.format]
    return TextField(spec.text_field), (spec.text_field,)
