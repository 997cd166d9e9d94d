"""The vLLM attention backend: FlashAttention 3, with shared prefixes read once per step.

    register_backend(AttentionBackendEnum.CUSTOM, "lcr.shared_prefix.backend.SharedPrefixBackend")
    LLM(model, attention_backend="CUSTOM")          # lcr.engine does both when it is on

The metadata builder runs once per engine step: besides FlashAttention's own metadata it plans
the step's groups (lcr.shared_prefix.plan) with device tensor ops, so no host sync is added.
Each layer's forward then runs the split (lcr.shared_prefix.split) on FA3 and vLLM's
merge_attn_states, or the stock FlashAttention path when the step has no group. Whether a step
has a group is known on the device; the host learns it a step or two later through a pinned
copy it never waits for, and picks the path from that. Both paths are exact, so a stale guess
costs a little speed, never correctness. Attention runs outside the CUDA graphs (the builder
declares no full-graph support, so vLLM captures the rest of the model piecewise), because the
groups change from step to step.
"""

from __future__ import annotations

import math

import torch
from vllm.utils.torch_utils import canonicalize_singleton_dim_strides
from vllm.v1.attention.backend import AttentionCGSupport
from vllm.v1.attention.backends.fa_utils import flash_attn_varlen_func
from vllm.v1.attention.backends.flash_attn import (
    FlashAttentionBackend,
    FlashAttentionImpl,
    FlashAttentionMetadataBuilder,
)
from vllm.v1.attention.ops.merge_attn_states import merge_attn_states

from lcr.shared_prefix.plan import GROUP_SLACK, plan_groups, prefix_splits
from lcr.shared_prefix.split import split_attention
from lcr.shared_prefix.support import MIN_SHARED_BLOCKS


class SharedPrefixBackend(FlashAttentionBackend):
    @staticmethod
    def get_name() -> str:
        return "CUSTOM"

    @staticmethod
    def get_impl_cls():
        return SharedPrefixImpl

    @staticmethod
    def get_builder_cls():
        return SharedPrefixBuilder


class LaggedStats:
    """The last group counts the device has finished computing, read without waiting."""

    def __init__(self, depth: int = 3):
        self.slots = [(torch.zeros(2, dtype=torch.int32, pin_memory=True), torch.cuda.Event())
                      for _ in range(depth)]
        self.turn = 0
        self.known: tuple[int, int] | None = None  # (groups, grouped requests)

    def push(self, stats: torch.Tensor) -> None:
        host, event = self.slots[self.turn % len(self.slots)]
        host.copy_(stats, non_blocking=True)
        event.record()
        self.turn += 1

    def poll(self) -> tuple[int, int] | None:
        """The newest counts the device has finished, without waiting (None: none yet)."""
        for k in range(len(self.slots)):  # newest first
            host, event = self.slots[(self.turn - 1 - k) % len(self.slots)]
            if self.turn - 1 - k >= 0 and event.query():
                self.known = (int(host[0]), int(host[1]))
                break
        return self.known


class SharedPrefixBuilder(FlashAttentionMetadataBuilder):
    _cudagraph_support = AttentionCGSupport.NEVER

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self.lagged = LaggedStats()
        self.num_sms = torch.cuda.get_device_properties(device).multi_processor_count
        self.min_blocks = MIN_SHARED_BLOCKS

    def build(self, common_prefix_len, common_attn_metadata, fast_build=False, **kwargs):
        md = super().build(common_prefix_len, common_attn_metadata, fast_build, **kwargs)
        md.shared_prefix = self._plan(common_attn_metadata, md)
        return md

    def _plan(self, cm, md):
        r = cm.num_reqs
        if r < 2 or md.use_cascade or cm.max_seq_len <= self.min_blocks * self.block_size:
            return None
        qsl = cm.query_start_loc_cpu[: r + 1]
        if int(((qsl[1:] - qsl[:-1]) == 1).sum()) < 2:
            return None  # fewer than two decoding requests: no group is possible
        known = self.lagged.poll()
        # Prefix entries: the groups last read back plus room for sets entering the window
        # (groups past the bound run ungrouped for a step or two, exactly).
        bound = None if known is None else known[0] + GROUP_SLACK
        plan = plan_groups(cm.block_table_tensor[:r], cm.seq_lens[:r],
                           cm.query_start_loc[: r + 1], cm.num_actual_tokens, self.block_size,
                           math.ceil(cm.max_seq_len / self.block_size), self.min_blocks, bound)
        self.lagged.push(plan.stats)
        if known is not None and known[0] == 0:
            return None  # the last steps the device finished had no group: stock path
        plan.num_splits = prefix_splits(known[0] if known else 1, self.num_heads_kv,
                                        self.num_sms)
        return plan


class SharedPrefixImpl(FlashAttentionImpl):
    def forward(self, layer, query, key, value, kv_cache, attn_metadata, output,
                output_scale=None, output_block_scale=None):
        plan = getattr(attn_metadata, "shared_prefix", None)
        if (plan is None or output_scale is not None or output_block_scale is not None
                or self.dcp_world_size > 1 or self.sliding_window != (-1, -1)
                or self.alibi_slopes is not None or self.sinks is not None
                or self.logits_soft_cap or not isinstance(attn_metadata.causal, bool)):
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output,
                                   output_scale, output_block_scale)
        key_cache, value_cache = kv_cache.transpose(1, 2).split(self.head_size, dim=-1)
        key_cache = canonicalize_singleton_dim_strides(key_cache)
        value_cache = canonicalize_singleton_dim_strides(value_cache)
        split_attention(query, key_cache, value_cache, output, plan,
                        attn_metadata.query_start_loc, attn_metadata.max_query_len,
                        attn_metadata.max_seq_len, self._varlen(layer), merge_attn_states,
                        plan.num_splits)
        return output

    def _varlen(self, layer):
        def varlen(q, k, v, out, cu_seqlens_q, seqused_k, max_seqlen_q, max_seqlen_k,
                   block_table, causal, num_splits):
            shape = (cu_seqlens_q.shape[0] - 1, self.num_kv_heads)
            return flash_attn_varlen_func(
                q=q, k=k, v=v, out=out, cu_seqlens_q=cu_seqlens_q, max_seqlen_q=max_seqlen_q,
                seqused_k=seqused_k, max_seqlen_k=max_seqlen_k, softmax_scale=self.scale,
                causal=causal, window_size=[-1, -1], block_table=block_table,
                return_softmax_lse=True, fa_version=self.vllm_flash_attn_version,
                q_descale=(layer._q_scale.expand(shape) if self.supports_quant_query_input
                           else None),
                k_descale=layer._k_scale.expand(shape), v_descale=layer._v_scale.expand(shape),
                num_splits=num_splits)
        return varlen
