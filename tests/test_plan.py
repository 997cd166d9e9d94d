"""Planner invariants by name, on the demo and on an AA-LCR-shaped synthetic workload."""

import json
from collections import Counter

import pytest
from helpers import demo_config

from lcr.config import Config, ConfigError
from lcr.cost import units_cost
from lcr.plan import assign, check_plan, make_plan, make_units, plan_run
from lcr.shape import aalcr_shaped
from lcr.units import plan_units


def test_shape_follows_the_dataset_card():
    qs = aalcr_shaped()
    assert len(qs) == 100 and len({q["document_set_id"] for q in qs}) == 30
    assert sum(q["document_category"] == "Company Documents" for q in qs) == 63


def _cfg(count, seeds=(0,), n=1):
    cfg = Config()
    cfg.shards.count, cfg.sampling.seeds, cfg.sampling.n = count, list(seeds), n
    return cfg


@pytest.mark.parametrize("count", [1, 3, 4, 7, 8, 29, 30])
def test_every_unit_in_exactly_one_shard(count):
    qs = aalcr_shaped()
    plan = make_plan(qs, _cfg(count, seeds=(0, 1, 2)))
    check_plan(plan, qs, [0, 1, 2], 1)
    keys = [u["key"] for u in plan_units(plan)]
    assert Counter(keys).most_common(1)[0][1] == 1 and len(keys) == 300


@pytest.mark.parametrize("count", [2, 4, 8, 16, 30])
def test_no_set_split_while_shards_at_most_sets(count):
    plan = make_plan(aalcr_shaped(), _cfg(count, seeds=(0, 1, 2)))
    owner = {}
    for s in plan["shards"]:
        for u in s["units"]:
            assert owner.setdefault(u["document_set_id"], s["index"]) == s["index"]


def test_all_seeds_of_a_set_together():
    plan = make_plan(aalcr_shaped(), _cfg(8, seeds=(0, 1, 2), n=2))
    for s in plan["shards"]:
        for set_id in s["document_sets"]:
            seeds = {u["seed"] for u in s["units"] if u["document_set_id"] == set_id}
            assert seeds == {0, 1, 2}


def test_more_shards_than_sets_splits_by_seed_first():
    qs = aalcr_shaped()
    plan = make_plan(qs, _cfg(45, seeds=(0, 1, 2)))
    check_plan(plan, qs, [0, 1, 2], 1)
    assert all(s["units"] for s in plan["shards"])
    for s in plan["shards"]:  # a split set keeps whole questions x samples, split over seeds
        for set_id in s["document_sets"]:
            units = [u for u in s["units"] if u["document_set_id"] == set_id]
            qids = {u["question_id"] for u in units}
            full = [q for q in qs if q["document_set_id"] == set_id]
            assert len(qids) == len(full)


def test_shard_count_not_dividing_units_drops_nothing():
    qs = aalcr_shaped()[:31]
    for policy in ("document_set", "round_robin", "contiguous", "random"):
        units = make_units(qs, [0, 1], 1)
        shards = assign(units, 4, policy, {q["question_id"]: q for q in qs}, Config())
        assert sorted(u["key"] for s in shards for u in s) == sorted(u["key"] for u in units)


def test_balanced_on_an_aalcr_shaped_plan():
    for count in (4, 8):
        plan = make_plan(aalcr_shaped(), _cfg(count, seeds=(0, 1, 2)))
        loads = [s["est_seconds"] for s in plan["shards"]]
        assert max(loads) / (sum(loads) / len(loads)) <= 1.10, loads


def test_document_set_plan_is_cheaper_than_round_robin():
    qs = aalcr_shaped()
    cfg = _cfg(4, seeds=(0, 1, 2))
    cfg.sampling.max_new_tokens = 128  # prefill-bound, as the bench's default workload
    qinfo = {q["question_id"]: q for q in qs}
    units = make_units(qs, [0, 1, 2], 1)
    cost = {p: sum(units_cost(s, qinfo, cfg).seconds for s in assign(units, 4, p, qinfo, cfg))
            for p in ("document_set", "round_robin")}
    assert cost["round_robin"] / cost["document_set"] > 2


def test_same_input_same_plan():
    a = json.dumps(make_plan(aalcr_shaped(), _cfg(8)), sort_keys=True)
    b = json.dumps(make_plan(aalcr_shaped(), _cfg(8)), sort_keys=True)
    assert a == b


def test_plan_json_matches_design(planned_demo):
    cfg, run_dir, plan, questions = planned_demo
    on_disk = json.loads(run_dir.plan_file.read_text())
    assert on_disk == plan and on_disk["run"] == "demo"
    for s in on_disk["shards"]:
        assert {"index", "document_sets", "est_tokens", "units"} <= set(s)
        for u in s["units"]:
            assert u["key"] == f"{u['question_id']}:{u['seed']}:{u['sample']}"
    check_plan(plan, questions, cfg.sampling.seeds, cfg.sampling.n)


def test_replanning_with_another_config_is_refused(tmp_path):
    cfg = demo_config(tmp_path)
    plan_run(cfg, log=lambda *_: None)
    plan_run(demo_config(tmp_path, "slurm.time=5"), log=lambda *_: None)  # same records: fine
    with pytest.raises(ConfigError) as e:
        plan_run(demo_config(tmp_path, "sampling.seeds=[0,1,2]"), log=lambda *_: None)
    assert "sampling.seeds: [0, 1] -> [0, 1, 2]" in str(e.value) and "--force" in str(e.value)
    _, plan, _ = plan_run(demo_config(tmp_path, "sampling.seeds=[0,1,2]"), force=True,
                          log=lambda *_: None)
    assert plan["n_units"] == 63


def test_greedy_seeds_are_flagged_with_their_cost():
    from lcr.plan import greedy_seeds_warning, plan_table

    qs = aalcr_shaped()
    qinfo = {q["question_id"]: q for q in qs}
    cfg = _cfg(4, seeds=(0, 1, 2))
    cfg.sampling.temperature = 0.0
    plan = make_plan(qs, cfg)
    warning = greedy_seeds_warning(plan, qinfo, cfg)
    assert "temperature = 0" in warning and "2 extra seed(s)" in warning
    one = make_plan(qs, _cfg(4, seeds=(0,)))
    extra = (sum(s["est_seconds"] for s in plan["shards"])
             - sum(s["est_seconds"] for s in one["shards"])) / 60
    shown = float(warning.split("cost ~")[1].split(" GPU-min")[0])
    assert shown == pytest.approx(extra, rel=0.15)  # the same units, packed as planned
    assert warning in plan_table(plan, qs, cfg)
    cfg.sampling.temperature = 0.7
    assert greedy_seeds_warning(plan, qinfo, cfg) is None
    assert greedy_seeds_warning(one, qinfo, _cfg(4, seeds=(0,))) is None


def test_plan_table_shows_prefill_decode_window_and_replica_nodes():
    from lcr.plan import plan_table

    qs = aalcr_shaped()
    cfg = _cfg(2, seeds=(0,))
    cfg.engine.replicas, cfg.slurm.gpus_per_node = 4, 4
    table = plan_table(make_plan(qs, cfg), qs, cfg)
    header = table.splitlines()[0]
    for column in ("prefill min", "decode min", "GPU-min", "window", "node min"):
        assert column in header
