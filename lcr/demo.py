"""`lcr demo`: the whole pipeline on the bundled sample data with a tiny local model.

    lcr demo                      # local Slurm cluster if it starts, else the local executor
    lcr demo --executor local     # no Slurm at all

The model has random weights, so it scores near zero: the demo shows the machinery (real vLLM
generation with prefix caching, sharding, merge, judge, report), not a result.
"""

from __future__ import annotations

import os
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


def run_demo(executor: str = "auto", overrides: list[str] = (), config: str | None = None) -> int:
    from lcr import slurm

    overrides = list(overrides)
    if executor in ("auto", "slurm"):
        ok, why = start_local_cluster()
        if ok:
            print(f"local Slurm cluster up ({why})")
            executor = "slurm"
        elif slurm.slurm_available():
            executor = "slurm"  # a cluster that was already configured and answering
        elif executor == "slurm":
            print(f"lcr demo: no Slurm: {why}", file=sys.stderr)
            return 2
        else:
            print(f"no Slurm cluster ({why}); using submitit's local executor instead")
            executor = "local"
    cfg_path = config or DEMO_CONFIG
    overrides.append(f"slurm.executor={executor!r}")
    cfg = load_config(cfg_path, overrides)
    t0 = time.time()
    code = slurm.submit(str(cfg_path), overrides)
    if code:
        return code
    rd = slurm.RunDir(cfg.run_dir)
    if executor == "slurm":
        print("waiting for the chain (lcr status shows progress) ...", flush=True)
        if not slurm.wait_for_report(rd, timeout_s=1800, poll_s=5):
            table, _ = slurm.status_table(rd, cfg)
            print(table)
            print(f"lcr demo: the chain stopped before the report; see {rd.logs_dir}, "
                  f"fix the cause and run `lcr rerun {rd.path}`", file=sys.stderr)
            return 1
        table, _ = slurm.status_table(rd, cfg)
        print(table)
    report = rd.path / "report.json"
    if not report.exists():
        print(f"lcr demo: no report was written in {rd.path}", file=sys.stderr)
        return 1
    import json

    summary = json.loads(report.read_text()).get("summary", "")
    print(f"\nreport: {rd.path / 'report.md'} (also report.json, report.png)")
    print(summary)
    print(
        f"(demo finished in {time.time() - t0:.0f} s.) The tiny model has random weights, so "
        "its accuracy is near zero by design: this run shows the machinery, not a result.\n"
        "On a cluster, `lcr submit jobs/llama31-8b-aalcr.toml` runs the same chain with "
        "Llama-3.1-8B-Instruct on GPUs over the real AA-LCR snapshot and a Qwen3 judge."
    )
    return 0
