"""`lcr bench` end to end on the CPU engine with the tiny model (numbers are not checked)."""

import json

import pytest
from helpers import REPO

from lcr.bench import run_bench
from lcr.cli import _parser

pytestmark = pytest.mark.vllm


def test_bench_runs_policies_through_the_generate_path(tmp_path):
    out = tmp_path / "bench.json"
    args = _parser().parse_args([
        "bench", str(REPO / "jobs" / "bench-llama31-8b.toml"), "--scale", "0.05", "--shards", "2",
        "--policies", "document_set,no_reuse", "--out", str(tmp_path / "work"),
        "--json", str(out), "--set", "model.path='tiny'", "--set", "engine.max_model_len=8192",
        "--set", "engine.enable_chunked_prefill=false",
        "--set", "engine.kv_cache_memory_bytes=268435456", "--set", "sampling.max_new_tokens=4",
    ])
    assert run_bench(args) == 0
    runs = {r["policy"]: r for r in json.loads(out.read_text())["runs"]}
    assert runs["document_set"]["cache_hit"] > 0.5  # later questions reuse the set's documents
    assert runs["no_reuse"]["cache_hit"] == 0.0
    for r in runs.values():
        assert r["output_tokens"] > 0 and r["gpu_s"] > 0 and r["floor_s"] > 0
    # every unit went through the real shard files, exactly once
    shard_files = list((tmp_path / "work" / "document_set" / "generate").glob("*.jsonl"))
    keys = [json.loads(line)["key"] for f in shard_files for line in f.read_text().splitlines()]
    assert len(keys) == len(set(keys)) > 0
