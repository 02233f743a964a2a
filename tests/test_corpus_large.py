"""`xfer data fetch --corpus large`: the extractors on tiny inputs shaped like the real packages, modern (zh)
and classical (lzh) Chinese kept apart, licences and sizes in SOURCES.json, and (slow) the real fetch."""
import functools
import json
import os
import pathlib
import shutil

import pytest

from xfer_jax.data import catalogue, catalogue_large, cli, corpus, extract_large
from xfer_jax.data.registry import Package
from xfer_jax.errors import CorpusError

CACHE = pathlib.Path(os.environ.get("XFER_CACHE", pathlib.Path(__file__).resolve().parents[1] / ".cache"))

LIBREOFFICE_PAGE = """<!DOCTYPE html><html lang="zh-CN"><head><title>Find Bar</title>
<script type="text/javascript" src="help.js"></script><style>p {color: red}</style></head>
<body><header id="TopLeftHeader"><a class="logo"><p>LibreOffice 7.4 帮助</p></a><nav id="modules-nav"></nav></header>
<aside class="leftside"><div class="index-label">索引</div></aside>
<div id="DisplayArea"><h1 id="hd_1">查找工具栏</h1>
<p class="paragraph">使用<span class="keycode">Ctrl</span>快捷键打开<code class="literal">build-essential</code>
软件包的查找工具栏。</p>
<p class="paragraph">Moves the cursor and selects the previous match of the search text.</p>
<div class="iconcell"><p>Find Previous Icon</p></div>
<pre class="programlisting">apt-get install foo</pre></div>
<footer><p>版权所有</p></footer></body></html>"""
ENGLISH_PAGE = "<html><body><p>This page was never translated, 只有 one word.</p></body></html>"
HANDBOOK_PAGE = """<html><body><div id="banner"><a><span class="text">Download the ebook</span></a></div>
<p id="title"><a class="left">Product Site</a></p><ul class="docnav"><li class="previous"><a>上一页</a></li></ul>
<div class="navheader"><a>下一页</a></div><div class="section"><div class="para">Debian 之所以如此受系统管理员欢迎，
是因为软件极易安装。</div></div></body></html>"""
MALLARD_PAGE = """<page xmlns="http://projectmallard.org/1.0/" type="topic" id="a11y">
<info><credit type="author"><name>某位作者</name></credit><desc>描述信息</desc></info>
<title>寻找辅助功能菜单</title><p>辅助功能菜单位于顶栏上，您可以在这里打开一些辅助功能设置。</p><screen>gsettings set foo</screen></page>"""


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_help_pages_keep_translated_prose_only(tmp_path):
    write(tmp_path / "help/zh-CN/text/find.html", LIBREOFFICE_PAGE)
    write(tmp_path / "help/zh-CN/text/english.html", ENGLISH_PAGE)
    write(tmp_path / "help/zh-CN/text/book.html", HANDBOOK_PAGE)
    write(tmp_path / "help/zh_CN/gnome/a11y.page", MALLARD_PAGE)
    docs = dict(extract_large.help_page_docs(tmp_path, ["help/zh-CN/text/*.html", "help/zh_CN/**/*.page"]))
    assert sorted(docs) == ["help/zh-CN/text/book.html", "help/zh-CN/text/find.html", "help/zh_CN/gnome/a11y.page"]
    find = docs["help/zh-CN/text/find.html"]
    assert find.startswith("查找工具栏") and "使用Ctrl快捷键打开build-essential软件包的查找工具栏。" in find
    for dropped in ("帮助", "索引", "help.js", "color", "Moves the cursor", "Find Previous", "apt-get", "版权"):
        assert dropped not in find, dropped
    assert docs["help/zh-CN/text/book.html"] == "Debian 之所以如此受系统管理员欢迎，是因为软件极易安装。"
    assert docs["help/zh_CN/gnome/a11y.page"] == "寻找辅助功能菜单辅助功能菜单位于顶栏上，您可以在这里打开一些辅助功能设置。"
    assert not dict(extract_large.help_page_docs(tmp_path, ["help/**/*.html"], exclude=("find", "book")))


def test_han_share_weighs_a_chinese_character_as_a_word():
    assert extract_large.han_share("build-essential 软件包") == 0.6
    assert extract_large.han_share("APT is the abbreviation for Advanced Packaging Tool") == 0.0
    assert extract_large.han_share("1998，") == 0.0 and extract_large.han_count("𠘶中文") == 3


def poetry_package(root):
    """A chinese-poetry tree: Tang shi (traditional), Song ci, a nested primer, and folders that are not poems."""
    dist = root / "package/dist"
    write(root / "package/LICENSE", "The MIT License (MIT)\n\nCopyright (c) 2016 JackeyGao\n" + "Permission " * 20)
    write(dist / "quantangshi/poet.tang.0.json", json.dumps([
        {"author": "太宗皇帝", "paragraphs": ["秦川雄帝宅，函谷壯皇居。", "綺殿千尋起，離宮百雉餘。"], "title": "帝京篇十首 一",
         "id": "3ad6d468"}]))
    write(dist / "quantangshi/authors.tang.json", json.dumps([{"name": "李白", "desc": "李白，字太白，現代的生平介紹。"}]))
    write(dist / "quantangshi/error/poet.tang.0.json", json.dumps([{"title": "錯", "paragraphs": ["錯字之詩。"]}]))
    write(dist / "songci/ci.song.0.json", json.dumps([
        {"author": "和岘", "paragraphs": ["气和玉烛，睿化著鸿明。", "缇管一阳生。"], "rhythmic": "导引"}]))
    write(dist / "mengxue/guwenguanzhi.json", json.dumps({
        "title": "古文觀止", "abstract": ["《古文觀止》是清人選定的散文選本。"],
        "content": [{"title": "卷一", "content": [{"chapter": "鄭伯克段于鄢", "source": "左傳",
                                                   "paragraphs": ["初，鄭武公娶于申，曰武姜。"]}]}]}))
    write(dist / "youmengying/youmengying.json", json.dumps([
        {"content": "读经宜冬，其神专也。", "comment": ["曹秋岳曰：可想见其南面百城时。"]}]))
    write(dist / "strains/json/poet.tang.0.json", json.dumps([{"strains": ["平平仄仄平。"], "id": "3ad6d468"}]))
    return root


def test_poetry_docs_take_poems_not_metadata(tmp_path):
    docs = [doc for _, doc in extract_large.poetry_docs(poetry_package(tmp_path),
                                                        exclude=catalogue_large.POETRY_EXCLUDED)]
    assert sorted(docs) == sorted([
        "帝京篇十首 一\n秦川雄帝宅，函谷壯皇居。綺殿千尋起，離宮百雉餘。",  # the edition's traditional script, kept
        "导引\n气和玉烛，睿化著鸿明。缇管一阳生。",
        "鄭伯克段于鄢\n初，鄭武公娶于申，曰武姜。",
        "读经宜冬，其神专也。",
    ])  # not authors' lives, abstracts, comments, tone patterns or quantangshi/error


def test_classical_and_modern_chinese_are_apart(tmp_path):
    lzh = [s.package.name for s in catalogue_large.large_sources("lzh")]
    zh = [s.package.name for s in catalogue_large.large_sources("zh")]
    assert lzh == ["chinese-poetry"]
    assert "chinese-poetry" not in zh and "fortunes-zh" not in zh and len(zh) >= 10
    assert "lzh" not in catalogue.known_languages() and not catalogue.language_sources("lzh")
    assert catalogue_large.large_sources("en") == []
    with pytest.raises(CorpusError, match="--corpus large"):
        corpus.fetch_corpus(tmp_path / "cache", ["lzh"])  # the default corpus has no lzh


@pytest.fixture()
def fake_registry(tmp_path, monkeypatch):
    """The large corpus with two synthetic packages (help pages for zh, chinese-poetry for lzh), no network."""
    roots = {"chinese-poetry": poetry_package(tmp_path / "pkg/poetry"), "zh-help": tmp_path / "pkg/help"}
    write(roots["zh-help"] / "usr/share/help/zh_CN/find.html", LIBREOFFICE_PAGE)
    write(roots["zh-help"] / "usr/share/help/zh_CN/book.html", HANDBOOK_PAGE)
    write(roots["zh-help"] / "usr/share/doc/zh-help/copyright", "Files: *\nLicense: MPL-2.0\n" + "text " * 40)
    help_source = catalogue.Source(Package("zh-help", "debian", "MPL-2.0", "usr/share/doc/zh-help/copyright"),
                                   functools.partial(extract_large.help_page_docs,
                                                     patterns=["usr/share/help/zh_CN/*.html"]))
    poetry = catalogue.Source(catalogue_large.CHINESE_POETRY, functools.partial(
        extract_large.poetry_docs, exclude=catalogue_large.POETRY_EXCLUDED))
    sources = {"zh": [help_source], "lzh": [poetry]}
    monkeypatch.setitem(corpus.CORPORA, "large", (lambda lang: sources.get(lang, []), ["lzh", "zh"], ("zh", "lzh"),
                                                  catalogue_large.LARGE_MAX_CHARS))
    monkeypatch.setattr(corpus, "download_all", lambda packages, dest: {p.name: roots[p.name] for p in packages})
    monkeypatch.setattr(corpus, "archive_version", lambda package, archive: "1.0")

    def unpack(package, archive, dest):
        shutil.copytree(archive, dest)
        return dest

    monkeypatch.setattr(corpus, "unpack", unpack)
    monkeypatch.setenv("XFER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_large_fetch_records_sources_licences_and_sizes(fake_registry, capsys):
    assert cli.fetch_main(["--corpus", "large"]) == 0
    cache = fake_registry / "corpus_large"  # its own cache: the default corpus is left alone
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["corpus"] == "large" and manifest["languages"] == ["zh", "lzh"]
    assert manifest["max_chars"] == catalogue_large.LARGE_MAX_CHARS and not (fake_registry / "corpus").exists()
    text = {lang: (cache / lang / "train.txt").read_text() + (cache / lang / "heldout.txt").read_text()
            for lang in ("zh", "lzh")}
    assert "秦川雄帝宅" in text["lzh"] and "秦川" not in text["zh"] and "查找工具栏" not in text["lzh"]
    for lang, package, licence in (("zh", "zh-help", "MPL-2.0"), ("lzh", "chinese-poetry", "MIT")):
        [source] = json.loads((cache / lang / "SOURCES.json").read_text())
        assert (source["package"], source["licence"], source["version"]) == (package, licence, "1.0")
        assert source["han_characters"] == extract_large.han_count(text[lang]) > 0
        assert source["characters"] == len(text[lang]) - text[lang].count("\n")
        assert (cache / lang / source["licence_file"]).read_text().startswith(("Files: *", "The MIT License"))
    out = capsys.readouterr().out
    assert "lzh: chinese-poetry 1.0: 4 documents" in out and "Chinese characters" in out
    assert corpus.fetch_corpus(cache, corpus="large") == cache  # complete: returned as is
    with pytest.raises(ValueError, match="corpus_dir"):
        corpus.fetch_corpus(cache, corpus="large", corpus_dir=fake_registry)


@pytest.mark.slow
def test_real_large_corpus_keeps_classical_apart_and_counts_it(tmp_path):
    """Downloads ~230 MB (Debian, npm chinese-poetry) and renders every Chinese man page."""
    cache = corpus.fetch_corpus(CACHE / "corpus_large", corpus="large")
    han = {lang: sum(s["han_characters"] for s in json.loads((cache / lang / "SOURCES.json").read_text()))
           for lang in ("zh", "lzh")}
    assert han["lzh"] > 15_000_000 and han["zh"] > 1_800_000, han  # modern: 2x the default corpus's, not 10x
    zh = {s["package"] for s in json.loads((cache / "zh" / "SOURCES.json").read_text())}
    assert "chinese-poetry" not in zh and "libreoffice-help-zh-cn" in zh
