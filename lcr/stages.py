"""The pipeline as data: one row per stage, read by submit, the local executor, dry runs,
status and rerun alike.

    for stage in STAGES:
        todo = [k for k in stage.shards(rd, cfg) if not stage.done(rd, cfg, k, out)]

A stage is what runs (inside a Slurm job or the local executor), on what resources, after
what, over which shards, and how the run directory says a shard is done. Adding a stage (say,
an answer-extraction step between merge and judge) is one row here and one module with its
run function; everything that submits, waits, shows or reruns work reads this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import submitit

from lcr.config import Config
from lcr.errors import StageFailure
from lcr.io import read_done, read_jsonl, sha256_file
from lcr.rundir import RunDir
from lcr.units import judge_shard_units


class StageFailed(StageFailure, RuntimeError):
    """A stage ran and did not finish its work (the message says what is missing)."""


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable  # run(run_dir, shard, out, overrides) -> a summary; raises on failure
    shards: Callable[[RunDir, Config], list[int]]  # every shard index ([0]: a single job)
    done: Callable[[RunDir, Config, int, str], bool]  # is shard k done (out: judge output)
    records: Callable[[RunDir, int, str], str]  # records written so far, of how many
    array: bool = False  # one Slurm array task per shard
    after: str = "afterok"  # dependency on the stage before: afterany runs even if it failed
    gpus: str = ""  # [slurm] key holding its GPUs per node ("" = no GPUs)
    minutes: str = ""  # [slurm] key holding its time limit ("" = 30 minutes)
    per_out: bool = False  # its files belong to one judge output (--out NAME: judge-NAME/, ...)

    @property
    def heavy(self) -> bool:
        """GPU stages go to slurm.partition with its memory, constraint and exclusivity."""
        return bool(self.gpus)


# ---- run functions (imported lazily: a job imports only its own stage) --------------------

def _generate(run_dir, shard, out, overrides):
    from lcr.generate import run_shard

    return run_shard(run_dir, shard)


def _merge(run_dir, shard, out, overrides):
    from lcr.merge import merge_run

    result = merge_run(run_dir)
    if not result.complete:
        raise StageFailed(result.summary())
    return result.summary()


def _judge(run_dir, shard, out, overrides):
    from lcr.judge import judge_shard

    return judge_shard(run_dir, shard, out=out, overrides=list(overrides))


def _report(run_dir, shard, out, overrides):
    from lcr.judge import finalize_verdicts
    from lcr.report import run_report

    finalize_verdicts(run_dir, out=out, overrides=list(overrides))
    return run_report([run_dir], out=out)


# ---- shards and done checks, from the run directory alone --------------------------------

def _plan_shards(rd: RunDir, cfg: Config) -> list[int]:
    return [s["index"] for s in rd.load_plan()["shards"]]


def _judge_shards(rd: RunDir, cfg: Config) -> list[int]:
    return list(range(cfg.judge.shards))


def _one(rd: RunDir, cfg: Config) -> list[int]:
    return [0]


def _generate_done(rd: RunDir, cfg: Config, k: int, out: str) -> bool:
    return rd.generate_done(rd.shard(k)) is not None


def _merge_done(rd: RunDir, cfg: Config, k: int, out: str) -> bool:
    return rd.merge_done() is not None


def _judge_done(rd: RunDir, cfg: Config, k: int, out: str) -> bool:
    if rd.merge_done() is None:
        return False  # judging answers the current merge does not vouch for
    units = judge_shard_units(rd.load_merged(), k, cfg.judge.shards)
    # the folder's settings.json fixes its judge, so the answers decide
    return rd.judge_done(k, out, units, lambda marker: True) is not None


def _report_done(rd: RunDir, cfg: Config, k: int, out: str) -> bool:
    report = read_done(rd.report_paths(out)["json"])
    verdicts = rd.verdicts_file(out)
    if report is None or not verdicts.exists():
        return False
    made_from = report.get("verdicts_sha256")  # absent in reports of older lcr versions
    return made_from is None or made_from == [sha256_file(verdicts)]


def _generate_records(rd: RunDir, k: int, out: str) -> str:
    units = len(rd.shard(k)["units"])
    n = len({r.get("key") for p in rd.generate_files(k) for r in read_jsonl(p).records})
    return f"{min(n, units)}/{units}"


def _merge_records(rd: RunDir, k: int, out: str) -> str:
    info = rd.merge_marker()
    return str(info["records"]) if info else "-"


def _judge_records(rd: RunDir, k: int, out: str) -> str:
    n = len(read_jsonl(rd.judge_file(k, out)).records)
    return str(n) if n else "-"


def _no_records(rd: RunDir, k: int, out: str) -> str:
    return "-"


STAGES = (
    Stage("generate", _generate, _plan_shards, _generate_done, _generate_records, array=True,
          after="afterany", gpus="gpus_per_node", minutes="time"),
    # afterany: the merge runs even when a shard failed, and lists what is missing
    Stage("merge", _merge, _one, _merge_done, _merge_records, after="afterany"),
    Stage("judge", _judge, _judge_shards, _judge_done, _judge_records, array=True,
          gpus="judge_gpus_per_node", minutes="judge_time", per_out=True),
    Stage("report", _report, _one, _report_done, _no_records, per_out=True),
)
BY_NAME = {s.name: s for s in STAGES}
LAST = STAGES[-1]  # its result is the run's summary line


def chain_from(name: str) -> tuple[Stage, ...]:
    """The stage `name` and every stage after it, in order: what runs once `name` has to."""
    names = [s.name for s in STAGES]
    if name not in names:
        raise KeyError(f"no stage {name!r}; the stages are {', '.join(names)}")
    return STAGES[names.index(name):]


class StageJob(submitit.helpers.Checkpointable):
    """One task of a stage. Checkpointable: on time-out or preemption Slurm requeues it, and
    it resumes from the stage's own files."""

    def __call__(self, stage: str, run_dir: str, shard: int = 0, out: str = "",
                 overrides=()):
        return BY_NAME[stage].run(run_dir, shard, out, tuple(overrides))


def pending(rd: RunDir, cfg: Config, out: str = "") -> dict[str, list[int]]:
    """The shards of each stage that are not done, read from the outputs only. Once a stage
    has work to do, every stage after it is redone whole (its inputs will change)."""
    todo: dict[str, list[int]] = {}
    upstream = False
    for stage in STAGES:
        shards = stage.shards(rd, cfg)
        todo[stage.name] = shards if upstream else [
            k for k in shards if not stage.done(rd, cfg, k, out)]
        upstream = upstream or bool(todo[stage.name])
    return todo
