"""The plain sbatch chain: what sbatch/submit-all.sh queues for each row of lcr.stages.STAGES.

    eval "$(python3 -m lcr.plain shards/demo)"     # STAGES=(...), SETUP, AFTER_x, ARGS_x=(...)
    python3 -m lcr.plain shards/demo --record generate=12 merge=13 judge=14 report=15

The first prints, as bash arrays, the stages in the table's order and each one's sbatch
arguments, read from the run's config.toml the way `lcr submit` reads them (lcr.slurm): time,
CPUs, GPUs, partition (merge and report on slurm.cpu_partition), account, qos, memory,
constraint, exclusivity, slurm.extra, the array of shards, and a log file in RUN/logs/
(lcr-STAGE-JOB.out, where `lcr status` looks for a failed job's error). The second adds the
queued job ids to RUN/jobs.json, so `lcr status` and `lcr rerun` know them. The jobs run
slurm.setup's lines first (submit-all.sh passes them in $LCR_SETUP).
"""

from __future__ import annotations

import shlex
import sys
import time

from lcr.config import Config, ConfigError
from lcr.rundir import RunDir, RunDirError
from lcr.stages import STAGES, Stage
from lcr.status import job_entry, record_jobs


def sbatch_args(cfg: Config, rd: RunDir, stage: Stage) -> list[str]:
    """The sbatch options of one stage's job (or array), without its dependency."""
    s, heavy = cfg.slurm, stage.heavy
    logs = rd.logs_dir.absolute()
    args = [f"--job-name=lcr-{stage.name}-{cfg.run.name}", "--nodes=1",
            f"--time={getattr(s, stage.minutes) if stage.minutes else 30}",
            f"--cpus-per-task={s.cpus_per_task if heavy else 1}"]
    gpus = getattr(s, stage.gpus) if stage.gpus else 0
    if gpus:
        args.append(f"--gpus-per-node={gpus}")
    partition = s.partition if heavy else (s.cpu_partition or s.partition)
    for flag, value in (("partition", partition), ("account", s.account), ("qos", s.qos),
                        ("mem", s.mem if heavy else ""),
                        ("constraint", s.constraint if heavy else "")):
        if value:
            args.append(f"--{flag}={value}")
    if s.exclusive and heavy:
        args.append("--exclusive")
    args += [f"--{key}={value}" for key, value in s.extra.items()]
    if stage.array:
        shards = stage.shards(rd, cfg)
        args.append(f"--array={','.join(map(str, shards))}%{s.array_parallelism}")
        args.append(f"--output={logs}/lcr-{stage.name}-%A_%a.out")
    else:
        args.append(f"--output={logs}/lcr-{stage.name}-%j.out")
    return args


def chain_text(rd: RunDir) -> str:
    """Bash assignments: STAGES, SETUP (slurm.setup's lines), and AFTER_<stage> and
    ARGS_<stage> for each."""
    cfg, _ = rd.load_config()
    rd.logs_dir.mkdir(parents=True, exist_ok=True)
    lines = ["STAGES=(" + " ".join(stage.name for stage in STAGES) + ")",
             f"SETUP={shlex.quote(chr(10).join(cfg.slurm.setup))}"]
    for stage in STAGES:
        lines.append(f"AFTER_{stage.name}={stage.after}")
        words = " ".join(shlex.quote(a) for a in sbatch_args(cfg, rd, stage))
        lines.append(f"ARGS_{stage.name}=({words})")
    return "\n".join(lines)


def record(rd: RunDir, pairs: list[str]) -> None:
    """jobs.json entries for `stage=JOBID` pairs: array tasks as JOBID_SHARD."""
    cfg, _ = rd.load_config()
    ids = dict(pair.split("=", 1) for pair in pairs)
    now, entries = time.strftime("%Y-%m-%dT%H:%M:%S"), []
    for stage in STAGES:
        if stage.name in ids:
            job = ids[stage.name]
            jobs = ({str(k): f"{job}_{k}" for k in stage.shards(rd, cfg)} if stage.array
                    else {"0": job})
            entries.append(job_entry(stage, jobs, now))
    record_jobs(rd, entries)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-") or (argv[1:2] and argv[1] != "--record"):
        print("usage: python3 -m lcr.plain RUN_DIR [--record STAGE=JOBID ...]", file=sys.stderr)
        return 2
    rd = RunDir(argv[0])
    try:
        if argv[1:2] == ["--record"]:
            record(rd, argv[2:])
        else:
            print(chain_text(rd))
    except (ConfigError, RunDirError, OSError) as e:
        print(f"lcr.plain: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
