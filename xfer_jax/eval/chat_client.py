"""A minimal client for OpenAI-compatible chat endpoints (OpenAI, vLLM, llama.cpp, `xfer serve`), stdlib only.

Transient failures — connection errors, timeouts, 429 and 5xx — are retried with exponential backoff
(a server's Retry-After wins when it asks for longer); any other HTTP error stops at once with the
server's message, since asking again cannot fix a bad key or a bad request. A requests-per-minute limit
spaces calls out across threads. The API key comes from an environment variable, never from the command line.
"""
import json
import os
import threading
import time
import urllib.error
import urllib.request

from xfer_jax.errors import JudgeError  # noqa: F401 (raised here; tests import it from here)

RETRYABLE = {408, 409, 429, 500, 502, 503, 504}




class ChatClient:
    def __init__(self, url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY", temperature: float = 0.0,
                 max_tokens: int = 256, timeout: float = 120.0, retries: int = 4, backoff: float = 1.0,
                 requests_per_minute: float = 0.0):
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.api_key_env = api_key_env
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self._interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next_slot = 0.0
        self._lock = threading.Lock()

    def settings(self) -> dict:
        """What besides model and messages decides a reply (part of the cache key)."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    def _wait_for_slot(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
        time.sleep(max(0.0, slot - now))

    def _post(self, body: bytes) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def chat(self, messages: list[dict]) -> str:
        """The assistant message's content for `messages`."""
        body = json.dumps({"model": self.model, "messages": messages, **self.settings()}).encode("utf-8")
        for attempt in range(self.retries + 1):
            self._wait_for_slot()
            delay = self.backoff * 2 ** attempt
            try:
                reply = self._post(body)
                break
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:500]
                if e.code not in RETRYABLE:
                    hint = f" (is ${self.api_key_env} set to a valid key?)" if e.code in (401, 403) else ""
                    raise JudgeError(f"{self.url}: HTTP {e.code}{hint}: {detail}") from None
                failure = f"HTTP {e.code}: {detail}"
                retry_after = e.headers.get("Retry-After", "")
                if retry_after.replace(".", "", 1).isdigit():
                    delay = max(delay, min(float(retry_after), 60.0))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                failure = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except json.JSONDecodeError as e:
                raise JudgeError(f"{self.url}: the reply is not JSON ({e.msg})") from None
            if attempt == self.retries:
                raise JudgeError(f"{self.url}: gave up after {self.retries + 1} attempts; last failure: {failure}")
            time.sleep(delay)
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"{self.url}: reply has no choices[0].message.content: "
                             f"{json.dumps(reply)[:300]}") from None
        if not isinstance(content, str):
            raise JudgeError(f"{self.url}: choices[0].message.content is {type(content).__name__}, not text")
        return content
