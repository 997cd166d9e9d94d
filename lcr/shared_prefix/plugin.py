"""vLLM plugin entry point: AttentionBackendEnum.CUSTOM is lcr's shared-prefix backend.

    [project.entry-points."vllm.general_plugins"]
    lcr_shared_prefix = "lcr.shared_prefix.plugin:register"

vLLM calls `register()` in every process it starts (engine core, workers), so an engine made
with `attention_backend="CUSTOM"` finds the backend in each of them. Registering only names a
class path: nothing is imported until an engine asks for it, so CPU engines are unaffected.
"""

from __future__ import annotations

BACKEND = "lcr.shared_prefix.backend.SharedPrefixBackend"


def register() -> None:
    try:
        from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend
    except ImportError:  # a vLLM without the registry: the backend cannot be offered
        return
    register_backend(AttentionBackendEnum.CUSTOM, BACKEND)
