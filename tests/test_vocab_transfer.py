"""The tiny transfer run of tools/vocab_transfer.py (slow: six trainer runs): an English base, extended to Chinese
by each init strategy, further trained on zh+en. Asserts what the strategies do before further training and
that every arm learns; the numbers themselves go to docs/vocab.md."""
import importlib.util
import pathlib

import pytest

from xfer_jax.vocab.resize import STRATEGIES

TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "vocab_transfer.py"


@pytest.mark.slow
def test_tiny_transfer_run_reports_every_strategy(corpus_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("vocab_transfer", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    results = tool.main(["--out", str(tmp_path), "--corpus", str(corpus_dir), "--base_steps", "150", "--steps", "30"])
    by = {r["arm"]: r for r in results}
    assert list(by) == ["none", *STRATEGIES] and "| subword_mean |" in (tmp_path / "results.md").read_text()
    before = {arm: r["before"] for arm, r in by.items()}
    # Extension: far fewer tokens per Chinese character than the English base's byte fallback.
    assert before["mean"]["zh"]["tokens_per_char"] < 0.6 * before["none"]["zh"]["tokens_per_char"]
    # Before further training, on English text: random rows take the most probability, subword means the least,
    # and English suffers accordingly.
    mass = {arm: before[arm]["en"]["new_mass"] for arm in STRATEGIES}
    assert mass["random"] > mass["mean"] > mass["subword_mean"]
    assert before["subword_mean"]["en"]["bpc"] < before["random"]["en"]["bpc"]
    for arm, r in by.items():  # every arm learns Chinese
        assert r["after"]["zh"]["bpc"] < r["before"]["zh"]["bpc"], arm
