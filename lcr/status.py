"""What is done, running or failed: read from the run directory first, Slurm (sacct) second.

    lcr status shards/llama31-8b-aalcr

Finished work is read from each stage's outputs (done markers that vouch for their units),
never from Slurm's memory; Slurm's states only say why something is not done. When Slurm does
not answer, the table still comes from the files, with a note saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from lcr.config import Config
from lcr.io import read_jsonl, update_json
from lcr.rundir import RunDir, RunDirError, quoted
from lcr.stages import BY_NAME, STAGES, Stage

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}
FAILED = {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
          "DEADLINE", "COMPLETED"}  # COMPLETED without a done marker is a failure too


def why_failed(e: BaseException, what: str) -> str:
    """One line saying why a Slurm command failed."""
    if isinstance(e, subprocess.TimeoutExpired):
        return f"{what} did not answer within {e.timeout:.0f} s"
    if isinstance(e, subprocess.CalledProcessError):
        err = e.stderr or e.stdout or ""
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        return f"{what} failed: {lines[-1] if lines else f'exit code {e.returncode}'}"
    return f"{what} failed: {e}"


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
            problems.append(why_failed(e, "sacct"))
        return {}
    states = _parse_states(res.stdout)
    if any(j not in states for j in ids):  # just submitted: the controller knows it first
        states = {**_queued_states(), **states}
    return states


def _parse_states(text: str) -> dict[str, str]:
    states = {}
    for line in text.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            state = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0"
            for one in expand_array(jid.strip()):
                states[one] = state
    return states


def _queued_states() -> dict[str, str]:
    """{job id: state} of this user's jobs in the controller's queue (squeue), which knows a
    job the moment it is submitted, before the accounting database (sacct) has it."""
    if shutil.which("squeue") is None:
        return {}
    try:
        res = subprocess.run(["squeue", "-h", "-r", "--me", "-o", "%i|%T"], capture_output=True,
                             text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    return _parse_states(res.stdout)


def expand_array(jid: str) -> list[str]:
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


def job_entry(stage: Stage, jobs: dict[str, str], when: str, out: str = "") -> dict:
    """One submission of a stage as jobs.json keeps it: {shard: job id}, and for a stage whose
    files belong to one re-judge (per_out) the name of that re-judge (`--out`)."""
    entry = {"stage": stage.name, "time": when, "jobs": jobs}
    return {**entry, "out": out} if stage.per_out else entry


def record_jobs(rd: RunDir, entries: list[dict]) -> None:
    """Add submissions to jobs.json under its lock (concurrent commands lose nothing)."""
    if entries:
        update_json(rd.jobs_file, lambda data: {
            "submissions": (data or {}).get("submissions", []) + entries})


def latest_jobs(rd: RunDir, out: str = "") -> dict[str, dict[str, str]]:
    """{stage: {shard: latest job id}} from jobs.json (judge and report of output `out`)."""
    if not rd.jobs_file.exists():
        return {}
    try:
        submissions = json.loads(rd.jobs_file.read_text())["submissions"]
    except (ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{rd.jobs_file}: damaged ({type(e).__name__}: {e}); it only lists "
                          f"job ids: move it aside and `lcr status {quoted(rd.path)}` answers "
                          "from the files") from None
    jobs: dict[str, dict[str, str]] = {}
    for entry in submissions:
        stage = BY_NAME.get(entry["stage"])
        if stage is not None and stage.per_out and entry.get("out", "") != out:
            continue
        jobs.setdefault(entry["stage"], {}).update(entry["jobs"])
    return jobs


def shard_state(done: bool, records: str, slurm_state: str | None) -> str:
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
        if s in FAILED:
            return "failed"
    return "partial" if records not in ("-", "") and not records.startswith("0/") else "missing"


def status_rows(rd: RunDir, cfg: Config, out: str = "") -> tuple[list[tuple], list[str]]:
    """(stage, shard, state, records, job) per stage and shard, and why Slurm did not answer."""
    jobs = latest_jobs(rd, out)
    problems: list[str] = []
    states = slurm_states([j for stage in jobs.values() for j in stage.values()], problems)
    rows = []
    for stage in STAGES:
        for k in stage.shards(rd, cfg):
            job = jobs.get(stage.name, {}).get(str(k), "")
            records = stage.records(rd, k, out)
            state = shard_state(stage.done(rd, cfg, k, out), records, states.get(job))
            rows.append((stage.name, k if stage.array else "-", state, records, job))
    return rows, problems


def status_table(rd: RunDir, cfg: Config, out: str = "") -> str:
    rows, problems = status_rows(rd, cfg, out)
    lines = [f"{'stage':<9}{'shard':>5}  {'state':<10}{'records':>9}  job"]
    lines += [f"{stage:<9}{k!s:>5}  {state:<10}{recs!s:>9}  {job}"
              for stage, k, state, recs, job in rows]
    lines += failure_lines(rd, rows)
    known = any(job for *_, job in rows) and not problems  # else Slurm cannot say
    active = any(state in ("pending", "running") for _, _, state, _, _ in rows)
    lines.append(generation_progress(rd, active=active if known else None))
    if problems:
        lines.append(f"note: Slurm did not answer ({problems[0]}); states come from the run "
                     "directory's files only")
    return "\n".join(lines)


def failure_lines(rd: RunDir, rows: list[tuple]) -> list[str]:
    """Each failed shard's job and the last error its log holds."""
    out = []
    for stage, k, state, _, job in rows:
        if state == "failed" and job:
            log, line = last_error(rd, job)
            shard = f" shard {k}" if k != "-" else ""
            where = f" ({log.relative_to(rd.path)})" if log else ""
            out.append(f"{stage}{shard} failed, job {job}{where}: {line or 'no error in its log'}")
    return out


def job_logs(rd: RunDir, job: str) -> list[Path]:
    """The log files of one job (task): submitit's logs/JOB/JOB_0_log.{err,out}, or the
    plain sbatch scripts' logs/lcr-STAGE-JOB.out; error logs first."""
    found = [*rd.logs_dir.glob(f"{job}/*_log.err"), *rd.logs_dir.glob(f"*-{job}.out"),
             *rd.logs_dir.glob(f"{job}/*_log.out")]
    return [p for p in found if p.is_file()]


_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failed|Failure|Interrupt|Exit)\b")
_OTHER_SOURCE = re.compile(r"^(srun|slurmstepd|submitit|sbatch)\b")  # not the message
_NOISE = re.compile(r"Exited with exit code|^submitit ERROR")  # says only that it failed
# what torch.distributed and vLLM put before each line a process writes: "[rank0]: ",
# "(EngineCore pid=123) "
_PREFIX = re.compile(r"^(\[rank\d+\]:|\(\w+ pid=\d+\)) ?")
_HINT = re.compile(r"^\s*For further information visit ")  # pydantic's last line: a link


def last_error(rd: RunDir, job: str) -> tuple[Path | None, str]:
    """(log file, the error it ends in): the exception of its last traceback (type and the
    last line of the message: a merge's INCOMPLETE line), else its last line saying error
    (slurmstepd's time limit or cancel line, `lcr ...: error: ...`)."""
    for log in job_logs(rd, job):
        lines = [_PREFIX.sub("", ln.rstrip()) for ln in _tail(log).splitlines()]
        lines = [ln for ln in lines if ln.strip() and not _HINT.match(ln)]
        line = _exception(lines) or next(
            (ln.strip() for ln in reversed(lines)
             if re.search(r"\berror\b", ln, re.IGNORECASE) and not _NOISE.search(ln)), "")
        if line:
            return log, line[:600]
    return None, ""


def _exception(lines: list[str]) -> str | None:
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call")]
    if not starts:
        return None
    body = lines[starts[-1] + 1:]
    for i, ln in enumerate(body):
        if _EXCEPTION.match(ln):  # the first unindented line after the frames
            message = [ln]
            for more in body[i + 1:]:
                if _OTHER_SOURCE.match(more):
                    break
                message.append(more)
            kind, _, first = ln.partition(": ")
            return f"{kind.rsplit('.', 1)[-1]}: {message[-1] if len(message) > 1 else first}"
    return None


def _tail(path: Path, size: int = 65536) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, 2) - size))
        return f.read().decode("utf-8", errors="replace")


RECENT_S = 300.0  # records this fresh mean generation is going on, where Slurm cannot say


def generation_progress(rd: RunDir, active: bool | None = None) -> str:
    """Units generated so far, and an ETA at the rate so far while generation goes on
    (`active`; None: no job is known, so judged by how fresh the newest record is)."""
    plan = rd.load_plan()
    total = sum(len(s["units"]) for s in plan["shards"])
    done, first, last = 0, float("inf"), 0.0
    for spec in plan["shards"]:
        if rd.generate_done(spec):
            done += len(spec["units"])
            continue
        recs = [r for p in rd.generate_files(spec["index"]) for r in read_jsonl(p).records]
        done += min(len(recs), len(spec["units"]))
        times = [r["time"] for r in recs if isinstance(r.get("time"), (int, float))]
        first, last = min([first, *times]), max([last, *times])
    line = f"generation: {done}/{total} units"
    if not 0 < done < total:
        return line
    quiet = time.time() - last
    if active or (active is None and quiet < RECENT_S):
        eta = (time.time() - first) / done * (total - done)
        return f"{line}; ETA ~{eta / 60:.1f} min at the rate so far"
    if active is None:
        return f"{line}; no new record for {quiet / 60:.0f} min"
    return (f"{line}; stopped (no job queued or running): `lcr rerun {quoted(rd.path)}` "
            "finishes the rest")
