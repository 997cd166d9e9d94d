"""Feed one engine a shard's document sets within the KV window; yield each unit as it finishes.

    for unit, completion in feed(engine, groups, capacity, params_of):
        writer.append(record(unit, completion))      # one fsynced line per finished unit

A set enters when the window (lcr.window) has room for it. When several of its units share a
prefix, a one-token "prime" request prefills that prefix first; the units follow once it is
cached, so the documents are computed once even though the units start together. A set leaves
when its last unit finishes, and the next set enters at once: decode runs in large batches
while each set's documents are still served from the prefix cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace

from lcr.engine import Completion
from lcr.window import Capacity, SetDemand, Window, order_sets

GREEDY_ONE = SimpleNamespace(temperature=0.0, top_p=1.0, top_k=-1, max_new_tokens=1)


@dataclass
class Group:
    """One document set's units with their prompts (token ids), as the engine gets them."""

    demand: SetDemand
    units: list[dict]
    prompts: list[list[int]]


def common_prefix(prompts: list[list[int]]) -> int:
    """Tokens every prompt shares; for one prompt run several times, all but its last token."""
    distinct = {tuple(p) for p in prompts}
    if len(prompts) < 2:
        return 0
    if len(distinct) == 1:
        return len(prompts[0]) - 1
    first, n = prompts[0], min(len(p) for p in prompts)
    for i in range(n):
        if any(p[i] != first[i] for p in prompts):
            return i
    return n


def make_group(set_id: str, units: list[dict], prompts: list[list[int]],
               budgets: list[int]) -> Group:
    demand = SetDemand(set_id, common_prefix(prompts), [len(p) for p in prompts],
                       list(budgets), list(budgets))
    return Group(demand, units, prompts)


class _Feeder:
    def __init__(self, engine, cap: Capacity, params_of: Callable[[dict], object]):
        self.engine, self.cap, self.params_of = engine, cap, params_of
        self.window = Window(cap)
        self.requests: dict[str, tuple[str, object, float]] = {}  # id -> (kind, what, added)
        self.left: dict[str, int] = {}  # set id -> units not finished yet
        self.ready: list[tuple[dict, Completion]] = []  # refused at add: reported at once
        self.n = 0

    def _id(self) -> str:
        self.n += 1
        return str(self.n)

    def admit(self, g: Group) -> None:
        self.window.add(g.demand)
        self.left[g.demand.set_id] = len(g.units)
        block = self.cap.block
        if g.demand.primed(block):
            rid = self._id()
            prime = self.engine.params(GREEDY_ONE)
            if self.engine.add(rid, g.prompts[0][: g.demand.shared], prime) is None:
                self.requests[rid] = ("prime", g, time.time())
                return
        self.add_units(g)

    def add_units(self, g: Group) -> None:
        for u, ids in zip(g.units, g.prompts):
            rid = self._id()
            error = self.engine.add(rid, ids, self.params_of(u))
            if error is None:
                self.requests[rid] = ("unit", (g, u), time.time())
            else:
                self.ready.append((u, Completion(prompt_tokens=len(ids), error=error)))
                self.finish(g)

    def finish(self, g: Group) -> None:
        self.left[g.demand.set_id] -= 1
        if self.left[g.demand.set_id] == 0:
            self.window.remove(g.demand)


def feed(engine, groups: list[Group], cap: Capacity,
         params_of: Callable[[dict], object]) -> Iterator[tuple[dict, Completion]]:
    """Run every group's units on `engine`; yield (unit, completion) as each one finishes.

    `completion.elapsed` is the unit's time from entering the engine to its last token.
    """
    by_demand = {id(g.demand): g for g in groups}
    queue = [by_demand[id(d)] for d in order_sets([g.demand for g in groups], cap.block)]
    f = _Feeder(engine, cap, params_of)
    while queue or f.requests or f.ready:
        while queue and f.window.fits(queue[0].demand):
            f.admit(queue.pop(0))
        while f.ready:
            yield f.ready.pop(0)
        if not f.requests:
            continue
        for rid, c in engine.step():
            kind, what, added = f.requests.pop(rid)
            if kind == "prime":
                f.add_units(what)  # the shared prefix is cached now (or failed: no matter)
                continue
            g, u = what
            c.elapsed = round(time.time() - added, 3)
            f.finish(g)
            yield u, c
