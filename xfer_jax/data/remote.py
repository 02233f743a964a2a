"""Local copies of the source files that live in a bucket, for the readers that need a local file.

mmap (text and JSON lines) and the ArrayRecord C++ reader read local files only. array_record 0.8's reader can
open gs:// itself (riegeli's GCS reader, through google-cloud-cpp: its own credentials, and the emulator only
through CLOUD_STORAGE_EMULATOR_ENDPOINT), but then every record is one ranged request, far too slow for
shuffled reads; so a file on a bucket is downloaded once (`paths.copy_file`: streamed, atomic) and read locally.

`paths.local_copy` lasts for one `with` block; a document table lasts as long as the pipeline that reads it, and
Grain's worker processes read the same files. So the copies go into one temporary directory per table: the
table that made it removes it when garbage-collected (or at exit); a pickled copy (a Grain worker) only reads
and adds to it, so each file is downloaded once per host, whichever process needs it first.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import weakref

from xfer_jax import paths


class LocalCopies:
    """`local(name)`: a local path holding `name`'s bytes (`name` itself when it is local)."""

    def __init__(self):
        self.directory: str | None = None  # made on the first URL, so local-only sources create nothing
        self._lock = threading.Lock()
        self._owner = None

    def local(self, name: str) -> str:
        if not paths.is_url(name):
            return name
        with self._lock:
            if self.directory is None:
                self.directory = tempfile.mkdtemp(prefix="xfer-data-")
                self._owner = weakref.finalize(self, shutil.rmtree, self.directory, True)
            digest = hashlib.sha256(name.encode()).hexdigest()[:16]
            target = os.path.join(self.directory, f"{digest}-{paths.path(name).name}")
            if not os.path.exists(target):  # another process of this host may have fetched it already
                paths.copy_file(name, target)
            return target

    def __getstate__(self):
        return {"directory": self.directory}  # a pickled copy never removes the owner's directory

    def __setstate__(self, state) -> None:
        self.directory, self._lock, self._owner = state["directory"], threading.Lock(), None
