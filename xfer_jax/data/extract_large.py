"""Extractors of the large Chinese corpus (`xfer data fetch --corpus large`, docs/corpus.md): HTML and Mallard
help pages and chinese-poetry's JSON files.

Like xfer_jax/data/extract.py, each takes an unpacked package root and yields (file used, document) pairs in
hash order. Help pages are often only partly translated, so `han_share` lets a source keep just the pages
written mostly in Chinese: an untranslated English page would teach a Chinese model English.
"""
from __future__ import annotations

import html.parser
import json
import re
from pathlib import Path
from typing import Iterable, Iterator

from xfer_jax.data.text_clean import in_hash_order, join_lines

HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
FOREIGN_WORD = re.compile(r"[^\W\d_]+")  # a run of letters once the Chinese characters are taken out
# Elements whose text is navigation, code or metadata rather than prose. Mallard's <info> holds credits and
# link targets, <screen> terminal output; DocBook's navigation is <div class="navheader|navfooter">, Publican's
# (debian-handbook) <div id="banner">, <p id="title"> and <ul class="docnav">.
SKIPPED_TAGS = frozenset({"head", "script", "style", "noscript", "nav", "header", "footer", "aside", "info",
                          "template", "svg", "pre", "screen"})
SKIPPED_CLASSES = frozenset({"navheader", "navfooter", "docnav", "toc", "footnotes"})
SKIPPED_IDS = frozenset({"banner", "title"})
MIN_HAN_PER_PAGE = 20  # a page with less Chinese than this (a table of contents, a stub) is not a document
BLOCK_END = "\x00"  # what the parser writes between blocks; HTML text cannot hold NUL
BLOCK_TAGS = frozenset({"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "td", "th", "dt", "dd",
                        "pre", "title", "section", "table", "item", "page", "screen", "note", "list"})
POEM_TEXT_FIELDS = ("paragraphs", "content", "para")  # chinese-poetry's names for a poem's lines
POEM_HEADINGS = ("title", "rhythmic", "chapter")      # its names for the poem's title (ci: the tune)


def han_count(text: str) -> int:
    """Chinese characters (CJK unified ideographs, extensions A-G, compatibility ideographs)."""
    return len(HAN.findall(text))


def han_share(text: str) -> float:
    """Chinese characters against all words: han / (han + runs of other letters), 0 for a text with neither.

    A Chinese character is about a word's worth of text, so a Chinese sentence naming `build-essential` stays
    mostly Chinese (3 / (3 + 2) for "build-essential 软件包"), while an English paragraph scores 0.
    """
    han = han_count(text)
    words = len(FOREIGN_WORD.findall(HAN.sub(" ", text)))
    return han / (han + words) if han + words else 0.0


class _ProseParser(html.parser.HTMLParser):
    """The visible prose of an HTML or Mallard page: navigation, code and metadata dropped; each block
    (paragraph, heading, list item, cell) ends with BLOCK_END."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip: list[str] = []  # the open elements being skipped, innermost last

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        classes = set((attributes.get("class") or "").split())
        if self.skip and tag == self.skip[0]:
            self.skip.append(tag)  # nested element of the same name inside a skipped one
        elif not self.skip and (tag in SKIPPED_TAGS or classes & SKIPPED_CLASSES
                                or attributes.get("id") in SKIPPED_IDS):
            self.skip.append(tag)
        if tag in BLOCK_TAGS:
            self.parts.append(BLOCK_END)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in BLOCK_TAGS:
            self.parts.append(BLOCK_END)

    def handle_endtag(self, tag: str) -> None:
        if self.skip and tag == self.skip[-1]:
            self.skip.pop()
        if tag in BLOCK_TAGS:
            self.parts.append(BLOCK_END)

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def page_blocks(markup: str) -> list[str]:
    """A page's non-empty blocks of prose, each on one line (source line breaks joined as join_lines does)."""
    parser = _ProseParser()
    parser.feed(markup)
    parser.close()
    blocks = (join_lines(block.splitlines()) for block in "".join(parser.parts).split(BLOCK_END))
    return [block for block in blocks if block]


def help_page_docs(root: Path, patterns: Iterable[str], min_han_share: float = 0.3,
                   exclude: Iterable[str] = ()) -> Iterator[tuple[str, str]]:
    """Each help page (HTML, or Mallard `.page` XML) matching `patterns` is one document: its translated blocks.

    Translations are often partial, paragraph by paragraph, so a block whose letters are less than
    `min_han_share` Chinese (an untranslated paragraph, a command line) is dropped, and a page left with fewer
    than MIN_HAN_PER_PAGE Chinese characters is skipped. `patterns` are globs under the package root; paths
    containing any `exclude` string are left out.
    """
    files = sorted({p for pattern in patterns for p in root.glob(pattern)
                    if p.is_file() and not p.is_symlink() and not any(x in str(p) for x in exclude)})
    pairs = []
    for path in files:
        blocks = page_blocks(path.read_text(encoding="utf-8", errors="replace"))
        text = join_lines(block for block in blocks if han_share(block) >= min_han_share)
        if han_count(text) >= MIN_HAN_PER_PAGE:
            pairs.append((str(path.relative_to(root)), text))
    return in_hash_order(pairs)


def poem_records(node: object) -> Iterator[tuple[str, list[str]]]:
    """(heading, lines) of every poem or chapter in a chinese-poetry JSON value, at any depth.

    A record is a dict with a string or a list of strings under one of POEM_TEXT_FIELDS; other fields
    (authors' lives, notes, commentary, abstracts, tone patterns, readings) are not the text and are left out.
    """
    if isinstance(node, list):
        for item in node:
            yield from poem_records(item)
    elif isinstance(node, dict):
        for field in POEM_TEXT_FIELDS:
            lines = node.get(field)
            lines = [lines] if isinstance(lines, str) else lines
            if isinstance(lines, list) and lines and all(isinstance(line, str) for line in lines):
                heading = next((node[h] for h in POEM_HEADINGS if isinstance(node.get(h), str)), "")
                yield heading, lines
                return
        for value in node.values():
            if isinstance(value, (list, dict)):
                yield from poem_records(value)


def poetry_docs(root: Path, data_dir: str = "package/dist", exclude: Iterable[str] = ()) -> Iterator[tuple[str, str]]:
    """Each poem (or chapter of a classic) of the chinese-poetry package is one document: its title, a space,
    its lines joined; the script is the edition's (traditional for 全唐詩 and the Song shi, simplified for Song ci).

    `exclude` names folders or files (relative to `data_dir`) to leave out.
    """
    base = root / data_dir
    skipped = tuple(exclude)
    pairs = []
    for path in sorted(base.rglob("*.json")):
        rel = path.relative_to(base)
        if any(rel.as_posix() == x or rel.as_posix().startswith(x + "/") for x in skipped):
            continue
        for heading, lines in poem_records(json.loads(path.read_text(encoding="utf-8"))):
            body = join_lines(lines)
            if body:
                pairs.append((f"{data_dir}/{rel}", f"{heading.strip()}\n{body}" if heading.strip() else body))
    return in_hash_order(pairs)
