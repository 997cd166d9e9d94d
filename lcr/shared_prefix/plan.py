"""Which running requests share the front of their KV cache, as tensors for one engine step.

    plan = plan_groups(block_table, seq_lens, query_start_loc, num_tokens, block=16,
                       max_blocks=6250, min_blocks=32)
    plan.prefix_lens[e]    # tokens entry e's group shares (0: e leads no group)

Under prefix caching two requests whose prompts begin with the same documents hold the same
physical KV blocks: identical block ids at the front of their block tables. A group is two or
more decoding requests that share at least `min_blocks` blocks; its prefix is what all of them
share, and only KV that every member has already computed. Requests are keyed by their block
at index min_blocks - 1 (a shared chat header alone does not make a group), and membership is
then checked block by block from the first one, so a wrong key can only cost speed, never
correctness. Everything is torch on the tensors' device with shapes known on the host: the
plan adds no host sync to the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Plan:
    """Inputs of the split attention for one step (R requests, T tokens)."""

    q_index: torch.Tensor  # [R] token gathered into each row of the prefix call
    cu_prefix: torch.Tensor  # [R + 1] int32: rows of entry e are cu_prefix[e]:cu_prefix[e + 1]
    prefix_lens: torch.Tensor  # [R] int32 tokens of prefix per entry (entry e = leader e)
    token_src: torch.Tensor  # [T] prefix row of each token; R = no prefix (suffix only)
    suffix_lens: torch.Tensor  # [R] int32 tokens each request attends after its prefix
    suffix_table: torch.Tensor  # [R, W] int32 block table shifted past each one's prefix
    stats: torch.Tensor  # [2] int32: groups, grouped requests (read back lazily)
    max_prefix: int  # host bound on prefix_lens (tokens)
    num_entries: int  # R
    num_splits: int = 0  # splits of each prefix along its length (0: the kernel's choice)


def plan_groups(block_table: torch.Tensor, seq_lens: torch.Tensor,
                query_start_loc: torch.Tensor, num_tokens: int, block: int, max_blocks: int,
                min_blocks: int) -> Plan:
    """The groups of one step. block_table [R, >=W] int32, seq_lens [R], query_start_loc
    [R + 1]; `max_blocks` bounds the blocks any request holds (ceil(max_seq_len / block))."""
    r = block_table.shape[0]
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
    prefix_blocks = torch.where(grouped, prefix_blocks, 0)
    # One varlen entry per request slot; entry e holds the group that e leads (a leader is
    # always a member: its blocks match its own).
    counts = torch.zeros(r, dtype=torch.int64, device=dev).scatter_add_(
        0, leader, grouped.to(torch.int64))
    cu = torch.zeros(r + 1, dtype=torch.int64, device=dev)
    cu[1:] = torch.cumsum(counts, dim=0)
    rank = (in_group & (idx[None, :] < idx[:, None])).sum(dim=1)
    pos = torch.where(grouped, cu.index_select(0, leader) + rank, r + idx)
    q_index = torch.zeros(2 * r, dtype=torch.int64, device=dev).scatter_(0, pos, qsl[:-1])[:r]
    tokens = torch.arange(num_tokens, device=dev)
    req = torch.searchsorted(qsl[1:], tokens, right=True).clamp_(max=r - 1)
    real = tokens < qsl[r]
    token_src = torch.where(grouped.index_select(0, req) & real, pos.index_select(0, req), r)
    leads = counts > 0
    prefix_lens = torch.where(leads, prefix_blocks * block, 0)
    shift = (torch.arange(width, device=dev)[None, :] + prefix_blocks[:, None]).clamp_(
        max=width - 1)
    stats = torch.stack([leads.sum(), grouped.sum()]).to(torch.int32)
    return Plan(q_index=q_index, cu_prefix=cu.to(torch.int32),
                prefix_lens=prefix_lens.to(torch.int32), token_src=token_src,
                suffix_lens=(seq - prefix_blocks * block).to(torch.int32),
                suffix_table=torch.gather(bt, 1, shift), stats=stats,
                max_prefix=width * block, num_entries=r)
