"""A TFDS dataset as a document table: read by index through TFDS's ArrayRecord data source (the one
`tfds.data_source` returns), no TensorFlow needed.

The dataset must already be prepared as ArrayRecord (`file_format="array_record"`): TFRecord has no random
access, and preparing a catalogue dataset needs TensorFlow, so neither happens here. `tfds.data_source` would
download and prepare a missing catalogue dataset on the spot; instead the dataset's folder (DATA_DIR/NAME/VERSION)
is resolved once, checked, and every process (Grain workers included) reopens that folder with
`tfds.builder_from_directory`, which needs neither the builder's code nor the catalogue. A `gs://` data_dir is
copied once to local disk (the split's shards and the metadata): the ArrayRecord reader reads local files (remote.py
says why).

Like the other tables, every record is parsed once at build time (bad ones counted, good ones indexed); Grain
then shuffles, shards by process and checkpoints its position over the indices, as for ArrayRecord files.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref

from xfer_jax import paths
from xfer_jax.data.issues import InputIssues
from xfer_jax.data.sources import SourceSpec

SCAN_CHUNK = 1024


def import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("format 'tfds' needs tensorflow-datasets (not TensorFlow): "
                          "pip install tensorflow-datasets importlib_resources") from e
    return tfds


def _build_hint(spec: SourceSpec, data_dir: str) -> str:
    return f"`tfds build {spec.name} --data_dir {data_dir} --file_format array_record`"


def check_prepared(spec: SourceSpec):
    """The dataset's builder, read from its prepared folder; raises one line if it is not prepared or not
    randomly accessible (nothing is downloaded)."""
    tfds = import_tfds()
    data_dir = spec.data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    not_prepared = (f"tfds dataset {spec.name!r} is not prepared in {data_dir}: prepare it once with "
                    f"{_build_hint(spec, data_dir)} (a catalogue dataset: where TensorFlow is installed; a builder "
                    "of your own: `tfds build path/to/builder.py ...` or MyBuilder(data_dir=..., "
                    "file_format='array_record').download_and_prepare()), or copy its NAME/VERSION folder there")
    try:
        builder = tfds.builder(spec.name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise FileNotFoundError(not_prepared) from None
    if not builder.is_prepared():
        raise FileNotFoundError(not_prepared)
    formats = builder.info.available_file_formats() or {builder.info.file_format}
    if not formats & set(tfds.core.FileFormat.with_random_access()):
        found = ", ".join(sorted(str(getattr(f, "value", f)) for f in formats if f)) or "no recorded format"
        raise ValueError(f"tfds dataset {spec.name!r} in {builder.data_dir} is stored as {found}, which has no "
                         f"random access: rebuild it with file_format=array_record ({_build_hint(spec, data_dir)})")
    unknown = sorted(_split_names(spec.split or "train") - set(builder.info.splits))
    if unknown:
        raise ValueError(f"tfds dataset {spec.name!r} in {builder.data_dir}: split={spec.split!r} names no split "
                         f"{unknown}; its splits: {sorted(builder.info.splits)}")
    return builder


def prepared_directory(spec: SourceSpec) -> str:
    """The dataset's NAME/VERSION folder, checked; a bucket's is copied to local disk (metadata, wanted splits)."""
    builder = check_prepared(spec)
    directory = os.fspath(builder.data_dir)
    if paths.is_url(directory):
        return _local_folder(directory, _split_names(spec.split or "train"), builder.info.splits)
    return directory


def _split_names(split: str) -> set[str]:
    """'train[:90%]+validation' → {'train', 'validation'}."""
    return {re.sub(r"\[.*\]$", "", part.strip()) for part in split.split("+")}


class _Folder:
    """Owns a temporary folder; removes it when garbage-collected (or at exit)."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="xfer-tfds-")
        weakref.finalize(self, shutil.rmtree, self.path, True)


_FOLDERS: list[_Folder] = []  # live for the process: pickled tables in workers read the same copy


def _local_folder(directory: str, wanted: set[str], splits) -> str:
    """Copies the metadata and the wanted splits' shards of a bucket's NAME/VERSION folder to local disk."""
    others = [s for s in splits.keys() if s not in wanted]
    folder = _Folder()
    _FOLDERS.append(folder)
    remote = paths.path(directory, "data_dir")
    for relative in paths.list_files(remote):
        if "/" in relative or any(f"-{other}." in relative for other in others):
            continue
        paths.copy_file(remote / relative, os.path.join(folder.path, relative))
    return folder.path


class TfdsTable:
    """The valid documents of one TFDS split (slices allowed), by index."""

    def __init__(self, spec: SourceSpec, parse, issues: InputIssues, validate):
        self._label, self._split = spec.label, spec.split or "train"
        self._directory = prepared_directory(spec)
        self._parse, self._source = parse, None
        self._keep = issues.kept(self._scan(), parse, validate, lambda i: f"{self._label} record {i}")

    def _scan(self):
        """(index, record) of every record, read SCAN_CHUNK at a time."""
        records = self._records()
        for start in range(0, len(records), SCAN_CHUNK):
            indices = list(range(start, min(len(records), start + SCAN_CHUNK)))
            batch = (records.__getitems__(indices) if hasattr(records, "__getitems__")
                     else map(records.__getitem__, indices))
            yield from zip(indices, batch)

    def _records(self):
        if self._source is None:
            builder = import_tfds().builder_from_directory(self._directory)
            self._source = builder.as_data_source(split=self._split)
        return self._source

    def __len__(self) -> int:
        return len(self._keep)

    def __getitem__(self, i: int):
        return self._parse(self._records()[int(self._keep[i])])

    def __getstate__(self):
        return {**self.__dict__, "_source": None}
