"""`lcr bench` end to end on the CPU engine with the tiny model, and its workload options."""

import json

import pytest
from helpers import REPO

from lcr.bench import bench_config, output_lengths, run_bench, workload
from lcr.cli import _parser
from lcr.config import ConfigError

BENCH = str(REPO / "jobs" / "bench-llama31-8b.toml")


def _args(*extra):
    return _parser().parse_args(["bench", BENCH, *extra])


@pytest.mark.vllm
def test_bench_calibrates_predicts_and_floors_through_the_generate_path(tmp_path):
    out = tmp_path / "bench.json"
    args = _args(
        "--scale", "0.05", "--shards", "2", "--policies", "document_set,no_reuse",
        "--out", str(tmp_path / "work"), "--json", str(out), "--calibrate",
        "--calibrate-steps", "8", "--output-tokens", "lognormal:6:0.5:12",
        "--set", "model.path='tiny'", "--set", "engine.max_model_len=8192",
        "--set", "engine.enable_chunked_prefill=false",
        "--set", "engine.kv_cache_memory_bytes=268435456",
    )
    assert run_bench(args) == 0
    results = json.loads(out.read_text())
    runs = {r["policy"]: r for r in results["runs"]}
    assert runs["document_set"]["cache_hit"] > 0.5  # later questions reuse the set's documents
    assert runs["no_reuse"]["cache_hit"] == 0.0
    for r in runs.values():
        assert r["output_tokens"] > 0 and r["gpu_s"] > 0 and r["predicted_s"] > 0
        assert r["floor_prefill_s"] > 0 and r["floor_s"] > 0
        assert r["floor_s"] == pytest.approx(r["floor_prefill_s"] + r["floor_decode_s"], abs=0.02)
    assert runs["no_reuse"]["floor_ratio"] > runs["document_set"]["floor_ratio"]
    (engine,) = results["engines"]
    assert engine["kv_tokens"] > 0 and engine["bandwidth"] > 0 and engine["step_s"] >= 0
    assert len(engine["decode_points"]) >= 4 and engine["compile_cache"] in ("cold", "warm")
    assert (tmp_path / "work" / "calibration.json").exists()
    # every unit went through the real shard files, exactly once, with its own answer length
    files = list((tmp_path / "work" / "document_set" / "generate").glob("*.jsonl"))
    recs = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len({r["key"] for r in recs}) == len(recs) > 0
    assert len({r["output_tokens"] for r in recs}) > 1 and max(r["output_tokens"]
                                                                for r in recs) <= 12
    # a second bench predicts from that calibration without measuring again
    again = _args("--scale", "0.05", "--shards", "1", "--policies", "document_set",
                  "--out", str(tmp_path / "work2"), "--json", str(out), "--calibration",
                  str(tmp_path / "work" / "calibration.json"), "--set", "model.path='tiny'",
                  "--set", "engine.max_model_len=8192", "--set",
                  "engine.enable_chunked_prefill=false", "--set",
                  "engine.kv_cache_memory_bytes=268435456", "--set", "sampling.max_new_tokens=4")
    assert run_bench(again) == 0
    (engine2,) = json.loads(out.read_text())["engines"]
    assert engine2["step_s"] == engine["step_s"] and "decode_points" in engine2


def test_output_lengths_fixed_or_lognormal():
    units = [{"key": str(i)} for i in range(200)]
    assert output_lengths("256", units) == 256 and "max_tokens" not in units[0]
    assert output_lengths("lognormal:300:0.8:2048", units) == 2048
    lengths = [u["max_tokens"] for u in units]
    assert max(lengths) <= 2048 and min(lengths) >= 1 and 200 < sorted(lengths)[100] < 450
    for bad in ("0", "many", "lognormal:300:0.8", "lognormal:-1:0.8:100", "normal:1:1:1"):
        with pytest.raises(ConfigError, match="--output-tokens"):
            output_lengths(bad, units)


def test_like_takes_seeds_and_budget_from_a_job():
    cfg = bench_config(_args("--like", str(REPO / "jobs" / "llama31-8b-aalcr.toml")))
    assert cfg.sampling.seeds == [0, 1, 2] and cfg.sampling.max_new_tokens == 2048
    assert cfg.model.path == "llama31-8b-shapes"  # the engine and model stay the bench's


def test_real_lengths_workload_fits_the_window():
    args = _args("--run-dir", str(REPO / "jobs" / "bench-aalcr-real"))
    cfg = bench_config(args)
    qs = workload(args, cfg)
    assert len(qs) == 98 and len({q["document_set_id"] for q in qs}) == 29
    limit = cfg.engine.max_model_len - cfg.sampling.max_new_tokens - 200
    assert max(q["prompt_tokens"] for q in qs) <= limit
    assert all(0 <= q["shared_prefix_tokens"] <= q["prompt_tokens"] for q in qs)
