"""`xfer eval judge` against real local HTTP servers: a scripted OpenAI-style endpoint (valid, malformed and failing
replies, retries, rate limit, cache) and `xfer serve` answering with our own generation."""
import http.server
import json
import threading
import time

import pytest

from test_eval_helpers import random_checkpoint
from xfer_jax import cli, forward
from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.eval import judge, prompts, serve
from xfer_jax.eval.chat_client import ChatClient, JudgeError
from xfer_jax.eval.generate import Generator
from xfer_jax.eval.sampling import Sampling

GOOD = '{"accuracy": 3, "fluency": 2, "informativeness": 2, "logical_coherence": 3, "harmlessness": 3}'


class Scripted:
    """An OpenAI-compatible endpoint whose replies follow a script: (status, content) per request, in order,
    the last one repeating."""

    def __init__(self, script, key="sk-test"):
        self.script, self.requests, self.key = list(script), [], key
        handler = self._handler()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def _handler(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((time.monotonic(), body, self.headers.get("Authorization")))
                status, content = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                if self.headers.get("Authorization") != f"Bearer {outer.key}":
                    status, content = 401, "invalid api key"
                if status == 200:
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                else:
                    payload = json.dumps({"error": {"message": content}}).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        return Handler

    def close(self):
        self.server.shutdown()
        self.server.server_close()


RECORDS = [{"id": i, "instruction": f"问题 {i}", "reference": "参考答案", "response": f"回答 {i}",
            "category": "常识" if i < 2 else "写作"} for i in range(3)]


@pytest.fixture
def client_for(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    servers = []

    def make(script, **kw):
        servers.append(Scripted(script))
        return servers[-1], ChatClient(servers[-1].url, "judge-model", api_key_env="JUDGE_KEY", backoff=0.01, **kw)

    yield make
    for s in servers:
        s.close()


def test_scores_parse_strictly():
    assert judge.parse_scores(f"Here you go:\n```json\n{GOOD}\n```") == json.loads(GOOD)
    assert judge.parse_scores(GOOD.replace("logical_coherence", "Logical Coherence"))["logical_coherence"] == 3
    for reply, reason in [("The response is good.", "found 0"), (GOOD + GOOD, "found 2"),
                          (GOOD.replace('"fluency": 2, ', ""), "missing criteria \\['fluency'\\]"),
                          (GOOD.replace("2", "4", 1), "integers 0-3"), (GOOD.replace("2", "2.5", 1), "integers 0-3"),
                          (GOOD.replace("2", '"2"', 1), "integers 0-3"),
                          (GOOD.replace("3", "true", 1), "integers 0-3")]:
        with pytest.raises(judge.MalformedJudgment, match=reason):
            judge.parse_scores(reply)


def test_judge_retries_caches_and_rejects(client_for, tmp_path):
    server, client = client_for([(500, "overloaded"), (429, "slow down"), (200, GOOD), (200, GOOD),
                                 (200, "I cannot decide."), (200, GOOD)])
    cache = judge.JudgmentCache(tmp_path / "cache.sqlite")
    judged, rejected = judge.judge(RECORDS, client, cache, workers=1, progress=False)
    assert len(server.requests) == 5 and all(auth == "Bearer sk-test" for _, _, auth in server.requests)
    assert [r["id"] for r in judged] == [0, 1] and judged[0]["avg"] == pytest.approx(13 / 5)
    assert rejected[0]["id"] == 2 and "found 0" in rejected[0]["reason"] and rejected[0]["reply"] == "I cannot decide."
    summary = judge.summarize(judged, rejected)
    assert summary["overall"]["accuracy"] == 3 and summary["categories"]["常识"]["responses"] == 2
    assert summary["rejected"] == 1 and summary["rejections"][0]["reply"] == "I cannot decide."

    # a rerun: only the rejected one is asked again
    judged, rejected = judge.judge(RECORDS, client, cache, workers=2, progress=False)
    assert len(server.requests) == 6 and not rejected
    assert [r["cached"] for r in sorted(judged, key=lambda r: r["id"])] == [True, True, False]
    body = server.requests[-1][1]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0 and "参考答案" in body["messages"][0]["content"]


def test_failures_are_loud(client_for, tmp_path, monkeypatch):
    server, client = client_for([(500, "down")], retries=2)
    with pytest.raises(JudgeError, match="gave up after 3 attempts; last failure: HTTP 500"):
        client.chat([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 3
    server, client = client_for([(400, "bad model name")])
    with pytest.raises(JudgeError, match="HTTP 400: .*bad model name"):
        client.chat([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 1  # a bad request is not retried
    monkeypatch.setenv("JUDGE_KEY", "wrong")
    with pytest.raises(JudgeError, match=r"HTTP 401 \(is \$JUDGE_KEY set to a valid key\?\)"):
        ChatClient(server.url, "m", api_key_env="JUDGE_KEY").chat([{"role": "user", "content": "hi"}])
    with pytest.raises(JudgeError, match="gave up after 2 attempts; last failure: URLError"):
        ChatClient("http://127.0.0.1:9/v1", "m", retries=1, backoff=0.01).chat([{"role": "user", "content": "hi"}])


def test_rate_limit_spaces_requests(client_for, tmp_path):
    server, client = client_for([(200, GOOD)], requests_per_minute=600)  # one every 0.1 s
    judge.judge(RECORDS, client, judge.JudgmentCache(tmp_path / "c.sqlite"), workers=3, progress=False)
    times = sorted(t for t, _, _ in server.requests)
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.09


def test_cli_exits_nonzero_on_rejected_judgments(client_for, tmp_path):
    server, _ = client_for([(200, GOOD), (200, GOOD), (200, '{"accuracy": 9}')])
    generations = tmp_path / "generations.jsonl"
    generations.write_text("\n".join(json.dumps({**r, "output": r.pop("reference")}, ensure_ascii=False)
                                     for r in [dict(r) for r in RECORDS]) + "\n", encoding="utf-8")
    args = ["eval", "judge", "--generations", str(generations), "--url", server.url, "--model", "judge-model",
            "--api_key_env", "JUDGE_KEY", "--cache", str(tmp_path / "c.sqlite"), "--workers", "1", "--no_progress"]
    assert cli.main(args + ["--out", str(tmp_path / "a")]) == 1
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["judged"] == 2 and report["rejections"][0]["id"] == 2
    assert "Rejected judgments" in (tmp_path / "a" / "report.md").read_text()
    assert cli.main(args + ["--out", str(tmp_path / "b"), "--allow_malformed"]) == 0
    assert len(server.requests) == 4  # the two good judgments came from the cache


def test_xfer_serve_answers_and_judges(small_tokenizer, tmp_path):
    tokenizer = Tokenizer.load(small_tokenizer)
    ckpt = random_checkpoint(tmp_path / "ckpt", small_tokenizer, seed=5, vocab_size=tokenizer.vocab_size,
                             max_position_embeddings=1024)  # room for the rubric prompt
    model = forward.load(ckpt)
    server = serve.make_server(serve.ChatModel(model, tokenizer, template="plain", name="tiny", max_tokens=16),
                               port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        client = ChatClient(url, "tiny", api_key_env=None, max_tokens=16)
        reply = client.chat([{"role": "user", "content": "你好"}])
        ids = prompts.chat_ids([{"role": "user", "content": "你好"}], tokenizer, prompts.template("plain"))
        # a Generator of its own (the server's freed its model's stacked weights): endpoint == generate
        generator = Generator(forward.load(ckpt), eos_id=tokenizer.eos_id, batch_size=1,
                              vocab_size=tokenizer.vocab_size)
        direct, _ = prompts.respond(generator, tokenizer, [ids], Sampling(max_new_tokens=16))
        assert reply == direct[0]["response"]  # greedy by default: the endpoint gives what generate gives
        with pytest.raises(JudgeError, match="HTTP 400: .*alternate user/assistant"):
            client.chat([{"role": "assistant", "content": "hi"}])
        # a random model is a poor judge: its replies are rejected, loudly, not guessed at
        judged, rejected = judge.judge(RECORDS[:1], client, judge.JudgmentCache(tmp_path / "c.sqlite"), progress=False)
        assert not judged and rejected and "JSON object" in rejected[0]["reason"]
    finally:
        server.shutdown()
        server.server_close()
