"""`xfer eval <kind> ...`: ppl | choice | generate | codeswitch | judge; each writes a report folder (--out).

    xfer eval ppl --ckpt ckpts/zh_1m --baseline ckpts/llama2_7b --languages zh,en --mesh fsdp=-1
    xfer eval choice --ckpt ckpts/tuned --format ceval --data data/ceval       # 5-shot, val split
    xfer eval choice --ckpt ckpts/tuned --format mmlu                          # the cached real MMLU file
    xfer eval generate --ckpt ckpts/tuned --prompts prompts.jsonl --template alpaca
    xfer eval codeswitch --generations runs/eval/generate/generations.jsonl --lang zh
    xfer eval judge --generations runs/eval/generate/generations.jsonl --url http://localhost:8000/v1 --model judge
    xfer eval harness --ckpt ckpts/tuned --tasks my_mc,my_ppl --include_path tasks/ --num_fewshot 5  # lm-eval

`xfer serve` (serve_main) is parsed here too, with the same checkpoint flags; its server is xfer_jax/eval/serve.py.
"""
import argparse
import json
import sys

from xfer_jax import paths
from xfer_jax.data.registry import default_cache_root
from xfer_jax.eval import report

KINDS = ("ppl", "choice", "generate", "codeswitch", "judge", "harness")
LOADS_MODEL = ("ppl", "choice", "generate", "harness")


def model_args(p: argparse.ArgumentParser, batch_size: bool = True) -> None:
    """The flags every verb that loads a checkpoint takes (eval ppl/choice/generate, serve)."""
    p.add_argument("--ckpt", required=True, help="xfer_jax checkpoint directory")
    p.add_argument("--tokenizer",
                   help="tokenizer.model (default: the checkpoint's own, else the one it was trained with)")
    p.add_argument("--mesh", help="shard over the local devices, e.g. fsdp=-1 or data=2,tensor=4 (default: one device)")
    p.add_argument("--dtype", help="compute dtype override (bfloat16 on accelerators)")
    p.add_argument("--param_dtype", help="parameter dtype override (bfloat16 halves the memory)")
    if batch_size:
        p.add_argument("--batch_size", type=int, default=8)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xfer eval", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    for kind in KINDS:
        k = sub.add_parser(kind)
        k.add_argument("--out", default=None, help=f"report folder (default runs/eval/{kind})")
        k.add_argument("--no_progress", action="store_true", help="no progress bars")
        if kind in LOADS_MODEL:
            model_args(k)
    ppl = sub.choices["ppl"]
    ppl.add_argument("--baseline", help="a second checkpoint: report its numbers and the deltas (English retention)")
    ppl.add_argument("--baseline_tokenizer", help="the baseline's tokenizer.model (default: its own)")
    ppl.add_argument("--languages", default="zh,en", help="languages of the fetched corpus' heldout.txt files")
    ppl.add_argument("--heldout", action="append", default=[], metavar="LANG=PATH",
                     help="held-out text (.txt one document per line, or .jsonl with --text_field); repeatable; "
                          "replaces --languages")
    ppl.add_argument("--text_field", default="text")
    ppl.add_argument("--seq_len", type=int, default=2048, help="row length (capped at the model's window)")
    choice = sub.choices["choice"]
    choice.add_argument("--format", required=True, choices=("ceval", "mmlu", "agieval", "gaokao"))
    choice.add_argument("--data", help="exam folder or file (mmlu default: the real MMLU file, fetched and cached)")
    choice.add_argument("--split", help="scored split (ceval: val, mmlu: test)")
    choice.add_argument("--shots", type=int, help="k-shot from the dev split (default: 5 for ceval/mmlu, 0 otherwise)")
    choice.add_argument("--mode", default="letter", choices=("letter", "text"),
                        help="score the answer letter, or the option text (also per byte)")
    choice.add_argument("--limit", type=int, default=0, help="score only the first N questions of each subject")
    choice.add_argument("--max_len", type=int, help="longest prompt in tokens (default: the model's window)")
    gen = sub.choices["generate"]
    gen.add_argument("--prompts", required=True, help="JSONL ({instruction[, input, id, lang, reference]}) or .txt")
    gen.add_argument("--template", default="alpaca",
                     help="alpaca | llama2_chat | plain | tokenizer (its own chat template) | none")
    gen.add_argument("--system", help="system text replacing the template's default")
    gen.add_argument("--max_new_tokens", type=int, default=256)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top_k", type=int, default=0)
    gen.add_argument("--top_p", type=float, default=1.0)
    gen.add_argument("--repetition_penalty", type=float, default=1.0)
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--decode_attention", default="auto", choices=["auto", "xla", "pallas"],
                     help="a new token's attention: auto = the one-kernel Pallas version on one GPU, else XLA's")
    cs = sub.choices["codeswitch"]
    cs.add_argument("--generations", required=True,
                    help="JSONL with `response` and `lang` (xfer eval generate's output)")
    cs.add_argument("--lang", help="expected language of records without `lang`")
    cs.add_argument("--languages", help="languages in play for language ID (default: the expected ones plus en)")
    cs.add_argument("--switch_share", type=float, default=0.0, help="a response switches above this foreign share")
    cs.add_argument("--min_letters", type=int, default=4)
    cs.add_argument("--min_syllables", type=int, default=2)
    cs.add_argument("--min_langid_letters", type=int, default=20)
    cs.add_argument("--examples", type=int, default=5)
    judge = sub.choices["judge"]
    judge.add_argument("--generations", required=True, help="JSONL with instruction, reference (or output), response")
    judge.add_argument("--url", required=True, help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    judge.add_argument("--model", required=True, help="the judge model's name at that endpoint")
    judge.add_argument("--api_key_env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    judge.add_argument("--cache", help="SQLite cache of judgments (default $XFER_CACHE/judge_cache.sqlite)")
    judge.add_argument("--workers", type=int, default=4)
    judge.add_argument("--requests_per_minute", type=float, default=0.0, help="0 = no limit")
    judge.add_argument("--retries", type=int, default=4)
    judge.add_argument("--timeout", type=float, default=120.0)
    judge.add_argument("--max_tokens", type=int, default=256)
    judge.add_argument("--allow_malformed", action="store_true",
                       help="exit 0 even when some judgments were rejected (they are still reported)")
    harness = sub.choices["harness"]  # EleutherAI lm-eval-harness (pip install -e .[harness]): eval/harness.py
    harness.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    harness.add_argument("--include_path", help="folder of task YAML files (local tasks: dataset_path: json ...)")
    harness.add_argument("--no_builtin_tasks", action="store_true", help="only the --include_path tasks (faster)")
    harness.add_argument("--num_fewshot", type=int, help="shots (default: each task's own)")
    harness.add_argument("--limit", type=float, help="documents per task (below 1: a fraction)")
    harness.add_argument("--max_length", type=int, help="window in tokens (default: the model's)")
    harness.add_argument("--max_gen_toks", type=int, default=256, help="new tokens when a task does not say")
    harness.add_argument("--bootstrap_iters", type=int, default=100000, help="stderr resamples (0: none)")
    harness.add_argument("--seed", type=int, help="lm-eval's random/numpy/torch/few-shot seeds (default: its own)")
    return p


def load_model(args, ckpt: str, tokenizer: str | None):
    from xfer_jax import forward
    from xfer_jax.parallel import mesh as mesh_lib

    return forward.load_with_tokenizer(ckpt, mesh=mesh_lib.parse_mesh(args.mesh), tokenizer=tokenizer,
                                       dtype=args.dtype, param_dtype=args.param_dtype)


def run_ppl(args) -> int:
    from xfer_jax.eval import perplexity

    files = {}
    for entry in args.heldout:
        lang, sep, path = entry.partition("=")
        if not sep:
            raise ValueError(f"--heldout {entry!r}: expected LANG=PATH")
        files.setdefault(lang, []).append(path)
    if not files:
        files = {lang: [str(default_cache_root() / "corpus" / lang / "heldout.txt")]
                 for lang in args.languages.split(",")}
    runs = {}
    for name, ckpt, tok in [("model", args.ckpt, args.tokenizer)] + (
            [("baseline", args.baseline, args.baseline_tokenizer)] if args.baseline else []):
        model, tokenizer = load_model(args, ckpt, tok)
        data_cfg = perplexity.heldout_config(files, seq_len=min(args.seq_len, model.cfg.max_position_embeddings),
                                             batch_size=args.batch_size, text_field=args.text_field)
        runs[name] = {"ckpt": ckpt, "languages": perplexity.evaluate(model, tokenizer, data_cfg,
                                                                     progress=not args.no_progress)}
        del model
    result = {"runs": runs, "heldout": files}
    if args.baseline:
        result["delta"] = perplexity.compare(runs["model"]["languages"], runs["baseline"]["languages"])
    _write(args, "ppl", result, perplexity.markdown(result), perplexity.charts(result))
    return 0


def run_choice(args) -> int:
    from xfer_jax.eval import choice, exams
    from xfer_jax.eval.exam_data import fetch_mmlu

    if args.data is None and args.format != "mmlu":
        raise ValueError(f"--data is required for --format {args.format} (only MMLU has a cached default)")
    exam = exams.read_exam(args.format, args.data or fetch_mmlu(), args.split, args.shots)
    shots = exams.DEFAULT_SHOTS[args.format] if args.shots is None else args.shots
    model, tokenizer = load_model(args, args.ckpt, args.tokenizer)
    result, predictions = choice.evaluate(model, tokenizer, exam, shots=shots, mode=args.mode,
                                          batch_size=args.batch_size, max_len=args.max_len, limit=args.limit,
                                          progress=not args.no_progress)
    result["ckpt"] = args.ckpt
    _write(args, "choice", result, choice.markdown(result), choice.charts(result), {"predictions.jsonl": predictions})
    return 0


def run_generate(args) -> int:
    from xfer_jax.eval import prompts
    from xfer_jax.eval.generate import Generator, stop_ids
    from xfer_jax.eval.sampling import Sampling

    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                        top_p=args.top_p, repetition_penalty=args.repetition_penalty, stop=tuple(args.stop),
                        seed=args.seed)
    prompts.check_template(args.template)  # a bad name fails before the model loads
    model, tokenizer = load_model(args, args.ckpt, args.tokenizer)
    generator = Generator(model, eos_id=stop_ids(tokenizer.eos_id, model.cfg), batch_size=args.batch_size,
                          vocab_size=tokenizer.vocab_size, release_model=True, decode_attention=args.decode_attention)
    records, stats = prompts.generate_file(generator, tokenizer, args.prompts, sampling, args.template, args.system,
                                           progress=not args.no_progress)
    result = {"ckpt": args.ckpt, "prompts": args.prompts, "template": args.template,
              "sampling": {**vars(sampling), "stop": list(sampling.stop)}, "stats": stats.as_dict(),
              "decode_attention": generator.cfg.decode_attention}
    _write(args, "generate", result, prompts.markdown(result, records), None, {"generations.jsonl": records})
    return 0


def run_harness(args) -> int:
    try:
        from xfer_jax.eval import harness
    except ImportError as e:
        raise ValueError(f"xfer eval harness needs EleutherAI's lm-eval ({e}): pip install -e .[harness]") from None
    tasks = [t for t in args.tasks.split(",") if t]
    manager = harness.task_manager(tasks, args.include_path, not args.no_builtin_tasks)
    limit = int(args.limit) if args.limit and args.limit >= 1 else args.limit  # lm-eval: 0.5 is half, 5 is five
    model, tokenizer = load_model(args, args.ckpt, args.tokenizer)
    results = harness.evaluate(model, tokenizer, tasks, include_path=args.include_path, manager=manager,
                               num_fewshot=args.num_fewshot, limit=limit, batch_size=args.batch_size,
                               max_length=args.max_length,
                               max_gen_toks=args.max_gen_toks, bootstrap_iters=args.bootstrap_iters, seed=args.seed,
                               progress=not args.no_progress)
    import jax

    if jax.process_index() == 0:
        out = harness.write(_out(args), results, args.ckpt)
        print((out / "report.md").read_text())
        print(f"\nxfer eval harness: lm-eval's results in {out}/results.json, report in {out}/report.md")
    return 0


def _read_jsonl(path, flag: str = "--generations") -> list[dict]:
    records = []
    file = paths.path(path, flag)
    if not file.is_file():
        raise FileNotFoundError(f"{flag} {path} does not exist")
    for line_no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not JSON ({e.msg})") from None
    if not records:
        raise ValueError(f"{path} holds no record")
    return records


def run_codeswitch(args) -> int:
    from xfer_jax.eval import codeswitch

    records = _read_jsonl(args.generations)
    expected = sorted({r.get("lang") or args.lang for r in records} - {None})
    languages = tuple(args.languages.split(",")) if args.languages else tuple(dict.fromkeys(expected + ["en"]))
    detector = codeswitch.Detector(languages, min_letters=args.min_letters, min_syllables=args.min_syllables,
                                   min_langid_letters=args.min_langid_letters)
    summary, analyses = codeswitch.evaluate(records, detector, default_lang=args.lang, switch_share=args.switch_share,
                                            examples=args.examples)
    result = {"generations": args.generations, "languages_in_play": list(languages),
              "settings": {k: getattr(args, k) for k in ("switch_share", "min_letters", "min_syllables",
                                                         "min_langid_letters")}, "languages": summary}
    _write(args, "codeswitch", result, codeswitch.markdown(result), codeswitch.charts(result),
           {"codeswitch.jsonl": analyses})
    return 0


def run_judge(args) -> int:
    from xfer_jax.eval import judge
    from xfer_jax.eval.chat_client import ChatClient

    records = [{**r, "reference": r.get("reference", r.get("output"))} for r in _read_jsonl(args.generations)]
    client = ChatClient(args.url, args.model, api_key_env=args.api_key_env, max_tokens=args.max_tokens,
                        timeout=args.timeout, retries=args.retries, requests_per_minute=args.requests_per_minute)
    cache = judge.JudgmentCache(paths.local_path(args.cache, "--cache", "SQLite needs a local file")
                                if args.cache else default_cache_root() / "judge_cache.sqlite")
    try:
        judged, rejected = judge.judge(records, client, cache, workers=args.workers, progress=not args.no_progress)
    finally:
        cache.close()
    result = {"generations": args.generations, "judge": {"url": client.url, "model": args.model},
              **judge.summarize(judged, rejected)}
    _write(args, "judge", result, judge.markdown(result), judge.charts(result), {"judgments.jsonl": judged})
    for r in rejected:
        print(f"xfer eval judge: rejected judgment for record {r.get('id')}: {r['reason']}; "
              f"reply: {r['reply'][:200]!r}", file=sys.stderr)
    return 1 if rejected and not args.allow_malformed else 0


def _out(args) -> paths.Path:
    return paths.path(args.out or f"runs/eval/{args.kind}", "--out")


def _write(args, kind, result, markdown, charts, items=None) -> None:
    import jax

    if jax.process_index() == 0:
        out = report.write(_out(args), kind, result, markdown, charts, items)
        print(markdown)
        print(f"\nxfer eval {kind}: report in {out}/report.md and report.json")


RUNNERS = {"ppl": run_ppl, "choice": run_choice, "generate": run_generate, "codeswitch": run_codeswitch,
           "judge": run_judge, "harness": run_harness}


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.kind in LOADS_MODEL:
        from xfer_jax.parallel.launch import maybe_initialize_distributed

        maybe_initialize_distributed()
    from xfer_jax.errors import run_verb

    def run() -> int:
        paths.check_reachable(_out(args), "--out", must_exist=False)  # a bad bucket fails before the model loads
        return RUNNERS[args.kind](args)

    return run_verb(f"xfer eval {args.kind}", run)


def serve_parser() -> argparse.ArgumentParser:
    """`xfer serve`'s flags (the server is xfer_jax/eval/serve.py)."""
    from xfer_jax.eval import prompts, serve

    p = argparse.ArgumentParser(prog="xfer serve", description=serve.__doc__.split("\n")[0])
    p.add_argument("--template", default="alpaca", choices=[t for t in prompts.TEMPLATE_CHOICES if t != "none"])
    p.add_argument("--name", help="model id the API reports (default: the checkpoint directory's name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max_tokens", type=int, default=256, help="new tokens when a request does not say")
    model_args(p, batch_size=False)
    return p


def run_serve(args) -> int:
    from xfer_jax.eval import serve

    model, tokenizer = load_model(args, args.ckpt, args.tokenizer)
    name = args.name or args.ckpt.rstrip("/").split("/")[-1]
    return serve.serve(serve.ChatModel(model, tokenizer, template=args.template, name=name,
                                       max_tokens=args.max_tokens), args.host, args.port)


def serve_main(argv: list[str]) -> int:
    """`xfer serve --ckpt CKPT [--port 8000] ...`: a checkpoint behind the OpenAI chat API until Ctrl-C."""
    args = serve_parser().parse_args(argv)
    from xfer_jax.errors import run_verb

    return run_verb("xfer serve", lambda: run_serve(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
