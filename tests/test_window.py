"""The set window's KV budget and the cost model that replays it (pure functions)."""

import pytest

from lcr.config import Config
from lcr.cost import Batch, decode_step_seconds, predict, set_demands, simulate
from lcr.window import Capacity, SetDemand, Window, order_sets


def demand(name, shared, prompts, budget=100, outputs=None):
    return SetDemand(name, shared, list(prompts), list(outputs or [budget] * len(prompts)),
                     [budget] * len(prompts))


def test_footprint_counts_the_shared_prefix_once():
    d = demand("a", 1600, [1650, 1660, 1670], budget=100)
    # 100 shared blocks, then each unit: its own blocks beyond them plus one block of slack
    assert d.footprint(16) == 100 + sum(-(-(p + 100) // 16) - 100 + 1 for p in d.prompts)
    alone = demand("b", 0, [1650], budget=100)  # one unit: nothing shared, no prime
    assert not alone.primed(16) and alone.footprint(16) == -(-1750 // 16) + 1


def test_window_admits_within_blocks_and_sequences():
    a, b, c = demand("a", 1600, [1650] * 4), demand("b", 1600, [1650] * 4), demand("c", 0, [50])
    w = Window(Capacity(kv_tokens=16 * (a.footprint(16) + b.footprint(16)), block=16))
    assert w.fits(a)
    w.add(a)
    assert w.fits(b)
    w.add(b)
    assert not w.fits(c)  # the cache is full
    w.remove(a)
    assert w.fits(c)
    seqs = Window(Capacity(kv_tokens=10**9, block=16, max_seqs=6))
    seqs.add(a)
    assert not seqs.fits(b) and seqs.fits(demand("d", 0, [50, 60]))


def test_a_set_larger_than_the_cache_is_admitted_alone():
    big = demand("big", 100_000, [100_050] * 3)
    w = Window(Capacity(kv_tokens=1000, block=16))
    assert w.fits(big)
    w.add(big)
    assert not w.fits(demand("small", 0, [10]))


def test_fixed_window_of_sets_ignores_the_budget():
    w = Window(Capacity(kv_tokens=16, block=16, max_sets=2))
    w.add(demand("a", 1600, [1650] * 4))
    assert w.fits(demand("b", 1600, [1650] * 4))
    w.add(demand("b", 1600, [1650] * 4))
    assert not w.fits(demand("c", 0, [10]))


def test_largest_sets_go_first():
    ds = [demand("s", 0, [100]), demand("l", 5000, [5100] * 4), demand("m", 2000, [2100] * 2)]
    assert [d.set_id for d in order_sets(ds, 16)] == ["l", "m", "s"]


def _unit_costs(new, ctx):
    return float(new)  # one second per prefilled token: the totals are token counts


def test_simulation_replays_the_window():
    sets = [demand(n, 1600, [1650] * 4, budget=10) for n in "abc"]
    cap = Capacity(kv_tokens=16 * 2 * sets[0].footprint(16), block=16)
    p = simulate(sets, cap, _unit_costs, lambda b: 1.0)
    assert p.windows == [["a", "b"], ["c"]] and p.max_window == 2
    assert p.steps == 20 and p.decode_s == 20.0  # two rounds of 10 steps
    assert p.decode_tokens == 3 * 4 * 10
    # each set: its prefix once (prime), then each unit's tokens beyond the cached blocks
    per_set = 1600 + 4 * (1650 - 1600)
    assert p.prefill_tokens == 3 * per_set and p.prefill_s == 3 * per_set
    wide = simulate(sets, Capacity(kv_tokens=10**9, block=16), _unit_costs, lambda b: 1.0)
    assert wide.windows == [["a", "b", "c"]] and wide.steps == 10


def test_decode_step_sees_sequences_context_and_shared_prefixes():
    seen = []
    sets = [demand("a", 1000, [1010, 1020], budget=4), demand("b", 0, [500], budget=2)]
    simulate(sets, Capacity(kv_tokens=10**9, block=16), _unit_costs,
             lambda b: seen.append(b) or 0.0)
    first, second = seen
    assert (first.seqs, first.sets, first.shared) == (3, 2, 992)  # whole cached blocks
    assert first.shared_seqs == 2 * 992
    assert first.context == 1010 + 1020 + 500 + 3 * 0.5  # midpoint of 2 steps
    assert (second.seqs, second.sets) == (2, 1)


def test_step_cost_is_linear_in_its_parts():
    c = Config().cost
    b = Batch(seqs=10, context=2_000_000, shared=500_000, sets=2)
    want = c.step_s + 10 * c.step_seq_s + 2 * c.step_ctx_s + 0.5 * c.step_shared_s
    assert decode_step_seconds(b, c) == pytest.approx(want)


def test_demands_share_the_documents_or_the_whole_prompt():
    qinfo = {
        "1": {"prompt_tokens": 1100, "shared_prefix_tokens": 1000, "status": "ok"},
        "2": {"prompt_tokens": 1080, "shared_prefix_tokens": 1000, "status": "ok"},
        "3": {"prompt_tokens": 900, "shared_prefix_tokens": 0, "status": "ok"},
        "4": {"prompt_tokens": 99999, "shared_prefix_tokens": 0, "status": "too_long"},
    }
    units = [{"question_id": q, "document_set_id": s, "seed": seed}
             for q, s in (("1", "A"), ("2", "A"), ("3", "B"), ("4", "C")) for seed in (0, 1)]
    ds = {d.set_id: d for d in set_demands(units, qinfo, 64)}
    assert set(ds) == {"A", "B"}  # too-long units never reach the engine
    assert ds["A"].shared == 1000 and ds["A"].prompts == [1100, 1100, 1080, 1080]
    assert ds["B"].shared == 899  # one question, two seeds: all but the last token is shared
    assert ds["A"].budgets == [64] * 4
    short = {d.set_id: d for d in set_demands(units, qinfo, 64, output_tokens=20)}
    assert short["A"].outputs == [20] * 4 and short["A"].budgets == [64] * 4


def test_more_room_means_fewer_decode_steps_and_less_time():
    sets = [demand(f"s{i}", 30_000, [30_100] * 12, budget=1024) for i in range(6)]
    cost = Config().cost
    narrow = predict(sets, cost, Capacity(kv_tokens=60_000, block=16))
    wide = predict(sets, cost, Capacity(kv_tokens=400_000, block=16))
    assert narrow.max_window == 1 and wide.max_window > 1
    assert wide.steps < narrow.steps and wide.seconds < narrow.seconds
    assert wide.prefill_s == pytest.approx(narrow.prefill_s)
