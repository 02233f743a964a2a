"""Safetensors read and write, one tensor at a time.

Reading checks the header against the file size, so a truncated download fails with the file and tensor named
instead of a segfault or garbage. A local file is memory-mapped; a file in an object store (gs://, ...) is read
by byte range: the 8-byte header length, the JSON header, then each tensor's own bytes in requests of at most
`READ_CHUNK` bytes, so a multi-GB shard is never downloaded whole, and host memory holds the tensor asked for
plus nothing else. Writing lays out the header from shapes alone, then streams each tensor's bytes: a shard
never needs all its tensors in memory at once.
Format: 8-byte little-endian header length, JSON header {name: {dtype, shape, data_offsets}}, raw data.
"""
import json
import os
import pathlib
import struct
from collections.abc import Callable, Iterable

import fsspec
import ml_dtypes
import numpy as np

from xfer_jax import paths

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
READ_CHUNK = 64 << 20  # largest single range request to an object store (bytes)


class _Ranges:
    """Byte ranges of one object-store file, each an exact range request (no read-ahead, no whole download)."""

    def __init__(self, url: str, chunk: int):
        self.fs, self._path = fsspec.core.url_to_fs(url)
        self.chunk = chunk
        self.size = int(self.fs.size(self._path))

    def read(self, start: int, nbytes: int) -> bytes:
        return self.fs.cat_file(self._path, start=start, end=start + nbytes) if nbytes else b""

    def read_into(self, out: np.ndarray, start: int) -> None:
        """Fill the uint8 array `out` with the bytes from `start`, `chunk` bytes per request."""
        for at in range(0, out.size, self.chunk):
            piece = self.read(start + at, min(self.chunk, out.size - at))
            if len(piece) != min(self.chunk, out.size - at):
                raise ValueError(f"short read at byte {start + at}: the object changed or was truncated")
            out[at:at + len(piece)] = np.frombuffer(piece, np.uint8)


class SafetensorsFile:
    """Lazy, validated view of one .safetensors file: `names()`, `shape(name)`, `get(name)` (a mmap view of a
    local file; an array read by byte range from an object store, `read_chunk` bytes per request)."""

    def __init__(self, path: str | os.PathLike, read_chunk: int | None = None):
        self.path = paths.path(path)
        remote = paths.is_url(self.path)
        self._remote = _Ranges(os.fspath(self.path), read_chunk or READ_CHUNK) if remote else None
        if self._remote is not None:
            size = self._remote.size
            header, n = self._header(self._remote.read, size)
        else:
            size = pathlib.Path(self.path).stat().st_size
            with open(self.path, "rb") as f:
                header, n = self._header(lambda start, count: (f.seek(start), f.read(count))[1], size)
        header.pop("__metadata__", None)
        self._data_start = 8 + n
        self._entries = header
        for name, e in header.items():
            if e["dtype"] not in DTYPES:
                raise ValueError(f"{self.path}: tensor {name} has unsupported dtype {e['dtype']}")
            end = self._data_start + e["data_offsets"][1]
            if end > size:
                raise ValueError(
                    f"{self.path}: truncated safetensors file: tensor {name} ends at byte {end}, file has {size} "
                    f"bytes; download the file again"
                )
        local = self._remote is None and size
        self._mmap = np.memmap(pathlib.Path(self.path), dtype=np.uint8, mode="r") if local else None

    def _header(self, read: Callable[[int, int], bytes], size: int) -> tuple[dict, int]:
        head = read(0, 8) if size >= 8 else b""
        if len(head) < 8:
            raise ValueError(f"{self.path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise ValueError(f"{self.path}: truncated safetensors file: header says {n} bytes, file has {size - 8}")
        try:
            return json.loads(read(8, n)), n
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.path}: corrupt safetensors header ({e})") from e

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def dtype(self, name: str) -> np.dtype:
        return DTYPES[self._entries[name]["dtype"]]

    def get(self, name: str) -> np.ndarray:
        e = self._entries[name]
        start, end = (self._data_start + o for o in e["data_offsets"])
        if self._remote is None:
            return self._mmap[start:end].view(DTYPES[e["dtype"]]).reshape(e["shape"])
        raw = np.empty(end - start, np.uint8)
        try:
            self._remote.read_into(raw, start)
        except ValueError as err:
            raise ValueError(f"{self.path}: tensor {name}: {err}; upload the file again") from None
        return raw.view(DTYPES[e["dtype"]]).reshape(e["shape"])


def write_shard(path: str | os.PathLike, specs: Iterable[tuple[str, tuple[int, ...], np.dtype]],
                produce: Callable[[str], np.ndarray]) -> int:
    """Write tensors named by `specs` (name, shape, dtype) to `path`, calling `produce(name)` for each in turn.

    Returns the number of data bytes. Written through `paths.open_atomic` (a sibling renamed over `path`), so a
    killed export or a tensor of the wrong shape leaves no half-written shard under the final name.
    """
    path = paths.path(path)
    header, offset = {}, 0
    specs = list(specs)
    for name, shape, dtype in specs:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": DTYPE_NAMES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with paths.open_atomic(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype in specs:
            array = np.ascontiguousarray(produce(name), dtype=dtype)
            if array.shape != tuple(shape):
                raise ValueError(f"{path}: tensor {name} has shape {array.shape}, header promised {tuple(shape)}")
            f.write(array.tobytes())
    return offset
