"""Shard planner: whole document sets per shard, packed largest-first by an engine cost model.

    plan = make_plan(questions, cfg)              # the plan.json dict
    table = plan_table(plan, questions, cfg)      # what `lcr plan` prints

Questions of one document set share a ~100K-token prefix; a shard holding the whole set
prefills it once and serves the rest from vLLM's prefix cache. Only when there are more
shards than sets is a set split, by seed first, then by question, then by sample.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter

from lcr.config import Config, ConfigError
from lcr.cost import capacity_from, pack, replica_parts, set_demands, units_cost
from lcr.fit import FitError, check_window
from lcr.io import atomic_write_json, atomic_write_text
from lcr.overrides import fixed_differences, sealed_settings
from lcr.provenance import config_toml
from lcr.rundir import RunDir
from lcr.units import by_set, plan_units, unit_key


def make_units(questions: list[dict], seeds: list[int], n: int) -> list[dict]:
    """Every (question, seed, sample) unit, in question order."""
    return [
        {
            "key": unit_key(q["question_id"], seed, sample),
            "question_id": q["question_id"],
            "seed": seed,
            "sample": sample,
            "document_set_id": q["document_set_id"],
        }
        for q in questions
        for seed in seeds
        for sample in range(n)
    ]


def _split(group: list[dict]) -> list[list[dict]]:
    """Halve a group of one set's units: by seed first, then by question, then by sample."""
    for field in ("seed", "question_id", "sample"):
        values = sorted({u[field] for u in group}, key=str)
        if len(values) > 1:
            first = set(values[: len(values) // 2])
            return [[u for u in group if u[field] in first],
                    [u for u in group if u[field] not in first]]
    return [group]


def assign(units: list[dict], count: int, policy: str, qinfo: dict, cfg: Config,
           seed: int = 0) -> list[list[dict]]:
    """Units -> `count` shards under a policy: document_set (default), round_robin,
    contiguous or random (the last three ignore document sets; for comparison)."""
    if policy == "round_robin":
        return [units[i::count] for i in range(count)]
    if policy == "contiguous":
        size, extra = divmod(len(units), count)
        out, start = [], 0
        for i in range(count):
            end = start + size + (1 if i < extra else 0)
            out.append(units[start:end])
            start = end
        return out
    if policy == "random":
        shuffled = list(units)
        random.Random(seed).shuffle(shuffled)
        return [shuffled[i::count] for i in range(count)]
    if policy != "document_set":
        raise ValueError(f"unknown sharding policy {policy!r}")

    def cost_of(group):
        return units_cost(group, qinfo, cfg).seconds

    items = list(by_set(units).values())
    while len(items) < count:
        splittable = [g for g in items if len(_split(g)) > 1]
        if not splittable:
            break
        biggest = max(splittable, key=lambda g: (cost_of(g), g[0]["key"]))
        items.remove(biggest)
        items.extend(_split(biggest))
    return pack(items, count, cost_of)


def make_plan(questions: list[dict], cfg: Config, policy: str = "document_set") -> dict:
    qinfo = {q["question_id"]: q for q in questions}
    units = make_units(questions, cfg.sampling.seeds, cfg.sampling.n)
    shards = assign(units, cfg.shards.count, policy, qinfo, cfg)
    out = []
    for index, shard_units in enumerate(shards):
        load = units_cost(shard_units, qinfo, cfg)
        sets = sorted({u["document_set_id"] for u in shard_units})
        out.append({
            "index": index,
            "document_sets": sets,
            "est_tokens": load.tokens,
            "est_prefill_tokens": load.prefill_tokens,
            "est_seconds": round(load.seconds, 3),
            "est_prefill_s": round(load.prefill_s, 3),
            "est_decode_s": round(load.decode_s, 3),
            "est_window": load.max_window,
            "units": shard_units,
        })
    return {
        "run": cfg.run.name,
        "policy": policy,
        "generation_hash": cfg.generation_hash(),
        "settings": sealed_settings(cfg),  # as planned: every stage holds config.toml to them
        "n_units": len(units),
        "shards": out,
    }


def check_plan(plan: dict, questions: list[dict], seeds: list[int], n: int) -> None:
    """Raise AssertionError unless every planned unit appears exactly once."""
    want = {u["key"] for u in make_units(questions, seeds, n)}
    got = [u["key"] for u in plan_units(plan)]
    dupes = [k for k, c in Counter(got).items() if c > 1]
    assert not dupes, f"units in more than one shard: {sorted(dupes)[:5]}"
    assert set(got) == want, f"missing units: {sorted(want - set(got))[:5]}"


def plan_table(plan: dict, questions: list[dict], cfg: Config) -> str:
    """Per-shard table, totals, what a round-robin split of the same units would cost, and
    what seeds cost when they cannot differ (temperature 0)."""
    qinfo = {q["question_id"]: q for q in questions}
    r = cfg.engine.replicas
    lines = [f"{'shard':>5} {'sets':>4} {'units':>5} {'est tokens':>11} {'prefill min':>11} "
             f"{'decode min':>10} {'GPU-min':>8} {'window':>6}"
             + (f" {'node min':>8}" if r > 1 else "")]
    for s in plan["shards"]:
        node = ""
        if r > 1:
            parts = [units_cost(p, qinfo, cfg).seconds for p in replica_parts(s, r, qinfo, cfg)]
            node = f" {max(parts) / 60:>8.2f}"
        lines.append(
            f"{s['index']:>5} {len(s['document_sets']):>4} {len(s['units']):>5} "
            f"{s['est_tokens']:>11,} {s.get('est_prefill_s', 0) / 60:>11.2f} "
            f"{s.get('est_decode_s', 0) / 60:>10.2f} {s['est_seconds'] / 60:>8.2f} "
            f"{s.get('est_window', 0):>6}{node}"
        )
    secs = [s["est_seconds"] for s in plan["shards"]]
    total = sum(secs)
    lines.append(
        f"{'total':>5} {len({q['document_set_id'] for q in questions}):>4} "
        f"{plan['n_units']:>5} {sum(s['est_tokens'] for s in plan['shards']):>11,} "
        f"{'':>11} {'':>10} {total / 60:>8.2f}"
    )
    units = plan_units(plan)
    units.sort(key=lambda u: (list(qinfo).index(u["question_id"]), u["seed"], u["sample"]))
    rr = assign(units, len(plan["shards"]), "round_robin", qinfo, cfg)
    rr_secs = [units_cost(s, qinfo, cfg).seconds for s in rr]
    mean = total / max(len(secs), 1)
    balance = max(secs) / mean if mean else 1.0
    answers = (f"answers of {cfg.cost.output_tokens} tokens (cost.output_tokens)"
               if cfg.cost.output_tokens else
               f"every answer using its whole budget of {cfg.sampling.max_new_tokens} tokens "
               "(an upper bound; set cost.output_tokens to the mean answer length)")
    lines.append(
        f"balance: max/mean estimated load {balance:.2f}; makespan {max(secs) / 60:.2f} GPU-min "
        f"(+ engine start {cfg.cost.engine_start_s:.0f} s per engine); {answers}"
    )
    if total > 0:
        lines.append(
            f"round-robin split of the same units: {sum(rr_secs) / 60:.2f} GPU-min, makespan "
            f"{max(rr_secs) / 60:.2f} min; document-set sharding saves "
            f"{(1 - total / sum(rr_secs)) * 100:.0f}% ({sum(rr_secs) / total:.2f}x cheaper)"
        )
    warnings = [greedy_seeds_warning(plan, qinfo, cfg), *time_limit_warnings(cfg),
                *window_warnings(plan, qinfo, cfg)]
    lines += [w for w in warnings if w]
    return "\n".join(lines)


def time_limit_warnings(cfg: Config) -> list[str]:
    """A task is signalled slurm.signal_delay_s before its time limit and then requeues: a
    limit that does not cover an engine start plus that delay requeues every task before it
    writes a record, until slurm.max_requeue is spent and the task fails."""
    s, start = cfg.slurm, cfg.cost.engine_start_s
    limits = [("slurm.time", s.time, "generate")]
    if cfg.judge.backend == "vllm":  # the other judges start no engine
        limits.append(("slurm.judge_time", s.judge_time, "judge"))
    return [f"warning: {key} = {minutes} min cannot cover a {stage} engine start (~{start:.0f} "
            f"s, cost.engine_start_s) plus slurm.signal_delay_s = {s.signal_delay_s} s: every "
            f"{stage} task would be requeued before it writes a record, then fail after "
            f"slurm.max_requeue = {s.max_requeue} requeues; raise {key} (or lower "
            "slurm.signal_delay_s)"
            for key, minutes, stage in limits if minutes * 60 <= start + s.signal_delay_s]


def window_warnings(plan: dict, qinfo: dict, cfg: Config) -> list[str]:
    """A fixed window (engine.batch_sets = N) whose first sets overflow the KV cache the planner
    assumes (cost.kv_tokens): said before the jobs queue; the engine refuses it at start, on
    the cache it really has (lcr.fit.check_window)."""
    cap = capacity_from(cfg)
    if not cap.max_sets:
        return []
    out = []
    for s in plan["shards"]:
        demands = set_demands(s["units"], qinfo, cfg.sampling.max_new_tokens)
        try:
            check_window(demands, cap)
        except FitError as why:
            out.append(f"warning: shard {s['index']}: {why} (the cache as cost.kv_tokens "
                       "assumes it; generate checks the engine's own at start and stops there)")
    return out


def greedy_seeds_warning(plan: dict, qinfo: dict, cfg: Config) -> str | None:
    """At temperature 0 every seed decodes the same answer (up to batch nondeterminism): say
    so, with the GPU time the extra seeds cost."""
    seeds = cfg.sampling.seeds
    if cfg.sampling.temperature > 0 or len(seeds) < 2:
        return None
    total = sum(s["est_seconds"] for s in plan["shards"])
    one = sum(units_cost([u for u in s["units"] if u["seed"] == seeds[0]], qinfo, cfg).seconds
              for s in plan["shards"])
    extra = total - one
    return (f"warning: sampling.temperature = 0 (greedy): the {len(seeds)} seeds decode the same "
            f"answers up to batch nondeterminism, so the {len(seeds) - 1} extra seed(s) cost "
            f"~{extra / 60:.1f} GPU-min ({extra / total:.0%} of the run) for replicates that "
            "measure nondeterminism, not sampling spread; use one seed, or temperature > 0")


def plan_run(cfg: Config, force: bool = False, log=print) -> tuple[RunDir, dict, list[dict]]:
    """Prepare and plan a run directory: config.toml, questions.jsonl, prompts/, plan.json.

    Under the run's lock, so two plans of one run (or a plan and a submit) take turns and
    config.toml and plan.json always come from the same settings. A plan that fails leaves no
    folder it made behind."""
    from lcr.prepare import check_model
    from lcr.shared_prefix.support import check_plan as check_attention

    check_attention(cfg.engine, cfg.model.path)
    run_dir = RunDir(cfg.run_dir)
    with run_dir.lock():
        if run_dir.exists() and not force:
            reused = _reuse(cfg, run_dir, log)
            if reused:
                return reused
        check_model(cfg)
        fresh = not run_dir.path.exists()
        try:
            return _plan_into(cfg, run_dir, log)
        except BaseException:
            if fresh:  # nothing but this plan has written there: no half-made run is left
                shutil.rmtree(run_dir.path, ignore_errors=True)
            raise


def _reuse(cfg: Config, run_dir: RunDir, log):
    """The planned run of this configuration, its plan kept (so shards done stay done); a
    different configuration is refused, listing every difference."""
    diffs = fixed_differences(run_dir.load_config()[0], cfg)
    if diffs:
        raise ConfigError(
            f"{run_dir.path} already holds a run with a different configuration:\n  "
            + "\n  ".join(diffs)
            + "\nMixing configurations would corrupt its results. Use another run.name, "
            "or pass --force to re-plan it (records made under the old settings are then "
            "ignored by merge, never deleted)."
        )
    if not (run_dir.plan_file.exists() and run_dir.questions_file.exists()):
        return None
    atomic_write_text(run_dir.config_file, config_toml(cfg, run_dir.run_hash()))
    log(f"{run_dir.path}: reusing its plan.json (same configuration)")
    return run_dir, run_dir.load_plan(), run_dir.load_questions()


def _plan_into(cfg: Config, run_dir: RunDir, log) -> tuple[RunDir, dict, list[dict]]:
    from lcr.prepare import prepare

    run_dir.path.mkdir(parents=True, exist_ok=True)
    questions = prepare(cfg, run_dir, log=log)
    plan = make_plan(questions, cfg)
    check_plan(plan, questions, cfg.sampling.seeds, cfg.sampling.n)
    empty = [s["index"] for s in plan["shards"] if not s["units"]]
    if empty:
        most = cfg.shards.count - len(empty)  # each unit alone, at the most
        raise ConfigError(
            f"shards.count = {cfg.shards.count} leaves {len(empty)} shard(s) without work: this "
            f"run has {plan['n_units']} units in "
            f"{len({q['document_set_id'] for q in questions})} document sets, so at most "
            f"{most} shards can each get some; lower shards.count")
    atomic_write_text(run_dir.config_file, config_toml(cfg))
    atomic_write_json(run_dir.plan_file, plan)
    return run_dir, plan, questions
