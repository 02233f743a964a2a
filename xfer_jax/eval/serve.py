"""`xfer serve`: our own generation behind the OpenAI chat API, so a local checkpoint can answer (or judge) offline.

    xfer serve --ckpt ckpts/tuned --port 8000 [--template alpaca] [--mesh fsdp=-1]
    curl localhost:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "你好"}]}'

Endpoints: POST /v1/chat/completions (messages, max_tokens, temperature, top_p, stop, seed, and the
non-OpenAI top_k and repetition_penalty; temperature defaults to 0 — greedy — because evaluation wants
repeatable answers), GET /v1/models, GET /health. One request generates at a time (stdlib http.server,
one model); streaming and n > 1 are refused with a 400 that says so.
"""
import http.server
import json
import threading
import time
import uuid

from xfer_jax.data.tokenizer import Tokenizer
from xfer_jax.eval import prompts
from xfer_jax.eval.generate import Generator, stop_ids
from xfer_jax.eval.sampling import Sampling


class BadRequest(ValueError):
    pass


class ChatModel:
    """A checkpoint answering chat messages in its instruction template, one request at a time."""

    def __init__(self, model, tokenizer: Tokenizer, *, template: str = "alpaca", name: str = "xfer",
                 max_tokens: int = 256):
        self.tokenizer, self.name, self.max_tokens = tokenizer, name, max_tokens
        self.chat = prompts.template(template, tokenizer)
        if self.chat is None:
            raise ValueError("xfer serve needs a chat template (alpaca, llama2_chat, plain or tokenizer), not 'none'")
        self.generator = Generator(model, eos_id=stop_ids(tokenizer.eos_id, model.cfg), batch_size=1,
                                   vocab_size=tokenizer.vocab_size, release_model=True)
        self._lock = threading.Lock()

    def sampling(self, body: dict) -> Sampling:
        if body.get("stream"):
            raise BadRequest("stream=true is not supported")
        if body.get("n", 1) != 1:
            raise BadRequest("only n=1 is supported")
        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        try:
            return Sampling(max_new_tokens=int(body.get("max_tokens") or self.max_tokens),
                            temperature=float(body.get("temperature") or 0.0), top_k=int(body.get("top_k") or 0),
                            top_p=float(body.get("top_p") or 1.0),
                            repetition_penalty=float(body.get("repetition_penalty") or 1.0), stop=stop,
                            seed=int(body.get("seed") or 0))
        except (TypeError, ValueError) as e:
            raise BadRequest(str(e)) from None

    def complete(self, body: dict) -> dict:
        if not isinstance(body.get("messages"), list):
            raise BadRequest("the request needs a 'messages' list")
        sampling = self.sampling(body)
        try:
            ids = prompts.chat_ids(body["messages"], self.tokenizer, self.chat)
            self.generator.check_lengths([ids], sampling.max_new_tokens)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        with self._lock:
            (out,), _ = prompts.respond(self.generator, self.tokenizer, [ids], sampling)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": self.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": out["response"]},
                         "finish_reason": out["finish_reason"]}],
            "usage": {"prompt_tokens": out["prompt_tokens"], "completion_tokens": out["new_tokens"],
                      "total_tokens": out["prompt_tokens"] + out["new_tokens"]},
        }


def make_server(chat_model: ChatModel, host: str = "127.0.0.1", port: int = 8000,
                quiet: bool = False) -> http.server.ThreadingHTTPServer:
    """An HTTP server for `chat_model` (port 0 picks a free port: see server.server_address)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}})

        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": chat_model.name, "object": "model",
                                                              "owned_by": "xfer_jax"}]})
            elif self.path == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._error(404, f"no route {self.path}; try POST /v1/chat/completions")

        def do_POST(self):  # noqa: N802
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._error(404, f"no route {self.path}; try POST /v1/chat/completions")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                if not isinstance(body, dict):
                    raise BadRequest("the request body must be a JSON object")
                self._send(200, chat_model.complete(body))
            except json.JSONDecodeError as e:
                self._error(400, f"the request body is not JSON: {e.msg}")
            except BadRequest as e:
                self._error(400, str(e))
            except Exception as e:  # noqa: BLE001 — the server must answer, and the client sees why
                self._error(500, f"{type(e).__name__}: {e}")

        def log_message(self, fmt, *args):
            if not quiet:
                super().log_message(fmt, *args)

    return http.server.ThreadingHTTPServer((host, port), Handler)


def serve(chat_model: ChatModel, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Answer `chat_model`'s requests at http://host:port/v1 until Ctrl-C (`xfer serve`, xfer_jax/eval/cli.py)."""
    server = make_server(chat_model, host, port)
    host, port = server.server_address[:2]
    print(f"xfer serve: {chat_model.name} at http://{host}:{port}/v1 (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
