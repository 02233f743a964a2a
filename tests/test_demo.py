"""`xfer demo`: every stage wired end to end at a tiny step count (real corpus, real instruction pairs, the
export reloaded in transformers), a rerun that trains nothing again, and (slow) the full demo on time."""
import json
import subprocess
import sys
import time

import pytest

from xfer_jax.study import demo, stage_configs, training

STAGES = ["tokenizers", "efficiency", "heldout", "init", "base", "extend", "pretrain", "instruct", "eval/base",
          "eval/extended", "eval/pretrained", "eval/instructed", "export", "transformers"]


def tiny_spec():
    c = stage_configs.project_config("demo")
    c.base.steps = c.pretrain.steps = c.instruct.steps = 3
    c.eval.log_every, c.eval.curve_points, c.eval.max_heldout_documents = 1, 0, 30
    c.eval.prompts_per_language, c.eval.max_new_tokens, c.eval.hf_max_new_tokens = 1, 4, 4
    return c


def test_demo_stages_run_end_to_end_and_resume(corpus_dir, instruct_dir, tmp_path, monkeypatch, capsys):
    cache, out = corpus_dir.parent, tmp_path / "demo"
    text = demo.run_demo(tiny_spec(), out, cache)
    assert [s for s in STAGES if not (out / s / "done.json").exists()] == []
    assert (out / "curves.png").stat().st_size > 10_000 and (out / "summary.md").read_text() == text
    for row in ("| base | 3000 | 3 |", "| extended | 5504 | 0 |", "| pretrained | 5504 | 3 |",
                "| instructed | 5504 | 3 |"):
        assert row in text
    assert "zh bits/char" in text and "chrF" in text and "code-switch rate" in text
    check = json.loads((out / "transformers" / "done.json").read_text())
    assert check["prompt_ids_equal"] and isinstance(check["transformers_response"], str)
    assert (out / "export" / "hf" / "config.json").exists()
    ppl = json.loads((out / "eval" / "extended" / "done.json").read_text())["text"]
    assert ppl["zh"]["tokens_per_char"] < 0.7 < 1.4 < json.loads(
        (out / "eval" / "base" / "done.json").read_text())["text"]["zh"]["tokens_per_char"]  # English BPE: bytes

    monkeypatch.setattr(training, "train", lambda config: pytest.fail(f"retrained {config.train.out_dir}"))
    capsys.readouterr()
    demo.run_demo(tiny_spec(), out, cache)
    log = capsys.readouterr().out
    assert log.count("done before, skipped") == len(STAGES) and ": running" not in log


@pytest.mark.slow
def test_full_demo_within_ten_minutes(corpus_dir, instruct_dir, tmp_path):
    """The README's first command at its real size (2 CPU cores: about 6 minutes on a loaded machine)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "xfer_jax.cli", "demo", "--out", str(tmp_path / "demo"),
                           "--cache", str(corpus_dir.parent)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert time.perf_counter() - start < 600
    summary = (tmp_path / "demo" / "summary.md").read_text()
    assert "# xfer demo: summary" in done.stdout and "same prompt ids as xfer: True" in summary
