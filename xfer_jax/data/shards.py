"""Readers of ArrayRecord-based sources: ArrayRecord files of text, pre-tokenised shards (TFDS: tfds_source.py).

Like readers.py, each scans its records once at build time (bad ones counted, good ones indexed) and then
reads by index; the ArrayRecord readers are opened lazily in each process by Grain's data source. Files in a
bucket are read from local copies (remote.py): an ArrayRecord text source is copied whole at the scan (every
process scans every text source); pre-tokenised shards, which are never scanned, one shard at a time, when this
process first reads from it, so a process downloads only the shards its share of the documents lies in.
"""
from __future__ import annotations

import array
import json
import os
import threading

import numpy as np

from xfer_jax import paths
from xfer_jax.data.issues import BadInputError, InputIssues
from xfer_jax.data.records import decode_json, decode_utf8
from xfer_jax.data.remote import LocalCopies
from xfer_jax.data.sources import SourceSpec

TOKENS_META = "tokenized.json"


class ArrayRecordTable:
    """ArrayRecord files of UTF-8 text (or JSON objects when a text field is set)."""

    SCAN_CHUNK = 4096

    def __init__(self, spec: SourceSpec, files: list[str], parse, issues: InputIssues, validate):
        import grain

        self._json, self._parse, self._copies = bool(spec.text_field), parse, LocalCopies()
        readable, keep, offset = [], array.array("q"), 0
        for path in files:
            try:
                local = self._copies.local(path)
            except Exception as e:  # noqa: BLE001 -- the store's refusal or a network error: this file is unreadable
                issues.report("unreadable_file", path, (getattr(e, "strerror", None) or str(e)).splitlines()[0])
                continue
            try:
                count, kept = self._scan(path, local, issues, validate)
            except BadInputError:
                raise
            except Exception as e:  # the C++ reader raises RuntimeError/ValueError on bad or truncated files
                issues.report("unreadable_file", path, str(e))
                continue
            readable.append(local)
            keep.extend(offset + i for i in kept)
            offset += count
        self._source = grain.sources.ArrayRecordDataSource(readable) if readable else []
        self._keep = np.frombuffer(keep, np.int64)

    def _scan(self, path: str, local: str, issues: InputIssues, validate) -> tuple[int, array.array]:
        """(records in the file, indices of the good ones); raises if the file cannot be read to its end."""
        from array_record.python import array_record_module

        reader = array_record_module.ArrayRecordReader(local)
        if not reader.ok():
            raise OSError("not a readable ArrayRecord file")
        count, kept = reader.num_records(), array.array("q")
        for chunk in range(0, count, self.SCAN_CHUNK):
            for i, raw in enumerate(reader.read(chunk, min(count, chunk + self.SCAN_CHUNK)), chunk):
                if issues.accepts(self._decode, raw, validate, lambda: f"{path}: record {i}"):
                    kept.append(i)
        reader.close()
        return count, kept

    def _decode(self, raw: bytes):
        return self._parse(decode_json(raw) if self._json else decode_utf8(raw))

    def __len__(self) -> int:
        return len(self._keep)

    def __getitem__(self, i: int):
        return self._decode(self._source[int(self._keep[i])])


class TokenShards:
    """Shards written by `xfer data tokenize`: one record per document, its token ids as `dtype` bytes.

    Each shard directory holds TOKENS_META (tokenizer fingerprint: `Tokenizer.sha256`, the same for either
    backend's files however they are laid out; dtype, BOS/EOS, counts); a pipeline reading shards made with
    another tokenizer would train on wrong ids, so `check` refuses that. Local shards are opened by Grain's
    ArrayRecord source; shards in a bucket are indexed from the records per shard in TOKENS_META (a file that
    an older `xfer data tokenize` wrote without them: downloaded to count) and each is downloaded when first read.
    """

    def __init__(self, files: list[str]):
        import grain

        metas = {}
        for path in files:
            meta_path = os.fspath(paths.path(path).parent / TOKENS_META)
            if meta_path not in metas:
                meta_file = paths.path(meta_path)
                if not meta_file.is_file():
                    raise FileNotFoundError(f"{path}: no {TOKENS_META} beside it; was it written (completely) by "
                                            "`xfer data tokenize`?")
                metas[meta_path] = json.loads(meta_file.read_text())
        self._metas = metas
        self._dtype = np.dtype(next(iter(metas.values()))["dtype"])
        if any(paths.is_url(f) for f in files):
            self._source = _BucketShards(files, metas)
        else:
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


class _BucketShards:
    """Records of shards in a bucket by global index; a shard is downloaded (LocalCopies) when first read."""

    def __init__(self, files: list[str], metas: dict[str, dict]):
        self._files, self._copies, self._readers, self._lock = files, LocalCopies(), {}, threading.Lock()
        counts = []
        for path in files:
            listed = metas[os.fspath(paths.path(path).parent / TOKENS_META)].get("shard_documents", {})
            name = paths.path(path).name
            counts.append(listed[name] if name in listed else len(self._reader(len(counts))))
        self._ends = np.cumsum(counts)
        self._counts = counts

    def _reader(self, shard: int):
        with self._lock:
            if shard not in self._readers:
                import grain

                reader = grain.sources.ArrayRecordDataSource([self._copies.local(self._files[shard])])
                expected = getattr(self, "_counts", None)
                if expected is not None and len(reader) != expected[shard]:
                    raise ValueError(f"{self._files[shard]} holds {len(reader)} records but its {TOKENS_META} lists "
                                     f"{expected[shard]}: the shards changed after `xfer data tokenize`; re-run it")
                self._readers[shard] = reader
            return self._readers[shard]

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, i: int) -> bytes:
        shard = int(np.searchsorted(self._ends, i, side="right"))
        return self._reader(shard)[i - (int(self._ends[shard - 1]) if shard else 0)]

    def __getstate__(self):
        return {**self.__dict__, "_readers": {}, "_lock": None}

    def __setstate__(self, state) -> None:
        self.__dict__.update(state, _lock=threading.Lock())
