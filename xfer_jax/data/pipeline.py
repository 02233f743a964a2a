"""The training and evaluation data pipelines, built from the `data` config section.

Public API:
  default_data_config() -> ConfigDict
      The `data` section with every field and its default; stage configs start from it.
  make_train_iterator(data_cfg, *, sharding=None, seed=None, tokenizer=None) -> TrainIterator
      Endless (or token-budgeted) iterator of global batches. With `sharding` (a NamedSharding over the
      batch axis) each batch is a dict of jax.Arrays of global shape [batch_size, seq_len] assembled with
      `jax.make_array_from_process_local_data`; without it, a dict of this process's numpy arrays.
      `.get_state()` / `.set_state()`, `.save_args()` / `.restore_args()` (Orbax composite items),
      `.metrics()` (skipped bad input by kind, documents in use per language), `.close()`.
  make_eval_batches(data_cfg, *, tokenizer=None, batch_size=None) -> dict[str, EvalSet]
      The held-out sources per language, packed and batched deterministically (no shuffling), with the
      document/character/token counts needed for bits per character.
  to_device(batch, sharding) -> dict of jax.Array   (a numpy process-local batch onto the global mesh)

Batch format (see packing.py): tokens, targets, segment_ids, positions, lang int32 [B, L]; loss_weights
float32 [B, L]. `lang` indexes `languages(data_cfg)`.

Train pipeline, per source: documents (random access; bad records skipped and counted at build time) →
optional fixed sample (`max_documents`) → this process's share (`process_share`: a contiguous block, so a
process reads, and from a bucket downloads, only the shards its documents lie in) → global shuffle,
reshuffled every epoch → tokenise (BOS/EOS; templates and masks for instruction data) → chunks of at most
seq_len. Then: weighted mixture of all sources (mixture.py) → packing (packing.py) → batches of
batch_size / process_count rows → optional worker processes (grain mp_prefetch). Same seed and config,
same batches; the iterator state restores the exact stream.
"""
from __future__ import annotations

import dataclasses

import grain
import jax
from absl import flags
import ml_collections
import numpy as np

from xfer_jax.data import packing
from xfer_jax.data.examples import ExampleBuilder
from xfer_jax.data.issues import InputIssues
from xfer_jax.data.mixture import WeightedMixIterDataset, WeightedMixIterator
from xfer_jax.data.readers import open_source
from xfer_jax.data.records import document_characters
from xfer_jax.data.shards import TokenShards
from xfer_jax.data.sources import SourceSpec, specs_from_config
from xfer_jax.data.tokenizer import Tokenizer


def default_data_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.sources = []  # list of dicts, see sources.SourceSpec: lang, path, format, text_field, weight, ...
    cfg.heldout = []  # same form; weights and budgets are ignored
    cfg.languages = []  # order of the `lang` index; empty: order of first appearance in sources, then heldout
    cfg.tokenizer = ""  # a sentencepiece .model, a tokenizer.json, or a directory holding either
    cfg.seq_len = 2048
    cfg.batch_size = 8  # global rows per batch, split evenly over JAX processes
    cfg.packing = "first_fit"  # 'first_fit' | 'concat'
    cfg.packing_bins = 64  # rows filled at a time by first-fit (more: less padding, more mixing)
    cfg.mix_unit = "tokens"  # source weights hold in 'tokens' or in 'documents'
    cfg.add_bos = True  # text documents; instruction templates place their own BOS/EOS
    cfg.add_eos = True
    cfg.seed = 0
    cfg.worker_count = 0  # grain worker processes (mp_prefetch); 0 = in the training process
    cfg.worker_buffer_size = 2  # batches each worker keeps ready
    cfg.read_threads = 0  # threads per source reading and tokenising (0: inline; use workers for parallelism)
    cfg.read_buffer = 64  # documents per source read ahead
    cfg.strict = False  # True: stop at the first bad record; False: skip, count, warn
    cfg.instruct = ml_collections.ConfigDict()
    cfg.instruct.template = "alpaca"  # 'alpaca' | 'llama2_chat' | 'plain' | 'tokenizer' (its chat template)
    cfg.instruct.system = ""  # non-empty: replaces the template's default system text
    cfg.instruct.prompt = ""  # non-empty: replaces the template's prompt format ({system}, {user})
    cfg.instruct.system_format = ""  # non-empty: replaces the template's system format ({system})
    return cfg


def languages(data_cfg) -> list[str]:
    """The language list that `lang` indexes."""
    if data_cfg.languages:
        return list(data_cfg.languages)
    seen = [entry["lang"] for entry in list(data_cfg.sources) + list(data_cfg.heldout)]
    return list(dict.fromkeys(seen))


def _lang_index(data_cfg, spec: SourceSpec) -> int:
    langs = languages(data_cfg)
    if spec.lang not in langs:
        raise ValueError(f"source lang={spec.lang!r} is not in data.languages={langs}")
    return langs.index(spec.lang)


def _source_seed(seed: int, index: int, purpose: int) -> int:
    return int(np.random.SeedSequence([seed, index, purpose]).generate_state(1)[0])


def _check_config(data_cfg, specs: list[SourceSpec]) -> None:
    if not specs:
        raise ValueError("data.sources is empty: add at least one source dict (lang, path, format, weight)")
    if data_cfg.batch_size % jax.process_count():
        raise ValueError(f"data.batch_size={data_cfg.batch_size} must divide by {jax.process_count()} processes")
    if data_cfg.packing == "concat" and any(spec.is_instruct for spec in specs):
        raise ValueError("instruction sources need data.packing='first_fit' (concat would cut prompts from responses)")


def _source_dataset(spec, index, data_cfg, builder, issues, seed) -> tuple[grain.IterDataset, int]:
    table = open_source(spec, issues, validate=builder.validate)
    if isinstance(table, TokenShards):
        table.check(builder.tokenizer.sha256(), data_cfg.add_bos, data_cfg.add_eos)
    chosen = np.arange(len(table))
    if spec.max_documents and spec.max_documents < len(table):
        chosen = np.random.default_rng(_source_seed(seed, index, 1)).permutation(len(table))[: spec.max_documents]
    docs = grain.MapDataset.source(Subset(table, process_share(chosen, jax.process_index(), jax.process_count())))
    if len(docs) == 0:
        raise ValueError(f"source lang={spec.lang!r} {spec.label!r} has no usable document for process "
                         f"{jax.process_index()} ({issues.total()} bad records skipped so far"
                         + (f": {issues.reasons()})" if issues.total() else ")"))
    examples = docs.shuffle(seed=_source_seed(seed, index, 2)).repeat().map(builder)
    read = grain.ReadOptions(num_threads=data_cfg.read_threads, prefetch_buffer_size=data_cfg.read_buffer)
    stream = grain.experimental.FlatMapIterDataset(examples.to_iter_dataset(read), _Flatten())
    return stream, len(chosen)


def process_share(chosen: np.ndarray, index: int, count: int) -> np.ndarray:
    """Process `index`'s documents of `chosen`: a contiguous block of them in file order (sizes differ by at
    most one), so that a process's documents lie in about 1/count of the files (pre-tokenised shards in a bucket
    are downloaded by the processes that read them); one process keeps `chosen` as it is."""
    return chosen if count == 1 else np.array_split(np.sort(chosen), count)[index]


class Subset:
    """The documents of `table` at `indices`: a fixed sample and this process's shard of it.

    Index arithmetic stays here, on a plain source, because Grain's slices of shuffled datasets leak into
    the next epoch's permutation once repeated.
    """

    def __init__(self, table, indices: np.ndarray):
        self.table, self.indices = table, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.table[int(self.indices[i])]


class _Flatten(grain.experimental.FlatMapTransform):
    """A document's list of chunks → the chunks (the fan-out is unbounded: one chunk per seq_len tokens)."""

    max_fan_out = 1 << 30

    def flat_map(self, element):
        return element


class PadBatch:
    """Pads the last, partial batch of a finite (token-budgeted) stream with empty rows: no token is lost."""

    def __init__(self, rows: int):
        self.rows = rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = self.rows - len(batch["tokens"])
        if not missing:
            return batch
        return {k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


class TrainIterator:
    """Global batches of the train mixture, with grain state for exact resumption."""

    def __init__(self, dataset: grain.IterDataset, sharding, global_shape, issues, documents):
        self._iterator = dataset.__iter__()
        self._sharding, self._global_shape = sharding, global_shape
        self._issues, self._documents = issues, documents

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._iterator)
        return batch if self._sharding is None else to_device(batch, self._sharding, self._global_shape)

    def get_state(self) -> dict:
        return self._iterator.get_state()

    def set_state(self, state: dict) -> None:
        self._iterator.set_state(state)

    def save_args(self):
        """Orbax args that save this iterator's state (one JSON file per process): put it in your Composite."""
        return grain.checkpoint.CheckpointSave(self._iterator)

    def restore_args(self):
        """Orbax args that restore this iterator in place from a checkpoint saved with `save_args`."""
        return grain.checkpoint.CheckpointRestore(self._iterator)

    def metrics(self) -> dict[str, int]:
        return {**self._issues.metrics(), **{f"data/documents/{k}": v for k, v in self._documents.items()}}

    def mixer(self):
        """The weighted mixer inside this process's pipeline (its weights can change: train/guard.py); None when
        it runs in grain worker processes (data.worker_count > 0), out of reach."""
        stack = [self._iterator]
        while stack:
            it = stack.pop()
            if isinstance(it, WeightedMixIterator):
                return it
            stack.extend(getattr(it, "_parents", []) or [])
        return None

    def close(self) -> None:
        self._iterator.close()


def to_device(batch: dict[str, np.ndarray], sharding, global_shape=None) -> dict[str, jax.Array]:
    """Process-local numpy rows → global jax.Arrays; `global_shape` defaults to rows × process_count."""
    return {
        key: jax.make_array_from_process_local_data(
            sharding, value, global_shape or (value.shape[0] * jax.process_count(), *value.shape[1:])
        )
        for key, value in batch.items()
    }


def make_train_iterator(data_cfg, *, sharding=None, seed: int | None = None, tokenizer: Tokenizer | None = None):
    seed = data_cfg.seed if seed is None else seed
    specs = specs_from_config(data_cfg.sources, "data.sources")
    _check_config(data_cfg, specs)
    tokenizer = tokenizer or Tokenizer.load(data_cfg.tokenizer)
    issues = InputIssues(strict=data_cfg.strict)
    streams, documents = [], {}
    splits = jax.process_count() * max(1, data_cfg.worker_count)  # budgets are shared by every stream copy
    for index, spec in enumerate(specs):
        builder = ExampleBuilder(tokenizer, data_cfg, _lang_index(data_cfg, spec))
        stream, count = _source_dataset(spec, index, data_cfg, builder, issues, seed)
        streams.append(stream)
        documents[spec.lang] = documents.get(spec.lang, 0) + count
    issues.warn()
    ds = WeightedMixIterDataset(
        streams, [s.weight for s in specs], data_cfg.mix_unit, [s.token_budget / splits for s in specs]
    )
    ds = packing.PackIterDataset(ds, data_cfg.seq_len, data_cfg.packing, num_bins=data_cfg.packing_bins, seed=seed)
    ds = ds.batch(data_cfg.batch_size // jax.process_count()).map(PadBatch(data_cfg.batch_size // jax.process_count()))
    if data_cfg.worker_count:
        if not flags.FLAGS.is_parsed():  # grain reads absl flags; outside an absl app, take their defaults
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=data_cfg.worker_count, per_worker_buffer_size=data_cfg.worker_buffer_size
        ))
    return TrainIterator(ds, sharding, (data_cfg.batch_size, data_cfg.seq_len), issues, documents)


@dataclasses.dataclass
class EvalSet:
    """One language's held-out data: this process's part of every global batch, and global totals."""

    batches: list[dict[str, np.ndarray]]
    documents: int
    characters: int
    tokens: int  # target tokens (loss weight 1) over all batches of all processes


def make_eval_batches(data_cfg, *, tokenizer: Tokenizer | None = None, batch_size: int | None = None):
    """Held-out sources, per language, in file order; every process packs all rows and keeps its slice."""
    tokenizer = tokenizer or Tokenizer.load(data_cfg.tokenizer)
    batch_size = batch_size or data_cfg.batch_size
    if batch_size % jax.process_count():
        raise ValueError(f"eval batch size {batch_size} must divide by {jax.process_count()} processes")
    issues = InputIssues(strict=data_cfg.strict)
    examples, counts = {}, {}
    for spec in specs_from_config(data_cfg.heldout, "data.heldout"):
        builder = ExampleBuilder(tokenizer, data_cfg, _lang_index(data_cfg, spec))
        table = open_source(spec, issues, validate=builder.validate)
        docs = [table[i] for i in range(len(table))]
        counts.setdefault(spec.lang, [0, 0])
        counts[spec.lang][0] += len(docs)
        counts[spec.lang][1] += sum(document_characters(doc) for doc in docs)
        examples.setdefault(spec.lang, []).extend(chunk for doc in docs for chunk in builder(doc))
    issues.warn()
    return {lang: _eval_set(lang, chunks, counts[lang], data_cfg, batch_size, issues) for lang, chunks in examples.items()}


def _eval_set(lang, chunks, counts, data_cfg, batch_size, issues) -> EvalSet:
    if not chunks:
        why = f": {issues.reasons()}" if issues.total() else ""
        raise ValueError(f"data.heldout: no usable document for lang={lang!r}{why}")
    rows = list(packing.PackIterDataset(
        grain.MapDataset.source(chunks).to_iter_dataset(), data_cfg.seq_len, data_cfg.packing,
        num_bins=data_cfg.packing_bins, shuffle_rows=False,
    ))
    padding_rows = -len(rows) % batch_size
    empty = {k: np.zeros_like(v) for k, v in rows[0].items()}
    rows += [empty] * padding_rows
    local = batch_size // jax.process_count()
    start = jax.process_index() * local
    batches = [
        {k: np.stack([row[k] for row in rows[b + start:b + start + local]]) for k in packing.BATCH_KEYS}
        for b in range(0, len(rows), batch_size)
    ]
    tokens = int(sum(row["loss_weights"].sum() for row in rows))
    return EvalSet(batches=batches, documents=counts[0], characters=counts[1], tokens=tokens)
