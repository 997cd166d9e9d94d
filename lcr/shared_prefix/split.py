"""Attention as prefix-once + suffix + merge, for the groups of a Plan, on any varlen kernel.

    split_attention(query, key_cache, value_cache, output, plan, query_start_loc,
                    max_query_len, max_seq_len, varlen, merge)

One varlen call attends every group's queries to the group's shared prefix (non-causal: all
of them come after it), one entry per group (packed first, with the group leader's block
table), so each prefix is read once for the whole group;
a second call attends each request to the rest of its own context (causal); `merge` combines
the two by their log-sum-exps. Requests outside every group get an empty prefix (log-sum-exp
-inf), so the merge hands back their suffix attention, which is then their whole attention.

`varlen(q, k, v, out, cu_seqlens_q, seqused_k, max_seqlen_q, max_seqlen_k, block_table,
causal, num_splits)` returns (out, lse [heads, tokens]); on the GPU it is FlashAttention 3, in
the tests a plain PyTorch reference. `merge(out, p_out, p_lse, s_out, s_lse)` writes `out`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lcr.shared_prefix.plan import Plan


def split_attention(query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                    output: torch.Tensor, plan: Plan, query_start_loc: torch.Tensor,
                    max_query_len: int, max_seq_len: int, varlen: Callable, merge: Callable,
                    num_splits: int = 0) -> torch.Tensor:
    """Write the attention of `query` [T, H, D] into `output` [T, H, D] (T = plan tokens)."""
    t = plan.token_src.shape[0]
    r = plan.num_rows  # requests; the prefix call has plan.num_entries entries (groups)
    q = query[:t]
    grouped_q = q.index_select(0, plan.q_index)
    # Row r stays zero: the prefix "output" of tokens outside every group (their lse is -inf).
    prefix_out = torch.zeros((r + 1, *q.shape[1:]), dtype=q.dtype, device=q.device)
    _, prefix_lse = varlen(grouped_q, key_cache, value_cache, prefix_out[:r], plan.cu_prefix,
                           plan.prefix_lens, r, plan.max_prefix, plan.prefix_table, False,
                           num_splits)
    suffix_out, suffix_lse = varlen(q, key_cache, value_cache, None, query_start_loc[: r + 1],
                                    plan.suffix_lens, max_query_len, max_seq_len,
                                    plan.suffix_table, True, 0)
    none = torch.full((prefix_lse.shape[0], 1), float("-inf"), dtype=prefix_lse.dtype,
                      device=prefix_lse.device)
    lse = torch.cat([prefix_lse[:, :r], none], dim=1).index_select(1, plan.token_src)
    merge(output[:t], prefix_out.index_select(0, plan.token_src), lse, suffix_out, suffix_lse)
    return output
