"""`xfer eval codeswitch`: foreign scripts and same-script foreign sentences are found, short runs are ignored,
and the per-language rates and examples reach the report."""
import json

import pytest

from xfer_jax import cli
from xfer_jax.eval import codeswitch

RESPONSES = [
    # (expected language, response, switches?)
    ("zh", "长城是中国古代的军事防御工程，全长两万多公里。", False),
    ("zh", "答案是A，因为GPU更快。", False),  # one letter, three letters: too short to count
    ("zh", "机器学习很有用。However, the model overfits the training data badly. 所以需要正则化。", True),
    ("zh", "这是日本的说法：ありがとうございます。", True),
    ("de", "Berlin ist die Hauptstadt von Deutschland und hat viele Museen.", False),
    ("de", "Das ist eine gute Frage. However, I think the answer depends on the context of the question.", True),
    ("ru", "Москва является столицей России.", False),
    ("ru", "Москва является столицей России. 莫斯科是首都。", True),
    ("en", "The Great Wall is a series of fortifications in northern China.", False),
]


@pytest.fixture(scope="module")
def detector():
    return codeswitch.Detector(("zh", "en", "de", "ru", "ja"))


def test_runs_split_by_script_and_sentence():
    assert codeswitch.runs("Hi 你好, ok. Fine") == [("Latin", "Hi "), ("Han", "你好, "), ("Latin", "ok."),
                                                    ("Latin", " Fine")]
    assert codeswitch.script("Ａ") == "Latin" and codeswitch.script("ア") == "Kana" and codeswitch.script("3") is None


def test_each_response(detector):
    for lang, text, switches in RESPONSES:
        result = detector.analyse(text, lang)
        assert (result["share"] > 0) == switches, (text, result)
    zh_en = detector.analyse(RESPONSES[2][1], "zh")
    assert [p["lang"] for p in zh_en["foreign"]] == ["en"]
    assert zh_en["foreign"][0]["text"] == "However, the model overfits the training data badly."
    assert zh_en["foreign_letters"] == sum(c.isalpha() for c in zh_en["foreign"][0]["text"])
    assert detector.analyse(RESPONSES[3][1], "zh")["foreign"][0]["lang"] == "ja"
    assert detector.analyse(RESPONSES[5][1], "de")["foreign"][0]["lang"] == "en"
    assert detector.analyse("Привет", "ru")["foreign"] == [] and detector.analyse("", "en")["share"] == 0.0
    with pytest.raises(ValueError, match="not among the languages in play"):
        detector.analyse("hello", "fr")
    with pytest.raises(ValueError, match="py3langid does not know"):
        codeswitch.Detector(("zh", "xx"))


def test_rates_and_report(tmp_path):
    path = tmp_path / "generations.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "lang": lang, "response": text}, ensure_ascii=False)
                              for i, (lang, text, _) in enumerate(RESPONSES)) + "\n", encoding="utf-8")
    out = tmp_path / "report"
    assert cli.main(["eval", "codeswitch", "--generations", str(path), "--languages", "zh,en,de,ru,ja",
                     "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rates = {lang: e["switch_rate"] for lang, e in report["languages"].items()}
    assert rates == {"zh": 0.5, "de": 0.5, "ru": 0.5, "en": 0.0}
    assert set(report["languages"]["zh"]["into"]) == {"en", "ja"}
    assert report["languages"]["zh"]["examples"][0]["text"].count("⟦") == 1
    analyses = [json.loads(line) for line in (out / "codeswitch.jsonl").read_text().splitlines()]
    assert [a["switched"] for a in analyses] == [s for _, _, s in RESPONSES]
    assert "switch rate" in (out / "report.md").read_text() and (out / "switch_rate.svg").exists()
    (tmp_path / "nolang.jsonl").write_text('{"id": 1, "response": "hi"}\n')
    assert cli.main(["eval", "codeswitch", "--generations", str(tmp_path / "nolang.jsonl"), "--out", str(out)]) == 1
