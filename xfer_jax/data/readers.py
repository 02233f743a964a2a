"""Random access to the valid documents of one source, whatever its format.

`open_source` scans a source once, in the process that builds the pipeline: every record is parsed,
bad ones go to the `InputIssues` tally (file and line named) and only the locations of good ones are kept.
Grain then reads documents by index (global shuffling, exact checkpoints, worker slicing), re-reading and
re-parsing a record on demand; file handles are opened lazily per process, so tables pickle small.
A document is a `str`, an `instruct.Conversation`, or (format 'tokens') an int32 array of token ids.
"""
from __future__ import annotations

import json
import mmap
import pathlib
import re

import numpy as np

from xfer_jax.data import instruct
from xfer_jax.data.issues import BadRecord, InputIssues
from xfer_jax.data.sources import SourceSpec, source_files

TOKENS_META = "tokenized.json"
SEPARATORS = {"line": re.compile(rb"\n"), "blank_line": re.compile(rb"\n(?:[ \t\r\f\v]*\n)+")}


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
            value = _utf8(value)
        if not isinstance(value, str):
            raise BadRecord("missing_field", f"field {self.field!r} is {type(value).__name__}, not text")
        value = value.strip()
        if not value:
            raise BadRecord("empty_document", "no text")
        return value


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRecord("invalid_utf8", f"byte {e.start}: {e.reason}") from None


def _json(raw: bytes):
    try:
        return json.loads(_utf8(raw))
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


class LineTable:
    """text and JSON-lines files (memory-mapped, indexed by byte range); JSON array files held as JSON lines."""

    def __init__(self, spec: SourceSpec, files: list[str], parse, issues: InputIssues, validate):
        self._json = spec.format != "text"
        self._parse = parse
        self._paths, self._blobs, self._maps = [], {}, {}
        file_ids, starts, ends = [], [], []
        for path in files:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                issues.report("unreadable_file", path, e.strerror or str(e))
                continue
            file_id = len(self._paths)
            self._paths.append(path)
            if self._json and data.lstrip()[:1] == b"[":
                data = self._blobs[file_id] = self._array_as_lines(path, data, issues)
                spans = self._spans(data, "line", where=lambda i, _: f"{path}: record {i}")
            else:
                spans = self._spans(data, "line" if self._json else spec.doc_split, where=lambda _, n: f"{path}:{n}")
            for start, end, where in spans:
                try:
                    doc = self._decode(data[start:end])
                    if validate:
                        validate(doc)
                except BadRecord as e:
                    issues.report(e.kind, where, str(e))
                    continue
                file_ids.append(file_id)
                starts.append(start)
                ends.append(end)
        self._file_ids = np.asarray(file_ids, np.int32)
        self._starts = np.asarray(starts, np.int64)
        self._ends = np.asarray(ends, np.int64)

    @staticmethod
    def _spans(data: bytes, split: str, where):
        """Yields (start, end, location) per record; line numbers are 1-based; a final newline ends no record."""
        start, line, index = 0, 1, 0
        for match in SEPARATORS[split].finditer(data):
            if split == "line" or data[start:match.start()].strip():  # blank-line runs only separate
                yield start, match.start(), where(index, line)
                index += 1
            line += data.count(b"\n", start, match.end())
            start = match.end()
        if data[start:].strip():
            yield start, len(data), where(index, line)

    @staticmethod
    def _array_as_lines(path: str, data: bytes, issues: InputIssues) -> bytes:
        try:
            records = json.loads(_utf8(data))
        except BadRecord as e:
            issues.report(e.kind, path, str(e))
            return b""
        except json.JSONDecodeError as e:
            issues.report("malformed_json", f"{path}:{e.lineno}", f"column {e.colno}: {e.msg} (whole file skipped)")
            return b""
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode()

    def _decode(self, raw: bytes):
        return self._parse(_json(raw) if self._json else _utf8(raw))

    def _data(self, file_id: int):
        if file_id in self._blobs:
            return self._blobs[file_id]
        if file_id not in self._maps:
            with open(self._paths[file_id], "rb") as f:
                self._maps[file_id] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[file_id]

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, i: int):
        return self._decode(self._data(int(self._file_ids[i]))[self._starts[i]:self._ends[i]])

    def __getstate__(self):
        return {**self.__dict__, "_maps": {}}


class ParquetTable:
    """Parquet files; reads whole row groups (only the needed columns) and keeps the last few decoded."""

    CACHED_ROW_GROUPS = 4

    def __init__(self, files: list[str], parse, fields, issues: InputIssues, validate):
        import pyarrow.parquet as pq

        self._parse, self._paths, self._columns, self._cache = parse, [], [], {}
        locations = []
        for path in files:
            try:
                parquet = pq.ParquetFile(path)
            except Exception as e:  # pyarrow raises OSError or ArrowInvalid on unreadable/corrupt files
                issues.report("unreadable_file", path, str(e))
                continue
            columns = [c for c in fields if c in parquet.schema_arrow.names]
            if not columns:
                issues.report("missing_field", path, f"no column of {fields} (columns: {parquet.schema_arrow.names})")
                continue
            file_id = len(self._paths)
            self._paths.append(path)
            self._columns.append(columns)
            for group in range(parquet.num_row_groups):
                for row, record in enumerate(parquet.read_row_group(group, columns=columns).to_pylist()):
                    try:
                        doc = parse(record)
                        if validate:
                            validate(doc)
                    except BadRecord as e:
                        issues.report(e.kind, f"{path}: row group {group} row {row}", str(e))
                        continue
                    locations.append((file_id, group, row))
        self._locations = np.asarray(locations, np.int64).reshape(-1, 3)

    def _rows(self, file_id: int, group: int) -> list[dict]:
        key = (file_id, group)
        if key not in self._cache:
            import pyarrow.parquet as pq

            if len(self._cache) >= self.CACHED_ROW_GROUPS:
                self._cache.pop(next(iter(self._cache)))
            table = pq.ParquetFile(self._paths[file_id]).read_row_group(group, columns=self._columns[file_id])
            self._cache[key] = table.to_pylist()
        return self._cache[key]

    def __len__(self) -> int:
        return len(self._locations)

    def __getitem__(self, i: int):
        file_id, group, row = (int(x) for x in self._locations[i])
        return self._parse(self._rows(file_id, group)[row])

    def __getstate__(self):
        return {**self.__dict__, "_cache": {}}


class ArrayRecordTable:
    """ArrayRecord files of UTF-8 text (or JSON objects when a text field is set)."""

    SCAN_CHUNK = 4096

    def __init__(self, spec: SourceSpec, files: list[str], parse, issues: InputIssues, validate):
        import grain
        from array_record.python import array_record_module

        self._json, self._parse = bool(spec.text_field), parse
        readable, keep, offset = [], [], 0
        for path in files:
            try:
                reader = array_record_module.ArrayRecordReader(path)
                if not reader.ok():
                    raise OSError("not a readable ArrayRecord file")
                count = reader.num_records()
            except Exception as e:  # the C++ reader raises RuntimeError/ValueError on bad files
                issues.report("unreadable_file", path, str(e))
                continue
            readable.append(path)
            for chunk in range(0, count, self.SCAN_CHUNK):
                for i, raw in enumerate(reader.read(chunk, min(count, chunk + self.SCAN_CHUNK)), chunk):
                    try:
                        doc = self._decode(raw)
                        if validate:
                            validate(doc)
                    except BadRecord as e:
                        issues.report(e.kind, f"{path}: record {i}", str(e))
                        continue
                    keep.append(offset + i)
            reader.close()
            offset += count
        self._source = grain.sources.ArrayRecordDataSource(readable) if readable else []
        self._keep = np.asarray(keep, np.int64)

    def _decode(self, raw: bytes):
        return self._parse(_json(raw) if self._json else _utf8(raw))

    def __len__(self) -> int:
        return len(self._keep)

    def __getitem__(self, i: int):
        return self._decode(self._source[int(self._keep[i])])


class TfdsTable:
    """A TFDS dataset through `tfds.data_source` (ArrayRecord files; no TensorFlow needed)."""

    def __init__(self, spec: SourceSpec, parse, issues: InputIssues, validate):
        self._name, self._split, self._data_dir = spec.path, spec.tfds_split, spec.tfds_data_dir or None
        self._parse, self._source = parse, None
        keep = []
        for i in range(len(self._records())):
            try:
                doc = parse(self._records()[i])
                if validate:
                    validate(doc)
            except BadRecord as e:
                issues.report(e.kind, f"tfds:{self._name}[{self._split}] record {i}", str(e))
                continue
            keep.append(i)
        self._keep = np.asarray(keep, np.int64)

    def _records(self):
        if self._source is None:
            try:
                import tensorflow_datasets as tfds
            except ImportError as e:
                raise ImportError("format 'tfds' needs tensorflow-datasets: pip install tensorflow-datasets") from e
            self._source = tfds.data_source(self._name, split=self._split, data_dir=self._data_dir)
        return self._source

    def __len__(self) -> int:
        return len(self._keep)

    def __getitem__(self, i: int):
        return self._parse(self._records()[int(self._keep[i])])

    def __getstate__(self):
        return {**self.__dict__, "_source": None}


class TokenShards:
    """Shards written by `xfer data tokenize`: one record per document, its token ids as `dtype` bytes.

    Each shard directory holds TOKENS_META (tokenizer fingerprint, dtype, BOS/EOS, counts); a pipeline
    reading shards made with another tokenizer would train on wrong ids, so `check` refuses that.
    """

    def __init__(self, files: list[str]):
        import grain

        metas = {}
        for path in files:
            meta_path = pathlib.Path(path).parent / TOKENS_META
            if meta_path not in metas:
                if not meta_path.is_file():
                    raise FileNotFoundError(f"{path}: no {TOKENS_META} beside it; was it written by `xfer data tokenize`?")
                metas[meta_path] = json.loads(meta_path.read_text())
        self._metas = metas
        self._dtype = np.dtype(next(iter(metas.values()))["dtype"])
        self._source = grain.sources.ArrayRecordDataSource(files)

    def check(self, tokenizer_sha256: str, bos: bool, eos: bool) -> None:
        for meta_path, meta in self._metas.items():
            found = (meta["tokenizer_sha256"], meta["bos"], meta["eos"], meta["dtype"])
            if found != (tokenizer_sha256, bos, eos, self._dtype.name):
                raise ValueError(
                    f"{meta_path}: shards were tokenised with tokenizer sha256 {found[0][:12]}.., bos={found[1]}, "
                    f"eos={found[2]}, dtype {found[3]}; the config wants {tokenizer_sha256[:12]}.., bos={bos}, "
                    f"eos={eos}, dtype {self._dtype.name}: re-run `xfer data tokenize` or fix data.tokenizer"
                )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.frombuffer(self._source[int(i)], self._dtype).astype(np.int32)


def open_source(spec: SourceSpec, issues: InputIssues, validate=None):
    """The document table of one source; `validate(doc)` may raise BadRecord to refuse more documents."""
    if spec.format == "tokens":
        return TokenShards(source_files(spec))
    parse, fields = record_parser(spec)
    if spec.format == "tfds":
        return TfdsTable(spec, parse, issues, validate)
    files = source_files(spec)
    if spec.format == "parquet":
        return ParquetTable(files, parse, fields, issues, validate)
    if spec.format == "array_record":
        return ArrayRecordTable(spec, files, parse, issues, validate)
    return LineTable(spec, files, parse, issues, validate)
