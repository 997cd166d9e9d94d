"""`lcr bench`: engine performance on an AA-LCR-shaped workload, through the generate code path.

    lcr bench jobs/bench-llama31-8b.toml --scale 0.33 --shards 4 --calibrate
    lcr bench jobs/bench-llama31-8b.toml --like jobs/llama31-8b-aalcr.toml --output-tokens 1024
    lcr bench jobs/bench-llama31-8b.toml --run-dir jobs/bench-aalcr-real --output-tokens 512

Workloads: 30 document sets with the dataset card's questions-per-set distribution (fewer and
shorter with --scale), or the lengths of a prepared run (`--run-dir`; jobs/bench-aalcr-real
holds the real AA-LCR prompt lengths). Answers: `--output-tokens N` (every unit decodes N tokens,
ignore_eos) or `lognormal:MEDIAN:SIGMA:MAX` (each unit its own length, the window reserving
MAX); `--like JOB` takes seeds and max_new_tokens from a job file. Each sharding policy's
shards run through `lcr.generate.run_units` on one engine (prefix cache reset between shards,
as if each shard had its own engine); GPU-seconds are the sum of shard times. Every run prints
the cost model's prediction beside the measurement, and the floor: the unique prefill tokens at
the measured single-prompt rates plus decode at the bytes each step must read at the measured
memory bandwidth, both replayed over the window the scheduler picks (lcr.cost.floor).
`--calibrate` measures prefill and decode steps first and fits the [cost] constants it predicts
with (printed, to paste into a job). With Llama-3.1-8B shapes and `load_format = "dummy"` no
weights are needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from lcr.config import Config, ConfigError, apply_override, load_config, validate
from lcr.cost import Physics, floor, set_demands, units_cost
from lcr.io import atomic_write_json, atomic_write_jsonl, atomic_write_npy, atomic_write_text
from lcr.layouts import fresh_run_dir, run_layouts
from lcr.plan import assign, make_units
from lcr.rundir import RunDir
from lcr.window import Capacity

# Public Llama-3.1-8B shapes (config.json of meta-llama/Llama-3.1-8B-Instruct).
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "hidden_act": "silu",
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "attention_bias": False, "mlp_bias": False,
}
POLICIES = ("document_set", "round_robin", "contiguous", "random", "no_reuse")


def dummy_model_dir(root: Path) -> Path:
    d = root / "llama31-8b-shapes"
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "config.json", json.dumps(LLAMA31_8B, indent=1))
    return d


def write_workload(rd: RunDir, questions: list[dict], vocab: int, seed: int = 0) -> None:
    """questions.jsonl + prompts/: each set's documents once, each question its own suffix."""
    rng = np.random.default_rng(seed)
    lo, hi = min(1000, vocab // 4), vocab - 300
    docs: dict[str, np.ndarray] = {}
    for i, q in enumerate(questions):
        shared = q["shared_prefix_tokens"]
        if q["document_set_id"] not in docs:
            docs[q["document_set_id"]] = rng.integers(lo, hi, size=shared, dtype=np.int32)
        ids = np.concatenate([
            np.array([lo - 1], dtype=np.int32), docs[q["document_set_id"]][: shared - 1],
            rng.integers(lo, hi, size=q["prompt_tokens"] - max(shared, 1), dtype=np.int32),
        ])
        q["prompt_file"] = f"prompts/p-{i:04d}.npy"
        atomic_write_npy(rd.path / q["prompt_file"], ids)
        q["prompt_sha256"] = hashlib.sha256(ids.tobytes()).hexdigest()
    atomic_write_jsonl(rd.questions_file, questions)


class NoReuse:
    """Wraps the engine so that no two requests share a prefix (unique first token each)."""

    def __init__(self, engine):
        self.engine, self.n = engine, 0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def add(self, request_id, ids, params):
        self.n += 1
        return self.engine.add(request_id, [1 + self.n % 100] + list(ids[1:]), params)


def output_lengths(spec: str, units: list[dict], seed: int = 0) -> int:
    """Apply --output-tokens to the units; return the answer budget (max_new_tokens).

    "N": every unit decodes N tokens. "lognormal:MEDIAN:SIGMA:MAX": each unit decodes its own
    length drawn from a log-normal distribution, capped at MAX, the budget."""
    if spec.isdigit() and int(spec) > 0:
        return int(spec)
    parts = spec.split(":")
    try:
        assert parts[0] == "lognormal" and len(parts) == 4
        median, sigma, cap = float(parts[1]), float(parts[2]), int(parts[3])
        assert median > 0 and sigma >= 0 and cap > 0
    except (AssertionError, ValueError):
        raise ConfigError(f"--output-tokens {spec!r}: expected a positive whole number or "
                          "lognormal:MEDIAN:SIGMA:MAX, e.g. lognormal:300:0.8:2048") from None
    rng = np.random.default_rng(seed)
    for u in units:
        u["max_tokens"] = int(min(cap, max(1, round(median * math.exp(sigma * rng.normal())))))
    return cap


def run_policy(root: Path, base: RunDir, cfg: Config, questions: list[dict], policy: str,
               shards: int, engine, units: list[dict], phys: Physics | None) -> dict:
    """All shards of one policy on one engine: measured, predicted and floor seconds."""
    from lcr.generate import run_units

    rd = fresh_run_dir(root / policy, base, cfg)
    qinfo = {q["question_id"]: q for q in questions}
    assigned = assign(units, shards, "document_set" if policy == "no_reuse" else policy, qinfo,
                      cfg)
    wrapped = NoReuse(engine) if policy == "no_reuse" else engine
    cap = Capacity(cfg.cost.kv_tokens, cfg.cost.block_tokens, cfg.engine.max_num_seqs,
                   0 if cfg.engine.batch_sets == "auto" else int(cfg.engine.batch_sets))
    times, infos, model, fl = [], [], [], []
    for k, shard_units in enumerate(assigned):
        engine.llm.reset_prefix_cache()
        t0 = time.time()
        info = run_units(rd, cfg, k, None, shard_units, rd.generate_file(k),
                         engine_factory=lambda _cfg: wrapped)
        times.append(time.time() - t0)
        infos.append(info)
        model.append(units_cost(shard_units, qinfo, cfg))
        demands = set_demands(shard_units, qinfo, cfg.sampling.max_new_tokens)
        fl.append(floor(demands, cap, phys, cfg.engine.max_num_batched_tokens) if phys else None)
        print(f"  {policy:>12} shard {k}: {times[-1]:7.1f} s (model {model[-1].seconds:6.1f} s, "
              f"window up to {model[-1].max_window}), cache hit {info['cache_hit']:.2f}",
              file=sys.stderr, flush=True)
    prompt = sum(i["prompt_tokens"] for i in infos)
    cached = sum(i["cached_tokens"] for i in infos)
    output = sum(i["output_tokens"] for i in infos)
    gpu_s = sum(times)
    out = {"policy": policy, "gpu_s": round(gpu_s, 2), "makespan_s": round(max(times), 2),
           "shard_s": [round(t, 2) for t in times], "cache_hit": round(cached / prompt, 4),
           "prefill_tok_s": round((prompt - cached) / gpu_s, 1),
           "decode_tok_s": round(output / gpu_s, 1), "prompt_tokens": prompt,
           "cached_tokens": cached, "output_tokens": output,
           "predicted_s": round(sum(m.seconds for m in model), 2),
           "predicted_prefill_s": round(sum(m.prefill_s for m in model), 2),
           "predicted_decode_s": round(sum(m.decode_s for m in model), 2),
           "window": max(m.max_window for m in model)}
    out["predicted_ratio"] = round(out["predicted_s"] / gpu_s, 3)
    if phys:
        out["floor_prefill_s"] = round(sum(f.prefill_s for f in fl), 2)
        out["floor_decode_s"] = round(sum(f.decode_s for f in fl), 2)
        out["floor_s"] = round(out["floor_prefill_s"] + out["floor_decode_s"], 2)
        out["floor_ratio"] = round(gpu_s / out["floor_s"], 3)
    return out


def bench_config(args) -> Config:
    """The engine/model config, `--like` job's seeds and budget, then --set overrides."""
    cfg = load_config(args.config, [])
    if args.like:
        job = load_config(args.like, [])
        cfg.sampling.seeds, cfg.sampling.n = job.sampling.seeds, job.sampling.n
        cfg.sampling.max_new_tokens = job.sampling.max_new_tokens
    for text in args.overrides:
        apply_override(cfg, text)
    validate(cfg)
    return cfg


def workload(args, cfg: Config) -> list[dict]:
    """Question records (lengths only), every prompt cut to fit the context window."""
    from lcr.shape import aalcr_shaped

    if args.run_dir:
        keep = ("question_id", "document_set_id", "document_category", "prompt_tokens",
                "shared_prefix_tokens", "status")
        questions = [{k: q[k] for k in keep} for q in RunDir(args.run_dir).load_questions()
                     if q["status"] == "ok"]
    else:
        questions = aalcr_shaped(seed=0, scale=args.scale)
    limit = cfg.engine.max_model_len - cfg.sampling.max_new_tokens - 200
    longest: dict[str, int] = {}
    for q in questions:
        longest[q["document_set_id"]] = max(longest.get(q["document_set_id"], 0),
                                            q["prompt_tokens"])
    for q in questions:  # keep every prompt inside the window (the card's longest do not fit)
        over = max(0, longest[q["document_set_id"]] - limit)
        q["prompt_tokens"] -= over
        q["shared_prefix_tokens"] = max(0, q["shared_prefix_tokens"] - over)
    return questions


def start_engine(cfg: Config, root: Path):
    """The engine, its start time and whether the compile cache was cold or warm."""
    from lcr.engine import Engine, compile_cache_dir

    cache = compile_cache_dir(cfg.engine, str(root))
    state = "warm" if cache and any(Path(cache).glob("torch_compile_cache/*")) else "cold"
    t0 = time.time()
    engine = Engine(cfg.model.path, cfg.engine, cache_dir=cache)
    return engine, round(time.time() - t0, 1), state


def calibrate_engine(engine, cfg: Config, questions: list[dict], vocab: int, args,
                     bandwidth: dict | None) -> tuple[Physics | None, dict]:
    """Prefill table (always: the floor needs it), decode steps and the fit (--calibrate), or
    all of it from an earlier run's calibration.json (--calibration FILE, same machine)."""
    from lcr.calibrate import (
        decode_points,
        engine_dtypes,
        fit_decode,
        fit_prefill,
        measure_decode,
        measure_prefill,
        model_bytes,
    )

    kv_tokens, block = engine.kv_capacity()
    cfg.cost.kv_tokens, cfg.cost.block_tokens = kv_tokens, block
    if args.calibration:
        fitted = json.loads(Path(args.calibration).read_text())
        table = {int(k): v for k, v in fitted["prefill_s"].items()}
        bandwidth = {"bandwidth": fitted["bandwidth"]} if "bandwidth" in fitted else bandwidth
    else:
        # lengths up to 100K whatever the workload, so one calibration serves every workload
        long = max(64, min(100_000, cfg.engine.max_model_len - 4096, int(kv_tokens / 3.5)))
        widest = max(q["shared_prefix_tokens"] or q["prompt_tokens"] for q in questions)
        lengths = {n for n in (4096, 16384, 32768, 65536) if n < long} | {long}
        if widest <= cfg.engine.max_model_len - 64:
            lengths.add(widest)
        table = measure_prefill(engine, sorted(lengths), vocab)
        fitted = {"prefill_s": table}
        if args.calibrate:
            fitted.update(fit_prefill(table))
            steps = (16, 16 + args.calibrate_steps)
            points = measure_decode(engine, decode_points(long, kv_tokens, steps[1]), vocab,
                                    steps)
            fitted.update(fit_decode(points, 32, sum(steps) / 2))
            fitted["decode_points"] = [dataclasses.asdict(p) for p in points]
    fitted.update(kv_tokens=kv_tokens, block_tokens=block)
    for key in ("prefill_tok_s", "attn_tokens", "step_s", "step_seq_s", "step_ctx_s",
                "step_shared_s"):
        if key in fitted:
            setattr(cfg.cost, key, fitted[key])
    if bandwidth is None:
        return None, fitted
    wbytes, kvbytes = engine_dtypes(engine)
    sizes = model_bytes(cfg.model.path, wbytes, kvbytes)
    fitted.update(sizes, bandwidth=bandwidth["bandwidth"])
    if args.calibrate and not args.calibration:
        atomic_write_json(Path(args.out or "/tmp/lcr-bench") / "calibration.json", fitted)
    return Physics(sizes["weight_bytes"], sizes["kv_bytes_per_token"], bandwidth["bandwidth"],
                   table), fitted


def run_bench(args) -> int:
    from lcr.calibrate import cost_toml, measure_bandwidth

    cfg = bench_config(args)
    root = Path(args.out or "/tmp/lcr-bench")
    root.mkdir(parents=True, exist_ok=True)
    if cfg.model.path == "tiny":
        from lcr.tinymodel import resolve

        cfg.model.path = resolve(cfg.model.path)
    if cfg.model.path in ("", "llama31-8b-shapes"):
        cfg.model.path = str(dummy_model_dir(root))
        cfg.engine.load_format, cfg.engine.skip_tokenizer_init = "dummy", True
    cfg.sampling.ignore_eos = True
    probe = [{"key": "", "question_id": "", "document_set_id": ""}]
    cfg.sampling.max_new_tokens = output_lengths(args.output_tokens or
                                                 str(cfg.sampling.max_new_tokens), probe)
    questions = workload(args, cfg)
    units = make_units(questions, cfg.sampling.seeds, cfg.sampling.n)
    if args.output_tokens:
        output_lengths(args.output_tokens, units)
    base = RunDir(root / "workload")
    base.path.mkdir(parents=True, exist_ok=True)
    vocab = json.loads((Path(cfg.model.path) / "config.json").read_text())["vocab_size"]
    write_workload(base, questions, vocab)
    first_of_set = {q["document_set_id"]: q for q in questions}.values()
    print(f"workload: {len(questions)} questions over {len(first_of_set)} sets, "
          f"{sum(q['shared_prefix_tokens'] for q in first_of_set):,} unique document tokens, "
          f"{len(units)} units, answers {args.output_tokens or cfg.sampling.max_new_tokens}",
          file=sys.stderr)
    results = {"settings": dataclasses.asdict(cfg.engine), "scale": args.scale,
               "shards": args.shards, "output_tokens": args.output_tokens,
               "seeds": cfg.sampling.seeds, "runs": [], "engines": []}
    if args.layouts:
        results["layouts"] = run_layouts(root, base, cfg, questions, args.layouts.split(","))
        print(json.dumps(results["layouts"], indent=1))
        if not args.policies:
            _save(args, results)
            return 0
    bandwidth = None if args.no_floor or args.calibration else measure_bandwidth()
    for engine_set in args.engine_set or [""]:
        ecfg = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine),
                                   cost=dataclasses.replace(cfg.cost))
        for text in filter(None, engine_set.split(";")):
            apply_override(ecfg, f"engine.{text}")
        validate(ecfg)
        engine, start_s, state = start_engine(ecfg, root)
        phys, fitted = calibrate_engine(engine, ecfg, questions, vocab, args, bandwidth)
        name = engine_set or "defaults"
        results["engines"].append({"engine_set": name, "engine_start_s": start_s,
                                   "compile_cache": state, **fitted})
        print(f"engine ({name}): started in {start_s} s with a {state} compile cache; KV cache "
              f"{ecfg.cost.kv_tokens:,} tokens", file=sys.stderr, flush=True)
        if args.calibrate:
            print(cost_toml(fitted))
        for policy in filter(None, args.policies.split(",")):
            r = run_policy(root, base, ecfg, questions, policy, args.shards, engine, units, phys)
            r.update(engine_set=name, engine_start_s=start_s,
                     balance=round(r["makespan_s"] / (r["gpu_s"] / args.shards), 3))
            results["runs"].append(r)
        del engine
        import gc

        gc.collect()
    print(bench_table(results))
    _save(args, results)
    return 0


def _save(args, results: dict) -> None:
    if args.json:
        atomic_write_json(args.json, results)


def bench_table(results: dict) -> str:
    lines = [f"{'engine settings':<28}{'policy':>13}{'GPU-s':>8}{'model s':>8}{'model/GPU':>10}"
             f"{'window':>7}{'hit':>6}{'decode t/s':>11}{'floor pre+dec':>15}{'x floor':>8}"]
    for r in results["runs"]:
        fl = (f"{r['floor_prefill_s']:.1f}+{r['floor_decode_s']:.1f}" if "floor_s" in r
              else "-")
        lines.append(f"{r['engine_set']:<28}{r['policy']:>13}{r['gpu_s']:>8.1f}"
                     f"{r['predicted_s']:>8.1f}{r['predicted_ratio']:>10.2f}{r['window']:>7}"
                     f"{r['cache_hit']:>6.2f}{r['decode_tok_s']:>11,.0f}{fl:>15}"
                     f"{r.get('floor_ratio', float('nan')):>8.2f}")
    ds = {r["engine_set"]: r["gpu_s"] for r in results["runs"] if r["policy"] == "document_set"}
    for r in results["runs"]:
        if r["policy"] != "document_set" and r["engine_set"] in ds:
            ratio = r["gpu_s"] / ds[r["engine_set"]]
            lines.append(f"{r['engine_set']}: document_set is {ratio:.2f}x cheaper than "
                         f"{r['policy']}")
    for e in results.get("engines", []):
        lines.append(f"engine {e['engine_set']}: start {e['engine_start_s']} s "
                     f"({e['compile_cache']} compile cache); " + json.dumps(
                         {k: v for k, v in e.items() if k not in ("engine_set", "decode_points")}))
    return "\n".join(lines)
