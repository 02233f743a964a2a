"""`xfer eval harness`: EleutherAI lm-evaluation-harness tasks on our JAX model, on one device or any mesh.

    xfer eval harness --ckpt ckpts/tuned --tasks my_mc,my_ppl --include_path tasks/ --num_fewshot 5 --mesh fsdp=-1

`HarnessLM` is lm-eval's `LM` (through its `TemplateLM`, which splits every context/continuation pair into ids
as all of lm-eval's backends do) over a `forward.LoadedModel`. Its conventions are those of lm-eval's own
Hugging Face backend (`HFLM`) with default arguments, so a checkpoint scores here as its HF export scores there
(tests/test_harness.py checks every log-likelihood to 1e-4 and every greedy generation token for token):

- ids are the tokenizer's defaults (`add_special_tokens=True` in transformers: LLaMA's BOS in front, Qwen's none);
  an empty context is the BOS id (the EOS id when there is no BOS);
- a context/continuation pair longer than the window keeps its last max_length + 1 ids (the context's oldest
  go); `loglikelihood_rolling` cuts a document into lm-eval's disjoint windows (`get_rolling_token_windows`,
  prefix BOS) and sums them;
- `generate_until` left-truncates prompts to max_length - max_gen_toks, decodes until an end-of-sequence id or
  a stop string (lm-eval adds the EOS piece to `until`), and cuts the text at the first stop string.

Scoring is the exams' own batched-by-length path (`choice.score`: continuations sharing a context share a row,
single-token ones read at one position, rows sorted by length into `scoring.bucket` shapes); generation is our
KV-cache `Generator`. Every JAX process runs every request (SPMD over the mesh); process 0 writes the folder:
lm-eval's results JSON (`results.json`, what its `EvaluationTracker` writes) and per-task samples
(`samples_<task>.jsonl`), beside our report.json / report.md.
"""
import json
import re

from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

from xfer_jax import paths
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.eval import choice, report
from xfer_jax.eval.generate import Generator, stop_ids
from xfer_jax.eval.sampling import Sampling
from xfer_jax.forward import LoadedModel

# generation_kwargs a task may set that decoding here honours; any other key is refused by name, unless it holds
# the value that changes nothing (NEUTRAL).
SAMPLING_KEYS = ("top_k", "top_p", "repetition_penalty", "seed")
NEUTRAL = {"num_beams": 1, "num_return_sequences": 1, "use_cache": True}


class HarnessLM(TemplateLM):
    """lm-eval's model interface over a loaded checkpoint and its tokenizer (see the module docstring)."""

    def __init__(self, model: LoadedModel, tokenizer: Tokenizer, *, batch_size: int = 8, max_length: int | None = None,
                 max_gen_toks: int = 256, progress: bool = True):
        super().__init__()
        window = model.cfg.max_position_embeddings
        self.model, self.tok, self.batch_size, self.progress = model, tokenizer, batch_size, progress
        self._max_length, self._max_gen_toks = min(max_length or window, window), max_gen_toks
        self._generator: Generator | None = None  # made at the first generate_until: it copies the layer weights

    # ---- what TemplateLM asks ----
    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.tok.bos_id if self.tok.bos_id >= 0 else self.tok.eos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """transformers' `encode`: None and True are the tokenizer's own default (BOS/EOS as it adds them)."""
        special = None if add_special_tokens in (None, True) else False
        return self.tok.encode(string, bos=special, eos=special)

    def tok_decode(self, tokens) -> str:
        return self.tok.decode([tokens] if isinstance(tokens, int) else list(tokens))

    # ---- scoring ----
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(summed log p, is_greedy) of each (key, context ids, continuation ids). Pairs whose context is the
        same after the window's cut share one `choice.Request`, so their continuations share rows."""
        limit = self.max_length
        groups: dict[tuple[int, ...], int] = {}
        batched: list[choice.Request] = []
        where = []
        for _, context, continuation in requests:
            if not context or not continuation:
                raise ValueError(f"an empty {'context' if not context else 'continuation'} to score "
                                 f"(continuation {continuation!r}): the task's doc_to_target/doc_to_choice gave none")
            if len(continuation) > limit:
                raise ValueError(f"a continuation of {len(continuation)} tokens passes the window of {limit}: "
                                 f"raise --max_length up to the model's max_position_embeddings or shorten the task")
            kept = (list(context) + list(continuation))[-(limit + 1):][:-len(continuation)]
            index = groups.setdefault(tuple(kept), len(batched))
            if index == len(batched):
                batched.append(choice.Request(None, kept, [], 0, False))
            where.append((index, len(batched[index].continuations)))
            batched[index].continuations.append(list(continuation))
        if not batched:
            return []
        sums, flags = choice.score(self.model, batched, self.batch_size, self.progress and not disable_tqdm,
                                   greedy=True)
        answers = [(float(sums[i][k]), bool(flags[i][k])) for i, k in where]
        for (key, _, _), answer in zip(requests, answers):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return answers

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each document's summed log p over lm-eval's disjoint rolling windows (every token predicted once)."""
        windows, owners = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            for context, continuation in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owners.append(i)
        totals = [0.0] * len(requests)
        for i, (logp, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[i] += logp
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---- generation ----
    def sampling(self, gen_kwargs: dict) -> tuple[Sampling, list[str]]:
        """A task's generation_kwargs as our Sampling (lm-eval's normalisation: greedy unless do_sample) and the
        stop strings; a key decoding here cannot honour is refused by name."""
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=self.tok.id_to_piece(self.tok.eos_id))
        max_new, do_sample = kwargs.pop("max_gen_toks"), kwargs.pop("do_sample", False)
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        unknown = sorted(k for k in set(kwargs) - set(SAMPLING_KEYS) if not (k in NEUTRAL and kwargs[k] == NEUTRAL[k]))
        if unknown:
            raise ValueError(f"generation_kwargs {unknown}: xfer eval harness cannot honour them (it takes until, "
                             f"max_gen_toks, do_sample, temperature, {', '.join(SAMPLING_KEYS)})")
        if max_new >= self.max_length:
            raise ValueError(f"max_gen_toks={max_new} leaves no room for a prompt in the window of {self.max_length} "
                             f"tokens: lower the task's max_gen_toks (or --max_gen_toks where the task sets none)")
        sampling = Sampling(max_new_tokens=max_new, temperature=temperature if do_sample else 0.0,
                            top_k=int(kwargs.get("top_k") or 0), top_p=float(kwargs.get("top_p") or 1.0),
                            repetition_penalty=float(kwargs.get("repetition_penalty") or 1.0),
                            seed=int(kwargs.get("seed") or 0))
        return sampling, until

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = Generator(self.model, eos_id=stop_ids(self.tok.eos_id, self.model.cfg),
                                        batch_size=self.batch_size, vocab_size=self.tok.vocab_size)
        return self._generator

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Requests grouped by their generation_kwargs, each group one `Generator.run` (one compiled length)."""
        groups: dict[str, tuple[dict, list[int]]] = {}
        for i, req in enumerate(requests):
            key = json.dumps(req.args[1], sort_keys=True, default=str)
            groups.setdefault(key, (req.args[1], []))[1].append(i)
        texts: list[str] = [""] * len(requests)
        for gen_kwargs, members in groups.values():
            sampling, until = self.sampling(gen_kwargs)
            room = self.max_length - sampling.max_new_tokens
            prompts = [self.tok_encode(requests[i].args[0])[-room:] for i in members]

            def stop_fn(tokens, until=until):  # keep every token; the text is cut at the stop string below
                return len(tokens) if any(s in self.tok.decode(tokens) for s in until) else None

            results, _ = self.generator.run(prompts, sampling, stop_fn, progress=self.progress and not disable_tqdm)
            for i, result in zip(members, results):
                texts[i] = postprocess_generated_text(self.tok.decode(result.tokens), until, None)
                self.cache_hook.add_partial("generate_until", requests[i].args, texts[i])
        return texts


def task_manager(tasks: list[str], include_path=None, include_defaults: bool = True):
    """lm-eval's TaskManager over `include_path`'s YAML files (and its own tasks unless `include_defaults` is
    False), every name in `tasks` checked to exist: a typo fails before a model loads."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include_path, include_defaults=include_defaults)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" in {include_path}" + (" or lm-eval's own" if include_defaults else "") if include_path else ""
        raise ValueError(f"--tasks {','.join(unknown)}: no such lm-eval task{where} "
                         f"(a local task is a YAML file in the --include_path folder)")
    return manager


def evaluate(model: LoadedModel, tokenizer: Tokenizer, tasks: list[str], *, include_path=None, manager=None,
             num_fewshot: int | None = None, limit: float | None = None, batch_size: int = 8,
             max_length: int | None = None, max_gen_toks: int = 256, include_defaults: bool = True,
             bootstrap_iters: int = 100000, seed: int | None = None, progress: bool = True) -> dict:
    """lm-eval's `simple_evaluate` over `tasks` (names lm-eval knows, or tasks in `include_path`'s YAML files),
    its results dict as it returns them (samples included), with `config_tracker`: what its results JSON adds.
    `seed` None keeps lm-eval's own seeds (0 for Python's random, 1234 for numpy, torch and few-shot sampling)."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    manager = manager or task_manager(tasks, include_path, include_defaults)
    tracker = EvaluationTracker()
    lm = HarnessLM(model, tokenizer, batch_size=batch_size, max_length=max_length, max_gen_toks=max_gen_toks,
                   progress=progress)
    results = simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                              task_manager=manager, evaluation_tracker=tracker, log_samples=True,
                              bootstrap_iters=bootstrap_iters, **({} if seed is None else dict(
                                  random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                  fewshot_random_seed=seed)))
    tracker.general_config_tracker.log_end_time()
    results["config_tracker"] = tracker.general_config_tracker
    return results


def lm_eval_files(results: dict) -> dict[str, str]:
    """{file name: text}: results.json as lm-eval's EvaluationTracker writes it (task hashes and its run info
    added, samples left out) and samples_<task>.jsonl as it writes them (arguments and responses flattened)."""
    import dataclasses

    from lm_eval.utils import handle_non_serializable, hash_string, sanitize_list

    results = dict(results)
    samples, tracker = results.pop("samples", {}), results.pop("config_tracker")
    results["task_hashes"] = {task: hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"]
                                                        for s in rows)) for task, rows in samples.items()}
    results.update(dataclasses.asdict(tracker))
    files = {"results.json": json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)}
    for task, rows in samples.items():
        lines = []
        for s in rows:
            s = {**s, "arguments": {f"gen_args_{i}": {f"arg_{j}": a for j, a in enumerate(arg)}
                                    for i, arg in enumerate(s["arguments"])},
                 "resps": sanitize_list(s["resps"]), "filtered_resps": sanitize_list(s["filtered_resps"]),
                 "target": str(s["target"])}
            lines.append(json.dumps(s, default=handle_non_serializable, ensure_ascii=False) + "\n")
        files[f"samples_{re.sub(r'[^A-Za-z0-9_.-]', '_', task)}.jsonl"] = "".join(lines)
    return files


def summary(results: dict, ckpt: str) -> dict:
    """Our report.json: each task's metrics (with stderr where lm-eval computed one), shots and sample counts."""
    tasks = {}
    for task, values in results["results"].items():
        metrics = {}
        for key, value in values.items():
            name, sep, filt = key.partition(",")
            if sep and not name.endswith("_stderr"):
                stderr = values.get(f"{name}_stderr,{filt}")
                metrics[f"{name},{filt}"] = {"metric": name, "filter": filt, "value": value,
                                             "stderr": stderr if isinstance(stderr, (int, float)) else None}
        tasks[task] = {"alias": values.get("alias", task), "version": results.get("versions", {}).get(task),
                       "n_shot": results.get("n-shot", {}).get(task),
                       "samples": results.get("n-samples", {}).get(task, {}).get("effective"),
                       "metrics": metrics}
    return {"ckpt": ckpt, "lm_eval_version": results.get("lm_eval_version"), "limit": results["config"].get("limit"),
            "tasks": tasks}


def markdown(result: dict) -> str:
    def number(v):
        return float(v) if isinstance(v, (int, float)) else ("" if v is None else str(v))

    rows = [[task, t["version"], t["n_shot"], t["samples"], m["metric"], m["filter"], number(m["value"]),
             number(m["stderr"])]
            for task, t in result["tasks"].items() for m in t["metrics"].values()]
    limit = f"; at most {result['limit']} documents a task" if result["limit"] else ""
    return (f"# lm-eval-harness tasks\n\n`{result['ckpt']}`, lm-eval {result['lm_eval_version']}{limit}. "
            f"lm-eval's own results: results.json; per document: samples_<task>.jsonl.\n\n"
            + report.table(["task", "version", "shots", "docs", "metric", "filter", "value", "stderr"], rows))


def write(out_dir, results: dict, ckpt: str) -> paths.Path:
    """report.json / report.md (ours) and lm-eval's own files, each written atomically."""
    result = summary(results, ckpt)
    out = report.write(out_dir, "harness", result, markdown(result))
    for name, text in lm_eval_files(results).items():
        paths.write_text(out / name, text)
    return out
