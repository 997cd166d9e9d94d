"""Slurm orchestration through submitit: submit the chain of lcr.stages, rerun only what failed.

    lcr submit jobs/llama31-8b-aalcr.toml    # generate array -> merge -> judge array -> report
    lcr rerun shards/llama31-8b-aalcr        # only the shards that are not done

Every row of lcr.stages.STAGES becomes one job (or one array) depending on the one before.
What is done is read from the run directory (lcr.stages), what is queued or running from
jobs.json and sacct: neither submit nor rerun queues a second chain for work already queued
or running. Local execution (submitit's local executor) happens only when asked for with
`slurm.executor = "local"`; a Slurm that does not answer is an error that says so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from unittest import mock

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from lcr.config import Config, ConfigError
from lcr.errors import InputError, StageFailure
from lcr.io import StorageError
from lcr.rundir import RunDir, quoted
from lcr.stages import LAST, STAGES, Stage, StageJob
from lcr.status import (
    ACTIVE,
    job_entry,
    last_error,
    latest_jobs,
    record_jobs,
    slurm_states,
    why_failed,
)


class SlurmError(InputError, RuntimeError):
    """Slurm is there but did not take the jobs (controller down, sbatch refused)."""


class StageError(StageFailure, RuntimeError):
    """Jobs of a stage run by the local executor failed; the message lists them."""


def slurm_problem() -> str | None:
    """Why Slurm cannot take jobs from here (no client, controller not answering), or None."""
    for tool in ("sbatch", "sinfo"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    try:
        subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=15, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        return why_failed(e, "sinfo")
    return None


def executor_kind(cfg: Config) -> str:
    """"local" only when asked for; otherwise a Slurm that answers, or a clear error."""
    if cfg.slurm.executor == "local":
        return "local"
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "slurm.executor = 'slurm' but sbatch is not on PATH; install the Slurm client, "
            "or use --set slurm.executor=local to run the stages on this machine"
        )
    problem = slurm_problem()
    if problem:
        raise SlurmError(
            f"slurm.executor = 'slurm' but the Slurm controller does not answer ({problem}); "
            "check `sinfo` and SLURM_CONF, or use --set slurm.executor=local to run the "
            "stages on this machine"
        )
    return "slurm"


def make_executor(cfg: Config, rd: RunDir, stage: Stage, kind: str, dependency: str = ""):
    s = cfg.slurm
    ex = submitit.AutoExecutor(folder=rd.logs_dir / "%j", cluster=kind,
                               slurm_max_num_timeout=s.max_requeue)
    gpus = getattr(s, stage.gpus) if stage.gpus else 0
    params = dict(name=f"lcr-{stage.name}-{cfg.run.name}",
                  timeout_min=getattr(s, stage.minutes) if stage.minutes else 30,
                  nodes=s.nodes, cpus_per_task=s.cpus_per_task if stage.heavy else 1)
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
        # merge and report need one core and little memory: keep them off the GPU partition
        partition = s.partition if stage.heavy else (s.cpu_partition or s.partition)
        for key, value in (("slurm_partition", partition), ("slurm_account", s.account),
                           ("slurm_qos", s.qos), ("slurm_mem", s.mem if stage.heavy else ""),
                           ("slurm_constraint", s.constraint if stage.heavy else "")):
            if value:
                params[key] = value
        if s.exclusive and stage.heavy:
            params["slurm_exclusive"] = True
    ex.update_parameters(**params)
    return ex


def _dependency(kind: str, after: list[str]) -> str:
    return f"{kind}:" + ":".join(after) if after else ""


def submit_chain(cfg: Config, rd: RunDir, todo: dict[str, list[int]], kind: str,
                 wait_for: dict[str, list[str]] | None = None, out: str = "",
                 overrides=()) -> dict:
    """Submit each stage's shards in `todo`, each stage depending on the one before (and on
    jobs of that stage still queued or running, `wait_for`); returns the job ids."""
    if kind == "local":
        return _run_local(cfg, rd, todo, out, overrides)
    entries: list[dict] = []
    try:
        return _submit(cfg, rd, todo, kind, wait_for or {}, out, tuple(overrides), entries)
    except StorageError:
        raise
    except (OSError, subprocess.SubprocessError, FailedJobError, FailedSubmissionError) as e:
        record_jobs(rd, entries)  # jobs already queued stay known to status and rerun
        stages = [name for name, shards in todo.items() if shards]
        done = ", ".join(e_["stage"] for e_ in entries) or "nothing"
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise SlurmError(
            f"sbatch failed for the {stages[len(entries)]} stage "
            f"({lines[-1] if lines else type(e).__name__}); submitted before it: {done}. "
            f"Nothing written is lost: fix the cause (`sinfo`, the [slurm] settings), then "
            f"`lcr rerun {quoted(rd.path)}` submits what is not done"
        ) from e


def _submit(cfg, rd, todo, kind, wait_for, out, overrides, entries) -> dict:
    now, ids, after = time.strftime("%Y-%m-%dT%H:%M:%S"), {}, []
    for stage in STAGES:
        shards, waiting = todo.get(stage.name, []), wait_for.get(stage.name, [])
        if shards:
            ex = make_executor(cfg, rd, stage, kind, _dependency(stage.after, after))
            n, path = len(shards), str(rd.path)
            if stage.array:
                jobs = ex.map_array(StageJob(), [stage.name] * n, [path] * n, shards,
                                    [out] * n, [overrides] * n)
            else:
                jobs = [ex.submit(StageJob(), stage.name, path, 0, out, overrides)]
            ids[stage.name] = {str(k): j.job_id for k, j in zip(shards, jobs)}
            entries.append(job_entry(stage, ids[stage.name], now, out))
            after = [jobs[0].job_id.split("_")[0]] + waiting
        elif waiting:
            after = waiting  # the next stage follows this stage's jobs still queued or running
    record_jobs(rd, entries)
    return ids


def _run_local(cfg, rd, todo, out, overrides) -> dict:
    """The same jobs through submitit's local executor, one stage after another."""
    results: dict = {}
    for stage in STAGES:
        shards = todo.get(stage.name, [])
        if not shards:
            continue
        ex = make_executor(cfg, rd, stage, "local")
        n, path = len(shards), str(rd.path)
        jobs = ex.map_array(StageJob(), [stage.name] * n, [path] * n, shards, [out] * n,
                            [tuple(overrides)] * n)
        results[stage.name] = _wait_local(rd, jobs, stage.name)
    return results


def _wait_local(rd: RunDir, jobs, stage: str) -> list:
    out, failed = [], []
    for j in jobs:
        try:
            out.append(j.result())
        except Exception as e:  # report every failed task (its log's error), then stop
            log, line = last_error(rd, str(j.job_id))
            where = f" ({log})" if log else ""
            failed.append(f"job {j.job_id}{where}: "
                          f"{line or str(e).strip().splitlines()[-1]}")
    if failed:
        raise StageError(f"{stage} failed:\n  " + "\n  ".join(failed)
                         + "\nFix the cause, then `lcr rerun RUN_DIR` finishes only the rest.")
    return out


def plan_submission(rd: RunDir, cfg: Config, out: str = ""):
    """(shards to submit, job ids to wait for, superseded job ids, why Slurm did not answer).

    A shard whose job is still queued or running is not submitted again, and what follows
    waits for that job. Once a stage gets new jobs, every stage after it is submitted anew and
    its older queued jobs, which would run on stale inputs, are superseded (to be cancelled)."""
    from lcr.stages import pending

    todo = pending(rd, cfg, out)
    jobs, problems = latest_jobs(rd, out), []
    states = slurm_states([j for stage in jobs.values() for j in stage.values()], problems)
    submit: dict[str, list[int]] = {}
    wait: dict[str, list[str]] = {}
    superseded: list[str] = []
    fresh = False
    for stage in STAGES:
        running = {int(k): j for k, j in jobs.get(stage.name, {}).items()
                   if states.get(j, "").upper() in ACTIVE}
        shards = todo[stage.name]
        if fresh:
            submit[stage.name], wait[stage.name] = shards, []
            superseded += sorted(running.values())
        else:
            submit[stage.name] = [k for k in shards if k not in running]
            wait[stage.name] = [running[k] for k in shards if k in running]
        fresh = fresh or bool(submit[stage.name])
    return submit, wait, superseded, problems


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)


def render_scripts(cfg: Config, rd: RunDir, python: str = sys.executable) -> dict:
    """The sbatch script submitit writes for each stage, dependencies shown symbolically."""
    out, previous = {}, ""
    for stage in STAGES:
        dep = f"{stage.after}:<{previous}>" if previous else ""
        # submitit will not build a Slurm executor where `srun` is missing, though writing a
        # script needs no Slurm: `lcr submit --dry-run` must work on any machine.
        with mock.patch.object(submitit.SlurmExecutor, "affinity", return_value=2):
            ex = make_executor(cfg, rd, stage, "slurm", dep)
        folder = rd.logs_dir.absolute() / "%j"
        command = f"{python} -u -m submitit.core._submit {quoted(folder)}"
        out[stage.name] = ex._executor._make_submission_file_text(command, "%j")
        previous = stage.name
    return out


# ---- commands ---------------------------------------------------------------------------

def describe_todo(submit: dict[str, list[int]], wait: dict[str, list[str]]) -> str:
    """"generate shards [0], merge, judge shards [0, 1], report" (and what it waits for)."""
    parts = []
    for stage in STAGES:
        shards = submit.get(stage.name, [])
        if shards:
            parts.append(f"{stage.name} shards {shards}" if stage.array else stage.name)
    waits = [f"{name} {ids}" for name, ids in wait.items() if ids]
    after = f" (after the jobs still queued or running: {', '.join(waits)})" if waits else ""
    return ", ".join(parts) + after


def queue(cfg: Config, rd: RunDir, kind: str, out: str = "", overrides=(),
          verb: str = "submit", dry_run: bool = False) -> dict:
    """Submit what is not done and not already queued; `out` names a re-judge (its judge and
    report), `overrides` are the judge's --set values the jobs apply."""
    submit, wait, superseded, problems = plan_submission(rd, cfg, out)
    if not any(submit.values()):
        if any(wait.values()):
            jobs = ", ".join(f"{name} {ids}" for name, ids in wait.items() if ids)
            print(f"{verb}: nothing new to submit; the rest of the chain is queued or running "
                  f"({jobs}); watch with `lcr status {quoted(rd.path)}`")
        else:
            print(f"{rd.path}: nothing to do; every stage is done")
        return {}
    print(f"{verb}: {describe_todo(submit, wait)}")
    if problems:
        print(f"note: Slurm did not answer ({problems[0]}); jobs it may still run are unknown")
    if dry_run:
        return {}
    cancel(superseded)
    ids = submit_chain(cfg, rd, submit, kind, wait, out, overrides)
    print_ids(rd, kind, ids)
    return ids


def print_ids(rd: RunDir, kind: str, ids: dict) -> None:
    if kind == "local":
        print(f"ran every stage locally (submitit local executor); run dir {rd.path}")
        if ids.get(LAST.name):
            print(ids[LAST.name][0])
        return
    for stage in STAGES:
        if stage.name in ids:
            print(f"{stage.name:>8}: " + ", ".join(f"{k}:{j}" for k, j in ids[stage.name].items()))
    print(f"run dir: {rd.path}  (job ids saved in {rd.jobs_file.name}; watch with "
          f"`lcr status {quoted(rd.path)}`)")


def wait_for_report(rd: RunDir, timeout_s: float, poll_s: float = 5.0, on_poll=None) -> bool:
    """Block until report.json exists or the chain has stopped (used by `lcr demo`)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if rd.report_paths()["json"].exists():
            return True
        rep = latest_jobs(rd).get(LAST.name, {}).get("0")
        st = slurm_states([rep]).get(rep, "") if rep else ""
        if st and st.upper() not in ACTIVE and st.upper() != "COMPLETED":
            return False
        if on_poll:
            on_poll()
        time.sleep(poll_s)
    print(f"timed out after {timeout_s:.0f} s", file=sys.stderr)
    return False
