"""Plain PyTorch paged attention: the reference the split is checked against, on the CPU in
the tests and in fp32 on the GPU in `lcr bench --attention-check`.

    out, lse = paged_varlen(q, k_cache, v_cache, None, cu_q, seqused_k, max_q, max_k,
                            block_table, causal=True, num_splits=0)

Same contract as FlashAttention's varlen call with a paged KV cache (k_cache [blocks, block,
kv_heads, dim]): the causal mask is aligned to the bottom right; rows of q outside every entry
are left as they were in `out`; lse is [heads, tokens] (natural log).
"""

from __future__ import annotations

import torch


def paged_varlen(q, k_cache, v_cache, out, cu_seqlens_q, seqused_k, max_seqlen_q, max_seqlen_k,
                 block_table, causal, num_splits=0, scale=None):
    total, heads, dim = q.shape
    kv_heads, block = k_cache.shape[2], k_cache.shape[1]
    scale = scale or dim**-0.5
    if out is None:
        out = torch.zeros_like(q)
    lse = torch.full((heads, total), float("nan"), dtype=torch.float32, device=q.device)
    for b in range(cu_seqlens_q.shape[0] - 1):
        s, e, n = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]), int(seqused_k[b])
        if e == s:
            continue
        assert e - s <= max_seqlen_q and n <= max_seqlen_k
        blocks = block_table[b, : -(-n // block)].long()
        k = k_cache[blocks].reshape(-1, kv_heads, dim)[:n].repeat_interleave(heads // kv_heads, 1)
        v = v_cache[blocks].reshape(-1, kv_heads, dim)[:n].repeat_interleave(heads // kv_heads, 1)
        scores = torch.einsum("qhd,khd->hqk", q[s:e].float(), k.float()) * scale
        if causal:
            qpos = torch.arange(e - s, device=q.device)[:, None] + (n - (e - s))
            keys = torch.arange(n, device=q.device)[None, :]
            scores = scores.masked_fill(keys > qpos, float("-inf"))
        lse[:, s:e] = torch.logsumexp(scores, dim=-1)
        out[s:e] = torch.einsum("hqk,khd->qhd", torch.softmax(scores, dim=-1), v.float()).to(
            out.dtype)
    return out, lse


def merge(out, p_out, p_lse, s_out, s_lse):
    """vLLM's merge_attn_states: softmax-weighted sum of two partial attentions."""
    m = torch.maximum(p_lse, s_lse)
    pw, sw = torch.exp(p_lse - m), torch.exp(s_lse - m)
    pw, sw = (pw / (pw + sw)).T[..., None], (sw / (pw + sw)).T[..., None]
    out.copy_((p_out.float() * pw + s_out.float() * sw).to(out.dtype))
