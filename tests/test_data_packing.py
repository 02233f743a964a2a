"""Packed rows of real documents: segment ids, positions, targets that never cross documents, exact resumption."""
import grain
import numpy as np
import pytest

from xfer_jax.data import examples, packing
from xfer_jax.data.tokenizer import Tokenizer

SEQ_LEN = 48


@pytest.fixture(scope="module")
def tokenizer(llama_tokenizer):
    return Tokenizer.load(llama_tokenizer)


@pytest.fixture(scope="module")
def documents(corpus_dir, tokenizer):
    """Token ids (BOS ... EOS) of real documents in three languages, short and long (some > SEQ_LEN)."""
    docs = []
    for lang in ("en", "zh", "ru"):
        lines = (corpus_dir / lang / "train.txt").read_text().splitlines()[:60]
        docs += [np.asarray(ids, np.int32) for ids in tokenizer.encode_batch(lines, bos=True, eos=True)]
    return docs


def chunk_stream(documents):
    """The packer's input as the pipeline builds it: per-document features, chunked to SEQ_LEN."""
    elements = []
    for i, ids in enumerate(documents):
        elements += examples.chunks(examples.document_example(ids, np.ones(len(ids)), lang=i % 3), SEQ_LEN)
    return grain.MapDataset.source(elements).to_iter_dataset(grain.ReadOptions(num_threads=0))


def segments(row):
    for segment in np.unique(row["segment_ids"][row["segment_ids"] > 0]):
        yield np.flatnonzero(row["segment_ids"] == segment)


def check_row(row, bos, eos):
    """Invariants of every packed row, whatever the packing."""
    ids = row["segment_ids"]
    assert all(value.shape == (SEQ_LEN,) for value in row.values())
    assert np.all(np.diff(ids[ids > 0]) >= 0) and np.all(ids[: np.count_nonzero(ids)] > 0)  # padding at the end
    for key in packing.BATCH_KEYS:
        assert not np.any(row[key][ids == 0]), f"{key} is not 0 on padding"
    for index in segments(row):
        assert np.all(np.diff(index) == 1)
        np.testing.assert_array_equal(row["positions"][index], np.arange(len(index)))
        tokens, targets, weights = row["tokens"][index], row["targets"][index], row["loss_weights"][index]
        np.testing.assert_array_equal(targets[:-1], tokens[1:])  # the next token of the same document
        assert np.all(weights[:-1] == 1)
        assert bos not in tokens[1:] and eos not in tokens[:-1]  # one document per segment
        assert len(set(row["lang"][index])) == 1
        if tokens[-1] == eos:  # a document's last token: no target, no loss
            assert targets[-1] == 0 and weights[-1] == 0
        else:  # a piece of a longer document: its last target is the document's next token
            assert targets[-1] not in (0, bos) and weights[-1] == 1


def test_first_fit_rows_hold_exact_document_chunks(documents, tokenizer):
    rows = list(packing.PackIterDataset(chunk_stream(documents), SEQ_LEN, "first_fit", num_bins=8, seed=3))
    expected, chunk_count = {}, 0  # chunk tokens -> that chunk's targets within its document
    for ids in documents:
        following = np.append(ids[1:], 0)
        for start in range(0, len(ids), SEQ_LEN):
            expected[tuple(ids[start:start + SEQ_LEN])] = tuple(following[start:start + SEQ_LEN])
            chunk_count += 1
    seen = 0
    for row in rows:
        check_row(row, tokenizer.bos_id, tokenizer.eos_id)
        for index in segments(row):
            assert expected[tuple(row["tokens"][index])] == tuple(row["targets"][index])
            seen += 1
    assert seen == chunk_count and sum(np.sum(r["segment_ids"] > 0) for r in rows) == sum(map(len, documents))
    assert any(np.max(row["segment_ids"]) > 1 for row in rows)  # rows do hold several documents


def test_concat_rows_continue_documents_across_rows(documents, tokenizer):
    rows = list(packing.PackIterDataset(chunk_stream(documents), SEQ_LEN, "concat"))
    for row in rows:
        check_row(row, tokenizer.bos_id, tokenizer.eos_id)
    assert all(np.all(row["segment_ids"] > 0) for row in rows[:-1])  # no padding but in the last row
    for row, following in zip(rows, rows[1:]):
        if row["targets"][-1]:  # the document goes on in the next row
            assert row["targets"][-1] == following["tokens"][0] and following["tokens"][0] != tokenizer.bos_id
    stream = np.concatenate([row["tokens"][row["segment_ids"] > 0] for row in rows])
    np.testing.assert_array_equal(stream, np.concatenate(documents))


@pytest.mark.parametrize("packing_name", packing.PACKINGS)
def test_packer_state_resumes_at_every_row(documents, packing_name):
    dataset = packing.PackIterDataset(chunk_stream(documents), SEQ_LEN, packing_name, num_bins=5, seed=1)
    iterator = iter(dataset)
    states, rows = [], []
    while True:
        states.append(iterator.get_state())
        try:
            rows.append(next(iterator))
        except StopIteration:
            break
    for start in range(0, len(rows), len(rows) // 23):  # 23 points at varied offsets within a set of 5 rows
        resumed = iter(dataset)
        resumed.set_state(states[start])
        for expected in rows[start:start + 9]:
            got = next(resumed)
            for key in packing.BATCH_KEYS:
                np.testing.assert_array_equal(got[key], expected[key])


def test_first_fit_refuses_an_unchunked_long_document(tokenizer):
    element = examples.document_example(np.arange(SEQ_LEN + 1, dtype=np.int32), np.ones(SEQ_LEN + 1), 0)
    dataset = packing.PackIterDataset(grain.MapDataset.source([element]).to_iter_dataset(), SEQ_LEN, "first_fit")
    with pytest.raises(ValueError, match="49-token document for rows of 48"):
        next(iter(dataset))
