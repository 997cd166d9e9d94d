"""Judge backends: each turns a batch of judge prompts into replies (or verdicts).

    backend = make_backend(cfg)           # cfg.judge.backend: "exact", "vllm" or "openai"
    results = backend.judge([Item(key, messages, official, candidate), ...])

`exact` matches the official answer's criteria offline (lcr.verdict); `vllm` runs the judge
model in an offline engine started on first use; `openai` posts to any OpenAI-compatible
endpoint with the standard library, retrying with backoff. A failed request becomes a Judged
with `error` set, never an exception, so one bad unit does not stop a shard.
"""

from __future__ import annotations

import email.utils
import json
import os
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

from lcr.config import Config
from lcr.verdict import exact_verdict


@dataclass
class Item:
    key: str
    messages: list[dict]  # the judge prompt
    official: str
    candidate: str


@dataclass
class Judged:
    raw: str = ""  # the judge's output text
    verdict: str | None = None  # set by backends that decide without a text reply (exact)
    error: str | None = None  # the judge gave no answer; never cached
    fatal: bool = False  # the error says the endpoint is unusable, not this one request


def judge_model_name(cfg: Config) -> str:
    return "exact" if cfg.judge.backend == "exact" else cfg.judge.model


class ExactBackend:
    def __init__(self, cfg: Config):
        self.model = judge_model_name(cfg)

    def judge(self, items: list[Item]) -> list[Judged]:
        out = []
        for it in items:
            verdict, raw = exact_verdict(it.official, it.candidate)
            out.append(Judged(raw=raw, verdict=verdict))
        return out


class VllmBackend:
    """The judge model in an offline vLLM engine; [judge] sizes override [engine].

    judge.model = "tiny" names the locally built tiny model (lcr.tinymodel), as model.path does.
    """

    def __init__(self, cfg: Config):
        self.cfg, self.model, self.engine = cfg, cfg.judge.model, None

    def judge(self, items: list[Item]) -> list[Judged]:
        from lcr.engine import Engine
        from lcr.tinymodel import resolve

        j = self.cfg.judge
        if self.engine is None:  # started on first use: a fully cached shard needs no GPU
            self.engine = Engine(
                resolve(j.model), self.cfg.engine, tensor_parallel_size=j.tensor_parallel_size,
                max_model_len=j.max_model_len,
                kv_cache_memory_bytes=j.kv_cache_memory_bytes
                or self.cfg.engine.kv_cache_memory_bytes,
            )
        greedy = SimpleNamespace(temperature=0.0, top_p=1.0, top_k=-1,
                                 max_new_tokens=j.max_new_tokens)
        params = self.engine.params(greedy, seed=0)
        outs = self.engine.chat([it.messages for it in items], [params] * len(items))
        return [Judged(raw=c.text, error=f"judge engine: {c.error}" if c.error else None)
                for c in outs]


class _RequestFailed(Exception):
    def __init__(self, message: str, fatal: bool):
        super().__init__(message)
        self.fatal = fatal


class OpenAIBackend:
    """POST {base_url}/chat/completions, `concurrency` requests in flight, stdlib only.

    Connection errors, timeouts, 429 and 5xx are retried `max_retries` times with exponential
    backoff (Retry-After wins when sent). The API key is read from the environment at start,
    sent only in the Authorization header, and cut out of every message.
    """

    def __init__(self, cfg: Config):
        self.j = cfg.judge
        self.model = cfg.judge.model
        self.url = cfg.judge.base_url.rstrip("/") + "/chat/completions"
        self._key = os.environ.get(self.j.api_key_env, "") if self.j.api_key_env else ""
        if self.j.api_key_env and not self._key:
            print(f"[judge] ${self.j.api_key_env} is not set: sending no Authorization header",
                  file=sys.stderr, flush=True)

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def judge(self, items: list[Item]) -> list[Judged]:
        with ThreadPoolExecutor(max_workers=max(1, self.j.concurrency)) as pool:
            return list(pool.map(self._one, items))

    def _one(self, item: Item) -> Judged:
        try:
            return Judged(raw=self._request(item.messages))
        except _RequestFailed as e:
            return Judged(error=self.redact(f"POST {self.url}: {e}"), fatal=e.fatal)

    def _request(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.j.max_new_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        last = ""
        for attempt in range(self.j.max_retries + 1):
            wait = self.j.backoff_s * 2 ** attempt
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers)
                with urllib.request.urlopen(request, timeout=self.j.timeout_s) as resp:
                    reply = json.loads(resp.read().decode("utf-8"))
                return reply["choices"][0]["message"].get("content") or ""
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}: {_error_body(e)}"
                if e.code != 429 and e.code < 500:  # the request itself is wrong: no retry
                    raise _RequestFailed(last, fatal=e.code in (401, 403, 404)) from None
                wait = _retry_after(e.headers.get("Retry-After"), wait)
            except (OSError, urllib.error.URLError) as e:  # refused, reset, timed out
                last = f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
                raise _RequestFailed(f"unreadable reply ({type(e).__name__}: {e})",
                                     fatal=False) from None
            if attempt < self.j.max_retries:
                time.sleep(wait)
        raise _RequestFailed(f"{last} (gave up after {self.j.max_retries + 1} attempts)",
                             fatal=True)


def _error_body(e: urllib.error.HTTPError) -> str:
    try:
        return e.read(300).decode("utf-8", "replace").strip() or "(empty body)"
    except (OSError, ValueError):  # a broken error body must not hide the status code
        return "(unreadable body)"


def _retry_after(value: str | None, default: float) -> float:
    """Seconds from a Retry-After header (seconds or an HTTP date), capped at 10 minutes."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    return min(max(seconds, 0.0), 600.0)


BACKENDS = {"exact": ExactBackend, "vllm": VllmBackend, "openai": OpenAIBackend}


def make_backend(cfg: Config):
    return BACKENDS[cfg.judge.backend](cfg)
