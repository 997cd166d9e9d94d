"""Slurm orchestration through submitit: submit the chain, watch it, rerun only what failed.

    lcr submit jobs/llama31-8b-aalcr.toml    # generate array -> merge -> judge array -> report
    lcr status shards/llama31-8b-aalcr       # per stage and shard, from the files first
    lcr rerun shards/llama31-8b-aalcr        # only the shards that are not done

Finished work is read from each stage's outputs (`.done` markers), never from Slurm's memory;
Slurm's states (through sacct) only say why something is not done. Every job is
Checkpointable: on time-out or preemption it requeues and resumes from its JSONL. When Slurm
is absent or does not answer, commands say so in one line; `lcr status` still answers from
the files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from lcr.config import Config, ConfigError, load_config
from lcr.io import StorageError, atomic_write_json, atomic_write_text, read_done, read_jsonl
from lcr.rundir import RunDir, config_toml

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


class SlurmError(RuntimeError):
    """Slurm is there but did not take the jobs (controller down, sbatch refused)."""


class StageError(RuntimeError):
    """Jobs of a stage run by the local executor failed; the message lists them."""


# ---- the jobs -------------------------------------------------------------------------------

class GenerateJob(submitit.helpers.Checkpointable):
    """One generate shard; requeued on time-out, it resumes from the shard's JSONL."""

    def __call__(self, run_dir: str, shard: int) -> dict:
        from lcr.generate import run_shard

        return run_shard(run_dir, shard)


class MergeJob(submitit.helpers.Checkpointable):
    def __call__(self, run_dir: str) -> str:
        from lcr.merge import merge_run

        result = merge_run(run_dir)
        if not result.complete:
            raise RuntimeError(result.summary())
        return result.summary()


class JudgeJob(submitit.helpers.Checkpointable):
    def __call__(self, run_dir: str, shard: int, out: str = "", overrides=()) -> dict:
        from lcr.judge import judge_shard

        return judge_shard(run_dir, shard, out=out, overrides=list(overrides))


class ReportJob(submitit.helpers.Checkpointable):
    def __call__(self, run_dir: str, out: str = "", overrides=()) -> str:
        from lcr.judge import finalize_verdicts
        from lcr.report import run_report

        finalize_verdicts(run_dir, out=out, overrides=list(overrides))
        return run_report([run_dir], out=out)


# ---- executors --------------------------------------------------------------------------------

def _why(e: BaseException, what: str) -> str:
    """One line saying why a Slurm command failed."""
    if isinstance(e, subprocess.TimeoutExpired):
        return f"{what} did not answer within {e.timeout:.0f} s"
    if isinstance(e, subprocess.CalledProcessError):
        err = e.stderr or e.stdout or ""
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        return f"{what} failed: {lines[-1] if lines else f'exit code {e.returncode}'}"
    return f"{what} failed: {e}"


def slurm_problem() -> str | None:
    """Why Slurm cannot take jobs from here (no client, controller not answering), or None."""
    for tool in ("sbatch", "sinfo"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    try:
        subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=15, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        return _why(e, "sinfo")
    return None


def slurm_available() -> bool:
    return slurm_problem() is None


def executor_kind(cfg: Config) -> str:
    kind = cfg.slurm.executor
    if kind == "auto":
        return "slurm" if slurm_available() else "local"
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError(
            "slurm.executor = 'slurm' but sbatch is not on PATH; install the Slurm client, "
            "or use --set slurm.executor=local to run the stages on this machine"
        )
    if kind == "slurm":
        problem = slurm_problem()
        if problem:
            raise SlurmError(
                f"slurm.executor = 'slurm' but the Slurm controller does not answer ({problem}); "
                "check `sinfo` and SLURM_CONF, or use --set slurm.executor=local to run the "
                "stages on this machine"
            )
    return kind


def make_executor(cfg: Config, run_dir: RunDir, stage: str, kind: str, dependency: str = ""):
    s = cfg.slurm
    ex = submitit.AutoExecutor(folder=run_dir.logs_dir / "%j", cluster=kind,
                               slurm_max_num_timeout=s.max_requeue)
    gpus = {"generate": s.gpus_per_node, "judge": s.judge_gpus_per_node}.get(stage, 0)
    minutes = {"generate": s.time, "judge": s.judge_time}.get(stage, 30)
    params = dict(name=f"lcr-{stage}-{cfg.run.name}", timeout_min=minutes, nodes=s.nodes,
                  cpus_per_task=s.cpus_per_task if stage in ("generate", "judge") else 1)
    if gpus:
        params["gpus_per_node"] = gpus
    if kind == "slurm":
        extra = dict(s.extra)
        if dependency:
            extra["dependency"] = dependency
            extra["kill-on-invalid-dep"] = "yes"  # a failed merge cancels what follows
        params.update(
            slurm_array_parallelism=s.array_parallelism,
            slurm_signal_delay_s=s.signal_delay_s,
            slurm_additional_parameters=extra,
            slurm_setup=list(s.setup),
        )
        heavy = stage in ("generate", "judge")  # merge and report need one core, little memory
        partition = s.partition if heavy else (s.cpu_partition or s.partition)
        for key, value in (("slurm_partition", partition), ("slurm_account", s.account),
                           ("slurm_qos", s.qos), ("slurm_mem", s.mem if heavy else ""),
                           ("slurm_constraint", s.constraint if heavy else "")):
            if value:
                params[key] = value
        if s.exclusive and heavy:
            params["slurm_exclusive"] = True
    ex.update_parameters(**params)
    return ex


def _array_id(jobs) -> str:
    return jobs[0].job_id.split("_")[0] if jobs else ""


def _record_jobs(run_dir: RunDir, entries: list[dict]) -> None:
    data = json.loads(run_dir.jobs_file.read_text()) if run_dir.jobs_file.exists() else {
        "submissions": []}
    data["submissions"].extend(entries)
    atomic_write_json(run_dir.jobs_file, data)


def submit_chain(cfg: Config, run_dir: RunDir, gen_shards: list[int], judge_shards: list[int],
                 need_merge: bool, kind: str, wait_for: list[str] = (), out: str = "",
                 judge_overrides: list[str] = ()) -> dict:
    """Submit the stages still needed, each depending on the one before; returns job ids."""
    if kind == "local":
        return _run_local(cfg, run_dir, gen_shards, judge_shards, need_merge, out,
                          judge_overrides)
    entries: list[dict] = []
    try:
        return _submit_stages(cfg, run_dir, gen_shards, judge_shards, need_merge, kind,
                              list(wait_for), out, judge_overrides, entries)
    except StorageError:
        raise
    except (OSError, subprocess.SubprocessError, FailedJobError, FailedSubmissionError) as e:
        if entries:
            _record_jobs(run_dir, entries)  # jobs already queued stay known to status, rerun
        stages = [name for name, wanted in (("generate", gen_shards), ("merge", need_merge),
                                            ("judge", judge_shards), ("report", True)) if wanted]
        done = ", ".join(e_["stage"] for e_ in entries) or "nothing"
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise SlurmError(
            f"sbatch failed for the {stages[len(entries)]} stage "
            f"({lines[-1] if lines else type(e).__name__}); submitted before it: {done}. "
            f"Nothing written is lost: fix the cause (`sinfo`, the [slurm] settings), then "
            f"`lcr rerun {run_dir.path}` submits what is not done"
        ) from e


def _submit_stages(cfg: Config, run_dir: RunDir, gen_shards, judge_shards, need_merge: bool,
                   kind: str, after: list[str], out: str, judge_overrides,
                   entries: list[dict]) -> dict:
    rd = str(run_dir.path)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    ids: dict = {}

    def dep(kind_, ids_):
        return f"{kind_}:" + ":".join(ids_) if ids_ else ""

    if gen_shards:
        ex = make_executor(cfg, run_dir, "generate", kind, dep("afterany", after))
        jobs = ex.map_array(GenerateJob(), [rd] * len(gen_shards), gen_shards)
        ids["generate"] = {s: j.job_id for s, j in zip(gen_shards, jobs)}
        entries.append({"stage": "generate", "time": now,
                        "jobs": {str(s): j.job_id for s, j in zip(gen_shards, jobs)}})
        after = [_array_id(jobs)]
    if need_merge:
        ex = make_executor(cfg, run_dir, "merge", kind, dep("afterany", after))
        job = ex.submit(MergeJob(), rd)
        ids["merge"] = job.job_id
        entries.append({"stage": "merge", "time": now, "jobs": {"0": job.job_id}})
        after = [job.job_id]
    if judge_shards:
        ex = make_executor(cfg, run_dir, "judge", kind, dep("afterok", after))
        n = len(judge_shards)
        jobs = ex.map_array(JudgeJob(), [rd] * n, judge_shards, [out] * n,
                            [tuple(judge_overrides)] * n)
        ids["judge"] = {s: j.job_id for s, j in zip(judge_shards, jobs)}
        entries.append({"stage": "judge", "time": now, "out": out,
                        "jobs": {str(s): j.job_id for s, j in zip(judge_shards, jobs)}})
        after = [_array_id(jobs)]
    ex = make_executor(cfg, run_dir, "report", kind, dep("afterok", after))
    job = ex.submit(ReportJob(), rd, out, tuple(judge_overrides))
    ids["report"] = job.job_id
    entries.append({"stage": "report", "time": now, "out": out, "jobs": {"0": job.job_id}})
    _record_jobs(run_dir, entries)
    return ids


def _run_local(cfg, run_dir, gen_shards, judge_shards, need_merge, out, judge_overrides):
    """No Slurm: run the same jobs through submitit's local executor, one stage after another."""
    rd = str(run_dir.path)
    results: dict = {}
    if gen_shards:
        ex = make_executor(cfg, run_dir, "generate", "local")
        jobs = ex.map_array(GenerateJob(), [rd] * len(gen_shards), gen_shards)
        results["generate"] = _wait_local(jobs, "generate")
    if need_merge:
        results["merge"] = _wait_local(
            [make_executor(cfg, run_dir, "merge", "local").submit(MergeJob(), rd)], "merge")
    if judge_shards:
        ex = make_executor(cfg, run_dir, "judge", "local")
        n = len(judge_shards)
        jobs = ex.map_array(JudgeJob(), [rd] * n, judge_shards, [out] * n,
                            [tuple(judge_overrides)] * n)
        results["judge"] = _wait_local(jobs, "judge")
    results["report"] = _wait_local(
        [make_executor(cfg, run_dir, "report", "local").submit(
            ReportJob(), rd, out, tuple(judge_overrides))], "report")
    return results


def _wait_local(jobs, stage: str) -> list:
    out, failed = [], []
    for j in jobs:
        try:
            out.append(j.result())
        except Exception as e:  # report every failed task, then stop the chain
            failed.append(f"job {j.job_id}: {str(e).strip().splitlines()[-1]}")
    if failed:
        raise StageError(f"{stage} failed:\n  " + "\n  ".join(failed)
                         + "\nFix the cause, then `lcr rerun RUN_DIR` finishes only the rest.")
    return out


# ---- what is done ---------------------------------------------------------------------------

def pending_work(run_dir: RunDir, cfg: Config, out: str = "") -> dict:
    """What is not done yet, read from the outputs only."""
    from lcr.generate import shard_done

    plan = json.loads(run_dir.plan_file.read_text())
    gen = [s["index"] for s in plan["shards"] if not shard_done(run_dir, s)]
    merged = read_done(run_dir.merged_done) is not None
    judge = [k for k in range(cfg.judge.shards)
             if read_done(run_dir.judge_done(k, out)) is None]
    report = run_dir.path / ("report.json" if not out else f"report-{out}.json")
    return {"generate": gen, "merge": not merged, "judge": judge,
            "report": not report.exists() or not run_dir.verdicts_file(out).exists()}


def slurm_states(job_ids: list[str], problems: list[str] | None = None) -> dict[str, str]:
    """{job id: state} from sacct (empty when Slurm is not reachable; `problems` says why)."""
    ids = [j for j in job_ids if j]
    if not ids:
        return {}
    if shutil.which("sacct") is None:
        if problems is not None:
            problems.append("sacct is not on PATH")
        return {}
    # Ask by job (array) id: sacct does not find a task id such as 12_1 of an array that was
    # cancelled before it started, only its master line 12_[0-1].
    masters = sorted({j.split("_")[0] for j in ids})
    try:
        res = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(masters)],
            capture_output=True, text=True, timeout=30, check=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        if problems is not None:
            problems.append(_why(e, "sacct"))
        return {}
    states = {}
    for line in res.stdout.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            state = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0"
            for one in _expand_array(jid.strip()):
                states[one] = state
    return states


def _expand_array(jid: str) -> list[str]:
    """'12_[0-2,5%4]' (a pending array) -> ['12_0', '12_1', '12_2', '12_5']."""
    if "_[" not in jid:
        return [jid]
    base, spec = jid.split("_[", 1)
    out = []
    for part in spec.rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def latest_jobs(run_dir: RunDir) -> dict[str, dict[str, str]]:
    """{stage: {shard: latest job id}} from jobs.json."""
    if not run_dir.jobs_file.exists():
        return {}
    out: dict[str, dict[str, str]] = {}
    for entry in json.loads(run_dir.jobs_file.read_text())["submissions"]:
        out.setdefault(entry["stage"], {}).update(entry["jobs"])
    return out


def _count_records(paths: list[Path]) -> tuple[int, float, int]:
    """(valid records, earliest time, output tokens) over JSONL files."""
    n, first, toks = 0, float("inf"), 0
    for p in paths:
        for r in read_jsonl(p).records:
            n += 1
            first = min(first, r.get("time", first))
            toks += r.get("output_tokens") or 0
    return n, first, toks


# ---- commands -------------------------------------------------------------------------------

def render_scripts(cfg: Config, run_dir: RunDir, python: str = sys.executable) -> dict:
    """The sbatch script submitit writes for each stage, dependencies shown symbolically."""
    deps = {"generate": "", "merge": "afterany:<generate>", "judge": "afterok:<merge>",
            "report": "afterok:<judge>"}
    out = {}
    for stage, dep in deps.items():
        # submitit will not build a Slurm executor where `srun` is missing, though writing a
        # script needs no Slurm: `lcr submit --dry-run` must work on any machine.
        with mock.patch.object(submitit.SlurmExecutor, "affinity", return_value=2):
            ex = make_executor(cfg, run_dir, stage, "slurm", dep)
        folder = run_dir.logs_dir.absolute() / "%j"
        command = f"{python} -u -m submitit.core._submit {folder}"
        out[stage] = ex._executor._make_submission_file_text(command, "%j")
    return out


def submit(config: str, overrides: list[str], force: bool = False, dry_run: bool = False) -> int:
    from lcr.plan import plan_run, plan_table

    cfg = load_config(config, overrides)
    if dry_run:
        run_dir, plan, questions = plan_run(cfg, force=force)
        print(plan_table(plan, questions, cfg))
        for stage, text in render_scripts(cfg, run_dir).items():
            print(f"\n===== {stage} (sbatch script; not submitted) =====\n{text}")
        return 0
    kind = executor_kind(cfg)
    run_dir, plan, questions = plan_run(cfg, force=force)
    print(plan_table(plan, questions, cfg))
    todo = pending_work(run_dir, cfg)
    if not any([todo["generate"], todo["merge"], todo["judge"], todo["report"]]):
        print(f"{run_dir.path}: every stage is done already; see report.md")
        return 0
    ids = submit_chain(cfg, run_dir, todo["generate"], list(range(cfg.judge.shards)),
                       True, kind)
    _print_ids(run_dir, kind, ids)
    return 0


def _print_ids(run_dir: RunDir, kind: str, ids: dict) -> None:
    if kind == "local":
        print(f"ran every stage locally (submitit local executor); run dir {run_dir.path}")
        if "report" in ids:
            print(ids["report"][0])
        return
    for stage in ("generate", "merge", "judge", "report"):
        if stage in ids:
            v = ids[stage]
            shown = ", ".join(f"{s}:{j}" for s, j in v.items()) if isinstance(v, dict) else v
            print(f"{stage:>8}: {shown}")
    print(f"run dir: {run_dir.path}  (job ids saved in {run_dir.jobs_file.name}; "
          f"watch with `lcr status {run_dir.path}`)")


def status_table(run_dir: RunDir, cfg: Config) -> tuple[str, dict]:
    from lcr.generate import shard_done

    plan = json.loads(run_dir.plan_file.read_text())
    jobs = latest_jobs(run_dir)
    problems: list[str] = []
    states = slurm_states([j for stage in jobs.values() for j in stage.values()], problems)
    rows, summary = [], {"generate": {}, "judge": {}}
    total_units = sum(len(s["units"]) for s in plan["shards"])
    done_units, first_time = 0, float("inf")
    for spec in plan["shards"]:
        k = spec["index"]
        n, first, _ = _count_records(run_dir.generate_files(k))
        first_time = min(first_time, first)
        info = shard_done(run_dir, spec)
        job = jobs.get("generate", {}).get(str(k), "")
        state = _state(bool(info), n, states.get(job))
        done_units += len(spec["units"]) if info else min(n, len(spec["units"]))
        rate = f"{info['output_tok_s']:.1f}" if info and "output_tok_s" in info else "-"
        rows.append(("generate", k, state, f"{min(n, len(spec['units']))}/{len(spec['units'])}",
                     rate, job))
        summary["generate"][k] = state
    merged = read_done(run_dir.merged_done)
    mjob = jobs.get("merge", {}).get("0", "")
    rows.append(("merge", "-", _state(bool(merged), 0, states.get(mjob)),
                 f"{merged['records']}" if merged else "-", "-", mjob))
    summary["merge"] = rows[-1][2]
    for k in range(cfg.judge.shards):
        info = read_done(run_dir.judge_done(k))
        n = len(read_jsonl(run_dir.judge_file(k)).records)
        job = jobs.get("judge", {}).get(str(k), "")
        state = _state(bool(info), n, states.get(job))
        rows.append(("judge", k, state, str(n), "-", job))
        summary["judge"][k] = state
    rep = run_dir.path / "report.json"
    rjob = jobs.get("report", {}).get("0", "")
    rows.append(("report", "-", _state(rep.exists(), 0, states.get(rjob)), "-", "-", rjob))
    summary["report"] = rows[-1][2]
    lines = [f"{'stage':<9}{'shard':>5}  {'state':<10}{'records':>9}{'out tok/s':>11}  job"]
    for stage, k, state, recs, rate, job in rows:
        lines.append(f"{stage:<9}{k!s:>5}  {state:<10}{recs:>9}{rate:>11}  {job}")
    if done_units < total_units and first_time < float("inf") and done_units:
        elapsed = time.time() - first_time
        eta = elapsed / done_units * (total_units - done_units)
        lines.append(f"generation: {done_units}/{total_units} units; ETA ~{eta / 60:.1f} min "
                     "at the rate so far")
    else:
        lines.append(f"generation: {done_units}/{total_units} units")
    if problems:
        lines.append(f"note: Slurm did not answer ({problems[0]}); states come from the run "
                     "directory's files only")
    return "\n".join(lines), summary


def _state(done: bool, records: int, slurm_state: str | None) -> str:
    if done:
        return "done"
    if slurm_state:
        s = slurm_state.upper()
        if s in ("PENDING", "REQUEUED"):
            return "pending"
        if s in ("RUNNING", "CONFIGURING", "COMPLETING"):
            return "running"
        if s.startswith("CANCELLED"):
            return "cancelled"
        if s in ("FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                 "DEADLINE", "COMPLETED"):
            return "failed"  # COMPLETED without a done marker is a failure too
    return "partial" if records else "missing"


def status(run_dir: str, overrides: list[str] = ()) -> int:
    rd = RunDir(run_dir)
    cfg, _ = rd.load_config()
    table, _ = status_table(rd, cfg)
    print(table)
    return 0


def rerun(run_dir: str, overrides: list[str] = (), dry_run: bool = False) -> int:
    rd = RunDir(run_dir)
    cfg, _ = rd.load_config()
    if overrides and not dry_run:
        cfg = _with_overrides(rd, overrides)
        # The jobs read config.toml: keep the new slurm/judge/report/debug values there.
        atomic_write_text(rd.config_file, config_toml(cfg, rd.run_hash()))
    elif overrides:
        cfg = _with_overrides(rd, overrides)
    todo = pending_work(rd, cfg)
    jobs = latest_jobs(rd)
    states = slurm_states([j for stage in jobs.values() for j in stage.values()])
    active = {int(k) for k, j in jobs.get("generate", {}).items()
              if states.get(j, "").upper() in ACTIVE}
    gen = [k for k in todo["generate"] if k not in active]
    still = [jobs["generate"][str(k)] for k in todo["generate"] if k in active]
    judge = todo["judge"] if (todo["judge"] or todo["generate"] or todo["merge"]) else []
    if todo["generate"] or todo["merge"]:
        judge = list(range(cfg.judge.shards))  # judge shards follow the new merge
    need_merge = bool(todo["generate"]) or todo["merge"]
    if not (gen or still or need_merge or judge or todo["report"]):
        print(f"{rd.path}: nothing to do; every stage is done")
        return 0
    what = []
    if gen:
        what.append(f"generate shards {gen}")
    if still:
        what.append(f"(waiting for shards still queued or running: {sorted(active)})")
    if need_merge:
        what.append("merge")
    if judge:
        what.append(f"judge shards {judge}")
    what.append("report")
    print("rerun: " + ", ".join(what))
    if dry_run:
        return 0
    kind = executor_kind(cfg)
    ids = submit_chain(cfg, rd, gen, judge, need_merge, kind, wait_for=still)
    _print_ids(rd, kind, ids)
    return 0


def _with_overrides(rd: RunDir, overrides: list[str]) -> Config:
    from lcr.config import _apply, parse_override, validate

    cfg, _ = rd.load_config()
    for text in overrides:
        section = text.split(".", 1)[0]
        if section not in ("slurm", "judge", "report", "debug"):
            raise ConfigError(f"--set {text}: only slurm.*, judge.*, report.* and debug.* can "
                              "change for an existing run (the rest decides its records)")
        _apply(cfg, parse_override(text), f"--set {text}")
    validate(cfg)
    return cfg


def submit_stage(run_dir: str, stage: str, overrides: list[str], out: str = "") -> int:
    """`lcr merge --submit` / `lcr judge --submit`: that stage (and the report) as Slurm jobs."""
    rd = RunDir(run_dir)
    cfg = _with_overrides(rd, overrides)
    kind = executor_kind(cfg)
    judge_overrides = [o for o in overrides if o.startswith("judge.")]
    if stage == "merge":
        ids = submit_chain(cfg, rd, [], list(range(cfg.judge.shards)), True, kind)
    else:
        ids = submit_chain(cfg, rd, [], list(range(cfg.judge.shards)), False, kind, out=out,
                           judge_overrides=judge_overrides)
    _print_ids(rd, kind, ids)
    return 0


def wait_for_report(run_dir: RunDir, timeout_s: float, poll_s: float = 5.0) -> bool:
    """Block until report.json exists or the chain has stopped (used by `lcr demo`)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if (run_dir.path / "report.json").exists():
            return True
        jobs = latest_jobs(run_dir)
        rep = jobs.get("report", {}).get("0")
        st = slurm_states([rep]).get(rep, "") if rep else ""
        if st and st.upper() not in ACTIVE and st.upper() != "COMPLETED":
            return False
        time.sleep(poll_s)
    print(f"timed out after {timeout_s:.0f} s", file=sys.stderr)
    return False
