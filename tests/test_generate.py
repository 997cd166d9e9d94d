"""Generation shards on the real vLLM engine (CPU build, tiny local model)."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from helpers import copy_run, open_counts

from lcr.errors import exit_code
from lcr.fit import FitError
from lcr.generate import run_shard
from lcr.io import LockedError, ShardWriter, read_jsonl
from lcr.rundir import RunDir

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def engine(planned_demo):
    """One real engine for the in-process tests of this module."""
    from lcr.generate import _default_engine

    cfg = planned_demo[0]
    return _default_engine(cfg)


def _factory(engine):
    return lambda cfg: engine


def _records(rd: RunDir, shard: int):
    return [r for p in rd.generate_files(shard) for r in read_jsonl(p).records]


def _shard_with(plan, predicate):
    return next(s for s in plan["shards"] if predicate(s))


def test_shard_generates_every_unit_once_with_prefix_hits(planned_demo, tmp_path, engine):
    _, src, plan, _ = planned_demo
    rd = RunDir(copy_run(src.path, tmp_path))
    spec = _shard_with(plan, lambda s: "Company_01" in s["document_sets"])
    info = run_shard(rd.path, spec["index"], engine_factory=_factory(engine))
    recs = _records(rd, spec["index"])
    keys = [r["key"] for r in recs]
    assert sorted(keys) == sorted(u["key"] for u in spec["units"])
    assert Counter(keys).most_common(1)[0][1] == 1
    assert info["records"] == len(spec["units"]) and info["cache_hit"] > 0
    company = [r for r in recs if r["document_set_id"] == "Company_01" and r["seed"] == 0]
    assert len(company) == 5
    # the first question of the set prefills the documents; the others reuse them
    assert sorted(r["cached_tokens"] for r in company)[1] > 0
    assert max(r["cached_tokens"] for r in company) > 0.8 * company[0]["prompt_tokens"]
    for r in recs:
        for field in ("key", "question_id", "seed", "sample", "document_set_id",
                      "document_category", "status", "response", "prompt_tokens",
                      "cached_tokens", "output_tokens", "finish_reason", "elapsed_s", "model",
                      "shard"):
            assert field in r
    done = json.loads(rd.generate_marker(spec["index"]).read_text())
    assert done["records"] == len(spec["units"]) and "sha256" in done and "elapsed_s" in done
    # a second run finds the shard done and does nothing
    assert run_shard(rd.path, spec["index"], engine_factory=_factory(engine)) == done


def test_same_seed_same_response(planned_demo, tmp_path, engine):
    _, src, plan, _ = planned_demo
    spec = plan["shards"][1]
    runs = []
    for name in ("a", "b"):
        rd = RunDir(copy_run(src.path, tmp_path, name))
        run_shard(rd.path, spec["index"], engine_factory=_factory(engine))
        runs.append({r["key"]: r["response"] for r in _records(rd, spec["index"])})
    assert runs[0] == runs[1]
    by_q = {}
    for key, text in runs[0].items():
        by_q.setdefault(key.split(":")[0], set()).add(text)
    assert any(len(texts) > 1 for texts in by_q.values())  # seeds 0 and 1 differ (temp 0.7)


def test_too_long_unit_is_recorded_and_the_shard_goes_on(planned_demo, tmp_path, engine):
    _, src, plan, questions = planned_demo
    long_q = next(q for q in questions if q["status"] == "too_long")
    spec = _shard_with(plan, lambda s: long_q["document_set_id"] in s["document_sets"])
    rd = RunDir(copy_run(src.path, tmp_path))
    info = run_shard(rd.path, spec["index"], engine_factory=_factory(engine))
    recs = {r["key"]: r for r in _records(rd, spec["index"])}
    bad = [r for r in recs.values() if r["question_id"] == long_q["question_id"]]
    assert bad and all(r["status"] == "too_long" and "max_model_len" in r["error"] for r in bad)
    assert info["n_too_long"] == len(bad) and info["n_ok"] == len(spec["units"]) - len(bad)


def test_torn_last_line_is_tolerated(planned_demo, tmp_path, engine):
    _, src, plan, _ = planned_demo
    spec = plan["shards"][0]
    rd = RunDir(copy_run(src.path, tmp_path))
    path = rd.generate_file(spec["index"])
    path.parent.mkdir(parents=True)
    path.write_text('{"key": "1:0:0", "question_id": "1", "resp')  # a writer killed mid-line
    run_shard(rd.path, spec["index"], engine_factory=_factory(engine))
    read = read_jsonl(path)
    assert read.bad_lines and read.bad_lines[0][0] == 1
    assert sorted(r["key"] for r in read.records) == sorted(u["key"] for u in spec["units"])


def test_a_shard_reads_its_inputs_once(planned_demo, tmp_path, engine):
    _, src, plan, _ = planned_demo
    rd = RunDir(copy_run(src.path, tmp_path))
    spec = plan["shards"][-1]
    with open_counts(rd.path) as opened:  # every check of the shard asks for these files
        run_shard(rd.path, spec["index"], engine_factory=_factory(engine))
    assert [opened[f] for f in ("config.toml", "plan.json", "questions.jsonl")] == [1, 1, 1]
    assert rd.generate_done(spec) is not None


def test_second_writer_is_refused(planned_demo, tmp_path, engine):
    _, src, _, _ = planned_demo
    rd = RunDir(copy_run(src.path, tmp_path))
    with ShardWriter(rd.generate_file(0)), pytest.raises(LockedError,
                                                          match="being written by another"):
        run_shard(rd.path, 0, engine_factory=_factory(engine))
    assert _records(rd, 0) == []


def _set_debug(rd: RunDir, **values):
    """Change [debug] in a run's config.toml (it does not affect the records' hash)."""
    import tomli_w

    from lcr.rundir import tomllib

    data = tomllib.loads(rd.config_file.read_text())
    data["debug"].update(values)
    rd.config_file.write_text(tomli_w.dumps(data))


def test_sigkill_mid_shard_then_rerun_loses_nothing(planned_demo, tmp_path, engine):
    _, src, plan, _ = planned_demo
    spec = max(plan["shards"], key=lambda s: len(s["document_sets"]))
    rd = RunDir(copy_run(src.path, tmp_path))
    _set_debug(rd, unit_delay_s=1.0)
    proc = subprocess.Popen([sys.executable, "-m", "lcr.cli", "generate", str(rd.path), "--shard",
                             str(spec["index"])], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ))
    path = rd.generate_file(spec["index"])
    deadline = time.time() + 240
    # wait for a generated record: too-long records are written before the engine starts
    while time.time() < deadline and not any(
            r["status"] == "ok" for r in read_jsonl(path).records):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_jsonl(path).records
    assert sum(r["status"] == "ok" for r in before) >= 1, "kill landed before generation"
    assert len(before) < len(spec["units"]), "kill landed after the shard's run"
    assert not rd.generate_marker(spec["index"]).exists()
    _set_debug(rd, unit_delay_s=0.0)
    run_shard(rd.path, spec["index"], engine_factory=_factory(engine))
    after = read_jsonl(path).records
    keys = [r["key"] for r in after]
    assert sorted(keys) == sorted(u["key"] for u in spec["units"])
    assert Counter(keys).most_common(1)[0][1] == 1
    assert after[:len(before)] == before  # what was written stays, byte for byte


def test_two_replicas_split_a_shard_exactly(planned_demo, tmp_path):
    _, src, plan, _ = planned_demo
    spec = max(plan["shards"], key=lambda s: len(s["document_sets"]))
    rd = RunDir(copy_run(src.path, tmp_path))
    info = run_shard(rd.path, spec["index"], parts=2)
    parts = [rd.generate_file(spec["index"], p) for p in (0, 1)]
    assert all(p.exists() for p in parts)
    per_part = [{r["key"] for r in read_jsonl(p).records} for p in parts]
    assert per_part[0] and per_part[1] and not per_part[0] & per_part[1]
    assert per_part[0] | per_part[1] == {u["key"] for u in spec["units"]}
    sets = [{r["document_set_id"] for r in read_jsonl(p).records} for p in parts]
    assert not sets[0] & sets[1]  # whole document sets per replica
    assert info["records"] == len(spec["units"]) and rd.generate_marker(spec["index"]).exists()


def test_tiny_model_answers_a_chat_call(engine, planned_demo):
    cfg = planned_demo[0]
    outs = engine.chat([[{"role": "user", "content": "What was the revenue of Bada Kimo?"}]],
                       [engine.params(cfg.sampling, seed=0)])
    assert outs[0].error is None and outs[0].text and outs[0].output_tokens > 0
    assert outs[0].prompt_tokens > 10


class Watch:
    """The real engine, reporting a smaller KV cache, recording which sets are in flight."""

    def __init__(self, engine, rd: RunDir, kv_tokens: int):

        self.engine, self.kv_tokens = engine, kv_tokens
        self.set_of = {}
        for q in rd.load_questions():
            if q["status"] == "ok":
                self.set_of[tuple(rd.prompt_ids(q)[:100])] = q["document_set_id"]
        self.live: dict[str, str] = {}
        self.windows: list[set] = []

    def kv_capacity(self):
        return self.kv_tokens, self.engine.kv_capacity()[1]

    def params(self, *a, **k):
        return self.engine.params(*a, **k)

    def add(self, rid, ids, params):
        self.live[rid] = self.set_of[tuple(ids[:100])]
        self.windows.append(set(self.live.values()))
        return self.engine.add(rid, ids, params)

    def step(self):
        out = self.engine.step()
        for rid, _ in out:
            del self.live[rid]
        return out


def _widest(planned_demo) -> dict:
    """The shard with the most document sets that reach the engine (not too long)."""
    _, _, plan, questions = planned_demo
    runnable = {q["document_set_id"] for q in questions if q["status"] == "ok"}
    return max(plan["shards"], key=lambda s: len(runnable & set(s["document_sets"])))


def _shard_run(planned_demo, tmp_path, engine, kv_tokens, *overrides):
    _, src, _, _ = planned_demo
    spec = _widest(planned_demo)
    rd = RunDir(copy_run(src.path, tmp_path))
    if overrides:
        _set_section(rd, "engine", **dict(overrides))
    watch = Watch(engine, rd, kv_tokens)
    info = run_shard(rd.path, spec["index"], engine_factory=lambda cfg: watch)
    recs = _records(rd, spec["index"])
    assert sorted(r["key"] for r in recs) == sorted(u["key"] for u in spec["units"])
    return spec, recs, watch, info


def _set_section(rd: RunDir, section: str, **values):
    import tomli_w

    from lcr.rundir import tomllib

    data = tomllib.loads(rd.config_file.read_text())
    data[section].update(values)
    rd.config_file.write_text(tomli_w.dumps(data))


def test_kv_capacity_is_read_from_the_engine(engine, planned_demo):
    kv_tokens, block = engine.kv_capacity()
    per_token = 2 * 2 * 32 * 2 * 2  # layers x KV heads x head dim x (K, V) x bf16 bytes
    assert block > 0 and kv_tokens % block == 0
    assert 0.8 < kv_tokens * per_token / planned_demo[0].engine.kv_cache_memory_bytes <= 1.0


def _footprints(planned_demo, block: int) -> list[int]:
    """KV blocks of each set of the demo's largest shard, largest first."""
    from lcr.feed import make_group

    cfg, rd, _, questions = planned_demo
    qinfo = {q["question_id"]: q for q in questions}
    spec = _widest(planned_demo)
    out = []
    for set_id in spec["document_sets"]:
        units = [u for u in spec["units"] if u["document_set_id"] == set_id
                 and qinfo[u["question_id"]]["status"] == "ok"]
        if not units:
            continue
        ids = [rd.prompt_ids(qinfo[u["question_id"]]) for u in units]
        g = make_group(set_id, units, ids, [cfg.sampling.max_new_tokens] * len(units))
        out.append(g.demand.footprint(block))
    return sorted(out, reverse=True)


def test_window_holds_the_sets_the_kv_cache_fits(planned_demo, tmp_path, engine):
    block = engine.kv_capacity()[1]
    sizes = _footprints(planned_demo, block)
    assert len(sizes) >= 3
    # room for the two largest sets, not for all three: the third waits for one to finish
    _, recs, watch, info = _shard_run(planned_demo, tmp_path, engine, (sizes[0] + sizes[1]) * block)
    assert max(len(w) for w in watch.windows) == 2  # two sets decode together ...
    assert len(set().union(*watch.windows)) == len(sizes)  # ... the next enters as one leaves
    assert info["n_ok"] == sum(r["status"] == "ok" for r in recs)
    # every unit of a set with several units was served its documents from the cache
    by_set = Counter(r["document_set_id"] for r in recs if r["status"] == "ok")
    shared = [r for r in recs if r["status"] == "ok" and by_set[r["document_set_id"]] > 1]
    assert shared and all(r["cached_tokens"] > 0.8 * r["prompt_tokens"] for r in shared)


def test_a_set_larger_than_the_cache_runs_alone(planned_demo, tmp_path, engine):
    _, _, watch, _ = _shard_run(planned_demo, tmp_path, engine, 64)
    assert max(len(w) for w in watch.windows) == 1


def test_batch_sets_fixes_the_window(planned_demo, tmp_path, engine):
    _, _, watch, _ = _shard_run(planned_demo, tmp_path, engine, 10**9, ("batch_sets", 1))
    assert max(len(w) for w in watch.windows) == 1
    _, _, watch, _ = _shard_run(planned_demo, tmp_path / "b", engine, 10**9, ("batch_sets", 2))
    assert max(len(w) for w in watch.windows) == 2


def test_a_fixed_window_the_cache_cannot_hold_is_refused_before_a_request(
        planned_demo, tmp_path, engine):
    block = engine.kv_capacity()[1]
    sizes = _footprints(planned_demo, block)
    with pytest.raises(FitError) as e:  # room for the largest set only, two asked for
        _shard_run(planned_demo, tmp_path, engine, sizes[0] * block, ("batch_sets", 2))
    msg = str(e.value)
    assert msg.startswith("engine.batch_sets = 2: the shard's 2 largest document sets need "
                          f"{(sizes[0] + sizes[1]) * block:,} tokens")
    assert f"holds {sizes[0] * block:,}" in msg and "at most 1" in msg and "\n" not in msg
    assert exit_code(e.value) == 2
    spec = _widest(planned_demo)
    rd = RunDir(tmp_path / "copy")
    assert not [r for r in _records(rd, spec["index"]) if r["status"] == "ok"]
    # the same run with the window the cache holds finishes; the records kept are not redone
    _set_section(rd, "engine", batch_sets="auto")
    watch = Watch(engine, rd, sizes[0] * block)
    run_shard(rd.path, spec["index"], engine_factory=lambda cfg: watch)
    assert sorted(r["key"] for r in _records(rd, spec["index"])) == sorted(
        u["key"] for u in spec["units"])
