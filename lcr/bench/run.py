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
import getpass
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from lcr.bench.layouts import run_layouts
from lcr.bench.policies import POLICIES, run_policy
from lcr.bench.workload import dummy_model_dir, output_lengths, workload, write_workload
from lcr.config import Config, ConfigError, apply_override, load_config, validate
from lcr.cost import Physics
from lcr.io import atomic_write_json
from lcr.plan import make_units
from lcr.rundir import RunDir


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


def default_root() -> Path:
    """The work folder: per user, so that users of one host do not share one."""
    return Path(tempfile.gettempdir()) / f"lcr-bench-{getpass.getuser()}"


def check_device(cfg: Config) -> None:
    """An 8B-shaped model needs a GPU: refuse the CPU build unless the model is the tiny one."""
    from vllm.platforms import current_platform

    if cfg.model.path != "tiny" and current_platform.is_cpu():
        model = cfg.model.path or "the Llama-3.1-8B shapes"
        raise ConfigError(
            f"lcr bench: this machine has no GPU (vLLM's CPU build): {model} would run for "
            "hours on the CPU. Run it on a GPU node, or add --set model.path=tiny (with "
            "--scale 0.05) for a smoke run of the machinery")


def start_engine(cfg: Config, root: Path):
    """The engine, its start time and whether the compile cache was cold or warm."""
    from lcr.engine import Engine, compile_cache_dir

    cache = compile_cache_dir(cfg.engine, str(root))
    state = "warm" if cache and any(Path(cache).glob("torch_compile_cache/*")) else "cold"
    t0 = time.time()
    engine = Engine(cfg.model.path, cfg.engine, cache_dir=cache)
    # price this engine's steps with the attention it really runs
    cfg.engine.shared_prefix_attention = engine.shared_prefix == "on"
    return engine, round(time.time() - t0, 1), state


def calibrate_engine(engine, cfg: Config, questions: list[dict], vocab: int, args,
                     bandwidth: dict | None, root: Path,
                     first: dict | None = None) -> tuple[Physics | None, dict]:
    """Prefill table (always: the floor needs it), decode steps and the fit (--calibrate), or
    all of it from an earlier run's calibration.json (--calibration FILE, same machine).
    Decode constants are fitted for the attention the engine runs (stock or shared-prefix).
    Later engines of one bench reuse the `first` engine's prefill table and bandwidth (prefill
    runs the same kernels whatever the decode attention) and fit nothing: their constants
    stay those of the job file."""
    from lcr.bench.calibrate import (
        COST_TERMS,
        decode_fit,
        decode_points,
        engine_dtypes,
        fit_prefill,
        load_calibration,
        measure_decode,
        measure_prefill,
    )
    from lcr.fit import model_sizes

    kv_tokens, block = engine.kv_capacity()
    cfg.cost.kv_tokens, cfg.cost.block_tokens = kv_tokens, block
    wbytes, kvbytes = engine_dtypes(engine)
    sizes = model_sizes(cfg.model.path, dtype_bytes=wbytes, kv_dtype_bytes=kvbytes)
    if first is not None:
        fitted = {k: first[k] for k in ("prefill_s", "prefill_tok_s", "attn_tokens")
                  if k in first}
        fitted["reused_from_first_engine"] = True
        table = {int(k): v for k, v in fitted["prefill_s"].items()}
        bandwidth = {"bandwidth": first["bandwidth"]} if "bandwidth" in first else bandwidth
    elif args.calibration:
        fitted = load_calibration(args.calibration, args.calibrate_steps)
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
            fitted.update(decode_fit(points, steps, cfg.engine.shared_prefix_attention is True,
                                     sizes.kv_bytes_per_token,
                                     bandwidth["bandwidth"] if bandwidth else 0.0))
            fitted["decode_points"] = [dataclasses.asdict(p) for p in points]
            fitted["decode_steps"] = list(steps)
    fitted.update(kv_tokens=kv_tokens, block_tokens=block)
    for key in COST_TERMS:
        if key in fitted:
            setattr(cfg.cost, key, fitted[key])
    if bandwidth is None:
        return None, fitted
    fitted.update(weight_bytes=sizes.step_weight_bytes,
                  kv_bytes_per_token=sizes.kv_bytes_per_token, bandwidth=bandwidth["bandwidth"])
    if not args.calibration and first is None:  # what was measured, for --calibration
        atomic_write_json(root / "calibration.json", fitted)
    return Physics(sizes.step_weight_bytes, sizes.kv_bytes_per_token, bandwidth["bandwidth"],
                   table), fitted


def _policies(text: str) -> list[str]:
    chosen = [p for p in text.split(",") if p]
    unknown = [p for p in chosen if p not in POLICIES]
    if unknown:
        raise ConfigError(f"--policies: unknown {', '.join(unknown)}; valid: "
                          f"{', '.join(POLICIES)}")
    return chosen


@dataclasses.dataclass
class Workload:
    """One answer-length setting of the bench's questions: its units and budget."""

    spec: str  # --output-tokens item: "N" or "lognormal:MEDIAN:SIGMA:MAX"
    budget: int  # max_new_tokens (what the window reserves)
    units: list[dict]


def prepare_bench(args) -> tuple[Config, Path, list[dict], list[Workload], RunDir, int]:
    """The config, work folder, questions, workloads (one per --output-tokens item) and the
    run directory holding the prompts of a bench."""
    cfg = bench_config(args)
    if not args.predict:  # --predict starts no engine
        check_device(cfg)
    root = Path(args.out) if args.out else default_root()
    root.mkdir(parents=True, exist_ok=True)
    if cfg.model.path == "tiny":
        from lcr.tinymodel import resolve

        cfg.model.path = resolve(cfg.model.path)
    if cfg.model.path in ("", "llama31-8b-shapes"):
        cfg.model.path = str(dummy_model_dir(root))
        cfg.engine.load_format, cfg.engine.skip_tokenizer_init = "dummy", True
    cfg.sampling.ignore_eos = True
    specs = [x for x in (args.output_tokens or str(cfg.sampling.max_new_tokens)).split(",") if x]
    probe = [{"key": "", "question_id": "", "document_set_id": ""}]
    cfg.sampling.max_new_tokens = max(output_lengths(x, probe) for x in specs)
    questions = workload(args, cfg)  # prompts cut to leave room for the largest budget
    workloads = []
    for spec in specs:
        units = make_units(questions, cfg.sampling.seeds, cfg.sampling.n)
        workloads.append(Workload(spec, output_lengths(spec, units), units))
    base = RunDir(root / "workload")
    base.path.mkdir(parents=True, exist_ok=True)
    vocab = json.loads((Path(cfg.model.path) / "config.json").read_text())["vocab_size"]
    write_workload(base, questions, vocab)
    first_of_set = {q["document_set_id"]: q for q in questions}.values()
    print(f"workload: {len(questions)} questions over {len(first_of_set)} sets, "
          f"{sum(q['shared_prefix_tokens'] for q in first_of_set):,} unique document tokens, "
          f"{len(workloads[0].units)} units, answers {', '.join(specs)}", file=sys.stderr)
    return cfg, root, questions, workloads, base, vocab


def _variant(cfg: Config, engine_set: str, policies: list[str]) -> tuple[Config, list[str]]:
    """One --engine-set: the config with its [engine] overrides, and the policies it runs."""
    ecfg = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine),
                               cost=dataclasses.replace(cfg.cost))
    mine = policies
    for text in filter(None, engine_set.split(";")):
        if text.startswith("policies="):  # what this engine runs, instead of --policies
            mine = _policies(text.split("=", 1)[1])
            continue
        apply_override(ecfg, f"engine.{text}")
    validate(ecfg)
    return ecfg, mine


def predict_bench(args, policies: list[str]) -> int:
    """--predict: no engine. Each engine set's policies priced by the cost model (and the
    floor) with an earlier calibration's constants, on any machine. "auto" attention is
    priced as the calibrated engine ran it."""
    from lcr.bench.calibrate import COST_TERMS, load_calibration
    from lcr.bench.policies import predict_policy

    if not args.calibration:
        raise ConfigError("lcr bench: --predict needs --calibration FILE: the calibration.json "
                          "of an earlier --calibrate run on the card to predict for")
    cal = load_calibration(args.calibration, args.calibrate_steps)
    cfg, _root, questions, workloads, _base, _vocab = prepare_bench(args)
    phys = None
    if all(k in cal for k in ("weight_bytes", "kv_bytes_per_token", "bandwidth")):
        phys = Physics(cal["weight_bytes"], cal["kv_bytes_per_token"], cal["bandwidth"],
                       {int(k): v for k, v in cal["prefill_s"].items()})
    results = {"predicted_only": True, "calibration": args.calibration, "runs": []}
    lines = [f"{'engine settings':<28}{'attention':>14}{'answers':>9}{'policy':>13}"
             f"{'model s':>9}{'prefill':>9}{'decode':>8}{'window':>7}{'floor s':>9}"]
    for engine_set in args.engine_set or [""]:
        ecfg, mine = _variant(cfg, engine_set, policies)
        setting = ecfg.engine.shared_prefix_attention
        spa = setting is True or (setting == "auto" and "spa_step_s" in cal)
        ecfg.engine.shared_prefix_attention = spa  # what the cost model prices
        for key in (*COST_TERMS, "kv_tokens", "block_tokens"):
            if key in cal:
                setattr(ecfg.cost, key, cal[key])
        name, attention = engine_set or "defaults", "shared_prefix" if spa else "stock"
        for w in workloads:
            wcfg = dataclasses.replace(ecfg, sampling=dataclasses.replace(
                ecfg.sampling, max_new_tokens=w.budget))
            for policy in mine:
                if policy == "naive":
                    print(f"  naive skipped on engine ({name}): the cost model replays lcr's "
                          "window, not one generate call", file=sys.stderr)
                    continue
                r = predict_policy(wcfg, questions, policy, args.shards, w.units, phys)
                r.update(engine_set=name, attention=attention, answers=w.spec)
                results["runs"].append(r)
                lines.append(f"{name:<28}{attention:>14}{w.spec:>9}{policy:>13}"
                             f"{r['predicted_s']:>9.1f}{r['predicted_prefill_s']:>9.1f}"
                             f"{r['predicted_decode_s']:>8.1f}{r['window']:>7}"
                             f"{_num(r.get('floor_s'), '.1f'):>9}")
    print("\n".join(lines))
    _save(args, results)
    return 0


def run_bench(args) -> int:
    from lcr.bench.calibrate import cost_toml, measure_bandwidth

    if args.attention_check:
        from lcr.shared_prefix.check import run_checks

        return run_checks(args.json)
    policies = _policies(args.policies)
    if args.predict:
        return predict_bench(args, policies)
    if args.greedy:  # its weights are set by a function sent to the engine's workers
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    cfg, root, questions, workloads, base, vocab = prepare_bench(args)
    results = {"settings": dataclasses.asdict(cfg.engine), "scale": args.scale,
               "sets": args.sets, "shards": args.shards, "output_tokens": args.output_tokens,
               "seeds": cfg.sampling.seeds, "runs": [], "engines": []}
    if args.layouts:
        results["layouts"] = run_layouts(root, base, cfg, questions, args.layouts.split(","))
        print(json.dumps(results["layouts"], indent=1))
        if not policies:
            _save(args, results)
            return 0
    bandwidth = None if args.no_floor or args.calibration else measure_bandwidth()
    for engine_set in args.engine_set or [""]:
        ecfg, mine = _variant(cfg, engine_set, policies)
        engine, start_s, state = start_engine(ecfg, root)
        first = results["engines"][0] if results["engines"] else None
        phys, fitted = calibrate_engine(engine, ecfg, questions, vocab, args, bandwidth, root,
                                        first)
        name = engine_set or "defaults"
        attention = "shared_prefix" if ecfg.engine.shared_prefix_attention else "stock"
        results["engines"].append({"engine_set": name, "engine_start_s": start_s,
                                   "compile_cache": state, "attention": attention,
                                   "attention_why": engine.shared_prefix, **fitted})
        print(f"engine ({name}): started in {start_s} s with a {state} compile cache; KV cache "
              f"{ecfg.cost.kv_tokens:,} tokens; attention {attention} ({engine.shared_prefix})",
              file=sys.stderr, flush=True)
        if args.calibrate:
            print(cost_toml(fitted))
        for w in workloads:
            wcfg = dataclasses.replace(ecfg, sampling=dataclasses.replace(
                ecfg.sampling, max_new_tokens=w.budget))
            for policy in mine:
                if policy == "naive" and attention != "stock":
                    print(f"  naive skipped on engine ({name}): the peer runs the stock backend"
                          " (add --engine-set shared_prefix_attention=false)", file=sys.stderr)
                    continue
                r = run_policy(root, base, wcfg, questions, policy, args.shards, engine,
                               w.units, phys)
                r.update(engine_set=name, engine_start_s=start_s, attention=attention,
                         answers=w.spec,
                         balance=round(r["makespan_s"] / (r["gpu_s"] / args.shards), 3))
                results["runs"].append(r)
        if args.greedy:
            from lcr.bench.greedy import greedy_check

            results.setdefault("greedy", []).append(
                greedy_check(engine, base, questions, args.greedy, root, attention))
        del engine
        import gc

        gc.collect()
    print(bench_table(results))
    _save(args, results)
    return 0


def _save(args, results: dict) -> None:
    if args.json:
        atomic_write_json(args.json, results)


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def bench_table(results: dict) -> str:
    lines = [f"{'engine settings':<28}{'attention':>14}{'answers':>9}{'policy':>13}{'GPU-s':>8}"
             f"{'model s':>8}"
             f"{'model/GPU':>10}{'window':>7}{'hit':>6}{'decode t/s':>11}{'floor pre+dec':>15}"
             f"{'x floor':>8}"]
    for r in results["runs"]:
        fl = (f"{r['floor_prefill_s']:.1f}+{r['floor_decode_s']:.1f}" if "floor_s" in r
              else "-")
        lines.append(f"{r['engine_set']:<28}{r.get('attention', ''):>14}"
                     f"{r.get('answers') or '':>9}{r['policy']:>13}"
                     f"{r['gpu_s']:>8.1f}{_num(r['predicted_s'], '.1f'):>8}"
                     f"{_num(r['predicted_ratio'], '.2f'):>10}{_num(r['window'], 'd'):>7}"
                     f"{r['cache_hit']:>6.2f}{r['decode_tok_s']:>11,.0f}{fl:>15}"
                     f"{_num(r.get('floor_ratio'), '.2f'):>8}")
    lines += comparisons(results["runs"])
    for g in results.get("greedy", []):
        for key, what in (("batch_vs_alone", "batched vs alone, same engine"),
                          ("agreement", "vs the other attention, batched"),
                          ("alone_agreement", "vs the other attention, alone")):
            if key in g:
                a = g[key]
                lines.append(
                    f"greedy tokens, {g['attention']} {what}: {a['agree']}/{a['tokens']} agree "
                    f"({a['share']:.2%}) over {g['sequences']} sequences of {g['tokens_each']} "
                    f"tokens; same history: {a['same_history_share']:.2%} of "
                    f"{a['same_history_steps']} steps")
    for e in results.get("engines", []):
        lines.append(f"engine {e['engine_set']}: start {e['engine_start_s']} s "
                     f"({e['compile_cache']} compile cache); " + json.dumps(
                         {k: v for k, v in e.items() if k not in ("engine_set", "decode_points")}))
    return "\n".join(lines)


def comparisons(runs: list[dict]) -> list[str]:
    """Per answer-length workload: each document_set run against the peer (naive) and against
    the stock backend with the same window; other policies against document_set."""
    out = []
    for spec in dict.fromkeys(r.get("answers") for r in runs):
        mine = [r for r in runs if r.get("answers") == spec]
        naive = next((r for r in mine if r["policy"] == "naive"), None)
        stock = next((r for r in mine if r["policy"] == "document_set"
                      and r.get("attention") == "stock"), None)
        ds = {r["engine_set"]: r for r in mine if r["policy"] == "document_set"}
        for r in mine:
            label = (f"[{spec} tokens] {r['policy']} on engine ({r['engine_set']}, "
                     f"{r.get('attention')} attention)")
            if r["policy"] == "document_set":
                if naive:
                    out.append(f"{label}: {naive['gpu_s'] / r['gpu_s']:.2f}x faster than naive "
                               f"(the peer: {naive['gpu_s']:.1f} s)")
                if stock and stock is not r:
                    out.append(f"{label}: {stock['gpu_s'] / r['gpu_s']:.2f}x faster than the "
                               f"stock backend with the same window ({stock['gpu_s']:.1f} s)")
            elif r["engine_set"] in ds and r["policy"] != "naive":
                ratio = r["gpu_s"] / ds[r["engine_set"]]["gpu_s"]
                out.append(f"{label}: document_set is {ratio:.2f}x cheaper")
    return out
