"""Whether a job's settings fit the card: one line naming the setting, not an out-of-memory trace.

    sizes = model_sizes("/models/llama-3.1-8b", "auto", "auto")
    check_card(sizes, cfg.engine, card_bytes=143_771 * 2**20)  # FitError if it cannot fit
    check_window(demands, cap)                 # FitError if a fixed window overflows the cache

Checked at engine start, before vLLM allocates anything: the weights (the checkpoint's files,
or for `load_format = "dummy"` the parameter count of config.json) against the share of the card
vLLM may take, then one request of `max_model_len` tokens of KV cache on top. Only what cannot
fit is refused (no activation margin is assumed), so a borderline setting still reaches vLLM and
its own message. After the start, a fixed `engine.batch_sets` window is checked against the KV
cache the engine allocated: the shard's first window (its largest sets) must fit, or the
scheduler would evict and recompute prefixes for the whole run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from lcr.errors import InputError
from lcr.window import Capacity, SetDemand, order_sets

log = logging.getLogger(__name__)
GIB = 2**30
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}


class FitError(InputError, ValueError):
    """The settings cannot fit the card; the message names the setting and the way on."""


@dataclass
class ModelSizes:
    params: int  # every parameter, embedding table included
    weight_bytes: int  # what the weights take on the card (one copy, before tensor parallelism)
    step_weight_bytes: int  # what a decode step reads: all but the embedding table
    kv_bytes_per_token: int  # K and V of one token over all layers
    source: str  # where weight_bytes came from: "files" or "config.json"


def _dtype_bytes(setting: str, config: dict) -> int:
    name = config.get("torch_dtype") or config.get("dtype") or "bfloat16"
    name = name if setting == "auto" else setting
    return DTYPE_BYTES.get(str(name).removeprefix("torch."), 2)


def model_sizes(model_dir: str | Path, dtype: str = "auto", kv_cache_dtype: str = "auto",
                *, dtype_bytes: int | None = None, kv_dtype_bytes: int | None = None
                ) -> ModelSizes:
    """Sizes of a Llama-style decoder from its config.json (and checkpoint files, if any)."""
    folder = Path(model_dir)
    c = json.loads((folder / "config.json").read_text())
    c = c.get("text_config", c)
    wb = dtype_bytes or _dtype_bytes(dtype, c)
    kvb = kv_dtype_bytes or (1 if "fp8" in kv_cache_dtype else wb)
    h, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    head = c.get("head_dim") or h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * head, c.get("num_key_value_heads",
                                                   c["num_attention_heads"]) * head
    experts = c.get("num_local_experts") or c.get("num_experts") or 1
    mlp = 3 * h * c.get("moe_intermediate_size", c["intermediate_size"]) * experts
    per_layer = h * q + 2 * h * kv + q * h + mlp + 2 * h
    step = layers * per_layer + h + vocab * h  # + final norm + lm_head
    params = step + (0 if c.get("tie_word_embeddings") else vocab * h)
    files = [p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin", ".pt")]
    on_disk = sum(p.stat().st_size for p in files)
    return ModelSizes(params=params, weight_bytes=on_disk or params * wb,
                      step_weight_bytes=step * wb, kv_bytes_per_token=layers * 2 * kv * kvb,
                      source="files" if on_disk else "config.json")


def check_card(sizes: ModelSizes, e, card_bytes: int, model: str = "model.path",
               section: str = "engine") -> None:
    """FitError if the weights, or the weights and one longest request, exceed vLLM's share.

    `e`: the [engine] settings with the engine's own overrides applied (the judge's size);
    `section` names where max_model_len and tensor_parallel_size come from."""
    tp = max(e.tensor_parallel_size, 1)
    share = e.gpu_memory_utilization * card_bytes
    weights = sizes.weight_bytes / tp
    where = (f"engine.gpu_memory_utilization = {e.gpu_memory_utilization:g} of this GPU's "
             f"{card_bytes / GIB:.1f} GiB is {share / GIB:.1f} GiB")
    if weights >= share:
        gpus = "judge_gpus_per_node" if section == "judge" else "gpus_per_node"
        raise FitError(
            f"{model}: the weights take {weights / GIB:.1f} GiB per GPU (from {sizes.source}, "
            f"{section}.tensor_parallel_size = {tp}) but {where}: raise "
            f"{section}.tensor_parallel_size (and slurm.{gpus}) or "
            "engine.gpu_memory_utilization, or use a GPU with more memory")
    if e.kv_cache_memory_bytes:
        return  # a fixed KV cache: vLLM checks it against the longest request itself
    n = e.max_model_len
    kv = n * sizes.kv_bytes_per_token / tp
    if weights + kv > share:
        longest = int((share - weights) * tp / sizes.kv_bytes_per_token)
        raise FitError(
            f"{section}.max_model_len = {n}: one request that long needs {kv / GIB:.1f} GiB of KV "
            f"cache per GPU, but {where} and the weights take {weights / GIB:.1f} of it, "
            f"leaving less than {(share - weights) / GIB:.1f} GiB (room for at most "
            f"~{longest:,} tokens): lower {section}.max_model_len or raise "
            f"engine.gpu_memory_utilization or {section}.tensor_parallel_size")


def check_engine(model: str, e, section: str, card_bytes: int) -> None:
    """check_card for an engine about to start on `model` (a local folder); a folder whose
    config.json is not a decoder this module can size is let through to vLLM's own checks."""
    try:
        sizes = model_sizes(model, e.dtype, e.kv_cache_dtype)
    except (OSError, KeyError, TypeError, ValueError) as why:
        log.info("no memory check before the engine starts (%s: %r)", model, why)
        return
    check_card(sizes, e, card_bytes, "judge.model" if section == "judge" else "model.path",
               section)


def check_window(demands: list[SetDemand], cap: Capacity) -> None:
    """FitError if a fixed window's first (largest) sets need more KV than the cache holds."""
    first = order_sets(demands, cap.block)[:cap.max_sets] if cap.max_sets else []
    if len(first) < 2:
        return  # one set runs alone, however large
    need = sum(d.footprint(cap.block) for d in first)
    if need > cap.blocks:
        fits, total = 0, 0
        for d in first:
            total += d.footprint(cap.block)
            fits += total <= cap.blocks
        raise FitError(
            f"engine.batch_sets = {cap.max_sets}: the shard's {len(first)} largest document "
            f"sets need {need * cap.block:,} tokens of KV cache at once (prompts and answer "
            f"budgets), but the engine's cache holds {cap.kv_tokens:,}: use "
            f"engine.batch_sets = \"auto\" (as many as fit) or at most {max(fits, 1)}, or more "
            "KV cache (engine.gpu_memory_utilization, engine.kv_cache_memory_bytes)")
