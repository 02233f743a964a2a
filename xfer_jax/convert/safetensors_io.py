"""Safetensors read and write, one tensor at a time.

Reading memory-maps the file and checks the header against the file size, so a truncated download fails
with the file and tensor named instead of a segfault or garbage. Writing lays out the header from shapes
alone, then streams each tensor's bytes: a shard never needs all its tensors in memory at once.
Format: 8-byte little-endian header length, JSON header {name: {dtype, shape, data_offsets}}, raw data.
"""
import json
import pathlib
import struct
from collections.abc import Callable, Iterable

import ml_dtypes
import numpy as np

from xfer_jax import paths

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsFile:
    """Lazy, validated view of one .safetensors file: `names()`, `shape(name)`, `get(name)` (a mmap view)."""

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{self.path}: truncated safetensors file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", head)
            if 8 + n > size:
                raise ValueError(f"{self.path}: truncated safetensors file: header says {n} bytes, file has {size - 8}")
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{self.path}: corrupt safetensors header ({e})") from e
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
        self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r") if size else None

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        e = self._entries[name]
        start, end = (self._data_start + o for o in e["data_offsets"])
        return self._mmap[start:end].view(DTYPES[e["dtype"]]).reshape(e["shape"])


def write_shard(path: str | pathlib.Path, specs: Iterable[tuple[str, tuple[int, ...], np.dtype]],
                produce: Callable[[str], np.ndarray]) -> int:
    """Write tensors named by `specs` (name, shape, dtype) to `path`, calling `produce(name)` for each in turn.

    Returns the number of data bytes. Written through `paths.open_atomic` (a sibling renamed over `path`), so a
    killed export or a tensor of the wrong shape leaves no half-written shard under the final name.
    """
    path = pathlib.Path(path)
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
