"""Shared test setup: a stable build cache, CPU-friendly vLLM settings, a prepared demo run."""

import os

import pytest

os.environ.setdefault("LCR_CACHE", "/tmp/lcr-test-cache")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One vLLM compile cache for every test's engines (engine.compile_cache = "auto" honours it).
os.environ.setdefault("VLLM_CACHE_ROOT", os.path.join(os.environ["LCR_CACHE"], "vllm"))


@pytest.fixture(scope="session")
def planned_demo(tmp_path_factory):
    """A demo run directory, prepared and planned once per session (treat as read-only)."""
    from helpers import demo_config

    from lcr.plan import plan_run

    root = tmp_path_factory.mktemp("planned")
    cfg = demo_config(root)
    run_dir, plan, questions = plan_run(cfg, log=lambda *_: None)
    return cfg, run_dir, plan, questions
