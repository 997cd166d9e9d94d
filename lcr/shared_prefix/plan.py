"""Which running requests share the front of their KV cache, as tensors for one engine step.

    plan = plan_groups(block_table, seq_lens, query_start_loc, num_tokens, block=16,
                       max_blocks=6250, min_blocks=32, max_groups=12)
    plan.prefix_lens[g]    # tokens group g shares (0: no group g this step)

Under prefix caching two requests whose prompts begin with the same documents hold the same
physical KV blocks: identical block ids at the front of their block tables. A group is two or
more decoding requests that share at least `min_blocks` blocks; its prefix is what all of them
share, and only KV that every member has already computed. Requests are keyed by their block
at index min_blocks - 1 (a shared chat header alone does not make a group), and membership is
then checked block by block from the first one, so a wrong key can only cost speed, never
correctness. Everything is torch on the tensors' device with shapes known on the host: the
plan adds no host sync to the step.

The prefix call gets one entry per group, packed first, so its grid is sized by the groups and
not by the request slots (on an H200, 9 groups of 94K tokens: 0.96 ms a layer against 1.38 ms
with an entry per slot). The host does not know this step's group count, so it passes a bound
(`max_groups`: the count it last read back, plus room to grow); groups past the bound are left
ungrouped this step, their requests attending their whole context in the suffix call, which is
exact, and `stats` reports every group so that the next bound covers them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GROUP_SLACK = 2  # prefix entries the builder allows beyond the groups it last read back


@dataclass
class Plan:
    """Inputs of the split attention for one step (R requests, T tokens, E prefix entries)."""

    q_index: torch.Tensor  # [R] token gathered into each row of the prefix call
    cu_prefix: torch.Tensor  # [E + 1] int32: rows of entry g are cu_prefix[g]:cu_prefix[g + 1]
    prefix_lens: torch.Tensor  # [E] int32 tokens of prefix per entry (group g, packed first)
    prefix_table: torch.Tensor  # [E, W] int32 block table of each entry (its leader's)
    token_src: torch.Tensor  # [T] prefix row of each token; R = no prefix (suffix only)
    suffix_lens: torch.Tensor  # [R] int32 tokens each request attends after its prefix
    suffix_table: torch.Tensor  # [R, W] int32 block table shifted past each one's prefix
    stats: torch.Tensor  # [2] int32: groups, grouped requests (before the bound; read lazily)
    max_prefix: int  # host bound on prefix_lens (tokens)
    num_entries: int  # E
    num_splits: int = 0  # splits of each prefix along its length (0: the kernel's choice)

    @property
    def num_rows(self) -> int:  # R: rows of the prefix call's queries, one per request
        return self.q_index.shape[0]


def prefix_splits(groups: int, kv_heads: int, num_sms: int) -> int:
    """Splits of each prefix along its length for the prefix call. Measured on an H200 (one
    layer of Llama-3.1-8B, packed entries): with 8 groups x 8 KV heads or more, one split is
    fastest (more splits only add the combine); with fewer, enough splits to give every SM
    about one block of work (4 groups: 5, 5 groups: 4)."""
    cells = max(groups, 1) * max(kv_heads, 1)
    return 1 if cells >= 64 else max(1, min(32, -(-num_sms // cells)))


def plan_groups(block_table: torch.Tensor, seq_lens: torch.Tensor,
                query_start_loc: torch.Tensor, num_tokens: int, block: int, max_blocks: int,
                min_blocks: int, max_groups: int | None = None) -> Plan:
    """The groups of one step. block_table [R, >=W] int32, seq_lens [R], query_start_loc
    [R + 1]; `max_blocks` bounds the blocks any request holds (ceil(max_seq_len / block));
    `max_groups` the prefix entries (None: R, room for every possible group)."""
    r = block_table.shape[0]
    e = r if max_groups is None else max(1, min(max_groups, r))
    dev = block_table.device
    width = min(block_table.shape[1], max(max_blocks, min_blocks))
    bt = block_table[:, :width]
    qsl = query_start_loc[: r + 1].to(torch.int64)
    seq = seq_lens[:r].to(torch.int64)
    qlen = qsl[1:] - qsl[:-1]
    ctx_blocks = torch.div(seq - qlen, block, rounding_mode="floor")
    idx = torch.arange(r, device=dev)
    # Only decoding requests join a group: their one query is past every shared block.
    valid = (qlen == 1) & (ctx_blocks >= min_blocks)
    key = bt[:, min_blocks - 1]
    same_key = (key[:, None] == key[None, :]) & valid[:, None] & valid[None, :]
    leader = torch.where(valid, same_key.to(torch.int32).argmax(dim=1), idx)
    match = bt == bt.index_select(0, leader)
    lcp = match.to(torch.int32).cumprod(dim=1).sum(dim=1)
    shared = torch.minimum(lcp.to(torch.int64), ctx_blocks)  # computed KV only
    member = valid & (shared >= min_blocks)
    same = (leader[:, None] == leader[None, :]) & member[:, None] & member[None, :]
    grouped = member & (same.sum(dim=1) >= 2)
    in_group = same & grouped[:, None]
    big = torch.iinfo(torch.int64).max
    prefix_blocks = torch.where(in_group, shared[None, :], big).amin(dim=1)
    # Groups by their leader's slot, then packed first: group g is entry g. Groups past the
    # host's bound `e` stay ungrouped this step (exact: they attend in the suffix call).
    leads_all = torch.zeros(r, dtype=torch.int64, device=dev).scatter_add_(
        0, leader, grouped.to(torch.int64)) > 0
    rank_of_leader = torch.cumsum(leads_all.to(torch.int64), dim=0) - 1
    kept = leads_all & (rank_of_leader < e)
    grouped_all = grouped
    grouped = grouped & kept.index_select(0, leader)  # a group is kept or dropped whole
    prefix_blocks = torch.where(grouped, prefix_blocks, 0)
    entry = torch.where(grouped, rank_of_leader.index_select(0, leader), e)  # e: no entry
    counts = torch.zeros(e + 1, dtype=torch.int64, device=dev).scatter_add_(
        0, entry, grouped.to(torch.int64))[:e]
    cu = torch.zeros(e + 1, dtype=torch.int64, device=dev)
    cu[1:] = torch.cumsum(counts, dim=0)
    rank = (in_group & (idx[None, :] < idx[:, None])).sum(dim=1)
    pos = torch.where(grouped, cu.index_select(0, entry.clamp(max=e - 1)) + rank, r + idx)
    q_index = torch.zeros(2 * r, dtype=torch.int64, device=dev).scatter_(0, pos, qsl[:-1])[:r]
    tokens = torch.arange(num_tokens, device=dev)
    req = torch.searchsorted(qsl[1:], tokens, right=True).clamp_(max=r - 1)
    real = tokens < qsl[r]
    token_src = torch.where(grouped.index_select(0, req) & real, pos.index_select(0, req), r)
    # entry g's leader: slot of the kept leader of rank g (slot 0 where no group g: length 0)
    leader_of = torch.zeros(e + 1, dtype=torch.int64, device=dev).scatter_(
        0, torch.where(kept, rank_of_leader, e), idx)[:e]
    has = counts > 0
    prefix_lens = torch.where(has, prefix_blocks.index_select(0, leader_of) * block, 0)
    shift = (torch.arange(width, device=dev)[None, :] + prefix_blocks[:, None]).clamp_(
        max=width - 1)
    stats = torch.stack([leads_all.sum(), grouped_all.sum()]).to(torch.int32)
    return Plan(q_index=q_index, cu_prefix=cu.to(torch.int32),
                prefix_lens=prefix_lens.to(torch.int32),
                prefix_table=bt.index_select(0, leader_of),
                token_src=token_src,
                suffix_lens=(seq - prefix_blocks * block).to(torch.int32),
                suffix_table=torch.gather(bt, 1, shift), stats=stats,
                max_prefix=width * block, num_entries=e)
