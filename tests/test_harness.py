"""`xfer eval harness`: lm-eval-harness tasks on our JAX model score as lm-eval's own Hugging Face backend
(`HFLM`, torch CPU) scores the exported model: every per-document log-likelihood to 1e-4, every is_greedy and
every greedy generation equal. The tasks are local YAML + JSONL written here (lm-eval's include_path,
`dataset_path: json`); the hub is switched off, so nothing here touches the network.
"""
import json
import os

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):  # before datasets/lm_eval load
    os.environ[_name] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

lm_eval = pytest.importorskip("lm_eval")

from hf_helpers import tiny_hf_model  # noqa: E402
from xfer_jax import forward  # noqa: E402
from xfer_jax.convert import hf  # noqa: E402
from xfer_jax.eval import cli as eval_cli  # noqa: E402
from xfer_jax.eval import harness  # noqa: E402

QUESTIONS = [("What is the capital of France?", ["Paris", "London", "Berlin", "Rome"], 0),
             ("Which number is even?", ["3", "5", "8", "11"], 2),
             ("What colour is the sky on a clear day?", ["green", "blue", "red"], 1),
             ("今天天气怎么样？", ["很好", "不好", "下雨了，带上伞"], 0),
             ("How many legs does a spider have?", ["six", "eight legs in total", "ten"], 1)]
TEXTS = ["The quick brown fox jumps over the lazy dog.",
         "In the beginning God created the heaven and the earth. " * 12,  # past the 128-token window: 2+ windows
         "我们的模型会说中文，也会说英文。", "a"]
TASKS = {
    "xfer_mc": """output_type: multiple_choice
training_split: train
test_split: test
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: answer
metric_list: [{metric: acc, aggregation: mean, higher_is_better: true},
              {metric: acc_norm, aggregation: mean, higher_is_better: true}]
""",
    "xfer_ppl": """output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list: [{metric: word_perplexity, aggregation: weighted_perplexity, higher_is_better: false},
              {metric: bits_per_byte, aggregation: bits_per_byte, higher_is_better: false}]
""",
    "xfer_gen": """output_type: generate_until
test_split: test
doc_to_text: "Q: {{question}}\\nA:"
doc_to_target: "{{choices[answer]}}"
generation_kwargs: {until: ["\\n\\n", "e"], do_sample: false, max_gen_toks: 12}
metric_list: [{metric: exact_match, aggregation: mean, higher_is_better: true}]
""",
    "xfer_next": """output_type: loglikelihood
test_split: test
doc_to_text: "{{question}}"
doc_to_target: " {{choices[answer]}}"
metric_list: [{metric: acc, aggregation: mean, higher_is_better: true},
              {metric: perplexity, aggregation: perplexity, higher_is_better: false}]
""",
}


@pytest.fixture(scope="module")
def setup(small_tokenizer, tmp_path_factory):
    """(HF dir with tokenizer files, our checkpoint imported from it, task folder)."""
    root = tmp_path_factory.mktemp("harness")
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_file=str(small_tokenizer)).get_piece_size()
    tiny_hf_model(vocab=vocab, layers=2, qk_gain=3.0, bos_token_id=1, eos_token_id=2).save_pretrained(root / "hf")
    hf.write_tokenizer_files(small_tokenizer, root / "hf", 128)
    hf.hf_to_orbax(root / "hf", root / "ckpt", log=lambda *_: None)
    tasks = root / "tasks"
    tasks.mkdir()
    mc = [{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS]
    data = {"mc": mc, "ppl": [{"text": t} for t in TEXTS]}
    for name, records in data.items():
        (tasks / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    for task, body in TASKS.items():
        files = ({"test": str(tasks / "ppl.jsonl")} if task == "xfer_ppl" else
                 {"train": str(tasks / "mc.jsonl"), "test": str(tasks / "mc.jsonl")})
        head = (f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files: {json.dumps(files)}\n"
                f"  cache_dir: {json.dumps(str(root / 'hf_datasets'))}\n")
        (tasks / f"{task}.yaml").write_text(head + body)
    return root / "hf", root / "ckpt", tasks


def run_hflm(hf_dir, tasks, names, **kwargs):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model = HFLM(pretrained=str(hf_dir), device="cpu", batch_size=4, dtype="float32")
    return simple_evaluate(model=model, tasks=names, task_manager=TaskManager(include_path=str(tasks),
                           include_defaults=False), log_samples=True, bootstrap_iters=0, **kwargs)


def responses(results, task):
    return [s["resps"] for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


def test_every_task_kind_scores_as_lm_evals_hf_backend(setup):
    hf_dir, ckpt, tasks = setup
    names = list(TASKS)
    model, tokenizer = forward.load_with_tokenizer(ckpt)
    ours = harness.evaluate(model, tokenizer, names, include_path=str(tasks), include_defaults=False,
                            bootstrap_iters=0, batch_size=4, num_fewshot=1, progress=False)
    ref = run_hflm(hf_dir, tasks, names, num_fewshot=1)
    for task in names:
        got, want = responses(ours, task), responses(ref, task)
        assert len(got) == len(want) == (len(TEXTS) if task == "xfer_ppl" else len(QUESTIONS)), task
        for doc, (g, w) in enumerate(zip(got, want)):
            assert len(g) == len(w), (task, doc)
            for g_item, w_item in zip(g, w):
                if task == "xfer_gen":
                    assert g_item == w_item, (task, doc)  # greedy text, cut at the stop string
                else:
                    np.testing.assert_allclose(g_item[0], w_item[0], atol=1e-4, err_msg=f"{task} doc {doc}")
                    if len(w_item) > 1:  # (log-likelihood, is_greedy)
                        assert bool(g_item[1]) == bool(w_item[1]), (task, doc)
        for key, value in ref["results"][task].items():
            if isinstance(value, float) and "stderr" not in key:
                np.testing.assert_allclose(ours["results"][task][key], value, rtol=1e-4, err_msg=f"{task} {key}")
    generated = [r[0][0] for r in responses(ours, "xfer_gen")]
    assert any(generated) and all("e" not in g and "\n\n" not in g for g in generated)


def test_cli_writes_lm_evals_results_and_our_report(setup, tmp_path):
    _, ckpt, tasks = setup
    out = tmp_path / "report"
    assert eval_cli.main(["harness", "--ckpt", str(ckpt), "--tasks", "xfer_mc,xfer_ppl,xfer_gen",
                          "--include_path", str(tasks), "--limit", "3", "--out", str(out), "--no_progress",
                          "--batch_size", "8", "--mesh", "fsdp=-1", "--bootstrap_iters", "0",
                          "--no_builtin_tasks"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"xfer_mc", "xfer_ppl", "xfer_gen"} and "task_hashes" in results
    assert results["n-samples"]["xfer_mc"]["effective"] == 3
    samples = [json.loads(line) for line in (out / "samples_xfer_mc.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and "gen_args_0" in samples[0]["arguments"]
    from lm_eval.api.instance import Instance  # the mesh run scores as one device does

    pairs = [(a["arg_0"], a["arg_1"]) for s in samples for a in s["arguments"].values()]
    single = harness.HarnessLM(*forward.load_with_tokenizer(ckpt), batch_size=4, progress=False).loglikelihood(
        [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)], disable_tqdm=True)
    written = [float(r[0][0]) for s in samples for r in s["resps"]]  # lm-eval writes ["ll", "greedy"] strings
    np.testing.assert_allclose(written, [ll for ll, _ in single], atol=1e-5)
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "harness" and "acc,none" in report["tasks"]["xfer_mc"]["metrics"]
    assert "xfer_ppl" in (out / "report.md").read_text()


def test_unknown_task_and_unhonoured_generation_key_are_refused(setup, capsys, tmp_path):
    _, ckpt, tasks = setup
    assert eval_cli.main(["harness", "--ckpt", str(ckpt), "--tasks", "xfer_mc,nope", "--include_path", str(tasks),
                          "--no_builtin_tasks", "--out", str(tmp_path)]) == 1
    assert "--tasks nope: no such lm-eval task" in capsys.readouterr().err
    model, tokenizer = forward.load_with_tokenizer(ckpt)
    with pytest.raises(ValueError, match=r"generation_kwargs \['num_beams'\]"):
        harness.HarnessLM(model, tokenizer).sampling({"until": ["\n"], "num_beams": 4})


def test_is_greedy_and_empty_context_match_hflm(setup):
    """A continuation made of the model's own greedy tokens is greedy in both backends; an empty context is
    BOS in both."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    hf_dir, ckpt, _ = setup
    ref = HFLM(pretrained=str(hf_dir), device="cpu", batch_size=4, dtype="float32")
    ours = harness.HarnessLM(*forward.load_with_tokenizer(ckpt), batch_size=4, progress=False)
    context = "Question: What is the capital of France?\nAnswer:"
    ids = ref.tok_encode(context)
    for _ in range(3):
        ids.append(int(ref.model(torch.tensor([ids])).logits[0, -1].argmax()))
    greedy_text = ref.tok_decode(ids[len(ref.tok_encode(context)):])
    pairs = [(context, greedy_text), (context, " Paris"), ("", "Paris is the capital."), ("Answer:", " 8")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    got, want = ours.loglikelihood(requests, disable_tqdm=True), ref.loglikelihood(requests, disable_tqdm=True)
    np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], atol=1e-4)
    assert [g[1] for g in got] == [w[1] for w in want] and want[0][1]
