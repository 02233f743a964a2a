"""`xfer convert hf-to-orbax --hf_dir DIR --out DIR`, `xfer convert orbax-to-hf --ckpt DIR --out DIR [--merge_lora]`,
`xfer convert orbax-to-peft --ckpt DIR --out DIR [--base_out DIR]`.

An export refuses a non-empty --out (and --base_out) unless --overwrite, which replaces the folder whole: the
new export is built beside it and swapped in, so no file of an older export is left for transformers to load.
--hf_dir, --out and --base_out may be gs:// URLs: an HF directory there is read tensor by tensor (byte ranges),
and an export is built on local disk and uploaded with config.json last."""
import argparse
import sys

from xfer_jax.errors import run_verb
from xfer_jax.convert import hf, peft
from xfer_jax.model.shapes import SHAPES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xfer convert", description=__doc__)
    sub = p.add_subparsers(dest="direction", required=True)
    a = sub.add_parser("hf-to-orbax", help="import a Hugging Face LLaMA directory")
    a.add_argument("--hf_dir", required=True, help="directory with config.json and *.safetensors or pytorch_model*.bin")
    a.add_argument("--out", required=True, help="checkpoint directory to create")
    a.add_argument("--param_dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="store parameters in this dtype (default: keep the file's dtype, lossless)")
    a.add_argument("--overwrite", action="store_true", help="replace step 0 if --out already holds one")
    b = sub.add_parser("orbax-to-hf", help="export a checkpoint as a Hugging Face directory")
    b.add_argument("--ckpt", required=True, help="xfer_jax checkpoint directory")
    b.add_argument("--out", required=True, help="HF directory to write")
    b.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    b.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="dtype of the exported weights (default: the checkpoint's)")
    b.add_argument("--max_shard_gb", type=float, default=5.0, help="largest safetensors shard, in GB")
    b.add_argument("--merge_lora", action="store_true",
                   help="merge LoRA adapters into the weights (W + alpha/r·A·B); required for a checkpoint with adapters")
    b.add_argument("--overwrite", action="store_true", help="replace --out if it is not empty (swapped in whole)")
    c = sub.add_parser("orbax-to-peft", help="export a checkpoint's LoRA adapters in PEFT format")
    c.add_argument("--ckpt", required=True, help="xfer_jax checkpoint directory with LoRA adapters")
    c.add_argument("--out", required=True, help="directory for adapter_config.json and adapter_model.safetensors")
    c.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    c.add_argument("--base_out", default=None, help="also write the base model (weights without adapters) here")
    c.add_argument("--base_model", default=None, help="adapter_config's base_model_name_or_path (default: --base_out)")
    c.add_argument("--modules_to_save", default=None,
                   help="comma-separated fully trained modules (embed_tokens,lm_head); default: from the checkpoint meta")
    c.add_argument("--overwrite", action="store_true",
                   help="replace --out and --base_out if they are not empty (each swapped in whole)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return run_verb("xfer convert", lambda: run(args), (ImportError,))


def run(args) -> None:
    if args.direction == "hf-to-orbax":
        hf.hf_to_orbax(args.hf_dir, args.out, param_dtype=args.param_dtype, overwrite=args.overwrite)
    elif args.direction == "orbax-to-hf":
        hf.orbax_to_hf(args.ckpt, args.out, dtype=args.dtype, step=args.step,
                       max_shard_bytes=int(args.max_shard_gb * 1e9), merge_lora=args.merge_lora,
                       overwrite=args.overwrite)
    else:
        modules = None if args.modules_to_save is None else [m for m in args.modules_to_save.split(",") if m]
        peft.orbax_to_peft(args.ckpt, args.out, step=args.step, base_out=args.base_out,
                           modules_to_save=modules, base_model=args.base_model, overwrite=args.overwrite)


# `xfer parity`: a random LLaMA through our checkpoint and exporter into transformers, and the logit gap
# (the work is xfer_jax/convert/parity.py's).
def parity_parser(description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xfer parity", description=description)
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    p.add_argument("--out", default="runs/parity", help="working directory (checkpoint and HF export)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.model to carry (its size sets the vocabulary)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed |logit difference|")
    return p


def parity_main(argv: list[str]) -> int:
    """`xfer parity`: 0 when our logits match transformers' within --atol, else 1."""
    from xfer_jax.convert import parity

    args = parity_parser(parity.__doc__).parse_args(argv)
    return run_verb("xfer parity", lambda: parity.check(args.shape, args.out, args.tokenizer, seed=args.seed,
                                                        atol=args.atol), (ImportError,))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
