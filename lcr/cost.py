"""Engine cost model: seconds a shard takes on one GPU, by replaying the set-window scheduler.

    demands = set_demands(units, qinfo, max_new_tokens)
    p = predict(demands, cfg.cost, capacity_from(cfg))
    p.seconds, p.prefill_s, p.decode_s, p.max_window

Generation keeps as many document sets in flight as the KV cache holds (lcr.window); each set
prefills its shared documents once, then its units decode together with the other sets' units.
The prediction replays exactly that: prefill of each set's unique tokens (linear in tokens, plus
attention that grows with the context), then decode steps whose time depends on how many
sequences decode together and how much context they read (fitted by `lcr bench --calibrate`).
The same replay with physical step costs (bytes a step must read at the measured memory
bandwidth) gives the bench's floor.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from lcr.config import Config, CostSection, EngineSection
from lcr.shared_prefix.support import MIN_SHARED_BLOCKS, static_reasons
from lcr.units import by_set
from lcr.window import Capacity, SetDemand, Window, order_sets

MTOK = 1_000_000


def prefill_seconds(new: int, context: int, cost: CostSection) -> float:
    """Seconds to prefill `new` tokens after `context` cached tokens (attention grows with L)."""
    end = context + new
    return (new + (end * end - context * context) / cost.attn_tokens) / cost.prefill_tok_s


def set_prefill_seconds(d: SetDemand, block: int, prefill: Callable[[int, int], float]) -> float:
    """A set's prefill: the shared prefix once (the prime request), then each unit's own rest."""
    if d.primed(block):
        cached = d.cached_prefix(block)
        return prefill(d.shared, 0) + sum(prefill(p - cached, cached) for p in d.prompts)
    return sum(prefill(p, 0) for p in d.prompts)


@dataclass
class Batch:
    """What one decode step works on."""

    seqs: int = 0  # sequences decoding together
    context: float = 0  # context tokens attended, summed over the sequences
    shared: int = 0  # shared-prefix tokens, counted once per set in flight
    sets: int = 0  # sets in flight
    shared_seqs: int = 0  # shared-prefix tokens, counted once per sequence
    grouped: int = 0  # shared-prefix tokens once per set that shared-prefix attention groups
    grouped_seqs: int = 0  # the same, counted once per sequence of those sets

    def __add__(self, o: Batch) -> Batch:
        return Batch(*(getattr(self, f.name) + getattr(o, f.name)
                       for f in dataclasses.fields(self)))


def decode_step_seconds(b: Batch, cost: CostSection, shared_prefix: bool = False) -> float:
    """A decode step: fixed part (weights), per sequence, per context token read, per shared
    prefix token (what the sequences of a set re-read from the same blocks). With shared-prefix
    attention a grouped set's prefix is read once and each sequence reads only the rest."""
    if shared_prefix:
        return (cost.spa_step_s + cost.spa_step_seq_s * b.seqs
                + cost.spa_ctx_s * (b.context - b.grouped_seqs) / MTOK
                + cost.spa_prefix_s * b.grouped / MTOK)
    return (cost.step_s + cost.step_seq_s * b.seqs + cost.step_ctx_s * b.context / MTOK
            + cost.step_shared_s * b.shared / MTOK)


@functools.lru_cache(maxsize=64)
def _assumed(setting, kv_cache_dtype: str, model: str) -> bool:
    engine = EngineSection(shared_prefix_attention=setting, kv_cache_dtype=kv_cache_dtype)
    return setting is True or (setting == "auto" and not static_reasons(engine, model))


def assumes_shared_prefix(cfg: Config) -> bool:
    """Whether the planner prices decode steps with shared-prefix attention: "auto" counts it
    on unless this machine already knows it cannot run (the GPU nodes are checked at start)."""
    e = cfg.engine
    return _assumed(e.shared_prefix_attention, e.kv_cache_dtype, cfg.model.path)


@dataclass
class Prediction:
    prefill_s: float = 0.0
    decode_s: float = 0.0
    steps: int = 0  # decode steps
    max_window: int = 0  # most sets in flight at once
    mean_window: float = 0.0  # sets in flight, averaged over decode steps
    mean_seqs: float = 0.0  # sequences per decode step, averaged over decode steps
    prefill_tokens: int = 0
    decode_tokens: int = 0
    prefill_steps: int = 0  # engine steps spent on prefill chunks
    max_step_s: float = 0.0  # the longest decode step
    windows: list[list[str]] = field(default_factory=list)  # sets in flight at each admission

    @property
    def seconds(self) -> float:
        return self.prefill_s + self.decode_s


class _Live:
    """A set in flight: its demand and, per unit still decoding, (tokens left, context now)."""

    def __init__(self, d: SetDemand, block: int):
        self.d, self.block = d, block
        self.left = list(d.outputs)
        self.ctx = list(d.prompts)

    def batch(self, offset: float) -> Batch:
        live = [c for c, n in zip(self.ctx, self.left) if n > 0]
        shared = self.d.cached_prefix(self.block)
        grouped = shared if len(live) >= 2 and shared >= MIN_SHARED_BLOCKS * self.block else 0
        return Batch(len(live), sum(live) + offset * len(live), shared if live else 0,
                     1 if live else 0, shared * len(live), grouped, grouped * len(live))


def simulate(demands: list[SetDemand], cap: Capacity, prefill: Callable[[int, int], float],
             step: Callable[[Batch], float], chunk_tokens: int = 16384) -> Prediction:
    """Replay the window scheduler over `demands` (in the order given)."""
    queue, window, live = list(demands), Window(cap), []
    p = Prediction()
    seq_steps = set_steps = 0.0
    while queue or live:
        admitted = []
        while queue and window.fits(queue[0]):
            d = queue.pop(0)
            window.add(d)
            live.append(_Live(d, cap.block))
            admitted.append(d.set_id)
            p.prefill_s += set_prefill_seconds(d, cap.block, prefill)
            tokens = d.prefill_tokens(cap.block)
            p.prefill_tokens += tokens
            p.prefill_steps += math.ceil(tokens / chunk_tokens)
        if admitted:
            p.windows.append([s.d.set_id for s in live])
        p.max_window = max(p.max_window, len(live))
        left = [n for s in live for n in s.left if n > 0]
        if not left:  # sets whose units decode nothing (or have none)
            for s in live:
                window.remove(s.d)
            live = []
            continue
        k = min(left)
        total = Batch()
        for s in live:  # context grows by one token per step: the midpoint is exact (linear)
            total = total + s.batch((k - 1) / 2)
        step_s = step(total)
        p.decode_s += k * step_s
        p.max_step_s = max(p.max_step_s, step_s)
        p.steps += k
        p.decode_tokens += k * total.seqs
        seq_steps += k * total.seqs
        set_steps += k * total.sets
        for s in live:
            s.left = [n - k if n > 0 else 0 for n in s.left]
            s.ctx = [c + k for c in s.ctx]
        for s in [s for s in live if not any(n > 0 for n in s.left)]:
            live.remove(s)
            window.remove(s.d)
    if p.steps:
        p.mean_window, p.mean_seqs = set_steps / p.steps, seq_steps / p.steps
    return p


def predict(demands: list[SetDemand], cost: CostSection, cap: Capacity,
            chunk_tokens: int = 16384, shared_prefix: bool = False) -> Prediction:
    """Predicted seconds of one engine running these sets in generate's order."""
    return simulate(order_sets(demands, cap.block), cap,
                    lambda new, ctx: prefill_seconds(new, ctx, cost),
                    lambda b: decode_step_seconds(b, cost, shared_prefix), chunk_tokens)


def capacity_from(cfg: Config) -> Capacity:
    """The window limits the planner assumes: [cost] KV size, [engine] sequences and sets."""
    e = cfg.engine
    return Capacity(kv_tokens=cfg.cost.kv_tokens, block=cfg.cost.block_tokens,
                    max_seqs=e.max_num_seqs, max_sets=0 if e.batch_sets == "auto"
                    else int(e.batch_sets))


def set_demands(units: list[dict], qinfo: dict[str, dict], max_new_tokens: int,
                output_tokens: int = 0) -> list[SetDemand]:
    """One demand per document set of `units` (too_long units never reach the engine).

    A set's shared prefix is what every one of its prompts shares: the documents when it holds
    several questions, the whole prompt when one question runs with several seeds or samples.
    """
    runnable = [u for u in units if qinfo[u["question_id"]].get("status", "ok") == "ok"]
    out = []
    for set_id, members in by_set(runnable).items():
        qs = {u["question_id"] for u in members}
        prompts = [qinfo[u["question_id"]]["prompt_tokens"] for u in members]
        if len(qs) > 1:
            shared = min(min(qinfo[q].get("shared_prefix_tokens", 0) for q in qs), min(prompts))
        else:
            shared = prompts[0] - 1 if len(members) > 1 else 0
        budgets = [max_new_tokens] * len(members)
        # a unit's own "max_tokens" (bench workloads) is what it decodes, with ignore_eos
        outputs = [u.get("max_tokens") or (min(max_new_tokens, output_tokens) if output_tokens
                                           else max_new_tokens) for u in members]
        out.append(SetDemand(set_id, max(shared, 0), prompts, outputs, budgets))
    return out


@dataclass
class Physics:
    """What a step must at least move, and the measured rates it can move it at."""

    weight_bytes: float  # weights read once per decode step (all but the embedding table)
    kv_bytes_per_token: float  # K and V of one token over all layers
    bandwidth: float  # bytes/s: the faster of a device copy and a device-wide read
    prefill_s: dict[int, float]  # measured seconds of one fresh prompt, by length


def prefill_floor(new: int, table: dict[int, float]) -> float:
    """A lower bound for prefilling `new` tokens (after any cached context): a prompt's cost per
    token only grows with its length (attention), so `new` tokens cost at least `new` times the
    per-token cost of the longest measured prompt no longer than `new`."""
    if new <= 0 or not table:
        return 0.0
    fitting = [n for n in sorted(table) if n <= new] or [min(table)]
    return new * table[fitting[-1]] / fitting[-1]


def physical_step_seconds(b: Batch, phys: Physics) -> float:
    """The weights once, each set's shared KV once, each sequence's own suffix and answer."""
    own = b.context - b.shared_seqs
    return (phys.weight_bytes + phys.kv_bytes_per_token * (b.shared + own)) / phys.bandwidth


def floor(demands: list[SetDemand], cap: Capacity, phys: Physics,
          chunk_tokens: int = 16384) -> Prediction:
    """A lower bound for one engine running these sets with the window the scheduler picks.

    Decode steps that ride along with prefill chunks (chunked prefill mixes them) are taken off
    at the cost of the longest step, so the two parts may be added."""
    p = simulate(order_sets(demands, cap.block), cap, lambda new, _ctx: prefill_floor(
        new, phys.prefill_s), lambda b: physical_step_seconds(b, phys), chunk_tokens)
    p.decode_s = max(0.0, p.decode_s - p.prefill_steps * p.max_step_s)
    return p


@dataclass
class Load:
    seconds: float = 0.0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    max_window: int = 0  # most document sets in flight at once

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens


def units_cost(units: list[dict], qinfo: dict[str, dict], cfg: Config) -> Load:
    """Predicted engine time of `units` on one engine (lcr.cost replays its set window).

    Each set's shared prefix is prefilled once and each unit's own rest once; every unit
    decodes `cost.output_tokens` (default: the whole `sampling.max_new_tokens` budget) in a
    batch with the other sets in flight. too_long units cost nothing: they never reach the
    engine.
    """
    demands = set_demands(units, qinfo, cfg.sampling.max_new_tokens, cfg.cost.output_tokens)
    p = predict(demands, cfg.cost, capacity_from(cfg), cfg.engine.max_num_batched_tokens,
                assumes_shared_prefix(cfg))
    return Load(p.seconds, p.prefill_tokens, p.decode_tokens, p.prefill_s, p.decode_s,
                p.max_window)


def pack(groups: list[list[dict]], count: int, cost_of) -> list[list[dict]]:
    """Largest-first onto the least-loaded shard (ties: lowest index).

    `cost_of(units)` is the predicted time of a whole shard: loads are not additive (sets in
    flight together share decode steps), so a shard's load is recomputed as it grows.
    """
    ordered = sorted(groups, key=lambda g: (-cost_of(g), g[0]["document_set_id"], g[0]["key"]))
    heap = [(0.0, i) for i in range(count)]
    shards: list[list[dict]] = [[] for _ in range(count)]
    for g in ordered:
        _, i = heapq.heappop(heap)
        shards[i].extend(g)
        heapq.heappush(heap, (cost_of(shards[i]), i))
    return shards


def replica_parts(shard: dict, parts: int, qinfo: dict, cfg: Config) -> list[list[dict]]:
    """A shard's units between replica engines: whole sets, packed by the cost model."""
    def cost_of(g):
        return units_cost(g, qinfo, cfg).seconds

    return pack(list(by_set(shard["units"]).values()), parts, cost_of)
