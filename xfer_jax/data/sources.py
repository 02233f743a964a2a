"""Source entries of the data config, and the files they name.

A source is one config dict: a language, a path (file, glob or directory, on disk or in a bucket: gs://...),
or for TFDS a dataset name, a format and mixing options. `SourceSpec.from_config` checks it and names the bad
key; `source_files` expands the path. Reading the records of each format lives in readers.py and shards.py.

Formats:
  text         plain text, one document per line (`doc_split='line'`) or per blank-line block ('blank_line')
  jsonl        JSON lines (or a JSON array file); the document is `text_field`
  parquet      the document is column `text_field`
  array_record records are UTF-8 text, or JSON objects when `text_field` is set
  tfds         a prepared TFDS dataset (`name`, `split`, `data_dir`; no `path`) read by index through TFDS's
               data source (what `tfds.data_source` returns: ArrayRecord, no TensorFlow); the document is `text_field`
  hf_dataset   Hugging Face `datasets`: `path` is a `save_to_disk` directory, or files (parquet, JSON, arrow, csv)
               that `datasets.load_dataset(name, data_files=...)` reads (`name`: the builder, default from the
               files' suffix); `split`; `streaming`; the document is `text_field`
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

TEXT_FORMATS = ("text", "jsonl", "parquet", "array_record", "tfds", "hf_dataset")
FORMATS = TEXT_FORMATS + ("tokens",) + tuple(instruct.RECORD_PARSERS)
DOC_SPLITS = ("line", "blank_line")
# Keys that only some formats honour; anywhere else a value other than the default is refused by name.
ONLY_FOR = {"doc_split": ("text",), "name": ("tfds", "hf_dataset"), "split": ("tfds", "hf_dataset"),
            "data_dir": ("tfds",), "streaming": ("hf_dataset",)}


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    lang: str
    path: str = ""  # every format but tfds
    format: str = "text"
    text_field: str = "text"  # jsonl/parquet/tfds/hf_dataset field; for array_record, '' means raw UTF-8 records
    doc_split: str = "line"  # text format only
    weight: float = 1.0  # mixing weight, relative to the other sources
    token_budget: int = 0  # stop the whole stream once this source has given this many tokens; 0 = unlimited
    max_documents: int = 0  # use a fixed random sample of this many documents; 0 = all
    name: str = ""  # tfds: the dataset ('wiki40b/zh-cn', 'my_corpus:1.0.0'); hf_dataset: load_dataset's builder
    split: str = ""  # tfds, hf_dataset: a split or slice ('train[:90%]'); '' = 'train'
    data_dir: str = ""  # tfds: the directory (local or gs://) holding NAME/VERSION/; '' = TFDS's default
    streaming: bool = False  # hf_dataset: parquet/JSON files read in place, without datasets' Arrow cache

    @property
    def is_instruct(self) -> bool:
        return self.format in instruct.RECORD_PARSERS

    @property
    def label(self) -> str:
        """How messages name the source: its path, or for TFDS `tfds:NAME[SPLIT]`."""
        return f"tfds:{self.name}[{self.split or 'train'}]" if self.format == "tfds" else self.path

    @classmethod
    def from_config(cls, entry, where: str) -> SourceSpec:
        """Builds a spec from a config dict; `where` (e.g. 'data.sources[2]') names it in errors."""
        entry = dict(entry)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
        if not entry.get("lang"):
            raise ValueError(f"{where}: missing 'lang' (every source needs 'lang', and 'path' or for tfds 'name')")
        spec = cls(**entry)
        if spec.format not in FORMATS:
            raise ValueError(f"{where}: format={spec.format!r}; expected one of {FORMATS}")
        if spec.format == "tfds":
            if spec.path or not spec.name:
                raise ValueError(f"{where}: format 'tfds' names its dataset with 'name' (and 'data_dir', 'split'), "
                                 f"not 'path'" + (f"; got path={spec.path!r}" if spec.path else ": 'name' is missing"))
        elif not spec.path:
            raise ValueError(f"{where}: missing 'path' (every source needs 'lang' and 'path'; tfds: 'name')")
        defaults = cls(lang="")
        for key, formats in ONLY_FOR.items():
            if spec.format not in formats and getattr(spec, key) != getattr(defaults, key):
                raise ValueError(f"{where}: {key}={getattr(spec, key)!r} does not apply to format {spec.format!r} "
                                 f"(only to {', '.join(formats)}); drop it")
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
