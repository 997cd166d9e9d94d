"""Judge backends: each turns a batch of judge prompts into replies (or verdicts).

    backend = make_backend(cfg)           # cfg.judge.backend: "exact", "vllm" or "openai"
    results = backend.judge([Item(key, messages, official, candidate), ...])

`exact` matches the official answer's criteria offline (lcr.verdict); `vllm` runs the judge
model in an offline engine started on first use; `openai` asks any OpenAI-compatible endpoint
through the `openai` client (connection reuse; retries of connection errors, timeouts, 429 and
5xx with backoff, Retry-After honoured; typed errors). A failed request becomes a Judged with
`error` set, never an exception, so one bad unit does not stop a shard. What differs between
backends (the model name they record, how a shard batches its requests) is a class attribute
here, read through BACKENDS, never a test of the backend's name elsewhere.
"""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

from lcr.config import JUDGE_BACKENDS, Config, ConfigError
from lcr.criteria import exact_verdict

CHUNK = 256  # units judged between two appends to the shard file


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


class Backend:
    probe_first = False  # send one request alone before the rest (a remote endpoint)

    def __init__(self, cfg: Config):
        self.cfg, self.model = cfg, self.model_name(cfg)

    @staticmethod
    def model_name(cfg: Config) -> str:
        """The judge model a verdict record names."""
        return cfg.judge.model

    @classmethod
    def chunks(cls, items: list, cfg: Config) -> list[list]:
        """Batches of a shard's requests, each appended to the shard file when it is done."""
        if not cls.probe_first or not items:
            return [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
        size = max(1, cfg.judge.concurrency) * 4
        return [items[:1]] + [items[i:i + size] for i in range(1, len(items), size)]


class ExactBackend(Backend):
    @staticmethod
    def model_name(cfg: Config) -> str:
        return "exact"  # no model judges: the criteria are matched in lcr.verdict

    def judge(self, items: list[Item]) -> list[Judged]:
        out = []
        for it in items:
            verdict, raw = exact_verdict(it.official, it.candidate)
            out.append(Judged(raw=raw, verdict=verdict))
        return out


class VllmBackend(Backend):
    """The judge model in an offline vLLM engine; [judge] sizes override [engine].

    judge.model = "tiny" names the locally built tiny model (lcr.tinymodel), as model.path does.
    """

    engine = None

    def judge(self, items: list[Item]) -> list[Judged]:
        from lcr.engine import Engine, compile_cache_dir
        from lcr.tinymodel import resolve

        j = self.cfg.judge
        if self.engine is None:  # started on first use: a fully cached shard needs no GPU
            self.engine = Engine(
                resolve(j.model), self.cfg.engine,
                cache_dir=compile_cache_dir(self.cfg.engine, self.cfg.run.root),
                tensor_parallel_size=j.tensor_parallel_size, max_model_len=j.max_model_len,
                kv_cache_memory_bytes=j.kv_cache_memory_bytes
                or self.cfg.engine.kv_cache_memory_bytes,
                shared_prefix_attention=False,  # judge prompts share no long prefix
            )
        greedy = SimpleNamespace(temperature=0.0, top_p=1.0, top_k=-1,
                                 max_new_tokens=j.max_new_tokens)
        params = self.engine.params(greedy, seed=0)
        outs = self.engine.chat([it.messages for it in items], [params] * len(items))
        return [Judged(raw=c.text, error=f"judge engine: {c.error}" if c.error else None)
                for c in outs]


def api_key(env: str) -> str:
    """The key in $env, without the whitespace a key file saved with CRLF leaves around it;
    a key with control characters inside is refused (its value is never shown)."""
    raw = os.environ.get(env, "") if env else ""
    key = raw.strip()
    if key != raw:
        print(f"[judge] ${env}: removed whitespace around the key (a line break from a key "
              "file?)", file=sys.stderr, flush=True)
    if re.search(r"[\x00-\x1f\x7f]", key):
        raise ConfigError(f"${env} holds control characters inside the key; set it to the key "
                          f"alone, e.g. export {env}=\"$(tr -d '\\r\\n' < KEYFILE)\"")
    return key


class OpenAIBackend(Backend):
    """POST {base_url}/chat/completions through the `openai` client, `concurrency` at once.

    The client retries connection errors, timeouts, 429 and 5xx `judge.max_retries` times
    (exponential backoff from 0.5 s, Retry-After honoured). The API key is read from the
    environment at start, sent only in the Authorization header, and cut out of every
    message in every form it could take (raw, repr, escaped).
    """

    probe_first = True

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        import openai

        j = cfg.judge
        self.url = j.base_url.rstrip("/") + "/chat/completions"
        self._key = api_key(j.api_key_env)
        if j.api_key_env and not self._key:
            print(f"[judge] ${j.api_key_env} is not set: the endpoint gets no key",
                  file=sys.stderr, flush=True)
        self.client = openai.OpenAI(api_key=self._key or "EMPTY", base_url=j.base_url,
                                    timeout=j.timeout_s, max_retries=j.max_retries)

    def redact(self, text: str) -> str:
        if not self._key:
            return text
        for form in {self._key, repr(self._key)[1:-1], repr(self._key.encode())[2:-1]}:
            text = text.replace(form, "***")
        return text

    def judge(self, items: list[Item]) -> list[Judged]:
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.judge.concurrency)) as pool:
            return list(pool.map(self._one, items))

    def _one(self, item: Item) -> Judged:
        import openai

        j, attempts = self.cfg.judge, f"(gave up after {self.cfg.judge.max_retries + 1} attempts)"
        try:
            reply = self.client.chat.completions.create(
                model=self.model, messages=item.messages, temperature=0,
                max_tokens=j.max_new_tokens)
            return Judged(raw=reply.choices[0].message.content or "")
        except openai.APITimeoutError:
            why, fatal = f"timed out after {j.timeout_s:g} s {attempts}", True
        except openai.APIConnectionError as e:
            why, fatal = f"connection failed: {_root_cause(e)} {attempts}", True
        except openai.APIStatusError as e:
            why = f"HTTP {e.status_code} {_reason(e)}: {_body(e)}"
            retried = e.status_code == 429 or e.status_code >= 500
            why, fatal = (f"{why} {attempts}", True) if retried else (
                why, e.status_code in (401, 403, 404))  # the endpoint, not this request
        except (openai.OpenAIError, ValueError, KeyError, IndexError, TypeError,
                AttributeError) as e:
            why, fatal = f"unreadable reply ({type(e).__name__}: {e})", False
        return Judged(error=self.redact(f"POST {self.url}: {why}"), fatal=fatal)


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    return str(e) or type(e).__name__


def _reason(e) -> str:
    try:
        return e.response.reason_phrase or ""
    except AttributeError:
        return ""


def _body(e) -> str:
    try:
        return (e.response.text or "").strip()[:300] or "(empty body)"
    except Exception:  # a broken error body must not hide the status code
        return "(unreadable body)"


BACKENDS: dict[str, type[Backend]] = {"exact": ExactBackend, "vllm": VllmBackend,
                                      "openai": OpenAIBackend}
assert set(BACKENDS) == set(JUDGE_BACKENDS), "lcr.config.JUDGE_BACKENDS names the backends"


def judge_model_name(cfg: Config) -> str:
    return BACKENDS[cfg.judge.backend].model_name(cfg)


def make_backend(cfg: Config) -> Backend:
    return BACKENDS[cfg.judge.backend](cfg)
