"""`xfer eval codeswitch`: how much of each response is in a language other than the one expected.

A response is cut into runs of one writing system (Unicode script of each letter; digits, punctuation and
spaces join the run they sit in), and runs in Latin, Cyrillic, ... are further cut at sentence ends. A run
whose script the expected language does not write is foreign outright (Latin inside Chinese); a run in the
expected script is foreign only when a language-ID model restricted to the languages in play (py3langid)
says so and the run is long enough to trust it (English inside German). Short runs never count — fewer than
`min_letters` letters, or `min_syllables` characters of Han, Kana or Hangul, whose characters are whole
syllables: a stray "A" or "km" in a Chinese answer is not a switch, a two-character Chinese word in Russian is.

Per response: the foreign share (foreign letters / letters). A response switches when that share exceeds
`switch_share`. Per language: the switch rate, the mean share, which languages came in, and examples.
"""
import dataclasses
import functools
import re
import unicodedata

from xfer_jax.eval import report

# Scripts of languages that are not written in Latin letters; any other code is taken to be Latin-written.
LANG_SCRIPTS = {
    "zh": {"Han"}, "ja": {"Han", "Kana"}, "ko": {"Hangul", "Han"}, "ru": {"Cyrillic"}, "uk": {"Cyrillic"},
    "bg": {"Cyrillic"}, "sr": {"Cyrillic"}, "mk": {"Cyrillic"}, "be": {"Cyrillic"}, "kk": {"Cyrillic"},
    "mn": {"Cyrillic"}, "el": {"Greek"}, "ar": {"Arabic"}, "fa": {"Arabic"}, "ur": {"Arabic"}, "he": {"Hebrew"},
    "th": {"Thai"}, "hi": {"Devanagari"}, "mr": {"Devanagari"}, "ne": {"Devanagari"}, "bn": {"Bengali"},
    "ta": {"Tamil"}, "te": {"Telugu"}, "ka": {"Georgian"}, "hy": {"Armenian"}, "km": {"Khmer"},
}
SCRIPT_NAMES = {"CJK": "Han", "HIRAGANA": "Kana", "KATAKANA": "Kana", "KATAKANA-HIRAGANA": "Kana", "HANGUL": "Hangul",
                "LATIN": "Latin", "CYRILLIC": "Cyrillic", "GREEK": "Greek", "ARABIC": "Arabic", "HEBREW": "Hebrew",
                "THAI": "Thai", "DEVANAGARI": "Devanagari", "BENGALI": "Bengali", "TAMIL": "Tamil", "TELUGU": "Telugu",
                "GEORGIAN": "Georgian", "ARMENIAN": "Armenian", "KHMER": "Khmer"}
SYLLABIC = {"Han", "Kana", "Hangul"}
SENTENCE_END = re.compile(r"(?<=[.!?;:。！？；：\n])")


def scripts_of(lang: str) -> set[str]:
    return LANG_SCRIPTS.get(lang, {"Latin"})


@functools.lru_cache(maxsize=65536)
def script(char: str) -> str | None:
    """The writing system of a letter; None for digits, punctuation, spaces and symbols."""
    if not char.isalpha():
        return None
    words = unicodedata.name(char, "UNKNOWN").split()
    if words[0] in ("FULLWIDTH", "HALFWIDTH"):
        words = words[1:]
    return SCRIPT_NAMES.get(words[0], "Other")


def runs(text: str) -> list[tuple[str, str]]:
    """(script, text) runs; neutral characters stay with the run before them (or the first one)."""
    out: list[list] = []
    pending = ""
    for char in text:
        s = script(char)
        if s is None:
            if out:
                out[-1][1] += char
            else:
                pending += char
        elif out and out[-1][0] == s:
            out[-1][1] += char
        else:
            out.append([s, pending + char])
            pending = ""
    return [(s, piece) for s, t in out for piece in SENTENCE_END.split(t) if piece]


def letters(text: str) -> int:
    return sum(script(c) is not None for c in text)


@dataclasses.dataclass
class Detector:
    """Decides the language of runs among `languages` (the languages in play)."""

    languages: tuple[str, ...]
    min_letters: int = 4  # shorter runs never count as foreign...
    min_syllables: int = 2  # ...nor shorter runs of Han, Kana or Hangul
    min_langid_letters: int = 20  # same-script runs shorter than this are not sent to language ID

    def __post_init__(self):
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        unknown = set(self.languages) - set(self.identifier.nb_classes)
        if unknown:
            raise ValueError(f"py3langid does not know {sorted(unknown)}; "
                             f"known codes: {sorted(self.identifier.nb_classes)}")

    def identify(self, text: str, candidates: list[str]) -> str:
        if len(candidates) == 1:
            return candidates[0]
        self.identifier.set_languages(candidates)
        return self.identifier.classify(text)[0]

    def analyse(self, text: str, expected: str) -> dict:
        """Letters, foreign letters, foreign share and the foreign runs ({lang, text}) of one response."""
        if expected not in self.languages:
            raise ValueError(f"expected language {expected!r} is not among the languages in play {self.languages}")
        total = foreign = 0
        pieces = []
        for s, piece in runs(text):
            n = letters(piece)
            total += n
            if n < (self.min_syllables if s in SYLLABIC else self.min_letters):
                continue
            candidates = [lang for lang in self.languages if s in scripts_of(lang)]
            if s in scripts_of(expected):
                if len(candidates) < 2 or n < self.min_langid_letters:
                    continue
                lang = self.identify(piece, candidates)
            else:
                lang = self.identify(piece, candidates) if candidates else f"other:{s}"
            if lang != expected:
                foreign += n
                pieces.append({"lang": lang, "text": piece.strip()})
        return {"letters": total, "foreign_letters": foreign, "share": foreign / total if total else 0.0,
                "foreign": pieces}


def mark(text: str, pieces: list[dict], width: int = 400) -> str:
    """The response with its foreign runs in ⟦brackets⟧, cut to about `width` characters around the first."""
    for piece in pieces:
        text = text.replace(piece["text"], f"⟦{piece['text']}⟧", 1)
    start = max(text.find("⟦") - width // 4, 0)
    return ("…" if start else "") + text[start:start + width] + ("…" if start + width < len(text) else "")


def evaluate(records: list[dict], detector: Detector, *, default_lang: str | None = None, switch_share: float = 0.0,
             examples: int = 5) -> tuple[dict, list[dict]]:
    """(per-language summary, per-response analyses) for records holding `response` and `lang`."""
    analyses, summary = [], {}
    for i, record in enumerate(records):
        lang = record.get("lang") or default_lang
        if not lang:
            raise ValueError(f"record {record.get('id', i)} has no 'lang'; pass the expected language (--lang)")
        if not isinstance(record.get("response"), str):
            raise ValueError(f"record {record.get('id', i)} has no 'response' text")
        result = {"id": record.get("id", i), "lang": lang, **detector.analyse(record["response"], lang)}
        result["switched"] = result["share"] > switch_share
        analyses.append(result)
        entry = summary.setdefault(lang, {"responses": 0, "switched": 0, "share_sum": 0.0, "into": {}, "examples": []})
        entry["responses"] += 1
        entry["share_sum"] += result["share"]
        if result["switched"]:
            entry["switched"] += 1
            for piece in result["foreign"]:
                entry["into"][piece["lang"]] = entry["into"].get(piece["lang"], 0) + letters(piece["text"])
            if len(entry["examples"]) < examples:
                entry["examples"].append({"id": result["id"], "share": result["share"],
                                          "text": mark(record["response"], result["foreign"])})
    for entry in summary.values():
        entry["switch_rate"] = entry["switched"] / entry["responses"]
        entry["mean_share"] = entry.pop("share_sum") / entry["responses"]
    return summary, analyses


def markdown(result: dict) -> str:
    langs = result["languages"]
    text = (f"# Code-switching\n\nLanguages in play: {', '.join(result['languages_in_play'])}; settings "
            f"{result['settings']}.\n\n")
    text += report.table(["expected", "responses", "switched", "switch rate", "mean foreign share", "into (letters)"],
                         [[lang, e["responses"], e["switched"], e["switch_rate"], e["mean_share"],
                           ", ".join(f"{k}: {v}" for k, v in sorted(e["into"].items()))] for lang, e in langs.items()])
    for lang, e in langs.items():
        if e["examples"]:
            text += f"\n\n## Examples ({lang}; foreign text in ⟦ ⟧)\n\n"
            text += "\n".join(f"- {x['id']} (share {x['share']:.2f}): {x['text']}" for x in e["examples"])
    return text


def charts(result: dict) -> dict[str, str]:
    langs = list(result["languages"])
    rates = [result["languages"][x]["switch_rate"] for x in langs]
    return {"switch_rate.svg": report.bar_chart("Responses that switch language", langs, {"switch rate": rates})}
