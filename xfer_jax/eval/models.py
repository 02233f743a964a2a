"""Which model and tokenizer an evaluation runs: a checkpoint on one device or a mesh, and its vocabulary.

Every `xfer eval` kind and `xfer serve` loads through here, so "which tokenizer belongs to this checkpoint"
has one answer: `--tokenizer` if given, else the checkpoint's own `tokenizer.model` (import and export carry
it), else the tokenizer the trainer was configured with (recorded in the checkpoint's meta).
"""
import pathlib

import jax

from xfer_jax import checkpoint, forward
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.parallel import mesh as mesh_lib


def parse_mesh(text: str | None) -> jax.sharding.Mesh | None:
    """'data=1,fsdp=-1,tensor=2' → a mesh over all devices; None or '' → one device, no mesh."""
    return mesh_lib.make_mesh(mesh_lib.parse_axis_sizes(text)) if text else None


def tokenizer_for(ckpt_dir, tokenizer: str | pathlib.Path | None = None) -> Tokenizer:
    if tokenizer:
        return Tokenizer.load(tokenizer)
    own = checkpoint.tokenizer_path(ckpt_dir)
    if own is not None:
        return Tokenizer.load(own)
    trained_with = checkpoint.read_meta(ckpt_dir).get("config", {}).get("data", {}).get("tokenizer")
    if trained_with and pathlib.Path(trained_with).is_file():
        return Tokenizer.load(trained_with)
    raise FileNotFoundError(
        f"{ckpt_dir} holds no tokenizer.model and its meta names no existing data.tokenizer "
        f"({trained_with!r}); pass --tokenizer PATH/tokenizer.model")


def load(ckpt_dir, *, mesh: jax.sharding.Mesh | None = None, tokenizer=None, dtype: str | None = None,
         param_dtype: str | None = None) -> tuple[forward.LoadedModel, Tokenizer]:
    """The checkpoint's model (sharded over `mesh` when given) and its tokenizer, checked against each other."""
    overrides = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v}
    tok = tokenizer_for(ckpt_dir, tokenizer)
    model = forward.load(ckpt_dir, mesh=mesh, **overrides)
    if tok.vocab_size > model.cfg.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} pieces but {ckpt_dir}'s vocabulary has "
                         f"{model.cfg.vocab_size} rows: wrong --tokenizer for this checkpoint?")
    return model, tok
