"""Which document sets may be in flight together: the KV-cache budget of the set window.

    window = Window(Capacity(kv_tokens=390_000, block=16, max_seqs=256))
    if window.fits(demand): window.add(demand)     # ... window.remove(demand) when it is done

A set in flight holds its shared prefix once (its units share those blocks through the prefix
cache) plus, for each unit, its own suffix and its whole answer budget. The window admits the
next set while the sum stays within the engine's KV cache and its sequence limit; a set larger
than the whole cache still runs, alone. `engine.batch_sets = N` replaces the budget with a fixed
number of sets. Both generate (lcr.generate) and the cost model (lcr.cost) use this module, so
the planner predicts the window the scheduler picks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Capacity:
    kv_tokens: int  # KV cache size in tokens (blocks x block size)
    block: int = 16  # tokens per KV block
    max_seqs: int = 256  # sequences the engine runs at once (engine.max_num_seqs)
    max_sets: int = 0  # fixed window of sets (engine.batch_sets); 0 = as many as fit

    @property
    def blocks(self) -> int:
        return self.kv_tokens // max(self.block, 1)


@dataclass
class SetDemand:
    set_id: str
    shared: int  # prompt tokens every unit of the set shares (computed once, then cached)
    prompts: list[int]  # prompt tokens per unit
    outputs: list[int]  # tokens each unit is expected to decode
    budgets: list[int]  # answer budget per unit (max_new_tokens): what its KV must hold

    def primed(self, block: int) -> bool:
        """Whether the shared prefix is prefilled first, by itself (several units share it)."""
        return len(self.prompts) > 1 and self.shared >= block

    def cached_prefix(self, block: int) -> int:
        """Tokens of each unit served from the prefix cache after the prime (whole blocks)."""
        return (self.shared // block) * block if self.primed(block) else 0

    def prefill_tokens(self, block: int) -> int:
        cached = self.cached_prefix(block)
        prime = self.shared if self.primed(block) else 0
        return prime + sum(p - cached for p in self.prompts)

    def footprint(self, block: int) -> int:
        """KV blocks the set holds at most: shared prefix once, each unit's rest and budget."""
        shared = self.cached_prefix(block) // block
        own = sum(-(-(p + b) // block) - shared + 1 for p, b in zip(self.prompts, self.budgets))
        return shared + own


def order_sets(demands: list[SetDemand], block: int) -> list[SetDemand]:
    """The order a shard feeds its sets: largest footprint first, so small sets fill the end."""
    return sorted(demands, key=lambda d: (-d.footprint(block), d.set_id))


class Window:
    def __init__(self, cap: Capacity):
        self.cap = cap
        self.blocks = self.seqs = self.sets = 0

    def fits(self, d: SetDemand) -> bool:
        if self.sets == 0:
            return True  # even a set larger than the whole cache runs (alone)
        if self.cap.max_sets:
            return self.sets < self.cap.max_sets
        return (self.blocks + d.footprint(self.cap.block) <= self.cap.blocks
                and self.seqs + len(d.prompts) <= self.cap.max_seqs)

    def add(self, d: SetDemand) -> None:
        self.blocks += d.footprint(self.cap.block)
        self.seqs += len(d.prompts)
        self.sets += 1

    def remove(self, d: SetDemand) -> None:
        self.blocks -= d.footprint(self.cap.block)
        self.seqs -= len(d.prompts)
        self.sets -= 1
