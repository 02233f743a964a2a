"""Checks every random-access data source must pass (TFDS, HF datasets, ...): the pipeline's state restores
the exact stream, and each JAX process reads its own share."""
import numpy as np

from xfer_jax.data import pipeline


def assert_state_restores_the_stream(cfg, tokenizer, iterator, batches: int) -> None:
    """`iterator`'s state, restored into a fresh pipeline from `cfg`, gives the same next `batches` batches."""
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(batches)]
    resumed = pipeline.make_train_iterator(cfg, tokenizer=tokenizer)
    resumed.set_state(state)
    for a, b in zip(expected, [next(resumed) for _ in range(batches)]):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def process_shares(table, processes: int = 2) -> list[list]:
    """What each of `processes` JAX processes reads of `table` (pipeline.process_share)."""
    shares = [pipeline.Subset(table, pipeline.process_share(np.arange(len(table)), i, processes))
              for i in range(processes)]
    return [[share[i] for i in range(len(share))] for share in shares]


def tokenize_and_decode(source: str, lang: str, tokenizer_path, out) -> list[str]:
    """`xfer data tokenize --source SOURCE` into `out`, then every shard document decoded (bos/eos dropped)."""
    from xfer_jax import cli
    from xfer_jax.data.issues import InputIssues
    from xfer_jax.data.readers import open_source
    from xfer_jax.data.sources import SourceSpec
    from xfer_jax.data.tokenizer import Tokenizer

    assert cli.main(["data", "tokenize", "--out", str(out), "--tokenizer", str(tokenizer_path), "--source", source]) == 0
    shards = open_source(SourceSpec(lang=lang, path=str(out / lang), format="tokens"), InputIssues())
    tokenizer = Tokenizer.load(tokenizer_path)
    return [tokenizer.decode(list(shards[i][1:-1])) for i in range(len(shards))]
