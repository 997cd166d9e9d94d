"""`lcr demo`: the whole pipeline on the bundled sample data with a tiny local model.

    lcr demo                      # local Slurm cluster if it starts, else the local executor
    lcr demo --executor local     # no Slurm at all

The model has random weights, so it scores near zero: the demo shows the machinery (real vLLM
generation with prefix caching, sharding, merge, judge, report), not a result.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lcr.config import load_config

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "jobs" / "demo.toml"
START_CLUSTER = REPO / "sbatch" / "local-cluster" / "start.sh"


def start_local_cluster() -> tuple[bool, str]:
    """Start sbatch/local-cluster (root + Debian Slurm packages); export SLURM_CONF here."""
    if shutil.which("sbatch") is None:  # a cluster we could start but never submit to
        return False, "sbatch is not on PATH (apt-get install slurm-client)"
    if os.geteuid() != 0:
        return False, "not root"
    if not START_CLUSTER.exists():
        return False, f"{START_CLUSTER} not found (install lcr from a checkout: pip install -e .)"
    if shutil.which("slurmctld") is None and not Path("/usr/sbin/slurmctld").exists():
        return False, "Slurm daemons not installed (apt-get install slurmctld slurmd ...)"
    try:
        res = subprocess.run(["bash", str(START_CLUSTER)], capture_output=True, text=True,
                             timeout=240)
    except subprocess.TimeoutExpired:
        return False, "local cluster did not start within 240 s"
    if res.returncode != 0:
        return False, "local cluster failed to start: " + res.stderr.strip()[-500:]
    for line in res.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export "):].split("=", 1)
            os.environ[key] = value.strip().strip("'\"")
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return True, os.environ.get("SLURM_CONF", "")


def _choose_executor(executor: str) -> str | None:
    """"slurm" (the local cluster, started here, or one already answering) or "local" when
    no cluster can start (only for `auto`); None when Slurm was asked for and cannot be had."""
    from lcr.slurm import slurm_problem

    if executor == "local":
        return "local"
    ok, why = start_local_cluster()
    if ok:
        print(f"local Slurm cluster up; in another terminal: export SLURM_CONF={why}")
        return "slurm"
    if slurm_problem() is None:
        return "slurm"  # a cluster that was already configured and answering
    if executor == "slurm":
        print(f"lcr demo: no Slurm: {why}", file=sys.stderr)
        return None
    print(f"no Slurm cluster ({why}); using submitit's local executor instead")
    return "local"


def run_demo(executor: str = "auto", overrides: list[str] = (), config: str | None = None) -> int:
    from lcr import slurm
    from lcr.plan import plan_run, plan_table
    from lcr.rundir import RunDir
    from lcr.status import status_table

    executor = _choose_executor(executor)
    if executor is None:
        return 2
    cfg_path = config or DEMO_CONFIG
    cfg = load_config(cfg_path, [*overrides, f"slurm.executor={executor!r}"])
    t0 = time.time()
    rd = RunDir(cfg.run_dir)
    with rd.lock():
        rd, plan, questions = plan_run(cfg)
        print(plan_table(plan, questions, cfg))
        slurm.queue(cfg, rd, executor)
    if executor == "slurm":
        print(f"waiting for the chain; `lcr status {shlex.quote(str(rd.path))}` shows it too",
              flush=True)
        shown = [""]

        def progress():
            line = _progress_line(rd, cfg)
            if line != shown[0]:
                print(f"  [{time.time() - t0:4.0f} s] {line}", flush=True)
                shown[0] = line

        if not slurm.wait_for_report(rd, timeout_s=1800, poll_s=3, on_poll=progress):
            print(status_table(rd, cfg))
            print(f"lcr demo: the chain stopped before the report; see {rd.logs_dir}, "
                  f"fix the cause and run `lcr rerun {shlex.quote(str(rd.path))}`",
                  file=sys.stderr)
            return 1
        print(status_table(rd, cfg))
    report = rd.report_paths()["json"]
    if not report.exists():
        print(f"lcr demo: no report was written in {rd.path}", file=sys.stderr)
        return 1
    summary = json.loads(report.read_text()).get("summary", "")
    print(f"\nreport: {rd.report_paths()['md']} (also report.json, report.png)")
    print(summary)
    print(
        f"(demo finished in {time.time() - t0:.0f} s.) The tiny model has random weights, so "
        "its accuracy is near zero by design: this run shows the machinery, not a result.\n"
        "On a cluster, `lcr submit jobs/llama31-8b-aalcr.toml` runs the same chain with "
        "Llama-3.1-8B-Instruct on GPUs over the real AA-LCR snapshot and a Qwen3 judge."
    )
    return 0


def _progress_line(rd, cfg) -> str:
    """One line per stage: shards done of all (and records so far)."""
    from lcr.stages import STAGES
    from lcr.status import status_rows

    rows, _ = status_rows(rd, cfg)
    parts = []
    for stage in STAGES:
        mine = [r for r in rows if r[0] == stage.name]
        done = sum(r[2] == "done" for r in mine)
        records = sum(int(r[3].split("/")[0]) for r in mine if r[3][:1].isdigit())
        parts.append(f"{stage.name} {done}/{len(mine)}" + (
            f" ({records} records)" if records and done < len(mine) else ""))
    return "; ".join(parts)
