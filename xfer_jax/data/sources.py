"""Source entries of the data config, and the files they name.

A source is one config dict: a language, a path (file, glob or directory, on disk or in a bucket: gs://...;
a dataset name for TFDS), a format and mixing options. `SourceSpec.from_config` checks it and names the bad
key; `source_files` expands the path. Reading the records of each format lives in readers.py and shards.py.

Formats:
  text         plain text, one document per line (`doc_split='line'`) or per blank-line block ('blank_line')
  jsonl        JSON lines (or a JSON array file); the document is `text_field`
  parquet      the document is column `text_field`
  array_record records are UTF-8 text, or JSON objects when `text_field` is set
  tfds         `tfds.data_source(path, split=tfds_split, data_dir=tfds_data_dir)`; the document is `text_field`
  tokens       shards written by `xfer data tokenize` (already tokenised, BOS/EOS included)
  alpaca, belle, bactrian_x, sharegpt
               instruction data in JSON lines or a JSON array file (see instruct.py)
"""
from __future__ import annotations

import dataclasses
import fnmatch
import glob
import os
import pathlib

from xfer_jax import paths
from xfer_jax.data import instruct

TEXT_FORMATS = ("text", "jsonl", "parquet", "array_record", "tfds")
FORMATS = TEXT_FORMATS + ("tokens",) + tuple(instruct.RECORD_PARSERS)
DOC_SPLITS = ("line", "blank_line")


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    lang: str
    path: str
    format: str = "text"
    text_field: str = "text"  # jsonl/parquet/tfds field; for array_record, '' means raw UTF-8 records
    doc_split: str = "line"  # text format only
    weight: float = 1.0  # mixing weight, relative to the other sources
    token_budget: int = 0  # stop the whole stream once this source has given this many tokens; 0 = unlimited
    max_documents: int = 0  # use a fixed random sample of this many documents; 0 = all
    tfds_split: str = "train"
    tfds_data_dir: str = ""

    @property
    def is_instruct(self) -> bool:
        return self.format in instruct.RECORD_PARSERS

    @classmethod
    def from_config(cls, entry, where: str) -> SourceSpec:
        """Builds a spec from a config dict; `where` (e.g. 'data.sources[2]') names it in errors."""
        entry = dict(entry)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
        for key in ("lang", "path"):
            if not entry.get(key):
                raise ValueError(f"{where}: missing {key!r} (every source needs 'lang' and 'path')")
        spec = cls(**entry)
        if spec.format not in FORMATS:
            raise ValueError(f"{where}: format={spec.format!r}; expected one of {FORMATS}")
        if spec.doc_split not in DOC_SPLITS:
            raise ValueError(f"{where}: doc_split={spec.doc_split!r}; expected one of {DOC_SPLITS}")
        if not spec.weight > 0:
            raise ValueError(f"{where}: weight={spec.weight} must be > 0 (drop the source instead)")
        if spec.token_budget < 0 or spec.max_documents < 0:
            raise ValueError(f"{where}: token_budget and max_documents must be >= 0 (0 means unlimited)")
        return spec


def specs_from_config(entries, key: str) -> list[SourceSpec]:
    return [SourceSpec.from_config(entry, f"{key}[{i}]") for i, entry in enumerate(entries)]


def source_files(spec: SourceSpec) -> list[str]:
    """The files a spec names, sorted: one file, a glob (`**` recursive), or every non-hidden file of a directory
    (read recursively). On a bucket (gs://...) the same, except that a glob has no `**`: a folder is read
    recursively instead.

    For format 'tokens' a directory means its `*.array_record` shards. Raises when nothing matches:
    a source that silently reads nothing would skew the mixture.
    """
    pattern = "*.array_record" if spec.format == "tokens" else "*"
    if paths.is_url(spec.path):
        files = _bucket_files(spec, pattern)
    else:
        path = os.path.expanduser(spec.path)
        if os.path.isdir(path):
            root = pathlib.Path(path)
            files = [
                str(p) for p in sorted(root.rglob(pattern))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
            ]
        elif glob.has_magic(path):
            files = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        else:
            files = [path] if os.path.exists(path) else []
    if not files:
        raise FileNotFoundError(f"source lang={spec.lang!r} path={spec.path!r}: no file matches")
    return files


def _bucket_files(spec: SourceSpec, pattern: str) -> list[str]:
    """source_files for a URL: a folder (one listing), a glob (epath's, one '*' level at a time), or an object."""
    key = f"source lang={spec.lang} path"
    root = paths.path(spec.path, key)
    paths.check_reachable(root, key, must_exist=False)  # a down endpoint or a missing bucket: one line, now
    parts = spec.path.rstrip("/").split("/")
    magic = next((i for i, part in enumerate(parts) if glob.has_magic(part)), None)
    if magic is not None:
        if "**" in spec.path or magic < 3:  # gs:, '', bucket
            raise ValueError(f"source lang={spec.lang!r} path={spec.path!r}: '**' globs are not supported on a "
                             "bucket, nor a pattern in the bucket name; name the folder instead (it is read "
                             "recursively) or use one '*' per level below the bucket")
        base = paths.path("/".join(parts[:magic]), key)
        found = [(m, os.fspath(m)[len(os.fspath(base)) + 1:]) for m in base.glob("/".join(parts[magic:]))]
        return sorted(os.fspath(m) for m, rel in found if not _hidden(rel) and m.is_file())
    if root.is_dir():
        return [os.fspath(root / rel) for rel in paths.list_files(root)
                if not _hidden(rel) and fnmatch.fnmatch(rel.rsplit("/", 1)[-1], pattern)]
    return [os.fspath(root)] if root.is_file() else []


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))
