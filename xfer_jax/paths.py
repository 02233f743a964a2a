"""Where files go and how they get there: the one path check and the one place that writes atomically.

Every write a user could see half-done goes through here: a file is written beside its target and renamed
over it (`write_text`, `write_bytes`, `copy_file`, `open_atomic`), a directory is built beside its target and
swapped in whole (`replace_dir`). A crash therefore leaves either the old content or the new, never a mix, and
a refused write changes nothing. `local_path` rejects the URL schemes this project cannot write (yet) by the
config key or flag that named them, before any work starts.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import tempfile
import uuid

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def local_path(value: str | os.PathLike, key: str) -> pathlib.Path:
    """`value` as an absolute local path; a URL (gs://, s3://, hdfs://, ...) is refused naming `key`."""
    text = os.fspath(value)
    match = _SCHEME.match(text)
    if match:
        raise ValueError(f"{key}={text!r}: {match.group(1)}:// paths are not supported yet; use a local or "
                         f"mounted path (e.g. a gcsfuse mount) instead")
    return pathlib.Path(text).expanduser().resolve()


def _sibling(path: pathlib.Path, tag: str) -> pathlib.Path:
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike, mode: str = "w", **kwargs):
    """`open()` on a temporary sibling that replaces `path` only when the block ends without an error."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> pathlib.Path:
    with open_atomic(path, "w", encoding=encoding) as f:
        f.write(text)
    return pathlib.Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    with open_atomic(path, "wb") as f:
        f.write(data)
    return pathlib.Path(path)


def write_jsonl(path: str | os.PathLike, records) -> pathlib.Path:
    """One JSON object a line (UTF-8, not ASCII-escaped), atomically."""
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> pathlib.Path:
    """Copy `src` to `dst` atomically (dst never holds part of src)."""
    with open(src, "rb") as f_src, open_atomic(dst, "wb") as f_dst:
        shutil.copyfileobj(f_src, f_dst)
    return pathlib.Path(dst)


def check_empty_or_overwrite(out: str | os.PathLike, overwrite: bool, what: str = "output directory") -> pathlib.Path:
    """Refuse an existing non-empty `out` unless `overwrite` (and a file where a directory belongs, always)."""
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{what} {out} is a file; choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{what} {out} is not empty; pass --overwrite to replace it, or choose a new path")
    return out


def check_apart(out: str | os.PathLike, others: dict[str, str | os.PathLike | None], what: str = "--out") -> None:
    """Refuse an output directory that is, or holds, another path of the command (an input it reads, another
    output it writes): replacing `out` with --overwrite would delete that path. `others` maps flag -> path."""
    out = pathlib.Path(out).resolve()
    for flag, other in others.items():
        if other is None:
            continue
        other = pathlib.Path(other).resolve()
        if other == out or out in other.parents:
            raise ValueError(f"{what} {out} {'is' if other == out else 'holds'} {flag} {other}, which replacing "
                             f"{what} would delete; choose an output path outside it")


@contextlib.contextmanager
def replace_dir(out: str | os.PathLike, overwrite: bool, what: str = "output directory"):
    """Yield a fresh temporary directory beside `out`; when the block succeeds it becomes `out`.

    A non-empty `out` is refused unless `overwrite` (checked before anything is written). With overwrite, the
    old `out` is swapped out and removed only after the new one is complete, so `out` never holds a mix of two
    writes, and a failure inside the block leaves the old `out` exactly as it was."""
    out = check_empty_or_overwrite(out, overwrite, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); the output is an ordinary folder
    try:
        yield tmp
        old = _sibling(out, "old") if out.exists() else None
        if old is not None:
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
