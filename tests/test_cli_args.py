"""Renamed flags: the snake_case spelling is the one --help shows; the old spelling parses the same for one release."""
import argparse

from xfer_jax.cli_args import add_flag
from xfer_jax.vocab import cli as vocab_cli


def test_old_spelling_parses_like_the_new_and_is_hidden():
    p = argparse.ArgumentParser()
    add_flag(p, "--no_bos", "--no-bos", action="store_true", help="no BOS")
    add_flag(p, "--shard_tokens", "--shard-tokens", type=int, default=5, help="tokens per shard")
    assert vars(p.parse_args([])) == {"no_bos": False, "shard_tokens": 5}
    assert vars(p.parse_args(["--no-bos", "--shard-tokens", "7"])) == {"no_bos": True, "shard_tokens": 7}
    assert vars(p.parse_args(["--no_bos", "--shard_tokens=8"])) == {"no_bos": True, "shard_tokens": 8}
    help_text = p.format_help()
    assert "--no_bos" in help_text and "--shard_tokens" in help_text
    assert "--no-bos" not in help_text and "--shard-tokens" not in help_text


def test_vocab_flags_keep_their_old_spellings():
    new = vocab_cli.parser().parse_args(["report", "--tokenizer", "a=b", "--languages", "zh"])
    old = vocab_cli.parser().parse_args(["report", "--tokenizer", "a=b", "--langs", "zh"])
    assert new.languages == old.languages == "zh"
    assert vocab_cli.parser().parse_args(["train", "--source", "s", "--out", "o", "--num_threads", "3"]).threads == 3
