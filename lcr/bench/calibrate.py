"""Single measurements behind the cost model and the floor: prefill, decode steps, bandwidth.

    lcr bench jobs/bench-llama31-8b.toml --calibrate     # prints a [cost] table to paste

Prefill: one fresh prompt at several lengths (prefix cache reset), fitted to
L / prefill_tok_s * (1 + L / attn_tokens). Decode: for batches of S sets x U sequences on
prefixes of P tokens, the time of N extra decode steps (two runs that differ only in their
output length), fitted to step_s + step_seq_s * seqs + step_ctx_s * context + step_shared_s *
shared prefixes. Bandwidth: the faster of a device-to-device copy and a device-wide read.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lcr.cost import MTOK
from lcr.shared_prefix.support import MIN_SHARED_BLOCKS

BANDWIDTH_PROBE = r"""
import json, time
try:
    import torch
    cuda = torch.cuda.is_available()
except ImportError:
    cuda = False
if cuda:
    x = torch.randn(1 << 29, device="cuda", dtype=torch.bfloat16)  # 1 GiB
    y = torch.empty_like(x)
    def timed(fn, reps=20):
        fn(); torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(reps): fn()
        torch.cuda.synchronize(); return (time.perf_counter() - t) / reps
    copy = 2 * x.numel() * 2 / timed(lambda: y.copy_(x))
    read = x.numel() * 2 / timed(lambda: x.sum(dtype=torch.float32))
else:
    import numpy as np
    x = np.ones(1 << 25, dtype=np.float32); y = np.empty_like(x)
    def timed(fn, reps=5):
        fn(); t = time.perf_counter()
        for _ in range(reps): fn()
        return (time.perf_counter() - t) / reps
    copy = 2 * x.nbytes / timed(lambda: np.copyto(y, x))
    read = x.nbytes / timed(lambda: x.sum())
print(json.dumps({"copy": copy, "read": read, "device": "cuda" if cuda else "cpu"}))
"""


def measure_bandwidth() -> dict:
    """Bytes/s of a copy (read + write counted) and of a read, in a process of its own (before
    the engine starts, so that its memory is free and CUDA is not initialised here)."""
    out = subprocess.run([sys.executable, "-c", BANDWIDTH_PROBE], capture_output=True,
                         text=True, timeout=300, check=True).stdout
    bw = json.loads(out.strip().splitlines()[-1])
    bw["bandwidth"] = max(bw["copy"], bw["read"])
    return bw


def engine_dtypes(engine) -> tuple[int, int]:
    """(weights, KV cache) bytes per element of a started engine."""
    import torch

    mc = engine.llm.llm_engine.model_config
    wbytes = torch.empty(0, dtype=mc.dtype).element_size()
    kv = engine.llm.llm_engine.vllm_config.cache_config.cache_dtype
    return wbytes, (1 if "fp8" in str(kv) else wbytes)


def _ids(rng, n: int, vocab: int) -> list[int]:
    return rng.integers(min(1000, vocab // 4), vocab - 300, size=n).tolist()


def greedy(max_tokens: int):
    """[sampling]-like settings that decode exactly `max_tokens` greedy tokens."""
    from types import SimpleNamespace

    return SimpleNamespace(temperature=0.0, top_p=1.0, top_k=-1, max_new_tokens=max_tokens,
                           ignore_eos=True)


def measure_prefill(engine, lengths: list[int], vocab: int, seed: int = 1) -> dict[int, float]:
    """Seconds to prefill one fresh prompt of each length (one output token)."""
    rng = np.random.default_rng(seed)
    engine.generate([_ids(rng, min(lengths), vocab)], [engine.params(greedy(1))])  # warm-up
    out = {}
    for n in sorted(set(lengths)):
        engine.llm.reset_prefix_cache()
        ids = _ids(rng, n, vocab)
        t0 = time.perf_counter()
        engine.generate([ids], [engine.params(greedy(1))])
        out[n] = round(time.perf_counter() - t0, 4)
        print(f"  prefill {n:>7,} tokens: {out[n]:.3f} s", file=sys.stderr, flush=True)
    return out


@dataclasses.dataclass
class DecodePoint:
    sets: int
    seqs_per_set: int
    prefix: int
    step_s: float = 0.0  # measured seconds per decode step

    def features(self, suffix: int, mid: float, shared_prefix: bool = False) -> list[float]:
        """The step model's terms (lcr.cost.decode_step_seconds) for this shape."""
        seqs = self.sets * self.seqs_per_set
        context = seqs * (self.prefix + suffix + mid)
        if shared_prefix and self.seqs_per_set >= 2 and self.prefix >= MIN_SHARED_BLOCKS * 16:
            # grouped: each sequence reads its own rest, each set its prefix once
            return [1.0, seqs, seqs * (suffix + mid) / MTOK, self.sets * self.prefix / MTOK]
        if shared_prefix:
            return [1.0, seqs, context / MTOK, 0.0]
        return [1.0, seqs, context / MTOK, self.sets * self.prefix / MTOK]


DECODE_SUFFIX = 32  # fresh tokens after each sequence's prefix in the decode measurements


def measure_decode(engine, points: list[DecodePoint], vocab: int, steps: tuple[int, int],
                   suffix: int = DECODE_SUFFIX, seed: int = 2) -> list[DecodePoint]:
    """Seconds per decode step for each batch shape: (run of steps[1] - run of steps[0]) /
    their difference; prefixes primed first, fresh suffixes each run."""
    rng = np.random.default_rng(seed)
    for pt in points:
        # the same prefix for the same (length, set): shapes that share one reuse its cache
        prefixes = [_ids(np.random.default_rng([seed, pt.prefix, s]), pt.prefix, vocab)
                    for s in range(pt.sets)]
        engine.generate(prefixes, [engine.params(greedy(1))] * pt.sets)
        times = []
        for n in steps:
            prompts = [p + _ids(rng, suffix, vocab) for p in prefixes
                       for _ in range(pt.seqs_per_set)]
            t0 = time.perf_counter()
            engine.generate(prompts, [engine.params(greedy(n))] * len(prompts))
            times.append(time.perf_counter() - t0)
        pt.step_s = round((times[1] - times[0]) / (steps[1] - steps[0]), 6)
        print(f"  decode {pt.sets} set(s) x {pt.seqs_per_set} seqs on {pt.prefix:,}-token "
              f"prefixes: {pt.step_s * 1000:.2f} ms/step", file=sys.stderr, flush=True)
    return points


def decode_points(long: int, kv_tokens: int, budget: int) -> list[DecodePoint]:
    """Batch shapes that separate the model's terms and fit in the KV cache."""
    mid, short = max(long // 3, 64), min(1024, max(long // 8, 32))
    # the last two are the shapes real windows decode in: ~12 sequences (3-4 questions x 3
    # seeds) on each of several sets, on prefixes that earlier shapes have already cached
    shapes = [(1, 1, short), (1, 64, short), (1, 1, long), (1, 8, long), (1, 32, mid),
              (3, 4, long), (8, 8, mid), (4, 32, max(mid // 4, 32)), (3, 12, long),
              (10, 12, mid)]
    out = []
    for sets, seqs, prefix in shapes:
        need = sets * prefix + sets * seqs * (budget + 64)
        if need <= 0.9 * kv_tokens:
            out.append(DecodePoint(sets, seqs, prefix))
    return out


def fit_prefill(table: dict[int, float]) -> dict:
    """prefill_tok_s and attn_tokens by least squares on t = L/r + L^2/(r A)."""
    lengths = np.array(sorted(table), dtype=float)
    times = np.array([table[int(n)] for n in lengths])
    a = np.stack([lengths, lengths**2], axis=1)
    (u, v), *_ = np.linalg.lstsq(a, times, rcond=None)
    if u <= 0:
        return {}
    return {"prefill_tok_s": round(1 / u, 1),
            "attn_tokens": round(u / v, 1) if v > 0 else 1e12}


STOCK_TERMS = ["step_s", "step_seq_s", "step_ctx_s", "step_shared_s"]
SHARED_PREFIX_TERMS = ["spa_step_s", "spa_step_seq_s", "spa_ctx_s", "spa_prefix_s"]
COST_TERMS = ["prefill_tok_s", "attn_tokens", *STOCK_TERMS, *SHARED_PREFIX_TERMS]  # [cost] keys


def fit_decode(points: list[DecodePoint], suffix: int, mid: float,
               shared_prefix: bool = False, read_s: float = 0.0) -> dict:
    """Least squares of the step model with every term at least 0: the stock constants, or
    with `shared_prefix` those of shared-prefix attention. There `read_s` (seconds per million
    KV tokens read at the measured bandwidth, 0: unknown) is also the least a context or
    prefix token can cost: each is read from memory once per step, so a fit that prices them
    cheaper (host-bound small batches pull it there) is held at that cost."""
    from scipy.optimize import lsq_linear

    x = np.array([p.features(suffix, mid, shared_prefix) for p in points])
    y = np.array([p.step_s for p in points])
    names = SHARED_PREFIX_TERMS if shared_prefix else STOCK_TERMS
    out = dict.fromkeys(names, 0.0)
    if not len(y):
        return {**out, "max_rel_error": 0.0}
    low = np.zeros(len(names))
    if shared_prefix:
        low[names.index("spa_ctx_s")] = low[names.index("spa_prefix_s")] = read_s
    coef = lsq_linear(x, y, bounds=(low, np.inf)).x
    out.update({n: float(f"{c:.4g}") for n, c in zip(names, coef)})
    out["max_rel_error"] = round(float(np.max(np.abs(x @ coef - y) / y)), 3)
    return out


def decode_fit(points: list[DecodePoint], steps: tuple[int, int], shared_prefix: bool,
               kv_bytes_per_token: float = 0.0, bandwidth: float = 0.0) -> dict:
    """The step constants of measured points: `steps` are the two run lengths they were
    timed between, the KV bytes and bandwidth give the least a KV token read can cost."""
    read_s = kv_bytes_per_token * MTOK / bandwidth if bandwidth else 0.0
    return fit_decode(points, DECODE_SUFFIX, sum(steps) / 2, shared_prefix, read_s)


def load_calibration(path: str, calibrate_steps: int) -> dict:
    """An earlier --calibrate run's calibration.json. Its decode constants are fitted again
    from its decode points with this version's fit (one line says so where they change); a
    file that does not record its step counts (`decode_steps`) was measured with
    `calibrate_steps` steps."""
    from lcr.config import ConfigError

    try:
        fitted = json.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"--calibration {path}: cannot read it ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--calibration {path}: not JSON (line {e.lineno}: {e.msg})") from None
    missing = ([k for k in ("prefill_s", "kv_tokens", "block_tokens") if k not in fitted]
               if isinstance(fitted, dict) else [])
    if not isinstance(fitted, dict) or missing:
        raise ConfigError(f"--calibration {path}: no {', '.join(missing) or 'object'}; expected "
                          "the calibration.json an lcr bench --calibrate run writes")
    points = fitted.get("decode_points")
    if points:
        try:
            pts = [DecodePoint(**p) for p in points]
        except TypeError as e:
            raise ConfigError(f"--calibration {path}: decode_points: {e}") from None
        spa = "spa_step_s" in fitted  # measured on the engine whose attention it fitted
        steps = tuple(fitted.get("decode_steps") or (16, 16 + calibrate_steps))
        new = decode_fit(pts, steps, spa, fitted.get("kv_bytes_per_token", 0.0),
                         fitted.get("bandwidth", 0.0))
        changed = {k: v for k, v in new.items() if fitted.get(k) != v}
        if changed:
            print(f"--calibration {path}: decode constants fitted again from its {len(pts)} "
                  f"points: " + ", ".join(f"{k} {fitted.get(k)} -> {v}"
                                          for k, v in changed.items()), file=sys.stderr)
        fitted.update(new)
    return fitted


def cost_toml(fitted: dict) -> str:
    keys = [*COST_TERMS, "kv_tokens", "block_tokens"]
    return "[cost]\n" + "\n".join(f"{k} = {fitted[k]}" for k in keys if k in fitted)
