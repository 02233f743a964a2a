"""Where files go and how they get there: the one path helper and the one place that writes atomically.

Every path a user names goes through `path()`: a local path becomes an absolute `epath.Path`, a URL whose
scheme has a client installed (gs:// through gcsfs, s3:// through s3fs, ...) stays a URL `epath.Path` (the
library Orbax itself uses), and anything else is refused by the config key or flag that named it. Code reads
and writes through that object (`open`, `read_bytes`, `exists`, `glob`, ...), never through `pathlib` or
`open()`, so the same call works on a disk and in a bucket.

Every write a user could see half-done goes through here: a file is written beside its target and renamed over
it (`write_text`, `write_bytes`, `copy_file`, `open_atomic`; on an object store the temporary object is
copied over the target, and an object is only visible once its upload completes), a directory is built beside
its target and swapped in whole (`replace_dir`; on an object store it is built on local disk and uploaded with
the files that make it loadable — config.json and the safetensors index — last). A crash therefore leaves
either the old content or the new, never a mix, and a refused write changes nothing.

`STORAGE_EMULATOR_HOST` (e.g. http://127.0.0.1:4443, a fake-gcs-server) points every client at a GCS
emulator: gcsfs and Google's client read it themselves; this module sets what tensorstore (Orbax's array
store), gcsfs's bucket-layout probe and array_record's reader need from it when it is imported.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import pathlib
import re
import shutil
import socket
import tempfile
import urllib.parse
import uuid

import fsspec
from etils import epath

Path = epath.Path
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
CLIENTS = {"gs": "gcsfs", "s3": "s3fs", "az": "adlfs", "hf": "huggingface_hub"}  # the schemes epath serves
LOAD_LAST = ("model.safetensors.index.json", "adapter_config.json", "config.json")  # uploaded last, in order


def configure_storage_emulator(environ=os.environ) -> None:
    """From STORAGE_EMULATOR_HOST alone, what each client needs: tensorstore's endpoint and test token, and
    gcsfs without its bucket-layout lookup (a control-plane RPC an emulator does not serve). Idempotent; the
    user's own settings win."""
    host = environ.get("STORAGE_EMULATOR_HOST")
    if not host:
        return
    url = host if "://" in host else f"http://{host}"
    environ.setdefault("TENSORSTORE_GCS_HTTP_URL", url)
    environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
    environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    environ.setdefault("CLOUD_STORAGE_EMULATOR_ENDPOINT", url)  # array_record's own GCS reader


configure_storage_emulator()


def is_url(value) -> bool:
    return bool(_SCHEME.match(os.fspath(value)))


def path(value: str | os.PathLike, key: str = "path") -> epath.Path:
    """`value` as a Path: a local path made absolute, or a URL whose scheme has its client installed; any
    other URL is refused naming `key` and the package that serves its scheme."""
    text = os.fspath(value)
    match = _SCHEME.match(text)
    if not match:
        return epath.Path(pathlib.Path(text).expanduser().resolve())
    scheme = match.group(1)
    client = CLIENTS.get(scheme)
    if client is None:
        raise ValueError(f"{key}={text!r}: {scheme}:// is not a storage scheme this project reads; use a local "
                         f"path or one of {', '.join(s + '://' for s in CLIENTS)}")
    if importlib.util.find_spec(client) is None:
        raise ValueError(f"{key}={text!r}: {scheme}:// paths need the {client} package (pip install {client})")
    if not text[len(scheme) + 3:].strip("/"):
        raise ValueError(f"{key}={text!r}: name a bucket, e.g. {scheme}://bucket/folder")
    return epath.Path(text)


def local_path(value: str | os.PathLike, key: str, hint: str = "copy it to a local path first") -> pathlib.Path:
    """`value` as an absolute local path, for the few tools that only use local files (a URL is refused)."""
    text = os.fspath(value)
    if is_url(text):
        raise ValueError(f"{key}={text!r}: this must be a local path; {hint}")
    return pathlib.Path(text).expanduser().resolve()


def _endpoint(scheme: str) -> tuple[str, int] | None:
    """(host, port) the scheme's client talks to, where this module knows it (gs: the emulator or Google)."""
    if scheme != "gs":
        return None
    url = urllib.parse.urlsplit(os.environ.get("STORAGE_EMULATOR_HOST") and
                                os.environ["TENSORSTORE_GCS_HTTP_URL"] or "https://storage.googleapis.com")
    return url.hostname, url.port or (443 if url.scheme == "https" else 80)


def check_reachable(p: epath.Path, key: str, *, must_exist: bool) -> None:
    """Before any work: the store answers (a connect with a short timeout, not the clients' minute of
    retries), the bucket exists, and (`must_exist`) so does the object or folder — else one line naming the
    URL, the key and the fix. Local paths: only `must_exist`."""
    text = os.fspath(p)
    if not is_url(text):
        if must_exist and not p.exists():
            raise FileNotFoundError(f"{key}={text!r} does not exist")
        return
    scheme = _SCHEME.match(text).group(1)
    endpoint = _endpoint(scheme)
    if endpoint is not None:
        try:
            socket.create_connection(endpoint, timeout=5).close()
        except OSError as e:
            via = " (STORAGE_EMULATOR_HOST)" if os.environ.get("STORAGE_EMULATOR_HOST") else ""
            raise ConnectionError(f"{key}={text!r}: cannot reach the storage endpoint {endpoint[0]}:{endpoint[1]}"
                                  f"{via}: {e.strerror or e}; check the network or the emulator") from None
    bucket = epath.Path(f"{scheme}://{text[len(scheme) + 3:].split('/')[0]}")
    try:
        if not bucket.exists():
            raise FileNotFoundError(f"{key}={text!r}: bucket {bucket} does not exist (create it, e.g. "
                                    f"`gcloud storage buckets create {bucket}`)")
        if must_exist and not p.exists():
            raise FileNotFoundError(f"{key}={text!r} does not exist in {bucket}")
    except (FileNotFoundError, ConnectionError):
        raise
    except Exception as e:  # auth, permissions, HTTP errors: the client's message, on one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PermissionError(f"{key}={text!r}: the store refused the request: {first}") from None


def _sibling(p: epath.Path, tag: str) -> epath.Path:
    return p.parent / f".{p.name}.{tag}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def open_atomic(target: str | os.PathLike, mode: str = "w", **kwargs):
    """`open()` on a temporary sibling that replaces `target` only when the block ends without an error. On an
    object store the upload itself is the temporary: an object appears only when its upload is finalised, and
    a block that raises discards the upload, so the old object (if any) stays."""
    target = path(target)
    if is_url(target):
        raw = target.open(mode.replace("b", "").replace("w", "wb"))
        f = raw if "b" in mode else io.TextIOWrapper(raw, **kwargs)
        try:
            yield f
            f.flush()
        except BaseException:
            raw.discard()
            raise
        raw.close()
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    try:
        with tmp.open(mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(p: str | os.PathLike, text: str, encoding: str = "utf-8") -> epath.Path:
    return write_bytes(p, text.encode(encoding))


def write_bytes(p: str | os.PathLike, data: bytes) -> epath.Path:
    with open_atomic(p, "wb") as f:
        f.write(data)
    return path(p)


def write_jsonl(p: str | os.PathLike, records) -> epath.Path:
    """One JSON object a line (UTF-8, not ASCII-escaped), atomically."""
    return write_text(p, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def append_jsonl(p: str | os.PathLike, record) -> epath.Path:
    """Add one JSON line to `p` (created with its folder if absent). A bucket object cannot be appended to, so the
    file is rewritten whole, atomically: for records written now and then (benchmarks), not every step."""
    target = path(p)
    target.parent.mkdir(parents=True, exist_ok=True)
    kept = target.read_text(encoding="utf-8") if target.exists() else ""
    if kept and not kept.endswith("\n"):
        kept += "\n"
    return write_text(target, kept + json.dumps(record, ensure_ascii=False) + "\n")


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> epath.Path:
    """Copy `src` to `dst` atomically (dst never holds part of src); either may be a URL."""
    with path(src).open("rb") as f_src, open_atomic(dst, "wb") as f_dst:
        shutil.copyfileobj(f_src, f_dst, 1 << 24)
    return path(dst)


@contextlib.contextmanager
def local_copy(p: str | os.PathLike, key: str = "path"):
    """A local file holding `p`'s bytes, for readers that need one (mmap, C++ readers): `p` itself when local,
    else a download into a temporary directory removed when the block ends."""
    p = path(p, key)
    if not is_url(p):
        yield pathlib.Path(p)
        return
    with tempfile.TemporaryDirectory(prefix="xfer-") as tmp:
        local = pathlib.Path(tmp) / p.name
        with p.open("rb") as f_src, open(local, "wb") as f_dst:
            shutil.copyfileobj(f_src, f_dst, 1 << 24)
        yield local


def check_empty_or_overwrite(out: str | os.PathLike, overwrite: bool, what: str = "output directory") -> epath.Path:
    """Refuse an existing non-empty `out` unless `overwrite` (and a file where a directory belongs, always)."""
    out = path(out, what)
    if out.is_file():
        raise FileExistsError(f"{what} {out} is a file; choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{what} {out} is not empty; pass --overwrite to replace it, or choose a new path")
    return out


def _within(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def check_apart(out: str | os.PathLike, others: dict[str, str | os.PathLike | None], what: str = "--out") -> None:
    """Refuse an output directory that is, or holds, another path of the command (an input it reads, another
    output it writes): replacing `out` with --overwrite would delete that path. `others` maps flag -> path."""
    out = os.fspath(path(out, what))
    for flag, other in others.items():
        if other is None:
            continue
        other = os.fspath(path(other, flag))
        if _within(other, out):
            raise ValueError(f"{what} {out} {'is' if other == out else 'holds'} {flag} {other}, which replacing "
                             f"{what} would delete; choose an output path outside it")


def forget_listings(p: epath.Path) -> None:
    """Drop the store client's cached folder listings (fsspec caches them per process), so what another process
    committed since is seen; nothing to do on a local disk."""
    if is_url(p):
        for fs in list(fsspec.get_filesystem_class(os.fspath(p).split("://")[0])._cache.values()):
            fs.invalidate_cache()


def list_files(folder: epath.Path) -> list[str]:
    """Every file under `folder`, as paths relative to it (one listing request on an object store)."""
    if not is_url(folder):
        root = pathlib.Path(folder)
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    fs, root = fsspec.core.url_to_fs(os.fspath(folder))
    return sorted(name[len(root.rstrip("/")) + 1:] for name in fs.find(root))


def upload_dir(local: pathlib.Path, out: epath.Path) -> None:
    """Copy the files of `local` under the prefix `out`, those in LOAD_LAST last (in that order), then remove
    objects of an earlier upload that the new one does not have. Before the first object, the old loadable
    markers are deleted, so a reader never sees new markers over a half-written folder, or old ones over new
    weights."""
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    old = set(list_files(out))
    for name in LOAD_LAST:
        if name in old:
            (out / name).unlink()
    rank = {name: i for i, name in enumerate(LOAD_LAST)}
    for name in sorted(files, key=lambda n: (rank.get(n, -1), n)):
        copy_file(local / name, out / name)
    for name in sorted(old - set(files)):
        (out / name).unlink()


@contextlib.contextmanager
def replace_dir(out: str | os.PathLike, overwrite: bool, what: str = "output directory"):
    """Yield a fresh temporary directory beside `out`; when the block succeeds it becomes `out`.

    A non-empty `out` is refused unless `overwrite` (checked before anything is written). With overwrite, the
    old `out` is swapped out and removed only after the new one is complete, so `out` never holds a mix of two
    writes, and a failure inside the block leaves the old `out` exactly as it was. On an object store (no
    rename of a folder) the directory is built on local disk and uploaded by `upload_dir`."""
    out = check_empty_or_overwrite(out, overwrite, what)
    if is_url(out):
        with tempfile.TemporaryDirectory(prefix="xfer-upload-") as tmp:
            yield pathlib.Path(tmp)
            upload_dir(pathlib.Path(tmp), out)
        return
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); the output is an ordinary folder
    try:
        yield tmp
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}") if out.exists() else None
        if old is not None:
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
