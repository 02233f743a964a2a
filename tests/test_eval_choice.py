"""`xfer eval choice`: the four exam formats parse (bad records skipped and located), prompts follow the published
formats, scores equal the full forward pass, a tiny model trained on an exam beats chance, and the real MMLU
file runs end to end."""
import csv
import dataclasses
import json
import math
import pathlib

import jax
import numpy as np
import pytest

from test_eval_helpers import random_checkpoint
from xfer_jax import cli, forward
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.eval import choice, exams
from xfer_jax.eval.exam_data import fetch_mmlu
from xfer_jax.train.loop import train

CACHE = pathlib.Path(__file__).resolve().parents[1] / ".cache"


def write_csv(path: pathlib.Path, rows, header=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


CEVAL_HEADER = ["id", "question", "A", "B", "C", "D", "answer"]


def test_exam_formats_parse_and_bad_records_are_located(tmp_path):
    ceval = tmp_path / "ceval"
    write_csv(ceval / "dev" / "law_dev.csv", [[0, "宪法是什么？", "根本法", "普通法", "地方法", "条例", "A", "1. 宪法是根本法"]],
              CEVAL_HEADER + ["explanation"])
    write_csv(ceval / "val" / "law_val.csv", [[0, "刑法属于？", "公法", "私法", "国际法", "习惯", "A"],
                                              [1, "坏题", "a", "b", "c", "d", "E"]], CEVAL_HEADER)
    (ceval / "subject_mapping.json").write_text(json.dumps({"law": ["Law", "法学", "Humanities"]}), encoding="utf-8")
    exam = exams.read_exam("ceval", ceval, shots=1)
    assert exam.names == {"law": "法学"} and len(exam.test["law"]) == 1 and len(exam.dev["law"]) == 1
    assert exam.test["law"][0].options == ("公法", "私法", "国际法", "习惯")
    assert exam.skipped == [f"{ceval / 'val' / 'law_val.csv'}:3: answer 'E' is not one of ABCD"]
    write_csv(ceval / "test" / "law_test.csv", [[0, "q", "a", "b", "c", "d"]], CEVAL_HEADER[:-1])  # as published
    with pytest.raises(ValueError, match=r"law_test.csv:1: header .* lacks \['answer'\].* --split val"):
        exams.read_exam("ceval", ceval, split="test")

    mmlu = tmp_path / "mmlu"
    write_csv(mmlu / "dev" / "virology_dev.csv", [["What is a virus?", "cell", "agent", "plant", "rock", "B"]])
    write_csv(mmlu / "test" / "virology_test.csv", [["Which infects bacteria?", "phage", "yeast", "fern", "moss", "A"],
                                                     ["short row", "a", "b"]])
    with pytest.raises(ValueError, match=r"virology_test.csv:2: 3 columns, expected 6"):
        exams.read_exam("mmlu", mmlu)

    jsonl = tmp_path / "mmlu.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [
        {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "elementary_mathematics"},
        {"question": "3+3?", "choices": ["6", "4", "5", "7"], "answer": "A", "subject": "elementary_mathematics"},
        {"question": "no subject", "choices": ["a", "b"], "answer": 0}]) + "\n")
    with pytest.raises(ValueError, match=r"mmlu.jsonl:3: missing key\(s\) \['subject'\]"):
        exams.read_exam("mmlu", jsonl)
    jsonl.write_text("\n".join(jsonl.read_text().splitlines()[:2]) + "\n")
    exam = exams.read_exam("mmlu", jsonl, shots=1)  # no split field: the first question becomes the shot
    assert [q.answer for q in exam.dev["elementary mathematics"]] == ["B"]
    assert [q.answer for q in exam.test["elementary mathematics"]] == ["A"]

    agieval = tmp_path / "agieval" / "logiqa-en.jsonl"
    agieval.parent.mkdir()
    agieval.write_text("\n".join(json.dumps(r) for r in [
        {"passage": "All cats purr.", "question": "Does Tom purr?", "options": ["(A)Yes", "(B)No"], "label": "A"},
        {"passage": None, "question": "x = ?", "options": None, "label": None, "answer": "3"},
        {"passage": "", "question": "Pick two", "options": ["(A)a", "(B)b", "(C)c"], "label": ["A", "B"]}]) + "\n")
    exam = exams.read_exam("agieval", agieval.parent)
    (q,) = exam.test["logiqa-en"]
    assert q.body == "All cats purr.\nDoes Tom purr?\n(A)Yes\n(B)No"
    assert q.options == ("Yes", "No") and q.letters == ("A", "B")
    assert len(exam.skipped) == 2 and "cloze" in exam.skipped[0] and "several answers" in exam.skipped[1]
    with pytest.raises(ValueError, match="no dev split"):
        exams.read_exam("agieval", agieval.parent, shots=5)

    gaokao = tmp_path / "gaokao" / "2010-2022_History_MCQs.json"
    gaokao.parent.mkdir()
    gaokao.write_text(json.dumps({"keywords": "History", "example": [
        {"question": "秦朝建立于（  ）\nA．前221年 B．前206年\nC．前202年 D．前770年", "answer": ["A"]},
        {"question": "下列正确的是\nA．甲 B．乙 C．丙 D．丁", "answer": ["A", "C"]},
        {"question": "没有选项的题", "answer": ["B"]}]}, ensure_ascii=False), encoding="utf-8")
    exam = exams.read_exam("gaokao", gaokao)
    (q,) = exam.test["2010-2022_History_MCQs"]
    assert q.letters == ("A", "B", "C", "D") and q.options == ("前221年", "前206年", "前202年", "前770年")
    assert len(exam.skipped) == 2 and exam.language == "zh"


def test_prompts_follow_the_published_formats(tmp_path):
    q = exams.Question("virology", "Which infects bacteria?\nA. phage\nB. yeast", ("A", "B"), "A", ("phage", "yeast"),
                       "x")
    shot = exams.Question("virology", "What is a virus?\nA. agent\nB. cell", ("A", "B"), "A", ("agent", "cell"), "y")
    en = exams.Exam("mmlu", "en", {"virology": [q]}, {"virology": [shot]}, {"virology": "virology"})
    assert choice.prompt(en, q, [shot]) == (
        "The following are multiple choice questions (with answers) about virology.\n\n"
        "What is a virus?\nA. agent\nB. cell\nAnswer: A\n\nWhich infects bacteria?\nA. phage\nB. yeast\nAnswer:")
    assert choice.continuation_texts(en, q, "letter") == [" A", " B"]
    assert choice.continuation_texts(en, q, "text") == [" phage", " yeast"]
    q = dataclasses.replace(q, subject="law")
    zh = exams.Exam("ceval", "zh", {"law": [q]}, {}, {"law": "法学"})
    assert choice.prompt(zh, q, []) == ("以下是中国关于法学考试的单项选择题，请选出其中的正确答案。\n\n"
                                        "Which infects bacteria?\nA. phage\nB. yeast\n答案：")
    assert choice.continuation_texts(zh, q, "letter") == ["A", "B"]


@pytest.fixture(scope="module")
def text_ckpt(small_tokenizer, tmp_path_factory):
    tokenizer = Tokenizer.load(small_tokenizer)
    ckpt = random_checkpoint(tmp_path_factory.mktemp("choice") / "ckpt", small_tokenizer, seed=2,
                             vocab_size=tokenizer.vocab_size)
    return ckpt, tokenizer


def test_scores_equal_the_full_forward_pass(text_ckpt):
    ckpt, tokenizer = text_ckpt
    model = forward.load(ckpt)
    q = exams.Question("s", "Which infects bacteria?\nA. phage\nB. yeast\nC. fern", ("A", "B", "C"), "A",
                       ("phage", "yeast", "bacteriophage virus"), "x")
    exam = exams.Exam("mmlu", "en", {"s": [q]}, {}, {"s": "s"})
    for mode in ("letter", "text"):
        result, (pred,) = choice.evaluate(model, tokenizer, exam, shots=0, mode=mode, batch_size=4, progress=False)
        context = choice.prompt(exam, q, [])
        for text, ours in zip(choice.continuation_texts(exam, q, mode), pred["logprobs"]):
            ctx, cont = choice.split_tokens(tokenizer, context, text)
            logp = np.asarray(jax.nn.log_softmax(model.logits(np.array(ctx + cont)), axis=-1))
            ref = sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont))
            assert ours == pytest.approx(ref, abs=1e-4), (mode, text)
        assert result["questions"] == 1 and result["chance"] == pytest.approx(1 / 3)


TOPICS = (("颜色", ["红色", "蓝色", "绿色", "黄色"]), ("动物", ["老虎", "熊猫", "骆驼", "海豚"]),
          ("城市", ["北京", "上海", "广州", "成都"]), ("数字", ["三", "五", "七", "九"]))


def learnable_exam(root: pathlib.Path) -> None:
    """A C-Eval-format exam whose answer letter follows from the question's topic (colour → A, animal → B, ...):
    a rule a tiny model can only know by training, while the options are shuffled words."""
    rng = np.random.RandomState(0)
    words = [w for _, ws in TOPICS for w in ws]
    rows = [[i, f"第{i + 1}题：关于{TOPICS[i % 4][0]}的问题。", *rng.permutation(words)[:4], "ABCD"[i % 4]]
            for i in range(16)]
    write_csv(root / "val" / "misc_val.csv", rows, CEVAL_HEADER)


@pytest.mark.slow  # trains a model (15 s); scoring is checked by test_scores_equal_the_full_forward_pass, test_real_mmlu_end_to_end
def test_a_trained_tiny_model_beats_chance(pretrain_config, tmp_path):
    learnable_exam(tmp_path / "exam")
    exam = exams.read_exam("ceval", tmp_path / "exam", shots=0)
    untrained, _ = choice.evaluate(forward.load(random_checkpoint(tmp_path / "random", pretrain_config.data.tokenizer,
                                                                  vocab_size=2000)),
                                   Tokenizer.load(pretrain_config.data.tokenizer), exam, shots=0, progress=False)
    # Train (xfer_jax.train) on the solved prompts, exactly as they are scored.
    docs = [choice.prompt(exam, q, []) + q.answer for q in exam.test["misc"]]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps({"text": d}, ensure_ascii=False) for d in docs) + "\n",
                                          encoding="utf-8")
    c = pretrain_config
    c.data.sources = [dict(lang="zh", path=str(tmp_path / "train.jsonl"), format="jsonl", weight=1.0)]
    c.data.heldout, c.data.languages, c.data.seq_len = [], ["zh"], 128
    c.train.steps, c.train.save_every, c.train.log_every = 100, 100, 100
    c.optim.lr, c.optim.schedule = 1e-2, "constant"
    train(c)
    model = forward.load(pathlib.Path(c.train.out_dir) / "ckpt")
    result, _ = choice.evaluate(model, Tokenizer.load(c.data.tokenizer), exam, shots=0, batch_size=8, progress=False)
    assert result["questions"] == 16 and result["chance"] == 0.25
    assert untrained["accuracy_micro"] <= 0.5 and result["accuracy_micro"] >= 0.75, (untrained, result)


def test_real_mmlu_end_to_end(tmp_path, llama_tokenizer):
    data = fetch_mmlu(CACHE / "mmlu")
    ckpt = random_checkpoint(tmp_path / "ckpt", llama_tokenizer, vocab_size=32000, max_position_embeddings=1024)
    out = tmp_path / "report"
    assert cli.main(["eval", "choice", "--ckpt", str(ckpt), "--format", "mmlu", "--data", str(data), "--limit", "1",
                     "--batch_size", "16", "--out", str(out), "--no_progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["shots"] == 5 and report["questions"] == 57 and len(report["subjects"]) == 57
    assert all(s["questions"] == 1 and s["accuracy"] in (0.0, 1.0) for s in report["subjects"].values())
    assert report["accuracy_micro"] == pytest.approx(np.mean([s["accuracy"] for s in report["subjects"].values()]))
    assert len(report["skipped"]) == 2 and all("ANSWER" in s for s in report["skipped"])  # leaked header rows
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 57
    assert all(len(p["logprobs"]) == 4 and math.isfinite(sum(p["logprobs"])) for p in predictions)
    assert "abstract algebra" in (out / "report.md").read_text() and (out / "accuracy.svg").exists()
