"""Judge backends: each turns a batch of judge prompts into replies (or verdicts).

    backend = make_backend(cfg)           # cfg.judge.backend: "exact", "vllm" or "openai"
    results = backend.judge([Item(key, messages, official, candidate), ...])

`exact` matches the official answer's criteria offline (lcr.criteria); `vllm` runs the judge
model in an offline engine started on first use; `openai` asks any OpenAI-compatible endpoint
through the `openai` client (connection reuse; retries of connection errors, timeouts, 429 and
5xx with backoff, Retry-After honoured; typed errors). A failed request becomes a Judged with
`error` set, never an exception, so one bad unit does not stop a shard. What differs between
backends (the model name they record, how a shard batches its requests) is a class attribute
here, read through BACKENDS, never a test of the backend's name elsewhere.

Structured outputs (judge.structured = "auto" | true | false): the judge decodes its verdict
under a constraint where it can, a choice of exactly CORRECT or INCORRECT for the v1.0 prompt
(which asks for that word) and the JSON schema {"verdict": "CORRECT" | "INCORRECT"} for v1.1
(which asks for that JSON); lcr.verdict.STRUCTURED_MODES. `vllm` sets the engine's
StructuredOutputsParams (vLLM 0.26 and 0.32 alike); `openai` sends `response_format` with the
JSON schema, or vLLM's `structured_outputs` choice. An endpoint that refuses it (HTTP 400/422)
is asked again in free text, and that is said once; with judge.structured = true the refusal is
an error. Each Judged says which mode it was decoded in (`mode`: "choice", "json_schema" or
"none" for free text).

A reply the endpoint returns with nothing usable in it (a body that is not JSON, an HTML page,
`choices: []`, `content: null`, an empty text) is asked again REPLY_RETRIES times and then
becomes a judge error with the first bad reply in `raw`: an error, never an unparsed verdict.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

from lcr.config import JUDGE_BACKENDS, Config, ConfigError
from lcr.criteria import exact_verdict
from lcr.verdict import CHOICES, STRUCTURED_MODES, VERDICT_SCHEMA

CHUNK = 256  # units judged between two appends to the shard file
REPLY_RETRIES = 2  # more asks of a reply with nothing usable in it (then a judge error)
TEMPERATURE = 0.0  # the judge decodes greedily, in every backend


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
    error: str | None = None  # the judge gave no usable answer; never cached
    fatal: bool = False  # the error says the endpoint is unusable, not this one request
    finish_reason: str | None = None  # the judge's: "length" = cut at its token limit
    output_tokens: int | None = None
    mode: str = "none"  # decoded under: "choice", "json_schema" or "none" (free text)
    why: str = ""  # of an error: "unusable" (a reply with nothing in it), "refused" (a 400/422)


class Backend:
    probe_first = False  # send one request alone before the rest (a remote endpoint)
    structured = False  # can decode under structured outputs

    def __init__(self, cfg: Config):
        self.cfg, self.model = cfg, self.model_name(cfg)
        self.mode = self.wanted_mode(cfg)
        self._lock = threading.Lock()

    @staticmethod
    def model_name(cfg: Config) -> str:
        """The judge model a verdict record names."""
        return cfg.judge.model

    @classmethod
    def wanted_mode(cls, cfg: Config) -> str:
        """The mode asked for first: the prompt's structured mode unless judge.structured is
        false or the backend cannot (then true is an error naming the key)."""
        if cfg.judge.structured is True and not cls.structured:
            raise ConfigError(f"judge.structured = true, but the {cfg.judge.backend} backend "
                              "cannot decode under structured outputs; set judge.structured = "
                              "\"auto\" or false")
        if cfg.judge.structured is False or not cls.structured:
            return "none"
        return STRUCTURED_MODES[cfg.judge.prompt]

    @staticmethod
    def endpoint(cfg: Config) -> str:
        """What answers the judge's requests, as errors, records and cache keys name it."""
        return cfg.judge.backend

    @staticmethod
    def weights(cfg: Config) -> dict | None:
        """The judge's weight revision (lcr.weights), as far as lcr can know it."""
        return None

    def fall_back(self, why: str) -> None:
        """Free text from now on: the judge refused structured outputs (said once)."""
        with self._lock:
            if self.mode == "none":
                return
            print(f"[judge] {self.endpoint(self.cfg)} refused structured outputs ({why}); "
                  "asking for free text from now on (judge.structured = \"auto\"; set it to "
                  "false to ask for free text from the start)", file=sys.stderr, flush=True)
            self.mode = "none"

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

    @staticmethod
    def endpoint(cfg: Config) -> str:
        return "exact"

    def judge(self, items: list[Item], max_new_tokens: int | None = None) -> list[Judged]:
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
    structured = True
    engine_start_s = None  # seconds the engine took to start (in the judge done marker)

    @staticmethod
    def weights(cfg: Config) -> dict:
        from lcr.tinymodel import resolve
        from lcr.weights import weight_revision

        return weight_revision(resolve(cfg.judge.model))

    @classmethod
    def endpoint(cls, cfg: Config) -> str:
        revision = cls.weights(cfg).get("revision")  # the weights decide its replies
        return f"vllm:{cfg.judge.model}@{revision or 'unknown weights'}"

    def _start(self):
        from lcr.engine import Engine, compile_cache_dir
        from lcr.tinymodel import resolve

        j = self.cfg.judge
        # xgrammar without free whitespace (an engine-wide setting in vLLM 0.26 and 0.32): a
        # weak judge could otherwise fill its budget with whitespace inside the JSON
        structured = {} if self.mode == "none" else {"structured_outputs_config": {
            "backend": "xgrammar", "disable_any_whitespace": True}}
        t0 = time.time()
        self.engine = Engine(
            resolve(j.model), self.cfg.engine,
            cache_dir=compile_cache_dir(self.cfg.engine, self.cfg.run.root), section="judge",
            tensor_parallel_size=j.tensor_parallel_size, max_model_len=j.max_model_len,
            kv_cache_memory_bytes=j.kv_cache_memory_bytes or self.cfg.engine.kv_cache_memory_bytes,
            shared_prefix_attention=False,  # judge prompts share no long prefix
            **structured)
        self.engine_start_s = round(time.time() - t0, 3)

    def _params(self, max_new_tokens: int):
        greedy = SimpleNamespace(temperature=TEMPERATURE, top_p=1.0, top_k=-1,
                                 max_new_tokens=max_new_tokens)
        params = self.engine.params(greedy, seed=0)
        if self.mode != "none":
            from vllm.sampling_params import StructuredOutputsParams

            params.structured_outputs = StructuredOutputsParams(
                **{"choice": list(CHOICES)} if self.mode == "choice" else {"json": VERDICT_SCHEMA})
        return params

    def judge(self, items: list[Item], max_new_tokens: int | None = None) -> list[Judged]:
        if self.engine is None:  # started on first use: a fully cached shard needs no GPU
            self._start()
        budget = max_new_tokens or self.cfg.judge.max_new_tokens
        mode = self.mode
        outs = self.engine.chat([it.messages for it in items],
                                [self._params(budget)] * len(items))
        if mode != "none" and outs and all(c.error for c in outs):
            if self.cfg.judge.structured is True:
                return [Judged(error=f"judge engine refused structured outputs "
                                     f"(judge.structured = true): {c.error}", fatal=True,
                               mode=mode) for c in outs]
            self.fall_back(outs[0].error)
            return self.judge(items, max_new_tokens)
        return [self._judged(c, mode) for c in outs]

    @staticmethod
    def _judged(c, mode: str) -> Judged:
        if c.error:
            return Judged(error=f"judge engine: {c.error}", mode=mode)
        if not c.text.strip():  # nothing to read: an error, asked again by --retry-errors
            return Judged(raw=c.text, error=f"judge engine: empty reply (finish_reason "
                                            f"{c.finish_reason}, {c.output_tokens} tokens)",
                          finish_reason=c.finish_reason, output_tokens=c.output_tokens,
                          mode=mode)
        return Judged(raw=c.text, finish_reason=c.finish_reason, output_tokens=c.output_tokens,
                      mode=mode)


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
    structured = True

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

    @staticmethod
    def endpoint(cfg: Config) -> str:
        return cfg.judge.base_url.rstrip("/")

    @staticmethod
    def weights(cfg: Config) -> dict:
        return {"source": "endpoint", "model": cfg.judge.model, "revision": None,
                "detail": f"served by {cfg.judge.base_url.rstrip('/')}, which does not say"}

    def judge(self, items: list[Item], max_new_tokens: int | None = None) -> list[Judged]:
        budget = max_new_tokens or self.cfg.judge.max_new_tokens
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.judge.concurrency)) as pool:
            return list(pool.map(lambda it: self._one(it, budget), items))

    def _request(self, item: Item, mode: str, budget: int) -> dict:
        kwargs = dict(model=self.model, messages=item.messages, temperature=TEMPERATURE,
                      max_tokens=budget)
        if mode == "json_schema":
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "verdict", "schema": VERDICT_SCHEMA, "strict": True}}
        elif mode == "choice":  # vLLM's guided choice; other servers refuse it (then free text)
            kwargs["extra_body"] = {"structured_outputs": {"choice": list(CHOICES)}}
        return kwargs

    def _one(self, item: Item, budget: int) -> Judged:
        """One request, asked again while its reply has nothing usable in it; a refusal of
        structured outputs is asked again in free text (judge.structured = "auto")."""
        for attempt in range(REPLY_RETRIES + 1):
            mode = self.mode
            got = self._ask(item, mode, budget)
            if got.why == "refused":
                if self.cfg.judge.structured is True:
                    got.error += (" (judge.structured = true: the endpoint must accept "
                                  "structured outputs; set judge.structured = \"auto\" or false)")
                    got.fatal = True
                    return got
                plain = self._ask(item, "none", budget)
                if not plain.error:
                    self.fall_back(got.error.split(": ", 1)[-1][:200])
                return plain
            if got.why != "unusable" or attempt == REPLY_RETRIES:
                return got
            time.sleep(0.5 * 2**attempt)
        return got  # pragma: no cover - the loop always returns

    def _ask(self, item: Item, mode: str, budget: int) -> Judged:
        import openai

        j, attempts = self.cfg.judge, f"(gave up after {self.cfg.judge.max_retries + 1} attempts)"
        try:
            raw = self.client.chat.completions.with_raw_response.create(
                **self._request(item, mode, budget))
            return self._read(raw, mode)
        except openai.APITimeoutError:
            why, fatal = f"timed out after {j.timeout_s:g} s {attempts}", True
        except openai.APIConnectionError as e:
            why, fatal = f"connection failed: {_root_cause(e)} {attempts}", True
        except openai.APIStatusError as e:
            why = f"HTTP {e.status_code} {_reason(e)}: {_body(e)}"
            retried = e.status_code == 429 or e.status_code >= 500
            why, fatal = (f"{why} {attempts}", True) if retried else (
                why, e.status_code in (401, 403, 404))  # the endpoint, not this request
            if e.status_code in (400, 422) and mode != "none":  # perhaps the structured
                return Judged(error=self.redact(f"POST {self.url}: {why}"), mode=mode,  # part
                              why="refused")
        except (openai.OpenAIError, ValueError, KeyError, IndexError, TypeError,
                AttributeError) as e:
            why, fatal = f"unreadable reply ({type(e).__name__}: {e})", False
        return Judged(error=self.redact(f"POST {self.url}: {why}"), fatal=fatal, mode=mode)

    def _read(self, raw, mode: str) -> Judged:
        """The reply's text, or a judge error naming what was wrong with the body."""
        body = raw.text or ""
        try:
            reply = raw.parse()
        except ValueError as e:
            return self._unusable(f"body is not JSON ({type(e).__name__}: {e})", body, mode)
        if not hasattr(reply, "choices"):
            return self._unusable("body is not a chat completion", body, mode)
        if not reply.choices:
            return self._unusable("choices: []", body, mode)
        choice = reply.choices[0]
        content = choice.message.content if choice.message else None
        tokens = getattr(reply.usage, "completion_tokens", None)
        if content is None or not content.strip():
            what = "content: null" if content is None else "empty content"
            return self._unusable(f"{what} (finish_reason {choice.finish_reason}, {tokens} "
                                  "tokens)", body, mode, choice.finish_reason, tokens)
        return Judged(raw=content, finish_reason=choice.finish_reason, output_tokens=tokens,
                      mode=mode)

    def _unusable(self, what: str, body: str, mode: str, finish=None, tokens=None) -> Judged:
        """A judge error holding the first bad reply; asked again REPLY_RETRIES times."""
        return Judged(raw=self.redact(body[:500]), mode=mode, finish_reason=finish,
                      output_tokens=tokens, why="unusable", error=self.redact(
                          f"POST {self.url}: unusable reply, {what}: {body.strip()[:120]!r}"))


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
