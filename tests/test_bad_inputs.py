"""Bad input, one case a row: what a user runs → the one-line message they must get → what must not change.

Every row runs the real CLI (`xfer ...`, in-process), expects a non-zero exit, a message on stderr that holds the
fragment on one line (no traceback), and every path listed under `unchanged` byte-for-byte as before the call.
A row's `prepare(tmp_path)` builds the files it needs and returns {name: path}; `argv` and `unchanged` name them
as `{name}`. Builders are shared through `_cached` so the suite pays for each kind of input once.
"""
import dataclasses
import hashlib
import pathlib
import shutil
from collections.abc import Callable

import pytest

from xfer_jax import cli


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    prepare: Callable[[pathlib.Path, pytest.FixtureRequest], dict]
    argv: tuple[str, ...]
    message: str  # a fragment of the one-line error
    unchanged: tuple[str, ...] = ()  # path names (files or folders) that must be byte-identical afterwards


def digest(path: pathlib.Path) -> dict[str, str]:
    """{relative file path: sha256} of a file or a whole folder; {} when absent."""
    path = pathlib.Path(path)
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


# ---- builders (each returns {name: path}) ----

_BUILT: dict[str, pathlib.Path] = {}


def _cached(key: str, build: Callable[[pathlib.Path], None], request) -> pathlib.Path:
    """Build once per session under a session temp folder; each case gets its own copy."""
    if key not in _BUILT:
        where = request.getfixturevalue("tmp_path_factory").mktemp(key)
        build(where)
        _BUILT[key] = where
    return _BUILT[key]


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# ---- train (run directory) builders ----
REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = ("train", "--config", "configs/pretrain.py", "--config.train.progress_bar=False",
         "--config.train.steps=4", "--config.train.save_every=2", "--config.train.async_save=False")


def _trained_run(where: pathlib.Path, request) -> None:
    """A 2-step run of configs/pretrain.py (small tokenizer, real corpus), checkpoint at step 2."""
    from xfer_jax.train.loop import train

    c = request.getfixturevalue("pretrain_config")
    c.train.out_dir, c.train.steps, c.train.save_every, c.train.async_save = str(where / "run"), 2, 2, False
    c.data.heldout = []
    train(c)


def _other_tokenizer(path: pathlib.Path, tokenizer: pathlib.Path, pieces: int | None = None) -> pathlib.Path:
    """The same tokenizer with two pieces' ids swapped (same size, other ids), or cut to `pieces` pieces."""
    from xfer_jax.data.tokenizer import Tokenizer

    proto = Tokenizer.load(tokenizer).proto()
    if pieces is None:
        a, b = proto.pieces[500], proto.pieces[501]
        (a.piece, a.score), (b.piece, b.score) = (b.piece, b.score), (a.piece, a.score)
    else:
        del proto.pieces[pieces:]
    Tokenizer.from_proto(proto).save(path)
    return path


def run_with(tokenizer: str = "small", pieces: int | None = None):
    """prepare(): a copy of the trained run, and the tokenizer to resume it with."""
    def prepare(tmp_path, request):
        run = _copy(_cached("trained_run", lambda w: _trained_run(w, request), request) / "run", tmp_path / "run")
        small = request.getfixturevalue("small_tokenizer")
        tok = small if tokenizer == "small" else _other_tokenizer(tmp_path / "other.model", small, pieces)
        return {"run": run, "tokenizer": tok, "gs_local": REPO / "gs:"}
    return prepare


def on_emulator(prepare):
    """prepare() with the GCS emulator running (STORAGE_EMULATOR_HOST set, as a user would set it)."""
    def with_emulator(tmp_path, request):
        request.getfixturevalue("gcs_emulator")
        return prepare(tmp_path, request)
    return with_emulator


def test_train_storage_unreachable_is_one_fast_line(small_tokenizer, tmp_path):
    """An endpoint nobody answers on: one line naming the URL within seconds, not the clients' minute of retries."""
    import os
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k != "TENSORSTORE_GCS_HTTP_URL"}
    env["STORAGE_EMULATOR_HOST"] = "http://127.0.0.1:1"
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "xfer_jax.cli", *TRAIN, f"--config.data.tokenizer={small_tokenizer}",
                           "--config.train.out_dir=gs://some-bucket/run"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    seconds = time.monotonic() - t0
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert any("train.out_dir='gs://some-bucket/run': cannot reach the storage endpoint 127.0.0.1:1" in line
               for line in done.stderr.splitlines()), done.stderr[-2000:]
    assert seconds < 10, seconds
    assert not (REPO / "gs:").exists()


def all_bad_records(tmp_path, request):
    """A config whose only source is a JSONL file in which every record is malformed."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(f"{{'text': {i}}}\n" for i in range(40)))
    conf = tmp_path / "bad_source.py"
    conf.write_text("from xfer_jax.config_files import project_config\n\n\ndef get_config():\n"
                    "    c = project_config('pretrain')\n"
                    f"    c.data.sources = [dict(lang='en', path={str(bad)!r}, format='jsonl', weight=1.0)]\n"
                    "    c.data.languages = ['en']\n    c.data.heldout = []\n    return c\n")
    return {"conf": conf, "bad": bad, "run": tmp_path / "run",
            "tokenizer": request.getfixturevalue("small_tokenizer")}


def unruled_sequence_axis(tmp_path, request):
    """A config from before context parallelism: its rules keep ("seq", None), its mesh asks for sequence=2."""
    conf = tmp_path / "old_rules.py"
    conf.write_text("from xfer_jax.config_files import project_config\n\n\ndef get_config():\n"
                    "    c = project_config('pretrain')\n"
                    "    c.rules = [[k, None if k == 'seq' else v] for k, v in c.rules]\n"
                    "    c.mesh.sequence = 2\n    return c\n")
    return {"conf": conf, "run": tmp_path / "run", "tokenizer": request.getfixturevalue("small_tokenizer")}


# ---- convert (export) builders ----
def _exports(where: pathlib.Path) -> None:
    """A tiny 1-layer checkpoint and its HF export; a LoRA checkpoint on it and its PEFT export (adapter + base)."""
    import jax
    import numpy as np

    from xfer_jax import checkpoint
    from xfer_jax.convert import hf, peft
    from xfer_jax.model import lora_params, params as model_params
    from xfer_jax.model.shapes import get_shape

    quiet = lambda *_: None  # noqa: E731
    cfg = get_shape("tiny", num_layers=1)
    base = jax.tree.map(np.asarray, model_params.init_params(cfg, seed=0))
    checkpoint.save(where / "ckpt", cfg, base)
    hf.orbax_to_hf(where / "ckpt", where / "old_export", log=quiet)
    lora_cfg = cfg.replace(lora_rank=2, lora_alpha=4.0, lora_targets=("q_proj", "v_proj"))
    trained = jax.tree.map(np.asarray, lora_params.add_adapters(lora_cfg, base, jax.random.key(0)))
    checkpoint.save(where / "lora", lora_cfg, trained,
                    extra_meta={"trainable": [f"layers/{n}_lora_{ab}" for n in lora_cfg.lora_targets for ab in "ab"]})
    peft.orbax_to_peft(where / "lora", where / "old_adapter", base_out=where / "old_base", log=quiet)


def _merged_tokenizer(where: pathlib.Path) -> None:
    """Two tiny sentencepiece models and their merge, with its Hugging Face files in old_hf."""
    import sentencepiece as spm

    from xfer_jax.vocab.merge import merge_files

    text = ["The quick brown fox jumps over the lazy dog.", "我们的模型会说中文。", "你好，世界！今天天气很好。"] * 30
    for name, size in (("base", 400), ("add", 500)):
        spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=str(where / name), vocab_size=size,
                                       hard_vocab_limit=False, model_type="bpe", byte_fallback=True, minloglevel=2,
                                       normalization_rule_name="identity", remove_extra_whitespaces=False)
    merge_files(where / "base.model", where / "add.model", where / "merged.model", hf_dir=where / "old_hf")


def exports(tmp_path, request):
    """prepare(): copies of the checkpoints and exports of `_exports`, and a fresh path `new`."""
    built = _cached("convert_exports", _exports, request)
    names = ("ckpt", "old_export", "lora", "old_adapter", "old_base")
    return {**{name: _copy(built / name, tmp_path / name) for name in names}, "new": tmp_path / "new"}


def merged_tokenizer(tmp_path, request):
    """prepare(): copies of the tokenizers and the old_hf folder of `_merged_tokenizer`, and a fresh .model path."""
    built = _cached("merged_tokenizer", _merged_tokenizer, request)
    files = {name: shutil.copy(built / f"{name}.model", tmp_path / f"{name}.model") for name in ("base", "add")}
    return {**files, "old_hf": _copy(built / "old_hf", tmp_path / "old_hf"), "new": tmp_path / "new.model"}


CASES: list[Case] = []

# ---- convert (export) ----
EXPORT = ("convert", "orbax-to-hf", "--ckpt", "{ckpt}")
PEFT = ("convert", "orbax-to-peft", "--ckpt", "{lora}")
CASES += [
    Case("export-into-old-export", exports, (*EXPORT, "--out", "{old_export}"),
         "old_export is not empty; pass --overwrite to replace it", ("old_export",)),
    Case("export-out-is-ckpt", exports, (*EXPORT, "--out", "{ckpt}", "--overwrite"), "is --ckpt", ("ckpt",)),
    Case("export-lora-unmerged-over-old-export", exports,
         ("convert", "orbax-to-hf", "--ckpt", "{lora}", "--out", "{old_export}", "--overwrite"), "--merge_lora",
         ("old_export",)),
    Case("peft-into-old-adapter", exports, (*PEFT, "--out", "{old_adapter}"),
         "old_adapter is not empty; pass --overwrite to replace it", ("old_adapter",)),
    Case("peft-base-out-into-old-export", exports, (*PEFT, "--out", "{new}", "--base_out", "{old_export}"),
         "--base_out", ("old_export", "new")),
    Case("peft-out-is-base-out", exports, (*PEFT, "--out", "{new}", "--base_out", "{new}"), "is --base_out", ("new",)),
    Case("peft-unknown-module-over-old-adapter", exports,
         (*PEFT, "--out", "{old_adapter}", "--modules_to_save", "norm", "--overwrite"), "modules_to_save ['norm']",
         ("old_adapter",)),
    Case("vocab-merge-into-old-hf-dir", merged_tokenizer,
         ("vocab", "merge", "--base", "{base}", "--add", "{add}", "--out", "{new}", "--hf_dir", "{old_hf}"),
         "old_hf is not empty; pass --overwrite to replace it", ("old_hf", "new")),
]

# ---- train (run directory) ----
RESUME = (*TRAIN, "--config.data.tokenizer={tokenizer}", "--config.train.out_dir={run}")
CASES += [
    Case("train-resume-other-tokenizer", run_with("swapped"), RESUME, "differs from the tokenizer of checkpoint",
         ("run",)),
    Case("train-resume-smaller-tokenizer", run_with("cut", pieces=1900), RESUME, "model.vocab_size=1900", ("run",)),
    Case("train-resume-other-shape", run_with(), (*RESUME, "--config.model.shape=tiny_mha"), "model.num_kv_heads=",
         ("run",)),
    Case("train-out-dir-missing-bucket", on_emulator(run_with()),
         (*TRAIN, "--config.data.tokenizer={tokenizer}", "--config.train.out_dir=gs://xfer-no-such-bucket/run"),
         "train.out_dir='gs://xfer-no-such-bucket/run': bucket gs://xfer-no-such-bucket does not exist", ("gs_local",)),
    Case("train-config-key-typo", run_with(), (*RESUME, "--config.train.lr_typo=1"),
         "--config.train.lr_typo: configs/pretrain.py has no key 'train.lr_typo'; did you mean --config.optim.lr", ("run",)),
    Case("study-config-key-typo-default-config", lambda tmp_path, request: {"out": tmp_path / "study"},
         ("study", "--out", "{out}", "--config.nope=1"), "study_toy.py has no key 'nope'", ("out",)),
    Case("demo-run-dir-in-a-bucket", lambda tmp_path, request: {"gs_local": REPO / "gs:"},
         ("demo", "--out", "gs://bucket/demo"), "'gs://bucket/demo': this must be a local path; write the run "
         "locally and copy", ("gs_local",)),
    Case("train-sequence-axis-without-a-rule", unruled_sequence_axis,
         ("train", "--config", "{conf}", "--config.data.tokenizer={tokenizer}", "--config.train.out_dir={run}"),
         "mesh axis 'sequence' has 2 devices but no entry of the sharding rules (config rules) maps to it", ("run",)),
    Case("train-every-record-bad", all_bad_records,
         ("train", "--config", "{conf}", "--config.data.tokenizer={tokenizer}", "--config.train.out_dir={run}"),
         "bad.jsonl:1: malformed json", ("bad", "run")),
]

# ---- convert (HF config) ----
YARN_ROPE = {"rope_type": "yarn", "rope_theta": 500.0, "factor": 4.0, "original_max_position_embeddings": 64}


def _tiny_hf(where: pathlib.Path) -> None:
    from hf_helpers import tiny_hf_model

    tiny_hf_model(num_kv_heads=2, layers=1).save_pretrained(where / "hf")  # as transformers 5 writes it


def hf_with(**edit):
    """prepare(): a copy of a tiny transformers-saved LLaMA directory, `edit` applied to its config.json."""
    def prepare(tmp_path, request):
        import json

        hf_dir = _copy(_cached("tiny_hf", _tiny_hf, request) / "hf", tmp_path / "hf")
        config = hf_dir / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), **edit}))
        return {"hf": hf_dir, "out": tmp_path / "ckpt"}
    return prepare


IMPORT = ("convert", "hf-to-orbax", "--hf_dir={hf}", "--out={out}")
CASES += [
    Case("convert-rope-yarn", hf_with(rope_parameters=YARN_ROPE), IMPORT,
         "rope_parameters.rope_type='yarn' is not supported", ("hf", "out")),
    Case("convert-unknown-config-key", hf_with(logits_scaling=4.0), IMPORT,
         "logits_scaling not understood: the model may compute differently", ("hf", "out")),
    Case("convert-attention-bias", hf_with(attention_bias=True), IMPORT, "attention_bias=True is not supported",
         ("hf", "out")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path, request, capsys):
    paths = {k: str(v) for k, v in case.prepare(tmp_path, request).items()}
    before = {name: digest(paths[name]) for name in case.unchanged}
    code = cli.main([a.format(**paths) for a in case.argv])
    err = capsys.readouterr().err
    assert code != 0, err
    assert "Traceback" not in err, err
    assert any(case.message in line for line in err.splitlines()), err
    for name in case.unchanged:
        assert digest(paths[name]) == before[name], f"{name} ({paths[name]}) changed"
