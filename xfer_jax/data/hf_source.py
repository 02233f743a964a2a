"""Hugging Face `datasets` as a document table.

`path` is either a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (read with
`datasets.load_from_disk`, memory-mapped), or files (a file, glob or folder, local or gs://) that
`datasets.load_dataset(name, data_files=...)` reads: `name` is the builder ('parquet', 'json', 'arrow', 'csv',
'text'), by default the one the files' suffix names. `split` picks the split, slices included ('train[:90%]').

A loaded dataset is an Arrow table with random access, so like every other table it is scanned once at build
time (bad records counted, good ones indexed) and then read by index: Grain shuffles, shards by process and
checkpoints its position over the indices.

`streaming=True` (parquet and JSON files) skips datasets' conversion of the files into its Arrow cache (a second
copy of the corpus on disk) and reads the files in place, by index, through the `parquet` / `jsonl` readers.
datasets' own IterableDataset is not used for training: it has no random access, so no global shuffle, and its
resumption drops the shuffle buffer, which would break the exact resume every other source gives.
"""
from __future__ import annotations

import os

from xfer_jax.data.issues import InputIssues
from xfer_jax.data.remote import LocalCopies
from xfer_jax.data.sources import SourceSpec, source_files

BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".arrow": "arrow", ".csv": "csv", ".txt": "text"}
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes (DatasetDict, Dataset)
SCAN_BATCH = 1024


def _import_datasets():
    try:
        import datasets
    except ImportError as e:
        raise ImportError("format 'hf_dataset' needs Hugging Face datasets: pip install datasets") from e
    return datasets


def _is_saved(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in SAVED_MARKERS)


def _builder(spec: SourceSpec, files: list[str]) -> str:
    if spec.name:
        return spec.name
    found = {BUILDERS.get(os.path.splitext(f)[1].lower()) for f in files}
    if len(found) != 1 or None in found:
        raise ValueError(f"source lang={spec.lang!r} path={spec.path!r}: cannot tell the datasets builder from the "
                         f"file suffixes ({sorted({os.path.splitext(f)[1] for f in files})}); set name= one of "
                         f"{sorted(set(BUILDERS.values()))}")
    return found.pop()


def _split_of_saved(datasets, loaded, spec: SourceSpec):
    """The split (or slice) of a load_from_disk result: a DatasetDict's split, or a lone Dataset itself."""
    parts = loaded if isinstance(loaded, datasets.DatasetDict) else {spec.split.split("[")[0] or "train": loaded}
    try:
        instructions = datasets.ReadInstruction.from_spec(spec.split or "train").to_absolute(
            {name: len(part) for name, part in parts.items()})
    except (ValueError, KeyError) as e:
        raise ValueError(f"source lang={spec.lang!r} path={spec.path!r}: split={spec.split!r}: {e}; "
                         f"splits saved: {sorted(parts)}") from None
    pieces = [parts[i.splitname].select(range(i.from_, i.to)) for i in instructions]
    return pieces[0] if len(pieces) == 1 else datasets.concatenate_datasets(pieces)


def load(spec: SourceSpec, files: list[str]):
    """The datasets.Dataset a spec names (`files`: local copies of its files, unless it was saved to disk)."""
    datasets = _import_datasets()
    if _is_saved(os.path.expanduser(spec.path)):
        return _split_of_saved(datasets, datasets.load_from_disk(os.path.expanduser(spec.path)), spec)
    try:
        return datasets.load_dataset(_builder(spec, files), data_files={"train": files}, split=spec.split or "train")
    except ValueError as e:  # an unknown split, a bad slice
        raise ValueError(f"source lang={spec.lang!r} path={spec.path!r}: {str(e).splitlines()[0]}") from None


class HfDatasetTable:
    """The valid documents of a (non-streaming) datasets.Dataset, by index; the Dataset memory-maps its Arrow
    files and pickles as their paths, so Grain workers reopen it cheaply."""

    def __init__(self, spec: SourceSpec, dataset, parse, fields, issues: InputIssues, validate):
        columns = [c for c in fields if c in dataset.column_names]
        if not columns:
            raise ValueError(f"source lang={spec.lang!r} path={spec.path!r}: no column {list(fields)} "
                             f"(columns: {dataset.column_names}); set text_field")
        self._dataset, self._parse = dataset.select_columns(columns), parse
        self._keep = issues.kept(self._rows(), parse, validate, lambda i: f"{spec.path}: row {i}")

    def _rows(self):
        """(index, row dict) of every row, read SCAN_BATCH at a time."""
        for start in range(0, len(self._dataset), SCAN_BATCH):
            batch = self._dataset[start:start + SCAN_BATCH]
            yield from enumerate((dict(zip(batch, values)) for values in zip(*batch.values())), start)

    def __len__(self) -> int:
        return len(self._keep)

    def __getitem__(self, i: int):
        return self._parse(self._dataset[int(self._keep[i])])


def open_hf_dataset(spec: SourceSpec, parse, fields, issues: InputIssues, validate) -> HfDatasetTable:
    copies = LocalCopies()  # a bucket's files, until load_dataset has converted them into its Arrow cache
    files = [] if _is_saved(os.path.expanduser(spec.path)) else [copies.local(f) for f in source_files(spec)]
    return HfDatasetTable(spec, load(spec, files), parse, fields, issues, validate)


def files_in_place(spec: SourceSpec) -> tuple[str, list[str]]:
    """streaming=True: (builder, files) of parquet / JSON files that readers.py reads by index where they lie."""
    why = ("a save_to_disk folder is memory-mapped already" if _is_saved(os.path.expanduser(spec.path)) else
           "split slices need datasets' loader" if (spec.split or "train") != "train" else "")
    files = [] if why else source_files(spec)
    builder = "" if why else _builder(spec, files)
    if why or builder not in ("parquet", "json"):
        raise ValueError(f"source lang={spec.lang!r} path={spec.path!r}: streaming=True reads parquet or JSON files "
                         f"in place; {why or f'builder {builder!r} has no such reader'}: drop streaming")
    return builder, files
