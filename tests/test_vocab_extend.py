"""Vocabulary extension, checkpoint side: a tiny English base trained with the trainer on the real corpus, grown
to an English+Chinese tokenizer by each init strategy.

What each strategy does to the new rows, measured on English held-out text (old tokens only) against the
trained base, whose own logits are identical before and after:
  random        new logits ~ normal(0, initializer_range × |h|): near zero, far above a trained model's typical
                logit, so the new tokens take a large share of the probability.
  mean          every new logit equals the mean of the old logits; their share is far smaller than random's.
  noisy_mean    the mean logit plus a little spread.
  subword_mean  each new logit equals the mean of the old logits of the pieces the base splits it into.
"""
import pathlib

import jax
import numpy as np
import pytest

from xfer_jax import checkpoint, cli
from xfer_jax.data.sources import SourceSpec
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.model import params as model_params
from xfer_jax.parallel.mesh import make_mesh
from xfer_jax.model.sharding import param_shardings
from xfer_jax.train.loop import train
from xfer_jax.vocab.merge import MergeOptions, merge_files, padding_ids
from xfer_jax.vocab.resize import STRATEGIES, ExtendOptions, base_segments, extend
from xfer_jax.vocab.train import TrainOptions, train_tokenizer
from xfer_jax.config_files import project_config

REPO = pathlib.Path(__file__).resolve().parents[1]
apply = jax.jit(model_params.apply, static_argnums=0)
hidden_states = jax.jit(lambda cfg, params, tokens: model_params.bind(cfg, params).hidden_states(tokens), static_argnums=0)


def pretrain_config():
    return project_config("pretrain")


@pytest.fixture(scope="module")
def base(corpus_dir, tmp_path_factory):
    """English BPE tokenizer (1,000 pieces), its Chinese extension (padded to 64), and a tiny model trained on en."""
    root = tmp_path_factory.mktemp("vocab_extend")
    en = train_tokenizer([SourceSpec(lang="en", path=str(corpus_dir / "en" / "train.txt"))], root / "en.model",
                         TrainOptions(vocab_size=1000))
    zh = train_tokenizer([SourceSpec(lang="zh", path=str(corpus_dir / "zh" / "train.txt"))], root / "zh.model",
                         TrainOptions(vocab_size=2000, character_coverage=0.98))
    merged = root / "merged.model"
    merge_files(en, zh, merged, MergeOptions(pad_to_multiple=64))
    c = pretrain_config()
    c.data.tokenizer = str(en)
    c.data.sources = [dict(lang="en", path=str(corpus_dir / "en" / "train.txt"), format="text", weight=1.0)]
    c.data.heldout = []
    c.data.seq_len = 64
    c.optim.lr = 5e-3
    c.train.out_dir, c.train.steps, c.train.save_every = str(root / "base"), 40, 40
    c.train.progress_bar, c.train.async_save, c.train.log_every = False, False, 40
    train(c)
    ckpt = root / "base" / "ckpt"  # the trainer's checkpoint carries en.model as its tokenizer.model
    extended = {s: extend(ckpt, merged, root / s, ExtendOptions(strategy=s), log=lambda _: None) for s in STRATEGIES}
    return dict(en=en, merged=merged, ckpt=ckpt, extended=extended, root=root)


@pytest.fixture(scope="module")
def english_tokens(base, corpus_dir):
    docs = (corpus_dir / "en" / "heldout.txt").read_text().splitlines()
    ids = [i for doc in Tokenizer.load(base["en"]).encode_batch(docs) for i in doc]
    return np.asarray(ids[: 4 * 64], np.int32).reshape(4, 64)


def test_old_logits_are_unchanged_and_new_rows_follow_the_strategy(base, english_tokens):
    cfg, params = checkpoint.load_params(base["ckpt"])
    old = np.asarray(apply(cfg, params, english_tokens))
    vocab = cfg.vocab_size
    merged = Tokenizer.load(base["merged"]).proto()
    pads = set(padding_ids(merged))
    new_pieces = [p.piece for p in merged.pieces[vocab:]]
    segments = base_segments(Tokenizer.load(base["en"]).proto(), new_pieces)
    old_mass = {}
    for strategy, ckpt in base["extended"].items():
        ext_cfg, ext = checkpoint.load_params(ckpt)
        assert ext_cfg.vocab_size == len(merged.pieces) and ext_cfg.vocab_size % 64 == 0
        logits = np.asarray(apply(ext_cfg, ext, english_tokens))
        # Old rows are copied bit for bit, so the final hidden states of old-token inputs are identical and the
        # old logits are the same dot products; XLA tiles the wider matmul differently, hence float32 rounding.
        np.testing.assert_array_equal(ext["embed_tokens"][:vocab], params["embed_tokens"])
        np.testing.assert_array_equal(ext["lm_head"][:, :vocab], params["lm_head"])
        np.testing.assert_array_equal(hidden_states(ext_cfg, ext, english_tokens),
                                      hidden_states(cfg, params, english_tokens))
        np.testing.assert_allclose(logits[..., :vocab], old, rtol=0, atol=1e-5)
        new = logits[..., vocab:]
        mean_logit = old.mean(-1, keepdims=True)
        if strategy == "mean":
            np.testing.assert_allclose(new, np.broadcast_to(mean_logit, new.shape), atol=1e-4)
        elif strategy == "subword_mean":
            expected = np.stack([old[..., seg].mean(-1) if i + vocab not in pads else old.mean(-1)
                                 for i, seg in enumerate(segments)], -1)
            np.testing.assert_allclose(new, expected, atol=1e-4)
            rows = ext["embed_tokens"][vocab:]
            np.testing.assert_allclose(rows[0], params["embed_tokens"][segments[0]].mean(0), atol=1e-6)
        elif strategy == "noisy_mean":
            spread = (new - mean_logit).std()
            assert 0 < spread < 0.5 * old.std(), (spread, old.std())
        else:  # random: logits ~ normal(0, 0.02 |h|), near zero
            assert abs(new.mean()) < 0.1 and new.std() < 0.5 * old.std()
            assert new.mean() > mean_logit.mean() + 1.0  # near zero is well above the trained model's typical logit
        probs = jax.nn.softmax(logits, -1)
        old_mass[strategy] = float(np.asarray(probs[..., vocab:]).sum(-1).mean())
    print("\nprobability mass on the new rows, English held-out text:", {k: round(v, 3) for k, v in old_mass.items()})
    assert old_mass["random"] > 2 * old_mass["mean"]
    assert old_mass["random"] > 2 * old_mass["subword_mean"]


def test_extended_checkpoint_restores_onto_8_devices(base):
    ckpt = base["extended"]["subword_mean"]
    cfg, host = checkpoint.load_params(ckpt)
    mesh = make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    shardings = param_shardings(cfg, mesh)
    _, sharded = checkpoint.load_params(ckpt, shardings=shardings)
    assert sharded["embed_tokens"].sharding.spec[0] == "tensor"  # padded to 64: the vocabulary splits over tensor
    assert sharded["lm_head"].sharding.spec[1] == "tensor"
    for name in ("embed_tokens", "lm_head"):
        np.testing.assert_array_equal(np.asarray(sharded[name]), host[name])
    np.testing.assert_array_equal(np.asarray(sharded["layers"]["q_proj"]), host["layers"]["q_proj"])


def test_extend_errors_name_the_file_and_the_fix(base, small_tokenizer, tmp_path):
    bare = checkpoint.save(tmp_path / "bare", *checkpoint.load_params(base["ckpt"]))  # no tokenizer.model
    with pytest.raises(FileNotFoundError, match="--base_tokenizer"):
        extend(bare, base["merged"], tmp_path / "a")
    with pytest.raises(ValueError, match="not more than"):
        extend(base["ckpt"], base["en"], tmp_path / "b", base_tokenizer=base["en"])
    with pytest.raises(ValueError, match=r"piece \d+ is .* but the checkpoint's tokenizer"):
        extend(base["ckpt"], small_tokenizer, tmp_path / "c", base_tokenizer=base["en"])
    grown = base["extended"]["mean"]  # carries the merged tokenizer: its rows no longer match the en tokenizer
    with pytest.raises(ValueError, match="vocabulary rows but its tokenizer"):
        extend(grown, base["merged"], tmp_path / "d", base_tokenizer=base["en"])
    with pytest.raises(ValueError, match="init strategy 'zeros'"):
        extend(base["ckpt"], base["merged"], tmp_path / "e", ExtendOptions(strategy="zeros"), base_tokenizer=base["en"])
    with pytest.raises(FileExistsError, match="overwrite"):
        extend(base["ckpt"], base["merged"], grown, base_tokenizer=base["en"])


def test_cli_extend_then_hf_export_loads_in_transformers(base, corpus_dir, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "ckpt"
    assert cli.main(["vocab", "extend", "--ckpt", str(base["ckpt"]), "--tokenizer", str(base["merged"]),
                     "--init", "noisy_mean", "--out", str(out)]) == 0
    assert checkpoint.read_meta(out)["vocab_extend"]["strategy"] == "noisy_mean"
    assert cli.main(["convert", "orbax-to-hf", "--ckpt", str(out), "--out", str(tmp_path / "hf")]) == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32)
    assert len(tok) == model.config.vocab_size == Tokenizer.load(base["merged"]).vocab_size
    text = (corpus_dir / "zh" / "heldout.txt").read_text().splitlines()[0][:60] + " and some English"
    ids = Tokenizer.load(base["merged"]).encode(text)
    assert tok(text)["input_ids"] == ids and max(ids) >= 1000  # new pieces in use
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits.numpy()
    cfg, params = checkpoint.load_params(out)
    np.testing.assert_allclose(theirs, np.asarray(apply(cfg, params, np.asarray([ids], np.int32))), atol=1e-4, rtol=1e-4)
    assert cli.main(["vocab", "extend", "--ckpt", str(base["ckpt"]), "--tokenizer", str(base["en"]),
                     "--out", str(tmp_path / "x")]) == 1
    assert "extend only grows a vocabulary" in capsys.readouterr().err
