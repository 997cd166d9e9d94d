"""Shared-prefix attention: each document set's documents read once per decode step.

    [engine]
    shared_prefix_attention = "auto"    # on where it can run (CUDA, FlashAttention 3), else off

The questions of one AA-LCR document set share a ~100K-token prefix, and under prefix caching
their requests hold the very same KV blocks. Stock attention still reads those blocks once per
sequence at every decode step. This package is a vLLM attention backend (a plugin: no fork)
that groups the running requests by the blocks they share, attends each group's queries to its
prefix in one varlen call, each request to its own suffix, and merges the two by log-sum-exp.

- `plan`: which requests share what (torch ops on the device, no host sync);
- `split`: the attention itself, prefix once + suffix + merge, on any varlen kernel;
- `backend`: the vLLM classes (FlashAttention 3 on CUDA); `plugin`: the entry point;
- `support`: where it can run, checked at plan time and at engine start;
- `check`: the GPU equivalence checks (`python -m lcr.shared_prefix.check`).
"""
