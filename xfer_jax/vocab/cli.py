"""`xfer vocab train | merge | extend | report`: vocabulary extension, one stage per sub-command.

    xfer vocab train  --source .cache/corpus/zh/train.txt --out vocab/zh.model --vocab_size 20000
    xfer vocab merge  --base .cache/llama_tokenizer/tokenizer.model --add vocab/zh.model --out vocab/merged.model
    xfer vocab train  --kind hf --base .cache/llama3_tokenizer/tokenizer.json --source .cache/corpus/zh/train.txt \
                      --out vocab/zh_bpe.json --vocab_size 20000           # byte-level BPE (Llama-3)
    xfer vocab merge  --base .cache/llama3_tokenizer/tokenizer.json --add vocab/zh_bpe.json \
                      --out vocab/llama3_zh/tokenizer.json
    xfer vocab extend --ckpt ckpts/llama2_7b --tokenizer vocab/merged.model --init subword_mean --out ckpts/llama2_7b_zh
    xfer vocab report --tokenizer base=.cache/llama_tokenizer/tokenizer.model --tokenizer merged=vocab/merged.model \\
                      --corpus .cache/corpus --languages zh,en --out vocab/report
"""
import argparse
import dataclasses
import json
import sys

from xfer_jax import paths
from xfer_jax.cli_args import add_flag
from xfer_jax.errors import run_verb
from xfer_jax.data.sources import DOC_SPLITS, TEXT_FORMATS, SourceSpec


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} {value!r}: expected NAME=PATH (e.g. {flag} zh=heldout.txt)")
        pairs[name] = path
    return pairs


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="text", choices=TEXT_FORMATS, help="format of the text files")
    p.add_argument("--text_field", default="text", help="field holding the document (jsonl, parquet, tfds)")
    p.add_argument("--doc_split", default="line", choices=DOC_SPLITS, help="text: one document per line or per block")
    p.add_argument("--split", default="", help="tfds, hf_dataset: the split or slice (default train)")
    p.add_argument("--data_dir", default="", help="tfds: the data_dir holding the prepared dataset")


def _spec(args, lang: str, source: str) -> SourceSpec:
    """A source from the flags: SOURCE is a path, or (--format tfds) a dataset name."""
    entry = {"lang": lang, "format": args.format, "text_field": args.text_field, "doc_split": args.doc_split,
             "split": args.split, "data_dir": args.data_dir, "max_documents": getattr(args, "max_documents", 0)}
    entry["name" if args.format == "tfds" else "path"] = source
    return SourceSpec.from_config(entry, f"--source {source}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xfer vocab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a sentencepiece model (or, --kind hf, a byte-level BPE) on target text")
    t.add_argument("--kind", default="sentencepiece", choices=["sentencepiece", "hf"],
                   help="hf: a tokenizer.json BPE with --base's normaliser, pre-tokeniser and byte alphabet")
    t.add_argument("--base", default=None, help="--kind hf: the base tokenizer.json (Llama-3's) whose pipeline it copies")
    t.add_argument("--source", action="append", required=True,
                   help="file, glob or directory of text; --format tfds: a dataset name (repeatable)")
    _source_args(t)
    t.add_argument("--max_documents", type=int, default=0, help="per source, a fixed random sample (0: all)")
    t.add_argument("--out", required=True, help="the .model file to write (--kind hf: a .json)")
    t.add_argument("--vocab_size", type=int, default=20000)
    t.add_argument("--model_type", default=None, choices=["bpe", "unigram"], help="sentencepiece: bpe (default)")
    t.add_argument("--character_coverage", type=float, default=None, help="sentencepiece (default 0.9995)")
    t.add_argument("--no_byte_fallback", action="store_true", help="unknown characters become <unk>, not bytes")
    t.add_argument("--normalization", default=None, help="sentencepiece rule: identity (default, LLaMA's), nmt_nfkc, ...")
    t.add_argument("--max_sentences", type=int, default=None, help="sentencepiece: sentences sampled (default 2,000,000)")
    add_flag(t, "--threads", "--num_threads", type=int, default=2, help="sentencepiece training threads")
    t.add_argument("--seed", type=int, default=0)

    m = sub.add_parser("merge", help="append a model's new pieces to a base model (every base id kept)")
    m.add_argument("--base", required=True, help="base tokenizer: LLaMA's tokenizer.model, or Llama-3's tokenizer.json")
    m.add_argument("--add", required=True, help="model whose new pieces are appended (from `xfer vocab train`), same kind")
    m.add_argument("--out", required=True, help="merged .model to write (tokenizer.json: DIR/tokenizer.json)")
    m.add_argument("--hf_dir", default=None, help="sentencepiece: where the HF tokenizer files go (default: OUT's name + _hf)")
    m.add_argument("--max_added", type=int, default=0, help="append at most this many pieces, best first (0: all)")
    m.add_argument("--score_policy", default=None, choices=["below_base", "zero"],
                   help="sentencepiece: below_base (default, sentencepiece and transformers agree); zero: Chinese-LLaMA's")
    m.add_argument("--pad_to_multiple", type=int, default=0, help="append unused pieces up to a multiple (64, 128)")
    m.add_argument("--keep_ascii", action="store_true", help="sentencepiece: also append ASCII-only pieces (changes English)")
    m.add_argument("--protect_scripts", default=None,
                   help="tokenizer.json: scripts whose text keeps its base encoding (default Latin,Common,Inherited; "
                        "none: append every new token)")
    m.add_argument("--max_length", type=int, default=None, help="sentencepiece: model_max_length (default 4096)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing --out and a non-empty --hf_dir")

    e = sub.add_parser("extend", help="grow a checkpoint's embedding and lm_head to a merged tokenizer")
    e.add_argument("--ckpt", required=True, help="xfer_jax checkpoint directory")
    e.add_argument("--tokenizer", required=True, help="the merged .model or tokenizer.json (from `xfer vocab merge`)")
    e.add_argument("--init", default="subword_mean", choices=["random", "mean", "noisy_mean", "subword_mean"])
    e.add_argument("--out", required=True, help="checkpoint directory to write (step 0)")
    e.add_argument("--base_tokenizer", default=None, help="the checkpoint's tokenizer (default: the one CKPT carries)")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--noise_scale", type=float, default=0.1, help="noisy_mean: noise std over each dimension's std")
    e.add_argument("--overwrite", action="store_true")

    r = sub.add_parser("report", help="tokens per character / byte on held-out text, per language and tokenizer")
    r.add_argument("--tokenizer", action="append", required=True, help="NAME=PATH (repeatable; the first is the reference)")
    r.add_argument("--text", action="append", default=[], help="LANG=PATH of held-out text (repeatable)")
    r.add_argument("--corpus", default=None, help="a `xfer data fetch` cache: uses CORPUS/LANG/heldout.txt")
    add_flag(r, "--languages", "--langs", default="zh,en", help="with --corpus: comma-separated languages")
    _source_args(r)
    r.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    return p


def _refuse(what: str, flags: dict[str, object]) -> None:
    """Flags the chosen kind cannot honour are refused by name (None / False: not given)."""
    given = [flag for flag, value in flags.items() if value not in (None, False)]
    if given:
        raise ValueError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to {what}; "
                         f"drop {'it' if len(given) == 1 else 'them'}")


def _train(args) -> None:
    specs = [_spec(args, "vocab", s) for s in args.source]
    if args.kind == "hf":
        from xfer_jax.vocab.bpe_train import BpeTrainOptions, train_bpe

        _refuse("--kind hf (a byte-level BPE)", {
            "--model_type": args.model_type, "--character_coverage": args.character_coverage,
            "--no_byte_fallback": args.no_byte_fallback, "--normalization": args.normalization,
            "--max_sentences": args.max_sentences})
        if not args.base:
            raise ValueError("--kind hf needs --base: the base tokenizer.json whose normaliser, pre-tokeniser and "
                             "byte alphabet the new BPE copies (e.g. --base .cache/llama3_tokenizer/tokenizer.json)")
        options = BpeTrainOptions(vocab_size=args.vocab_size, seed=args.seed)
        print(f"wrote {train_bpe(specs, args.out, args.base, options)}")
        return
    from xfer_jax.vocab.train import TrainOptions, train_tokenizer

    _refuse("--kind sentencepiece", {"--base": args.base})
    given = {key: getattr(args, key) for key in ("model_type", "character_coverage", "normalization", "max_sentences")}
    options = TrainOptions(vocab_size=args.vocab_size, byte_fallback=not args.no_byte_fallback,
                           num_threads=args.threads, seed=args.seed,
                           **{key: value for key, value in given.items() if value is not None})
    print(f"wrote {train_tokenizer(specs, args.out, options)}")


def _merge(args) -> None:
    from xfer_jax.vocab.bpe_merge import check_same_kind

    out = paths.path(args.out, "--out")
    if check_same_kind(args.base, args.add) == "hf":
        from xfer_jax.data.tokenizer import resolve
        from xfer_jax.vocab.bpe_merge import BpeMergeOptions, merge_bpe_files
        from xfer_jax.vocab.bytelevel import PROTECTED_SCRIPTS

        _refuse("a tokenizer.json merge", {"--hf_dir": args.hf_dir, "--score_policy": args.score_policy,
                                           "--keep_ascii": args.keep_ascii, "--max_length": args.max_length})
        scripts = PROTECTED_SCRIPTS if args.protect_scripts is None else \
            tuple(s for s in args.protect_scripts.split(",") if s and s != "none")
        options = BpeMergeOptions(max_added=args.max_added, pad_to_multiple=args.pad_to_multiple,
                                  protect_scripts=scripts)
        stats = merge_bpe_files(resolve(args.base), resolve(args.add), out, options, overwrite=args.overwrite)
        print(json.dumps(dataclasses.asdict(stats), indent=2))
        print(f"wrote {out} ({stats.merged_size} ids) and {out.with_name('tokenizer_config.json')}")
        return
    from xfer_jax.vocab.merge import MergeOptions, merge_files

    _refuse("a sentencepiece merge", {"--protect_scripts": args.protect_scripts})
    hf_dir = args.hf_dir or out.with_name(out.stem + "_hf")
    options = MergeOptions(max_added=args.max_added, score_policy=args.score_policy or "below_base",
                           pad_to_multiple=args.pad_to_multiple, keep_ascii=args.keep_ascii)
    stats = merge_files(args.base, args.add, out, options, hf_dir=hf_dir, max_length=4096 if args.max_length is None else args.max_length,
                        overwrite=args.overwrite)
    print(json.dumps(dataclasses.asdict(stats), indent=2))
    print(f"wrote {out} ({stats.merged_pieces} pieces) and the Hugging Face tokenizer files in {hf_dir}")


def check_outputs_reachable(args) -> None:
    """A URL among the outputs: its store answers and its bucket exists, before any work (one line if not)."""
    for flag in ("--out", "--hf_dir"):
        value = getattr(args, flag[2:], None)
        if value:
            paths.check_reachable(paths.path(value, flag), flag, must_exist=False)


def run(args) -> None:
    check_outputs_reachable(args)
    if args.command == "train":
        _train(args)
    elif args.command == "merge":
        _merge(args)
    elif args.command == "extend":
        from xfer_jax.vocab.resize import ExtendOptions, extend

        options = ExtendOptions(strategy=args.init, seed=args.seed, noise_scale=args.noise_scale)
        extend(args.ckpt, args.tokenizer, args.out, options, base_tokenizer=args.base_tokenizer, step=args.step,
               overwrite=args.overwrite)
    else:
        from xfer_jax.vocab import report

        texts = _pairs(args.text, "--text")
        if args.corpus:
            corpus = paths.path(args.corpus, "--corpus")
            texts.update({lang: str(corpus / lang / "heldout.txt") for lang in args.languages.split(",")})
        if not texts:
            raise ValueError("no text to measure: pass --text LANG=PATH or --corpus DIR")
        specs = {lang: _spec(args, lang, path) for lang, path in texts.items()}
        result = report.measure(_pairs(args.tokenizer, "--tokenizer"), specs)
        print(report.markdown(result), end="")
        if args.out:
            print("wrote " + " and ".join(map(str, report.write(result, args.out))))


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return run_verb(f"xfer vocab {args.command}", lambda: run(args), (ImportError,))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
