"""`xfer study`: the grid expands as configured, a micro study runs end to end into its report, and a rerun
skips every finished run (resumption), redoing only a stage whose result is missing."""
import json

import pytest

from xfer_jax.study import cli as study_cli, grid as grid_lib, stage_configs, study, training
from xfer_jax.study.runner import SettingsChanged


def shipped_grid(name):
    c = stage_configs.project_config(name)
    return c, grid_lib.expand(c.grid, mixtures=c.pretrain.mixtures, sizes=c.instruct.sizes)


@pytest.mark.parametrize("name, inits, tunings", [("study_toy", ["random", "mean", "subword_mean"], 10),
                                                   ("study_gpu", ["random", "subword_mean"], 6)])
def test_shipped_grids_expand_to_the_papers_arms(name, inits, tunings):
    c, g = shipped_grid(name)
    names = [p.name for p in g.points]
    series = g.series()
    guarded = {line: series.pop(line) for line in list(series) if line[1] in (c.pretrain.get("guards") or {})}
    assert set(guarded) == ({("original", "zh_guard")} if name == "study_toy" else set())
    assert all([p.budget for p in line] == [0, 40_000, 360_000] for line in guarded.values())  # B1, B3
    assert set(series) == {("original", "zh"), ("original", "zh_en"), *((v, "zh") for v in inits)}
    extra = sum(len(line) - 1 for line in guarded.values())
    assert len(names) == len(set(names)) == 1 + len(inits) + 3 * len(series) + extra  # vocabularies at 0
    assert sum(p.budget > 0 for p in g.points) == 3 * len(series) + extra
    for (vocab, _), line in series.items():  # each line starts at its vocabulary's checkpoint before pretraining
        assert line[0] == grid_lib.Point(vocab, grid_lib.NO_MIXTURE, 0)
        assert [p.budget for p in line] == sorted(p.budget for p in line) and len(line) == 4
    assert len(g.tunings) == tunings and {t.size for t in g.tunings} == {"small", "large"}
    assert grid_lib.size_order(c.instruct.sizes) == ["small", "large"]
    if name == "study_gpu":  # the issue asks for at least 100M tokens of further pretraining in all
        total = sum(stage_configs.steps_for(p.budget, c) * c.model.seq_len * c.model.batch_size
                    for p in g.points if p.budget)
        assert total >= 100_000_000, total


def test_grid_blocks_are_checked_and_shared_runs_counted_once():
    mixtures, sizes = {"zh": {}, "zh_en": {}}, {"small": {"examples": 5}, "large": {"examples": 0}}
    g = grid_lib.expand([dict(vocab=["original"], mixture=["zh", "zh_en"], budget=[0, 1000]),
                         dict(vocab=["original"], mixture=["zh"], budget=[0, 1000], instruct=["large", "small"])],
                        mixtures=mixtures, sizes=sizes)
    assert [p.name for p in g.points] == ["original-none-0", "original-zh-1k", "original-zh_en-1k"]
    assert [t.name for t in g.tunings] == ["original-none-0-small", "original-none-0-large", "original-zh-1k-small",
                                           "original-zh-1k-large"]
    for block, message in [(dict(vocab=["zeros"], mixture=["zh"], budget=[0]), "vocab"),
                           (dict(vocab=["original"], mixture=["fr"], budget=[0]), "mixture"),
                           (dict(vocab=["original"], mixture=["zh"], budget=[-1]), "budget"),
                           (dict(vocab=["original"], mixture=["zh"]), "non-empty"),
                           (dict(vocab=["original"], mixture=["zh"], budget=[0], instruct=["huge"]), "instruct")]:
        with pytest.raises(ValueError, match=message):
            grid_lib.expand([block], mixtures=mixtures, sizes=sizes)
    assert grid_lib.tokens_label(13_500_000) == "13.5M" and grid_lib.tokens_label(40_000) == "40k"


def micro_spec():
    """Three tiny runs: the base (4 steps), one pretraining run (2 steps), one LoRA run (2 steps)."""
    c = stage_configs.project_config("study_toy")
    c.base.tokens = 4 * 1024
    c.instruct.sizes = {"small": dict(examples=10, steps=2)}
    c.eval.prompts, c.eval.max_new_tokens, c.eval.max_heldout_documents = 2, 4, 30
    c.grid = [dict(vocab=["original"], mixture=["zh"], budget=[0, 2000]),
              dict(vocab=["subword_mean"], mixture=["zh"], budget=[0]),
              dict(vocab=["original"], mixture=["zh"], budget=[2000], instruct=["small"])]
    return c


def test_micro_study_reports_and_resumes(corpus_dir, instruct_dir, tmp_path, monkeypatch, capsys):
    cache, out = corpus_dir.parent, tmp_path / "study"
    assert instruct_dir == cache / "instruct"
    report = study.run_study(micro_spec(), out, cache)
    folder = out / "report"
    assert sorted(p.name for p in folder.iterdir()) == ["bits_per_char.png", "curves.png", "instruction.png",
                                                        "report.json", "report.md"]
    text = (folder / "report.md").read_text()
    for heading in ("Tokens per character", "Target language (zh)", "English language (en)", "Instruction tuning",
                    "The paper's findings", "## Runs"):
        assert heading in text
    assert "| original / zh | " in text and "| original-zh-2k | " in text
    stored = json.loads((folder / "report.json").read_text())
    assert set(stored["points"]) == {"original-none-0", "original-zh-2k", "subword_mean-none-0"}
    zh = stored["points"]["subword_mean-none-0"]["eval"]["text"]["zh"]
    assert zh["tokens_per_char"] < stored["points"]["original-none-0"]["eval"]["text"]["zh"]["tokens_per_char"]
    tuned = stored["tunings"]["original-zh-2k-small"]
    assert tuned["run"]["steps"] == 2 and tuned["eval"]["responses"]["zh"]["responses"] == 2
    assert [f["status"] for f in report["findings"]][1] == "not measured"

    monkeypatch.setattr(training, "train", lambda config: pytest.fail(f"retrained {config.train.out_dir}"))
    (out / "eval" / "original-zh-2k-small" / "done.json").unlink()  # as if it died in that evaluation
    capsys.readouterr()
    again = study.run_study(micro_spec(), out, cache)
    log = capsys.readouterr().out
    assert "eval/original-zh-2k-small: running" in log and "base: done before, skipped" in log
    assert log.count(": running") == 1
    assert again["points"] == report["points"]

    changed = micro_spec()
    changed.pretrain.lr = 1e-2
    with pytest.raises(SettingsChanged, match="pretrain.lr"):
        study.run_study(changed, out, cache)
    other = micro_spec()  # another grid (here a smaller one) is not another experiment: its runs are reused
    other.grid = other.grid[:1]
    assert study.settings(other) == study.settings(micro_spec()) != study.settings(changed)


def test_cli_refuses_a_directory_it_did_not_make(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    assert study_cli.main(["--out", str(tmp_path / "x"), "--fresh"]) == 1
    assert "holds no run.json" in capsys.readouterr().err
    assert (tmp_path / "x" / "notes.txt").exists()
    assert study_cli.main(["--config.nope=1"]) == 2
