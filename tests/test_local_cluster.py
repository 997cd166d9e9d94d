"""The local one-node Slurm cluster (sbatch/local-cluster) runs, schedules, cancels and accounts.

python -m pytest tests/test_local_cluster.py -q      # as root, with the Slurm packages
"""

import subprocess
import time

import pytest
from slurm_cluster import (
    ensure_cluster,
    run_start_sh,
    sbatch,
    unavailable_reason,
    wait_for_job,
    wait_for_state,
)

UNAVAILABLE = unavailable_reason()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    return ensure_cluster()


def test_wrap_job_completes_and_is_accounted(tmp_path):
    out = tmp_path / "out.txt"
    job = sbatch("--output", str(out), "--wrap", "echo hello from slurm")
    assert wait_for_job(job) == {job: "COMPLETED"}
    assert out.read_text().strip() == "hello from slurm"


def test_gpu_job_gets_a_fake_gpu(tmp_path):
    out = tmp_path / "out.txt"
    job = sbatch("--gres=gpu:1", "--output", str(out), "--wrap", "echo $CUDA_VISIBLE_DEVICES")
    assert wait_for_job(job) == {job: "COMPLETED"}
    assert out.read_text().strip() in {"0", "1", "2", "3"}


def test_scancel_shows_cancelled(tmp_path):
    job = sbatch("--output", str(tmp_path / "out.txt"), "--wrap", "sleep 300")
    try:
        wait_for_state(job, "RUNNING")
    finally:
        subprocess.run(["scancel", job], check=True)
    assert wait_for_job(job) == {job: "CANCELLED"}


def test_array_tasks_all_complete(tmp_path):
    job = sbatch(
        "--array=0-3",
        "--output",
        str(tmp_path / "task-%a.txt"),
        "--wrap",
        "echo $SLURM_ARRAY_TASK_ID",
    )
    states = wait_for_job(job, tasks=4)
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(4)}
    for i in range(4):
        assert (tmp_path / f"task-{i}.txt").read_text().strip() == str(i)


def test_second_start_is_a_quick_noop(cluster):
    t0 = time.monotonic()
    proc = run_start_sh()
    assert proc.returncode == 0, proc.stderr
    assert "already up" in proc.stderr
    assert proc.stdout.splitlines()[-1] == f"export SLURM_CONF={cluster['SLURM_CONF']}"
    assert time.monotonic() - t0 < 10
