"""`lcr bench`: engine performance on an AA-LCR-shaped workload, through the generate code path.

    lcr bench jobs/bench-llama31-8b.toml --scale 0.33 --shards 4
    lcr bench jobs/bench-llama31-8b.toml --policies document_set --engine-set "kv_cache_dtype='fp8'"

Builds 30 document sets with the dataset card's questions-per-set distribution (or fewer and
shorter with --scale), writes them as a prepared run (token-id prompts), plans each sharding
policy, and runs every shard through `lcr.generate.run_units` on one engine (prefix cache reset
between shards, as if each shard had its own engine). GPU-seconds are the sum of shard times,
the makespan their maximum. `no_reuse` defeats the prefix cache with a unique first token per
request. The floor is the unique prefill tokens at the measured single-prompt rate plus decode.
With Llama-3.1-8B shapes and `load_format = "dummy"` no weights are needed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from lcr.config import Config, _apply, load_config, parse_override
from lcr.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from lcr.plan import assign, make_units, units_cost
from lcr.rundir import RunDir

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
    (d / "config.json").write_text(json.dumps(LLAMA31_8B, indent=1))
    return d


def write_workload(rd: RunDir, questions: list[dict], vocab: int, seed: int = 0) -> None:
    """questions.jsonl + prompts/: each set's documents once, each question its own suffix."""
    rng = np.random.default_rng(seed)
    lo, hi = min(1000, vocab // 4), vocab - 300
    docs: dict[str, np.ndarray] = {}
    (rd.path / "prompts").mkdir(parents=True, exist_ok=True)
    for i, q in enumerate(questions):
        shared = q["shared_prefix_tokens"]
        if q["document_set_id"] not in docs:
            docs[q["document_set_id"]] = rng.integers(lo, hi, size=shared, dtype=np.int32)
        ids = np.concatenate([
            np.array([lo - 1], dtype=np.int32), docs[q["document_set_id"]][: shared - 1],
            rng.integers(lo, hi, size=q["prompt_tokens"] - max(shared, 1), dtype=np.int32),
        ])
        q["prompt_file"] = f"prompts/p-{i:04d}.npy"
        np.save(rd.path / q["prompt_file"], ids)
        import hashlib

        q["prompt_sha256"] = hashlib.sha256(ids.tobytes()).hexdigest()
    atomic_write_jsonl(rd.questions_file, questions)


class NoReuse:
    """Wraps the engine so that no two requests share a prefix (unique first token each)."""

    def __init__(self, engine):
        self.engine, self.n = engine, 0

    def params(self, *a, **k):
        return self.engine.params(*a, **k)

    def generate(self, prompts, params):
        out = []
        for ids in prompts:
            self.n += 1
            out.append([1 + self.n % 100] + list(ids[1:]))
        return self.engine.generate(out, params)


def fresh_run_dir(path: Path, base: RunDir, cfg: Config) -> RunDir:
    """An empty run directory sharing the workload's prompts and questions, with `cfg`."""
    from lcr.rundir import config_toml

    rd = RunDir(path)
    if rd.path.exists():
        shutil.rmtree(rd.path)
    rd.path.mkdir(parents=True)
    (rd.path / "prompts").symlink_to((base.path / "prompts").resolve())
    shutil.copy(base.questions_file, rd.questions_file)
    atomic_write_text(rd.config_file, config_toml(cfg))
    return rd


def run_policy(root: Path, base: RunDir, cfg: Config, questions: list[dict], policy: str,
               shards: int, engine) -> dict:
    """All shards of one policy on one engine; returns per-shard and total numbers."""
    from lcr.generate import run_units

    rd = fresh_run_dir(root / policy, base, cfg)
    qinfo = {q["question_id"]: q for q in questions}
    units = make_units(questions, cfg.sampling.seeds, cfg.sampling.n)
    assigned = assign(units, shards, "document_set" if policy == "no_reuse" else policy, qinfo,
                      cfg.cost, cfg.sampling.max_new_tokens)
    wrapped = NoReuse(engine) if policy == "no_reuse" else engine
    times, infos = [], []
    for k, shard_units in enumerate(assigned):
        engine.llm.reset_prefix_cache()
        t0 = time.time()
        info = run_units(rd, cfg, k, None, shard_units, rd.generate_file(k),
                         engine_factory=lambda _cfg: wrapped)
        times.append(time.time() - t0)
        infos.append(info)
        est = units_cost(shard_units, qinfo, cfg.cost, cfg.sampling.max_new_tokens).seconds
        print(f"  {policy:>12} shard {k}: {times[-1]:7.1f} s (model {est:6.1f} s), "
              f"cache hit {info['cache_hit']:.2f}", file=sys.stderr, flush=True)
    prompt = sum(i["prompt_tokens"] for i in infos)
    cached = sum(i["cached_tokens"] for i in infos)
    output = sum(i["output_tokens"] for i in infos)
    gpu_s = sum(times)
    return {"policy": policy, "gpu_s": round(gpu_s, 2), "makespan_s": round(max(times), 2),
            "shard_s": [round(t, 2) for t in times], "cache_hit": round(cached / prompt, 4),
            "prefill_tok_s": round((prompt - cached) / gpu_s, 1),
            "decode_tok_s": round(output / gpu_s, 1), "prompt_tokens": prompt,
            "cached_tokens": cached, "output_tokens": output}


def measure_floor(engine, cfg: Config, questions: list[dict], vocab: int) -> dict:
    """Single-prompt prefill rates (32K and the workload's mean length) and one set's decode."""
    rng = np.random.default_rng(1)
    lo, hi = min(1000, vocab // 4), vocab - 300
    mean_len = int(np.mean([q["shared_prefix_tokens"] or q["prompt_tokens"] for q in questions]))
    out = {}
    one = dataclasses.replace(cfg.sampling, max_new_tokens=1, ignore_eos=True)
    for length in sorted({min(32768, mean_len), mean_len}):
        engine.llm.reset_prefix_cache()
        ids = rng.integers(lo, hi, size=length).tolist()
        engine.generate([ids], [engine.params(one)])  # warm-up for this shape
        engine.llm.reset_prefix_cache()
        ids = rng.integers(lo, hi, size=length).tolist()
        t0 = time.time()
        engine.generate([ids], [engine.params(one)])
        out[f"prefill_{length}_s"] = round(time.time() - t0, 3)
    # decode: 4 questions of a set sharing a cached prefix, max_new_tokens each
    prefix = rng.integers(lo, hi, size=mean_len).tolist()
    engine.generate([prefix], [engine.params(one)])
    batch = [prefix + rng.integers(lo, hi, size=64).tolist() for _ in range(4)]
    t0 = time.time()
    engine.generate(batch, [engine.params(cfg.sampling)] * 4)
    out["set_decode_s"] = round(time.time() - t0, 3)
    out["mean_set_tokens"] = mean_len
    return out


def floor_seconds(questions: list[dict], cfg: Config, floor: dict) -> float:
    """Unique prefill tokens at the measured single-prompt rate, plus each set's decode."""
    mean_len = floor["mean_set_tokens"]
    rate = mean_len / floor[f"prefill_{mean_len}_s"]
    sets: dict[str, int] = {}
    unique = 0
    for q in questions:
        if q["document_set_id"] not in sets:
            sets[q["document_set_id"]] = q["shared_prefix_tokens"]
            unique += q["shared_prefix_tokens"]
        unique += q["prompt_tokens"] - q["shared_prefix_tokens"]
    decode = len(sets) * floor["set_decode_s"] * len(cfg.sampling.seeds) * cfg.sampling.n
    return unique / rate + decode


def calibrate(floor: dict) -> dict:
    """Fit the planner's prefill constants to the two measured single-prompt prefills."""
    keys = sorted((int(k.split("_")[1]), v) for k, v in floor.items()
                  if k.startswith("prefill_"))
    if len(keys) < 2:
        return {}
    (l1, t1), (l2, t2) = keys[0], keys[-1]
    a = np.array([[l1, l1 * l1], [l2, l2 * l2]], dtype=float)
    u, v = np.linalg.solve(a, np.array([t1, t2]))
    if u <= 0 or v <= 0:
        return {}
    return {"prefill_tok_s": round(1 / u, 1), "attn_tokens": round(u / v, 1)}


def run_layouts(root: Path, base: RunDir, cfg: Config, questions: list[dict],
                layouts: list[str]) -> list[dict]:
    """The whole workload on one node as R engines of T GPUs ("RxT"), via run_shard's replicas."""
    from lcr.generate import run_shard
    from lcr.plan import make_plan

    out = []
    for layout in layouts:
        r, t = (int(x) for x in layout.lower().split("x"))
        lcfg = dataclasses.replace(cfg, engine=dataclasses.replace(
            cfg.engine, replicas=r, tensor_parallel_size=t), shards=dataclasses.replace(
            cfg.shards, count=1))
        lcfg.slurm.gpus_per_node = r * t
        rd = fresh_run_dir(root / f"layout-{r}x{t}", base, lcfg)
        atomic_write_json(rd.plan_file, make_plan(questions, lcfg))
        t0 = time.time()
        info = run_shard(rd.path, 0, parts=r if r > 1 else None)
        wall = time.time() - t0
        parts = info.get("parts") or [info]
        start = max(p.get("engine_start_s", 0.0) for p in parts)
        run_s = max(p["elapsed_s"] - p.get("engine_start_s", 0.0) for p in parts)
        out.append({"layout": f"{r}x{t}", "wall_s": round(wall, 1),
                    "engine_start_s": round(start, 1), "run_s": round(run_s, 1),
                    "part_run_s": [round(p["elapsed_s"] - p.get("engine_start_s", 0), 1)
                                   for p in parts],
                    "cache_hit": info.get("cache_hit")})
        print(f"  layout {r}x{t}: {out[-1]}", file=sys.stderr, flush=True)
    return out


def bench_config(args) -> Config:
    cfg = load_config(args.config, [])
    for text in args.overrides:
        _apply(cfg, parse_override(text), f"--set {text}")
    return cfg


def run_bench(args) -> int:
    from lcr.engine import Engine
    from lcr.shape import aalcr_shaped

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
    if args.run_dir:
        from lcr.prepare import load_prepared

        keep = ("question_id", "document_set_id", "document_category", "prompt_tokens",
                "shared_prefix_tokens", "status")
        questions = [{k: q[k] for k in keep} for q in load_prepared(RunDir(args.run_dir))
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
    base = RunDir(root / "workload")
    base.path.mkdir(parents=True, exist_ok=True)
    vocab = json.loads((Path(cfg.model.path) / "config.json").read_text())["vocab_size"]
    write_workload(base, questions, vocab)
    first_of_set = {q["document_set_id"]: q for q in questions}.values()
    print(f"workload: {len(questions)} questions over {len(first_of_set)} sets, "
          f"{sum(q['shared_prefix_tokens'] for q in first_of_set):,} unique document tokens, "
          f"{cfg.sampling.max_new_tokens} output tokens per unit", file=sys.stderr)
    results = {"settings": dataclasses.asdict(cfg.engine), "scale": args.scale,
               "shards": args.shards, "runs": []}
    if args.layouts:
        results["layouts"] = run_layouts(root, base, cfg, questions, args.layouts.split(","))
        print(json.dumps(results["layouts"], indent=1))
        if args.json:
            atomic_write_json(args.json, results)
        if not args.policies:
            return 0
    engine_sets = args.engine_set or [""]
    for engine_set in engine_sets:
        ecfg = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine))
        for text in filter(None, engine_set.split(";")):
            _apply(ecfg, parse_override(f"engine.{text}"), f"--engine-set {text}")
        t0 = time.time()
        engine = Engine(ecfg.model.path, ecfg.engine)
        start_s = round(time.time() - t0, 1)
        floor = measure_floor(engine, ecfg, questions, vocab)
        floor_s = floor_seconds(questions, ecfg, floor)
        for policy in args.policies.split(","):
            r = run_policy(root, base, ecfg, questions, policy, args.shards, engine)
            r.update(engine_set=engine_set or "defaults", engine_start_s=start_s,
                     floor_s=round(floor_s, 2), floor_ratio=round(r["gpu_s"] / floor_s, 3),
                     balance=round(r["makespan_s"] / (r["gpu_s"] / args.shards), 3))
            results["runs"].append(r)
        results.setdefault("floor", []).append({"engine_set": engine_set or "defaults", **floor,
                                                "calibrated": calibrate(floor)})
        del engine
        import gc

        gc.collect()
    print(bench_table(results))
    if args.json:
        atomic_write_json(args.json, results)
    return 0


def bench_table(results: dict) -> str:
    lines = [f"{'engine settings':<34}{'policy':>13}{'GPU-s':>9}{'makespan':>10}{'balance':>8}"
             f"{'hit':>6}{'prefill t/s':>12}{'decode t/s':>11}{'x floor':>8}"]
    for r in results["runs"]:
        lines.append(f"{r['engine_set']:<34}{r['policy']:>13}{r['gpu_s']:>9.1f}"
                     f"{r['makespan_s']:>10.1f}{r['balance']:>8.2f}{r['cache_hit']:>6.2f}"
                     f"{r['prefill_tok_s']:>12,.0f}{r['decode_tok_s']:>11,.0f}"
                     f"{r['floor_ratio']:>8.2f}")
    ds = {r["engine_set"]: r["gpu_s"] for r in results["runs"] if r["policy"] == "document_set"}
    for r in results["runs"]:
        if r["policy"] != "document_set" and r["engine_set"] in ds:
            ratio = r["gpu_s"] / ds[r["engine_set"]]
            lines.append(f"{r['engine_set']}: document_set is {ratio:.2f}x cheaper than "
                         f"{r['policy']}")
    for f in results.get("floor", []):
        lines.append(f"floor measurements ({f['engine_set']}): " + json.dumps(f))
    return "\n".join(lines)


