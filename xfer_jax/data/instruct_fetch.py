"""Small real instruction data for tests and demos: chatterbot-corpus dialogues as BELLE / Bactrian-X JSONL.

No Alpaca/BELLE-style set installs offline. PyPI's `chatterbot-corpus` (BSD licence, 28 languages) holds
short dialogues in YAML; the wheel is downloaded (never installed) and each dialogue [u1, u2, u3, u4, ...]
gives the pairs u1→u2, u3→u4, ... Chinese pairs are written as BELLE records {instruction, input, output},
the other languages as Bactrian-X records (the same fields plus `id`), split by a hash of the pair:

    {cache}/{lang}/train.jsonl     about 90% of the pairs
    {cache}/{lang}/heldout.jsonl   the pairs whose sha1 is 0 modulo 10
    {cache}/SOURCES.json           package, version, licence, counts per language
    {cache}/.complete              written last: a cache without it is rebuilt

    python -m xfer_jax.data.instruct_fetch [--cache DIR]     (default: $XFER_CACHE/instruct, else ./.cache/instruct)
"""
import argparse
import hashlib
import json
import tempfile
import zipfile
from pathlib import Path

from xfer_jax import paths
from xfer_jax.data.registry import MARKER, default_cache_root, download_pypi, mark_complete

PACKAGE = "chatterbot-corpus==1.3.3"
LICENCE = ("BSD (the package's classifier 'License :: OSI Approved :: BSD License'; the wheel ships no licence "
           "file; source: https://github.com/gunthercox/chatterbot-corpus)")
# chatterbot-corpus directory -> language code (hinglish, romanised Hindi mixed with English, is left out).
LANGUAGES = {
    "english": "en", "chinese": "zh", "traditionalchinese": "zh_hant", "japanese": "ja", "korean": "ko",
    "russian": "ru", "ukrainian": "uk", "turkish": "tr", "german": "de", "french": "fr", "spanish": "es",
    "italian": "it", "portuguese": "pt", "dutch": "nl", "swedish": "sv", "indonesian": "id", "persian": "fa",
    "hebrew": "he", "hindi": "hi", "bengali": "bn", "marathi": "mr", "oriya": "or", "tamil": "ta",
    "telugu": "te", "urdu": "ur", "thai": "th", "yoruba": "yo",
}
HELDOUT_EVERY = 10


def dialogue_pairs(conversation) -> list[tuple[str, str]]:
    """(u1, u2), (u3, u4), ... of one dialogue; utterances that are not non-empty text end it."""
    texts = []
    for utterance in conversation if isinstance(conversation, list) else []:
        if not isinstance(utterance, str) or not utterance.strip():
            break
        texts.append(utterance.strip())
    return list(zip(texts[0::2], texts[1::2]))


def record(lang: str, index: int, instruction: str, output: str) -> dict:
    """BELLE's fields for Chinese, Bactrian-X's (with an `id`) for the rest."""
    base = {"instruction": instruction, "input": "", "output": output}
    return base if lang == "zh" else {"id": f"{lang}-{index}", **base}


def is_heldout(instruction: str, output: str) -> bool:
    digest = hashlib.sha1(f"{instruction}\n{output}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % HELDOUT_EVERY == 0


def language_records(data_dir: Path, name: str, lang: str) -> tuple[list[dict], list[dict]]:
    """(train, heldout) records of one chatterbot language directory, in file order."""
    import yaml

    splits = ([], [])
    for path in sorted(data_dir.joinpath(name).glob("*.yml")):
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in content.get("conversations") or []:
            for instruction, output in dialogue_pairs(conversation):
                split = splits[is_heldout(instruction, output)]
                split.append(record(lang, sum(map(len, splits)), instruction, output))
    return splits


def fetch_instruct(cache_dir: str | Path) -> Path:
    """Build (or find complete) the instruction cache, every language (~10k pairs, a 350 kB wheel); its path."""
    cache_dir = Path(cache_dir)
    marker = cache_dir / MARKER
    if marker.exists():
        return cache_dir
    marker.unlink(missing_ok=True)
    counts = {}
    with tempfile.TemporaryDirectory(prefix="xfer-instruct-") as work:
        wheel = download_pypi(PACKAGE, Path(work))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(work, [n for n in z.namelist() if n.endswith(".yml")])
        data_dir = Path(work) / "chatterbot_corpus" / "data"
        for name, lang in LANGUAGES.items():
            train, heldout = language_records(data_dir, name, lang)
            for split, records in (("train", train), ("heldout", heldout)):
                paths.write_jsonl(cache_dir / lang / f"{split}.jsonl", records)
            counts[lang] = {"train": len(train), "heldout": len(heldout)}
    sources = {"package": PACKAGE.split("==")[0], "registry": "pypi", "version": PACKAGE.split("==")[1],
               "licence": LICENCE, "format": {"zh": "belle", "other": "bactrian_x"}, "counts": counts}
    paths.write_text(cache_dir / "SOURCES.json", json.dumps(sources, indent=1, ensure_ascii=False) + "\n")
    mark_complete(cache_dir, "chatterbot-corpus\n")
    return cache_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xfer_jax.data.instruct_fetch", description=__doc__.split("\n")[0])
    p.add_argument("--cache", default=str(default_cache_root() / "instruct"))
    args = p.parse_args(argv)
    out = fetch_instruct(args.cache)
    print(json.loads((out / "SOURCES.json").read_text())["counts"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
