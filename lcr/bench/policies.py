"""What `lcr bench` measures on one engine: a sharding policy through the generate code path,
or the peer, `naive`: every unit of a shard in one `LLM.generate` call, as a plain vLLM script
(and NeMo-Skills, lm-evaluation-harness) feeds the engine.

    r = run_policy(root, base, cfg, questions, "document_set", shards, engine, units, phys)
    r["gpu_s"], r["predicted_s"], r["floor_s"]

Every result holds the measured seconds, the cost model's prediction (none for naive: the model
replays lcr's own window) and the floor, so that each table shows the peer beside lcr's feeding.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lcr.bench.layouts import fresh_run_dir
from lcr.config import Config
from lcr.cost import Physics, capacity_from, floor, set_demands, units_cost
from lcr.plan import assign
from lcr.rundir import RunDir

POLICIES = ("document_set", "naive", "round_robin", "contiguous", "random", "no_reuse")


class NoReuse:
    """Wraps the engine so that no two requests share a prefix (unique first token each)."""

    def __init__(self, engine):
        self.engine, self.n = engine, 0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def add(self, request_id, ids, params):
        self.n += 1
        return self.engine.add(request_id, [1 + self.n % 100] + list(ids[1:]), params)


def _params(engine, cfg: Config, u: dict):
    """A unit's sampling, as generate gives it (its own length on bench workloads)."""
    return engine.params(cfg.sampling, seed=u["seed"] * 1000 + u["sample"],
                         max_tokens=u.get("max_tokens"))


def _naive_shard(rd: RunDir, cfg: Config, qinfo: dict, units: list[dict], engine) -> dict:
    """The peer on one shard: all its units in one generate call, no window, no prime."""
    prompts = [rd.prompt_ids(qinfo[u["question_id"]]) for u in units]
    done = engine.generate(prompts, [_params(engine, cfg, u) for u in units])
    failed = [c.error for c in done if c.error]
    if failed:
        raise RuntimeError(f"naive: {len(failed)} request(s) failed, e.g. {failed[0]}")
    prompt = sum(c.prompt_tokens for c in done)
    cached = sum(c.cached_tokens for c in done)
    return {"prompt_tokens": prompt, "cached_tokens": cached,
            "output_tokens": sum(c.output_tokens for c in done),
            "cache_hit": round(cached / prompt, 4) if prompt else 0.0}


def run_policy(root: Path, base: RunDir, cfg: Config, questions: list[dict], policy: str,
               shards: int, engine, units: list[dict], phys: Physics | None) -> dict:
    """All shards of one policy on one engine: measured, predicted and floor seconds."""
    from lcr.generate import run_units

    rd = fresh_run_dir(root / policy, base, cfg)
    qinfo = {q["question_id"]: q for q in questions}
    assigned = _assigned(units, shards, policy, qinfo, cfg)
    wrapped = NoReuse(engine) if policy == "no_reuse" else engine
    cap = capacity_from(cfg)
    times, infos, model, fl = [], [], [], []
    for k, shard_units in enumerate(assigned):
        engine.llm.reset_prefix_cache()
        t0 = time.time()
        if policy == "naive":
            info = _naive_shard(base, cfg, qinfo, shard_units, engine)
        else:
            info = run_units(rd, cfg, k, None, shard_units, rd.generate_file(k),
                             engine_factory=lambda _cfg: wrapped)
        times.append(time.time() - t0)
        infos.append(info)
        model.append(None if policy == "naive" else units_cost(shard_units, qinfo, cfg))
        fl.append(_floor(shard_units, qinfo, cfg, cap, phys))
        said = (f"model {model[-1].seconds:6.1f} s, window up to {model[-1].max_window}"
                if model[-1] else "every unit in one generate call")
        print(f"  {policy:>12} shard {k}: {times[-1]:7.1f} s ({said}), cache hit "
              f"{info['cache_hit']:.2f}", file=sys.stderr, flush=True)
    return _summary(policy, times, infos, model, fl if phys else None)


def _assigned(units: list[dict], shards: int, policy: str, qinfo: dict, cfg: Config):
    """The shards of a policy: no_reuse and naive shard as document_set does."""
    by = "document_set" if policy in ("no_reuse", "naive") else policy
    return assign(units, shards, by, qinfo, cfg)


def _model_keys(model: list) -> dict:
    """The cost model's seconds over a policy's shards, and its widest window."""
    return {"predicted_s": round(sum(m.seconds for m in model), 2),
            "predicted_prefill_s": round(sum(m.prefill_s for m in model), 2),
            "predicted_decode_s": round(sum(m.decode_s for m in model), 2),
            "window": max(m.max_window for m in model)}


def _floor(units: list[dict], qinfo: dict, cfg: Config, cap, phys: Physics | None):
    if phys is None:
        return None
    demands = set_demands(units, qinfo, cfg.sampling.max_new_tokens)
    return floor(demands, cap, phys, cfg.engine.max_num_batched_tokens)


def _floor_keys(fl: list) -> dict:
    out = {"floor_prefill_s": round(sum(f.prefill_s for f in fl), 2),
           "floor_decode_s": round(sum(f.decode_s for f in fl), 2)}
    out["floor_s"] = round(out["floor_prefill_s"] + out["floor_decode_s"], 2)
    return out


def predict_policy(cfg: Config, questions: list[dict], policy: str, shards: int,
                   units: list[dict], phys: Physics | None) -> dict:
    """A policy with no engine: the cost model's seconds and the floor, shard by shard."""
    qinfo = {q["question_id"]: q for q in questions}
    assigned = _assigned(units, shards, policy, qinfo, cfg)
    cap = capacity_from(cfg)
    model = [units_cost(s, qinfo, cfg) for s in assigned]
    out = {"policy": policy, **_model_keys(model),
           "predicted_makespan_s": round(max(m.seconds for m in model), 2)}
    if phys is not None:
        out.update(_floor_keys([_floor(s, qinfo, cfg, cap, phys) for s in assigned]))
    return out


def _summary(policy: str, times: list[float], infos: list[dict], model: list, fl) -> dict:
    prompt = sum(i["prompt_tokens"] for i in infos)
    cached = sum(i["cached_tokens"] for i in infos)
    output = sum(i["output_tokens"] for i in infos)
    gpu_s = sum(times)
    out = {"policy": policy, "gpu_s": round(gpu_s, 2), "makespan_s": round(max(times), 2),
           "shard_s": [round(t, 2) for t in times],
           "cache_hit": round(cached / prompt, 4) if prompt else 0.0,
           "prefill_tok_s": round((prompt - cached) / gpu_s, 1),
           "decode_tok_s": round(output / gpu_s, 1), "prompt_tokens": prompt,
           "cached_tokens": cached, "output_tokens": output,
           "predicted_s": None, "predicted_ratio": None, "window": None}
    if all(model):
        out.update(_model_keys(model))
        out["predicted_ratio"] = round(out["predicted_s"] / gpu_s, 3)
    if fl:
        out.update(_floor_keys(fl))
        out["floor_ratio"] = round(gpu_s / out["floor_s"], 3)
    return out
