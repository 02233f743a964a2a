"""Random access to the valid documents of one source, whatever its format.

`open_source` scans a source once, in the process that builds the pipeline: every record is parsed,
bad ones go to the `InputIssues` tally (file and line named) and only the locations of good ones are kept.
Grain then reads documents by index (global shuffling, exact checkpoints, worker slicing), re-reading and
re-parsing a record on demand; file handles are opened lazily per process, so tables pickle small.
Text and JSON files and Parquet are read here; the ArrayRecord-based formats in shards.py, TFDS in
tfds_source.py, Hugging Face `datasets` in hf_source.py. A file in a bucket
(gs://...) is downloaded once into a local copy that the table reads (remote.py says why); issues still name
its URL.
"""
from __future__ import annotations

import array
import json
import mmap
import os
import re

import numpy as np

from xfer_jax.data.issues import BadInputError, BadRecord, InputIssues
from xfer_jax.data.records import decode_json, decode_utf8, record_parser
from xfer_jax.data.remote import LocalCopies
from xfer_jax.data.shards import ArrayRecordTable, TokenShards
from xfer_jax.data.sources import SourceSpec, source_files

SEPARATORS = {"line": re.compile(rb"\n"), "blank_line": re.compile(rb"\n(?:[ \t\r\f\v]*\n)+")}
LEADING_SPACE = re.compile(rb"\s*")


def _local_copy(copies: LocalCopies, path: str, issues: InputIssues) -> str | None:
    """The local file to read for `path` (a download for a URL); None, counted as unreadable, when it fails."""
    try:
        return copies.local(path)
    except Exception as e:  # noqa: BLE001 -- the store's refusal or a network error: this file is unreadable
        issues.report("unreadable_file", path, (getattr(e, "strerror", None) or str(e)).splitlines()[0])
        return None


def _map(path: str):
    """The bytes of a local file, memory-mapped (no copy in memory); b"" for an empty file (mmap refuses those)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class LineTable:
    """text and JSON-lines files (memory-mapped, indexed by byte range); JSON array files held as JSON lines."""

    def __init__(self, spec: SourceSpec, files: list[str], parse, issues: InputIssues, validate):
        self._json = spec.format != "text"
        self._parse = parse
        self._copies, self._paths, self._blobs, self._maps = LocalCopies(), [], {}, {}
        file_ids, starts, ends = array.array("i"), array.array("q"), array.array("q")  # 8 bytes a document
        for path in files:
            local = _local_copy(self._copies, path, issues)
            try:
                data = _map(local) if local is not None else None
            except OSError as e:
                issues.report("unreadable_file", path, e.strerror or str(e))
                data = None
            if data is None:
                continue
            file_id = len(self._paths)
            self._paths.append(local)
            first = LEADING_SPACE.match(data).end()
            if self._json and data[first:first + 1] == b"[":
                data = self._blobs[file_id] = self._array_as_lines(path, data[:], issues)
                spans = self._spans(data, "line", where=lambda i, _: f"{path}: record {i}")
            else:
                self._maps[file_id] = data  # the scan's map serves the reads of this process
                spans = self._spans(data, "line" if self._json else spec.doc_split, where=lambda _, n: f"{path}:{n}")
            for start, end, where in spans:
                if issues.accepts(self._decode, data[start:end], validate, lambda: where):
                    file_ids.append(file_id)
                    starts.append(start)
                    ends.append(end)
        self._file_ids = np.frombuffer(file_ids, np.int32)
        self._starts = np.frombuffer(starts, np.int64)
        self._ends = np.frombuffer(ends, np.int64)

    @staticmethod
    def _spans(data: bytes, split: str, where):
        """Yields (start, end, location) per record; line numbers are 1-based; a final newline ends no record."""
        start, line, index = 0, 1, 0
        for match in SEPARATORS[split].finditer(data):
            if split == "line" or data[start:match.start()].strip():  # blank-line runs only separate
                yield start, match.start(), where(index, line)
                index += 1
            line += 1 if split == "line" else data[start:match.end()].count(b"\n")  # mmap has no count()
            start = match.end()
        if data[start:].strip():
            yield start, len(data), where(index, line)

    @staticmethod
    def _array_as_lines(path: str, data: bytes, issues: InputIssues) -> bytes:
        try:
            records = json.loads(decode_utf8(data))
        except BadRecord as e:
            issues.report(e.kind, path, str(e))
            return b""
        except json.JSONDecodeError as e:
            issues.report("malformed_json", f"{path}:{e.lineno}", f"column {e.colno}: {e.msg} (whole file skipped)")
            return b""
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode()

    def _decode(self, raw: bytes):
        return self._parse(decode_json(raw) if self._json else decode_utf8(raw))

    def _data(self, file_id: int):
        if file_id in self._blobs:
            return self._blobs[file_id]
        if file_id not in self._maps:
            self._maps[file_id] = _map(self._paths[file_id])
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
        self._parse, self._paths, self._columns, self._cache = parse, [], [], {}
        self._copies = LocalCopies()
        locations = array.array("q")  # (file, row group, row) per valid document
        for path in files:
            local = _local_copy(self._copies, path, issues)
            if local is None:
                continue
            try:
                columns, kept = self._scan(path, local, parse, fields, issues, validate)
            except BadInputError:
                raise
            except Exception as e:  # pyarrow raises OSError or ArrowInvalid on unreadable/corrupt files
                issues.report("unreadable_file", path, str(e))
                continue
            if not columns:
                continue
            for group, row in kept:
                locations.extend((len(self._paths), group, row))
            self._paths.append(local)
            self._columns.append(columns)
        self._locations = np.frombuffer(locations, np.int64).reshape(-1, 3)

    @staticmethod
    def _scan(path, local, parse, fields, issues, validate) -> tuple[list[str], list[tuple[int, int]]]:
        """(columns read, (row group, row) of each good record); raises if the file cannot be read to its end."""
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(local)
        columns = [c for c in fields if c in parquet.schema_arrow.names]
        if not columns:
            issues.report("missing_field", path, f"no column of {fields} (columns: {parquet.schema_arrow.names})")
            return [], []
        kept = []
        for group in range(parquet.num_row_groups):
            for row, record in enumerate(parquet.read_row_group(group, columns=columns).to_pylist()):
                if issues.accepts(parse, record, validate, lambda: f"{path}: row group {group} row {row}"):
                    kept.append((group, row))
        return columns, kept

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


def open_source(spec: SourceSpec, issues: InputIssues, validate=None):
    """The document table of one source; `validate(doc)` may raise BadRecord to refuse more documents."""
    if spec.format == "tokens":
        return TokenShards(source_files(spec))
    parse, fields = record_parser(spec)
    if spec.format == "tfds":
        from xfer_jax.data.tfds_source import TfdsTable

        return TfdsTable(spec, parse, issues, validate)
    if spec.format == "hf_dataset":
        from xfer_jax.data import hf_source

        if not spec.streaming:
            return hf_source.open_hf_dataset(spec, parse, fields, issues, validate)
        builder, files = hf_source.files_in_place(spec)
        if builder == "parquet":
            return ParquetTable(files, parse, fields, issues, validate)
        return LineTable(spec, files, parse, issues, validate)
    files = source_files(spec)
    if spec.format == "parquet":
        return ParquetTable(files, parse, fields, issues, validate)
    if spec.format == "array_record":
        return ArrayRecordTable(spec, files, parse, issues, validate)
    return LineTable(spec, files, parse, issues, validate)
