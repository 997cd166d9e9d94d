"""GPU checks of shared-prefix attention: the attention itself, and greedy decoding.

    lcr bench --attention-check [--json ops.json]    # one layer, FA3, random KV
    lcr bench JOB --greedy 256 ...                   # greedy tokens, both attentions

The attention check builds a paged KV cache of random bf16 data with document-set groups
(Llama-3.1-8B head shapes), runs stock FlashAttention 3 and the split on it, and prints the
relative error between them and against an fp32 reference, and each one's time (CUDA events,
median), then a whole decode step's attention by the wall clock (the plan and 32 layers, as
the engine runs them outside its CUDA graphs, host launches included). The greedy check
gives the engine random normal(0, 0.02) weights (vLLM's dummy weights are so small that every
logit ties), decodes the first sets of the bench workload greedily with each attention and
counts the tokens that agree position by position.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from lcr.shared_prefix.plan import GROUP_SLACK, plan_groups, prefix_splits
from lcr.shared_prefix.reference import paged_varlen
from lcr.shared_prefix.split import split_attention
from lcr.shared_prefix.support import MIN_SHARED_BLOCKS

HEADS, KV_HEADS, DIM, BLOCK, LAYERS = 32, 8, 128, 16, 32
DEVICE = "cuda"  # the CPU tests rehearse the check with reference kernels


def reinit_weights(model: torch.nn.Module) -> int:
    """Normal(0, 0.02) weights, norms at 1, the same in every engine (seeded by name)."""
    n = 0
    for name, p in sorted(model.named_parameters()):
        g = torch.Generator(device=p.device).manual_seed(sum(map(ord, name)) * 7919 + n)
        with torch.no_grad():
            if "norm" in name:
                p.fill_(1.0)
            elif p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=g, device=p.device,
                                    dtype=torch.float32).mul_(0.02))
        n += 1
    return n


def agreement(a: list[list[int]], b: list[list[int]]) -> dict:
    """Position-by-position agreement of two sets of greedy continuations.

    Up to a sequence's first difference both decoders saw the same history, so those steps are
    a teacher-forced comparison: `same_history_steps` of them, `same_history_flips` ending in a
    different token (the first difference itself). After it the histories part, and the
    position-by-position share measures how fast two decoders drift apart, not a step's error."""
    same = total = first = steps = flips = 0
    for x, y in zip(a, b):
        total += max(len(x), len(y))
        same += sum(u == v for u, v in zip(x, y))
        n = min(len(x), len(y))
        k = next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), n)
        first += k
        steps += min(k + 1, n)
        flips += k < n
    return {"tokens": total, "agree": same, "share": round(same / total, 4) if total else None,
            "mean_tokens_before_first_difference": round(first / max(len(a), 1), 1),
            "same_history_steps": steps, "same_history_flips": flips,
            "same_history_share": round(1 - flips / steps, 4) if steps else None}


def _batch(groups: int, seqs: int, prefix: int, suffix: int, lone: int, seed: int,
           block: int = BLOCK):
    """Block tables and lengths: `groups` sets of `seqs` decoding sequences on `prefix`-token
    documents (block 0, a chat header, shared by all), plus `lone` unshared sequences."""
    pblocks, sblocks = prefix // block, -(-(suffix + 1) // block)
    tables, lens, nxt = [], [], 1
    for _ in range(groups):
        docs = [0] + list(range(nxt, nxt + pblocks - 1))
        nxt += pblocks - 1
        for _ in range(seqs):
            tables.append(docs + list(range(nxt, nxt + sblocks)))
            nxt += sblocks
            lens.append(pblocks * block + suffix + 1)
    for _ in range(lone):
        tables.append([0] + list(range(nxt, nxt + pblocks + sblocks - 1)))
        nxt += pblocks + sblocks - 1
        lens.append(pblocks * block + suffix + 1)
    order = torch.randperm(len(tables), generator=torch.Generator().manual_seed(seed)).tolist()
    width = max(map(len, tables))
    bt = torch.zeros((len(tables), width), dtype=torch.int32)
    for row, i in enumerate(order):
        bt[row, : len(tables[i])] = torch.tensor(tables[i], dtype=torch.int32)
    return bt, torch.tensor([lens[i] for i in order], dtype=torch.int32), nxt


def _time(fn, reps: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def _num_sms(dev) -> int:
    return torch.cuda.get_device_properties(dev).multi_processor_count


def _wall(fn, reps: int = 10) -> float:
    fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return round(sorted(times)[len(times) // 2], 3)


def check_shape(groups: int, seqs: int, prefix: int, suffix: int = 300, lone: int = 0,
                seed: int = 0, block: int = BLOCK) -> dict:
    from vllm.v1.attention.backends.fa_utils import flash_attn_varlen_func
    from vllm.v1.attention.ops.merge_attn_states import merge_attn_states

    dev = torch.device(DEVICE)
    bt, seq_lens, nblocks = _batch(groups, seqs, prefix, suffix, lone, seed, block)
    bt, seq_lens = bt.to(dev), seq_lens.to(dev)
    r = bt.shape[0]
    g = torch.Generator(device=dev).manual_seed(seed)
    raw = torch.randn((nblocks, block, KV_HEADS, 2 * DIM), generator=g, device=dev,
                      dtype=torch.bfloat16)
    key_cache, value_cache = raw.split(DIM, dim=-1)  # vLLM's FA layout: strided views
    q = torch.randn((r, HEADS, DIM), generator=g, device=dev, dtype=torch.bfloat16)
    qsl = torch.arange(r + 1, device=dev, dtype=torch.int32)
    max_len = int(seq_lens.max())
    scale = DIM**-0.5

    def varlen(q_, k, v, out, cu, used, mq, mk, table, causal, splits):
        return flash_attn_varlen_func(q=q_, k=k, v=v, out=out, cu_seqlens_q=cu, max_seqlen_q=mq,
                                      seqused_k=used, max_seqlen_k=mk, softmax_scale=scale,
                                      causal=causal, block_table=table, return_softmax_lse=True,
                                      fa_version=3, num_splits=splits)

    def stock():
        return flash_attn_varlen_func(q=q, k=key_cache, v=value_cache, cu_seqlens_q=qsl,
                                      max_seqlen_q=1, seqused_k=seq_lens, max_seqlen_k=max_len,
                                      softmax_scale=scale, causal=True, block_table=bt,
                                      fa_version=3)

    def plan(bound=None):
        return plan_groups(bt, seq_lens, qsl, r, block, math.ceil(max_len / block),
                           MIN_SHARED_BLOCKS, bound)

    groups_seen = int(plan().stats[0])  # as the builder reads it back a step later
    p = plan(groups_seen + GROUP_SLACK)
    splits = prefix_splits(groups_seen, KV_HEADS, _num_sms(dev))
    out = torch.full_like(q, float("nan"))

    def split(n=splits):
        return split_attention(q, key_cache, value_cache, out, p, qsl, 1, max_len, varlen,
                               merge_attn_states, n)

    ref_stock, got = stock(), split().clone()
    rows = list(range(0, r, max(1, r // 6)))[:6]  # an fp32 reference on a few sequences
    n_rows = len(rows)
    ref, _ = paged_varlen(q[rows], key_cache, value_cache, None,
                          torch.arange(n_rows + 1, device=dev, dtype=torch.int32),
                          seq_lens[rows], 1, max_len, bt[rows], True, scale=scale)
    res = {"groups": groups, "seqs": seqs, "prefix": prefix, "lone": lone, "block": block,
           "grouped": p.stats.tolist(), "splits": splits,
           "rel_err_vs_stock": _rel(got, ref_stock),
           "rel_err_vs_fp32": _rel(got[rows], ref), "stock_rel_err_vs_fp32": _rel(
               ref_stock[rows], ref), "nan": bool(torch.isnan(got).any()),
           "stock_ms": round(_time(stock), 3), "split_ms": round(_time(split), 3),
           "split_auto_splits_ms": round(_time(lambda: split(0)), 3),
           "plan_ms": round(_time(lambda: plan(groups_seen + GROUP_SLACK)), 3)}
    # where the split's time goes: its two FA3 calls alone, and the whole split by splits
    grouped_q = q.index_select(0, p.q_index)
    prefix_out = torch.zeros_like(q)
    res["prefix_call_ms"] = round(_time(lambda: varlen(
        grouped_q, key_cache, value_cache, prefix_out, p.cu_prefix, p.prefix_lens, r,
        p.max_prefix, p.prefix_table, False, splits)), 3)
    # the same call with max_seqlen_q the largest group's rows instead of every request's
    res["prefix_call_group_rows_ms"] = round(_time(lambda: varlen(
        grouped_q, key_cache, value_cache, prefix_out, p.cu_prefix, p.prefix_lens,
        max(seqs, 1), p.max_prefix, p.prefix_table, False, splits)), 3)
    res["suffix_call_ms"] = round(_time(lambda: varlen(
        q, key_cache, value_cache, None, qsl, p.suffix_lens, 1, max_len, p.suffix_table, True,
        0)), 3)
    res["split_ms_by_splits"] = {n: round(_time(lambda n=n: split(n)), 3)
                                 for n in SPLITS_SWEEP}
    # a whole decode step's attention as the engine runs it outside the CUDA graphs: the
    # step's plan, then every layer (host launch time included: wall clock, synchronized)
    def step_split():
        pl = plan(groups_seen + GROUP_SLACK)
        for _ in range(LAYERS):
            split_attention(q, key_cache, value_cache, out, pl, qsl, 1, max_len, varlen,
                            merge_attn_states, splits)

    def step_stock():
        for _ in range(LAYERS):
            stock()

    res["step_split_ms"], res["step_stock_ms"] = _wall(step_split), _wall(step_stock)
    kv_bytes = 2 * KV_HEADS * DIM * 2
    res["prefix_once_ms_at_4.3TBps"] = round(
        groups * prefix * kv_bytes / 4.3e12 * 1e3, 3)
    return res


def _rel(a, b) -> float:
    return round(float((a.float() - b.float()).norm() / b.float().norm()), 6)


SPLITS_SWEEP = (1, 2, 4, 8, 16, 32, 64)
SHAPES = [(5, 12, 100_000), (9, 10, 94_000), (9, 3, 94_000), (1, 1, 100_000), (10, 12, 33_000),
          (4, 9, 100_000, 300, 6), (1, 8, 100_000), (1, 32, 33_000), (1, 64, 1_024)]


BLOCK_SHAPES = [(9, 10, 94_000), (10, 12, 33_000)]  # again with 64-token KV blocks


def run_checks(json_path: str | None = None) -> int:
    """Every shape of SHAPES: errors and times, a table, PASS or FAIL (exit code 0 or 1)."""
    from lcr.shared_prefix.support import device_reasons

    reasons = device_reasons(engine_processes=False)  # one layer here: no engine
    if reasons:
        from lcr.config import ConfigError

        raise ConfigError(f"lcr bench --attention-check needs FlashAttention 3 on a CUDA GPU: "
                          f"{'; '.join(reasons)}")
    rows = []
    for shape, block in [(x, BLOCK) for x in SHAPES] + [(x, 64) for x in BLOCK_SHAPES]:
        rows.append(check_shape(*shape, block=block))
        print(json.dumps(rows[-1]), flush=True)
    ok = all(r["rel_err_vs_stock"] <= 1e-2 and not r["nan"] for r in rows)
    print(f"{'groups x seqs, prefix':<24}{'stock ms':>9}{'split ms':>9}{'auto-split':>11}"
          f"{'once@4.3':>9}{'prefix':>8}{'suffix':>8}{'rel err':>9}{'vs fp32':>9}  "
          f"{'step':>7}{'stock':>7}  split ms by splits {'/'.join(map(str, SPLITS_SWEEP))}")
    for r in rows:
        print(f"{r['groups']} x {r['seqs']} (+{r['lone']}), {r['prefix']:,}"
              f"{'' if r['block'] == BLOCK else ' /' + str(r['block'])}".ljust(24)
              + f"{r['stock_ms']:>9}{r['split_ms']:>9}{r['split_auto_splits_ms']:>11}"
              f"{r['prefix_once_ms_at_4.3TBps']:>9}{r['prefix_call_ms']:>8}"
              f"{r['suffix_call_ms']:>8}{r['rel_err_vs_stock']:>9.1e}"
              f"{r['rel_err_vs_fp32']:>9.1e}{r['step_split_ms']:>7.1f}{r['step_stock_ms']:>7.1f}  "
              + "/".join(str(v) for v in r["split_ms_by_splits"].values()))
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))
    print("attention check:", "PASS" if ok else "FAIL (relative error above 1e-2 or NaN)")
    return 0 if ok else 1
