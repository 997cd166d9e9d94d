"""Shared-prefix attention on the CPU: the grouping, and prefix-once + suffix + merge against
full causal attention (plain PyTorch kernels; the GPU check is lcr.shared_prefix.check)."""

import json
import random

import pytest

torch = pytest.importorskip("torch")

from lcr.shared_prefix.plan import plan_groups  # noqa: E402
from lcr.shared_prefix.reference import merge, paged_varlen  # noqa: E402
from lcr.shared_prefix.split import split_attention  # noqa: E402

BLOCK, MIN_BLOCKS, HEADS, KV_HEADS, DIM = 4, 3, 8, 2, 16


class Batch:
    """Requests as (block ids, context tokens, query tokens), with a random paged KV cache."""

    def __init__(self, requests, pad_tokens=0, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.n = len(requests)
        width = max(len(b) for b, _, _ in requests) + 2
        self.table = torch.zeros((self.n, width), dtype=torch.int32)
        lens, qlens = [], []
        for i, (blocks, ctx, q) in enumerate(requests):
            assert -(-(ctx + q) // BLOCK) <= len(blocks)
            self.table[i, : len(blocks)] = torch.tensor(blocks, dtype=torch.int32)
            self.table[i, len(blocks):] = 999  # stale ids past the end must not matter
            lens.append(ctx + q)
            qlens.append(q)
        self.seq_lens = torch.tensor(lens, dtype=torch.int32)
        self.qsl = torch.zeros(self.n + 1, dtype=torch.int32)
        self.qsl[1:] = torch.cumsum(torch.tensor(qlens), 0)
        self.tokens = int(self.qsl[-1]) + pad_tokens
        blocks = int(self.table[self.table < 999].max()) + 1
        self.k = torch.randn((blocks, BLOCK, KV_HEADS, DIM), generator=g)
        self.v = torch.randn((blocks, BLOCK, KV_HEADS, DIM), generator=g)
        self.q = torch.randn((self.tokens, HEADS, DIM), generator=g)
        self.max_blocks = -(-int(self.seq_lens.max()) // BLOCK)

    def plan(self, max_groups=None):
        return plan_groups(self.table, self.seq_lens, self.qsl, self.tokens, BLOCK,
                           self.max_blocks, MIN_BLOCKS, max_groups)

    def full(self):
        out, _ = paged_varlen(self.q, self.k, self.v, None, self.qsl, self.seq_lens,
                              int((self.qsl[1:] - self.qsl[:-1]).max()), int(self.seq_lens.max()),
                              self.table, causal=True)
        return out[: int(self.qsl[-1])]

    def split(self, plan):
        out = torch.full_like(self.q, float("nan"))
        split_attention(self.q, self.k, self.v, out, plan, self.qsl,
                        int((self.qsl[1:] - self.qsl[:-1]).max()), int(self.seq_lens.max()),
                        paged_varlen, merge)
        return out[: int(self.qsl[-1])]


def own(start, n):
    return list(range(start, start + n))


# Every prompt starts with the same chat-header block 1, as real chat prompts do.
A = [1, 10, 11, 12, 13]  # group A's documents: 5 blocks
B = [1, 20, 21, 22]  # group B's: 4 blocks
MIXED = [
    (A + own(100, 3), 5 * BLOCK + 9, 1),  # a1
    (B + own(110, 2), 4 * BLOCK + 3, 1),  # b1
    ([1] + own(120, 6), 20, 1),  # lone: only the header block is shared
    (A + own(130, 2), 5 * BLOCK + 2, 1),  # a2
    (A + own(140, 2), 5 * BLOCK + 1, 3),  # a prefill chunk on A's blocks: suffix only
    (A[:4] + own(150, 2), 4 * BLOCK + 2, 1),  # a3: holds only 4 of A's blocks
    (B + own(160, 1), 4 * BLOCK + 1, 1),  # b2
    ([1, 10] + own(170, 3), 9, 1),  # shares 2 blocks with A: fewer than MIN_BLOCKS
]


def test_groups_are_found_by_their_shared_blocks_in_any_order():
    b = Batch(MIXED, pad_tokens=2)
    p = b.plan()
    assert p.stats.tolist() == [2, 5]  # groups, grouped requests
    # entry 0 leads A (a1, a2, a3: A's shared part is the 4 blocks a3 also holds), entry 1 B
    assert p.prefix_lens.tolist() == [4 * BLOCK, 4 * BLOCK, 0, 0, 0, 0, 0, 0]
    assert p.cu_prefix.tolist() == [0, 3, 5, 5, 5, 5, 5, 5, 5]
    q_start = b.qsl.tolist()
    assert p.q_index[:5].tolist() == [q_start[0], q_start[3], q_start[5], q_start[1], q_start[6]]
    # each grouped token reads its prefix row; the rest (prefill, lone, padding) none (= R)
    src = p.token_src.tolist()
    assert [src[q_start[i]] for i in (0, 3, 5, 1, 6)] == [0, 1, 2, 3, 4]
    assert [src[t] for t in range(q_start[4], q_start[5])] == [8, 8, 8]
    assert src[q_start[2]] == src[q_start[7]] == 8 and src[-2:] == [8, 8]
    assert p.suffix_lens.tolist() == [
        int(s) - (4 * BLOCK if i in (0, 1, 3, 5, 6) else 0) for i, s in enumerate(b.seq_lens)]
    assert p.suffix_table[0, :3].tolist() == [13, 100, 101]  # a1 past its 4 shared blocks


def test_a_shared_chat_header_alone_makes_no_group():
    reqs = [([1] + own(10 * i, 5), 18, 1) for i in range(1, 5)]
    p = Batch(reqs).plan()
    assert p.stats.tolist() == [0, 0] and int(p.prefix_lens.sum()) == 0


def test_lone_sequences_and_prefills_make_no_group():
    reqs = [(A + own(100, 2), 5 * BLOCK + 2, 1), (A + own(110, 2), 5 * BLOCK + 1, 4)]
    assert Batch(reqs).plan().stats.tolist() == [0, 0]


@pytest.mark.parametrize("pad", [0, 3])
def test_split_equals_full_causal_attention(pad):
    b = Batch(MIXED, pad_tokens=pad, seed=pad)
    torch.testing.assert_close(b.split(b.plan()), b.full(), rtol=1e-5, atol=1e-5)


def test_split_without_any_group_is_plain_attention():
    reqs = [(own(10 * i, 6), 17 + i, 1) for i in range(1, 5)]
    b = Batch(reqs, seed=3)
    torch.testing.assert_close(b.split(b.plan()), b.full(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_split_equals_full_on_random_batches(seed):
    """Several sets with their own prefix lengths, seeds of one question sharing even more,
    suffixes of different lengths, a few prefill chunks, all shuffled."""
    rng = random.Random(seed)
    reqs, next_block = [], 200
    for _ in range(rng.randint(1, 4)):
        docs = [1] + own(next_block, rng.randint(MIN_BLOCKS, 9))
        next_block += 20
        for _ in range(rng.randint(1, 5)):
            question = own(next_block, rng.randint(1, 3))
            next_block += 3
            for _ in range(rng.randint(1, 3)):  # seeds: the same prompt, own answer blocks
                answer = own(next_block, 3)
                next_block += 3
                prompt = docs + question
                ctx = (len(prompt) - 1) * BLOCK + rng.randint(1, BLOCK) + rng.randint(0, 7)
                q = 1 if rng.random() < 0.85 else rng.randint(2, 4)
                blocks = prompt + answer
                ctx = min(ctx, len(blocks) * BLOCK - q)
                reqs.append((blocks, ctx, q))
    rng.shuffle(reqs)
    b = Batch(reqs, pad_tokens=rng.randint(0, 2), seed=seed)
    p = b.plan()
    torch.testing.assert_close(b.split(p), b.full(), rtol=1e-5, atol=1e-5)
    groups = int(p.stats[0])
    for bound in {1, max(groups - 1, 1), max(groups, 1), groups + 2}:  # the lagged bound
        bounded = b.plan(bound)
        assert bounded.num_entries == min(bound, b.n) and bounded.stats.tolist() == \
            p.stats.tolist()  # every group is reported, also those past the bound
        assert int((bounded.prefix_lens > 0).sum()) == min(groups, bound)
        torch.testing.assert_close(b.split(bounded), b.full(), rtol=1e-5, atol=1e-5)


def test_groups_past_the_bound_run_ungrouped_and_exact():
    b = Batch(MIXED, pad_tokens=2)
    p = b.plan(max_groups=1)  # the host last saw one group; this step has two
    assert p.num_entries == 1 and p.stats.tolist() == [2, 5]
    assert p.prefix_lens.tolist() == [4 * BLOCK] and p.cu_prefix.tolist() == [0, 3]
    assert p.prefix_table[0].tolist() == b.table[0, :p.prefix_table.shape[1]].tolist()  # a1
    q_start, src = b.qsl.tolist(), p.token_src.tolist()
    assert [src[q_start[i]] for i in (0, 3, 5)] == [0, 1, 2]
    assert src[q_start[1]] == src[q_start[6]] == 8  # b1, b2: no prefix this step
    w = p.suffix_table.shape[1]
    assert p.suffix_lens[1] == b.seq_lens[1] and p.suffix_table[1].tolist() == b.table[
        1, :w].tolist()
    torch.testing.assert_close(b.split(p), b.full(), rtol=1e-5, atol=1e-5)
    # entries beyond the groups stay empty (a set about to enter the window)
    p = b.plan(max_groups=4)
    assert p.prefix_lens.tolist() == [4 * BLOCK, 4 * BLOCK, 0, 0]
    assert p.prefix_table[1].tolist() == b.table[1, :p.prefix_table.shape[1]].tolist()  # b1
    torch.testing.assert_close(b.split(p), b.full(), rtol=1e-5, atol=1e-5)


def test_prefix_splits_follow_the_h200_measurements():
    from lcr.shared_prefix.plan import prefix_splits

    assert prefix_splits(9, 8, 132) == prefix_splits(10, 8, 132) == 1  # one split fastest
    assert prefix_splits(5, 8, 132) == 4 and prefix_splits(4, 8, 132) == 5
    assert prefix_splits(1, 8, 132) == 17 and prefix_splits(0, 8, 132) == 17


# ---- where it can run: plan time, engine start ------------------------------------------------

from lcr.config import ConfigError, EngineSection  # noqa: E402
from lcr.shared_prefix import support  # noqa: E402


def test_true_on_the_cpu_build_is_a_plan_time_error_naming_the_key(tmp_path):
    from helpers import demo_config

    from lcr.plan import plan_run

    cfg = demo_config(tmp_path, "engine.shared_prefix_attention=true")
    with pytest.raises(ConfigError, match=r"engine.shared_prefix_attention = true cannot run "
                                          r"here: the installed vLLM is the CPU build"):
        plan_run(cfg, log=lambda *_: None)
    assert not (tmp_path / cfg.run.name / "plan.json").exists()


def test_auto_falls_back_on_the_cpu_with_one_reason(caplog):
    on, why = support.resolve(EngineSection(), "tiny")
    assert not on and why.startswith("off: the installed vLLM is the CPU build")
    assert sum("engine.shared_prefix_attention" in r.message for r in caplog.records) == 1
    assert support.resolve(EngineSection(shared_prefix_attention=False), "x") == (
        False, "engine.shared_prefix_attention = false")
    with pytest.raises(ConfigError, match="cannot run on this machine"):
        support.resolve(EngineSection(shared_prefix_attention=True), "tiny")


@pytest.mark.parametrize("config, reason", [
    ({"model_type": "mistral", "sliding_window": 4096}, "sliding-window"),
    ({"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": False}, None),
    ({"model_type": "bloom"}, "ALiBi"),
    ({"model_type": "mpt", "attn_config": {"alibi": True}}, "ALiBi"),
    ({"model_type": "falcon", "alibi": False}, None),
    ({"model_type": "llama", "sliding_window": None}, None),
])
def test_models_it_cannot_serve_are_named(config, reason):
    found = support.model_reasons(config)
    assert (reason is None and found == []) or (reason and reason in " ".join(found))


def test_an_fp8_kv_cache_and_a_sliding_window_model_are_known_at_plan_time(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "mistral", "sliding_window": 4096}')
    reasons = support.static_reasons(EngineSection(kv_cache_dtype="fp8"), str(tmp_path))
    assert any("fp8" in r for r in reasons) and any("sliding-window" in r for r in reasons)


def test_the_plugin_entry_point_names_the_backend():
    import importlib.metadata

    from lcr.shared_prefix.plugin import BACKEND, register

    (ep,) = [e for e in importlib.metadata.entry_points(group="vllm.general_plugins")
             if e.name == support.PLUGIN]
    assert ep.load() is register
    register()  # harmless where the backend cannot run: it only names a class path
    from vllm.v1.attention.backends.registry import _ATTN_OVERRIDES, AttentionBackendEnum

    assert _ATTN_OVERRIDES[AttentionBackendEnum.CUSTOM] == BACKEND


def test_the_cost_model_prices_a_grouped_sets_prefix_once():
    from lcr.config import CostSection
    from lcr.cost import Batch, decode_step_seconds

    cost = CostSection()
    one = Batch(seqs=12, context=12 * 100_000, shared=100_000, sets=1,
                shared_seqs=12 * 100_000, grouped=100_000, grouped_seqs=12 * 100_000)
    spa = decode_step_seconds(one, cost, shared_prefix=True)
    assert spa == pytest.approx(cost.spa_step_s + 12 * cost.spa_step_seq_s
                                + cost.spa_prefix_s * 0.1)
    # stock reads the prefix once per sequence (L2 hits save about half of the 12 reads)
    stock_reads = decode_step_seconds(one, cost) - cost.step_s - 12 * cost.step_seq_s
    assert stock_reads > 5 * (spa - cost.spa_step_s - 12 * cost.spa_step_seq_s)


def test_the_attention_check_rehearses_on_the_cpu_with_reference_kernels(monkeypatch, tmp_path,
                                                                         capsys):
    """`lcr bench --attention-check` runs FA3 on a GPU; here its whole body runs on the CPU
    with the reference kernel in FA3's place (times are not measured: 0)."""
    from vllm.v1.attention.backends import fa_utils
    from vllm.v1.attention.ops import merge_attn_states as merge_module

    from lcr.shared_prefix import check

    def fa3(q, k, v, max_seqlen_q, cu_seqlens_q, max_seqlen_k, seqused_k=None,
            softmax_scale=None, causal=False, block_table=None, return_softmax_lse=False,
            out=None, num_splits=0, fa_version=3, **_):
        o, lse = paged_varlen(q, k, v, out, cu_seqlens_q, seqused_k, max_seqlen_q,
                              max_seqlen_k, block_table, causal, scale=softmax_scale)
        return (o, lse) if return_softmax_lse else o

    monkeypatch.setattr(fa_utils, "flash_attn_varlen_func", fa3, raising=False)  # GPU builds
    monkeypatch.setattr(merge_module, "merge_attn_states", merge, raising=False)
    monkeypatch.setattr(check, "DEVICE", "cpu")
    monkeypatch.setattr(check, "LAYERS", 2)
    monkeypatch.setattr(check, "_num_sms", lambda dev: 132)
    def once(fn, reps=0):
        fn()
        return 0.0

    monkeypatch.setattr(check, "_time", once)
    monkeypatch.setattr(check, "_wall", once)
    for block, lone in ((16, 0), (64, 2)):
        r = check.check_shape(2, 3, 2048, suffix=40, lone=lone, block=block)
        assert r["grouped"] == [2, 6] and r["block"] == block and not r["nan"]
        assert r["rel_err_vs_stock"] < 1e-2 and r["rel_err_vs_fp32"] < 1e-2
        assert r["splits"] == check.prefix_splits(2, check.KV_HEADS, 132)
        assert {"step_split_ms", "step_stock_ms", "prefix_call_group_rows_ms",
                "split_ms_by_splits"} <= set(r)
    # and the whole check, table and PASS line included, on shapes this small
    monkeypatch.setattr(support, "device_reasons", lambda engine_processes=True: [])
    monkeypatch.setattr(check, "SHAPES", [(2, 3, 2048, 40)])
    monkeypatch.setattr(check, "BLOCK_SHAPES", [(2, 3, 2048, 40)])
    assert check.run_checks(str(tmp_path / "ops.json")) == 0
    out = capsys.readouterr().out
    assert "2 x 3 (+0), 2,048 /64" in out and out.rstrip().endswith("attention check: PASS")
    assert [r["block"] for r in json.loads((tmp_path / "ops.json").read_text())] == [16, 64]
