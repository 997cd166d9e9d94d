"""Start (or reuse) the local one-node Slurm cluster for tests that drive the real daemons.

    from slurm_cluster import ensure_cluster, unavailable_reason, sbatch, wait_for_job

    env = ensure_cluster()          # {"SLURM_CONF": ".../slurm.conf"}, also in os.environ
    job = sbatch("--wrap", "true")  # job id as a string
    wait_for_job(job)               # {"123": "COMPLETED"}

The cluster is sbatch/local-cluster/start.sh; it needs root and the Debian Slurm packages.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

START_SH = Path(__file__).resolve().parents[1] / "sbatch" / "local-cluster" / "start.sh"
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
# sacct states after which a job never changes again.
FINAL_STATES = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}


def unavailable_reason() -> str | None:
    """Why the local cluster cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "the local Slurm cluster must be started as root"
    for binary, package in [
        ("slurmctld", "slurmctld"),
        ("slurmd", "slurmd"),
        ("slurmdbd", "slurmdbd"),
        ("munged", "munge"),
        ("mariadbd", "mariadb-server"),
        ("sbatch", "slurm-client"),
    ]:
        if shutil.which(binary, path=SBIN_PATH) is None:
            return f"{binary} not installed (apt-get install {package})"
    return None


def run_start_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(START_SH), *args], check=False, capture_output=True, text=True, timeout=300
    )


def parse_exports(stdout: str) -> dict[str, str]:
    """The `export NAME=value` lines that start.sh prints, as a dict."""
    env = {}
    for line in stdout.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    return env


@functools.cache
def ensure_cluster() -> dict[str, str]:
    """Start the cluster if it is not up (once per process); export and return its env vars."""
    proc = run_start_sh()
    if proc.returncode != 0:
        raise RuntimeError(f"start.sh failed with exit code {proc.returncode}:\n{proc.stderr}")
    env = parse_exports(proc.stdout)
    if "SLURM_CONF" not in env:
        raise RuntimeError(f"start.sh printed no SLURM_CONF:\n{proc.stdout}\n{proc.stderr}")
    os.environ.update(env)
    return env


def sbatch(*args: str) -> str:
    """Submit a job; return its id."""
    out = subprocess.run(
        ["sbatch", "--parsable", *args], capture_output=True, text=True, check=True
    ).stdout
    return out.strip().split(";")[0]


def sacct_states(job_id: str) -> dict[str, str]:
    """{job id (array tasks as "ID_N"): state} from the accounting database."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    states = {}
    for line in out.splitlines():
        jid, _, state = line.partition("|")
        states[jid] = state.split()[0] if state else ""  # "CANCELLED by 0" -> "CANCELLED"
    return states


def wait_for_job(job_id: str, tasks: int = 1, timeout: float = 30) -> dict[str, str]:
    """Wait until `tasks` jobs (array tasks) of job_id are in a final state; return states."""
    deadline = time.monotonic() + timeout
    while True:
        states = sacct_states(job_id)
        final = {jid: s for jid, s in states.items() if s in FINAL_STATES}
        if len(final) >= tasks:
            return final
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not finished after {timeout}s: {states}")
        time.sleep(0.5)


def wait_for_state(job_id: str, state: str, timeout: float = 30) -> None:
    """Wait until sacct reports `state` for job_id."""
    deadline = time.monotonic() + timeout
    while sacct_states(job_id).get(job_id) != state:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not {state} after {timeout}s: {sacct_states(job_id)}")
        time.sleep(0.5)
