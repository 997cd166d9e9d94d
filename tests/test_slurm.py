"""The pipeline on the real local Slurm cluster: submit, status, rerun, requeue, cancel, sbatch.

Each test drives the `lcr` command as a user would; jobs run the real vLLM CPU engine.
"""

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter

import pytest
from helpers import DEMO, REPO
from slurm_cluster import FINAL_STATES, ensure_cluster, sacct_states, unavailable_reason

from lcr.io import read_jsonl, sha256_file
from lcr.rundir import RunDir

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.vllm,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    return ensure_cluster()


def lcr(*args, timeout=900, check=True):
    proc = subprocess.run([sys.executable, "-m", "lcr.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))
    if check and proc.returncode != 0:
        raise AssertionError(f"lcr {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def submit(root, name, *overrides):
    return lcr("submit", str(DEMO), "--set", f"run.root={str(root)!r}", "--set",
               f"run.name={name!r}", "--set", "slurm.executor='slurm'",
               *[x for o in overrides for x in ("--set", o)])


def job_ids(rd: RunDir, stage=None):
    data = json.loads(rd.jobs_file.read_text())["submissions"]
    return [j for e in data if stage in (None, e["stage"]) for j in e["jobs"].values()]


def wait_final(ids, timeout=600):
    """Wait until every job id (array tasks included) has a final sacct state."""
    from lcr.slurm import slurm_states  # expands pending arrays such as 12_[0-1%2]

    deadline = time.time() + timeout
    while True:
        states = {k: v for k, v in slurm_states(ids).items() if k in ids}
        if len(states) == len(ids) and all(s in FINAL_STATES for s in states.values()):
            return states
        assert time.time() < deadline, f"jobs not final after {timeout}s: {states}"
        time.sleep(2)


def logs_tail(rd: RunDir) -> str:
    out = []
    for p in sorted(rd.logs_dir.rglob("*.err"))[-4:]:
        out.append(f"== {p}\n" + p.read_text()[-1500:])
    return "\n".join(out)


def assert_complete(rd: RunDir):
    plan = json.loads(rd.plan_file.read_text())
    planned = sorted(u["key"] for s in plan["shards"] for u in s["units"])
    merged = [r["key"] for r in read_jsonl(rd.merged_file).records]
    verdicts = [r["key"] for r in read_jsonl(rd.verdicts_file()).records]
    assert sorted(merged) == planned and sorted(verdicts) == planned
    for name in ("report.json", "report.md", "report.png"):
        assert (rd.path / name).stat().st_size > 0


def test_demo_runs_the_whole_pipeline_on_slurm(tmp_path):
    proc = lcr("demo", "--set", f"run.root={str(tmp_path)!r}", timeout=1200)
    assert "local Slurm cluster up; in another terminal: export SLURM_CONF=" in proc.stdout
    # the wait shows progress, stage by stage, instead of a silent minute
    assert re.search(r"\[ *\d+ s\] generate \d/3.*; merge \d/1; judge \d/2; report \d/1",
                     proc.stdout), proc.stdout
    assert "report: " in proc.stdout and "accuracy " in proc.stdout
    assert "random weights" in proc.stdout
    rd = RunDir(tmp_path / "demo")
    assert_complete(rd)
    states = wait_final(job_ids(rd))
    assert set(states.values()) == {"COMPLETED"}, states
    report = json.loads((rd.path / "report.json").read_text())
    assert report["n_units"] == 42 and report["n_too_long"] == 2


def test_failed_shard_status_then_rerun_only_that_shard(tmp_path):
    submit(tmp_path, "fail", "debug.fail_shards=[1]")
    rd = RunDir(tmp_path / "fail")
    wait_final(job_ids(rd, "generate") + job_ids(rd, "merge"))
    status = lcr("status", str(rd.path)).stdout
    rows = {tuple(line.split()[:2]): line.split()[2] for line in status.splitlines()[1:]
            if line.split() and line.split()[0] in ("generate", "merge")}
    assert rows[("generate", "1")] == "failed", status
    assert rows[("generate", "0")] == "done" and rows[("generate", "2")] == "done", status
    assert rows[("merge", "-")] == "failed", status
    before = {p.name: sha256_file(p) for p in rd.generate_files() if "0001" not in p.name}
    dry = lcr("rerun", str(rd.path), "--dry-run").stdout
    assert "generate shards [1]" in dry and len(job_ids(rd, "generate")) == 3
    out = lcr("rerun", str(rd.path), "--set", "debug.fail_shards=[]").stdout
    assert "generate shards [1]" in out
    new = json.loads(rd.jobs_file.read_text())["submissions"]
    gen_entries = [e for e in new if e["stage"] == "generate"]
    assert list(gen_entries[-1]["jobs"]) == ["1"]  # exactly the failed shard
    wait_final(job_ids(rd, "report"), timeout=900)
    assert (rd.path / "report.json").exists(), logs_tail(rd)
    assert_complete(rd)
    after = {p.name: sha256_file(p) for p in rd.generate_files() if "0001" not in p.name}
    assert after == before  # done shards were never recomputed
    assert "nothing to do" in lcr("rerun", str(rd.path)).stdout


def test_rerun_finishes_a_named_rejudge(tmp_path):
    from test_merge import merged_run

    rd, _, _ = merged_run(tmp_path, n_questions=9, backend="exact")
    run = str(rd.path)
    lcr("judge", run)
    lcr("report", run)  # the run's own judge and report: done
    # a re-judge of its own shape, as jobs (`lcr judge RUN --out NAME --submit`)
    lcr("judge", run, "--out", "x", "--submit", "--set", "judge.shards=2",
        "--set", "slurm.cpus_per_task=1")
    wait_final(job_ids(rd), timeout=600)
    assert rd.report_paths("x")["json"].exists(), logs_tail(rd)
    rd.judge_marker(1, "x").unlink()  # one of its shards lost
    own = {p.name: sha256_file(p) for p in [*rd.judge_dir().iterdir(), rd.verdicts_file()]}
    assert "nothing to do; every stage is done" in lcr("rerun", run, "--dry-run").stdout
    dry = lcr("rerun", run, "--out", "x", "--dry-run").stdout
    assert "rerun: judge shards [1], report" in dry, dry  # the folder's 2 shards, not config's 1
    out = lcr("rerun", run, "--out", "x", "--set", "slurm.cpus_per_task=1").stdout
    assert "rerun: judge shards [1], report" in out, out
    entries = json.loads(rd.jobs_file.read_text())["submissions"]
    assert [(e["stage"], e["out"], list(e["jobs"])) for e in entries] == [
        ("judge", "x", ["0", "1"]), ("report", "x", ["0"]),  # the re-judge
        ("judge", "x", ["1"]), ("report", "x", ["0"])]  # the rerun: only the lost shard
    states = wait_final(job_ids(rd), timeout=600)
    assert set(states.values()) == {"COMPLETED"}, (states, logs_tail(rd))
    status = lcr("status", run, "--out", "x").stdout
    assert {line.split()[2] for line in status.splitlines()[1:-1]} == {"done"}, status
    verdicts = read_jsonl(rd.verdicts_file("x")).records
    assert sorted(r["key"] for r in verdicts) == sorted(r["key"] for r in
                                                         read_jsonl(rd.merged_file).records)
    report = json.loads(rd.report_paths("x")["json"].read_text())
    assert report["verdicts_sha256"] == [sha256_file(rd.verdicts_file("x"))]
    assert {p.name: sha256_file(p) for p in [*rd.judge_dir().iterdir(),
                                             rd.verdicts_file()]} == own  # left alone


def test_time_limit_requeues_and_resumes_without_loss(tmp_path):
    # 2-minute limit, warned 60 s ahead: each incarnation has a minute, of which the interpreter
    # and the engine start take about half; the shard writes one unit per 1.2 s (42 units, about
    # 50 s), so it must requeue and resume at least once, and 4 incarnations are plenty.
    submit(tmp_path, "requeue", "shards.count=1", "slurm.time=2", "slurm.signal_delay_s=60",
           "debug.unit_delay_s=1.2")
    rd = RunDir(tmp_path / "requeue")
    (gen,) = job_ids(rd, "generate")
    wait_final(job_ids(rd, "report"), timeout=900)
    history = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-j", gen, "-o", "JobID,State"],
                             capture_output=True, text=True, check=True).stdout
    assert "REQUEUED" in history or "PREEMPTED" in history or "TIMEOUT" in history, history
    recs = read_jsonl(rd.generate_file(0)).records
    keys = [r["key"] for r in recs]
    assert Counter(keys).most_common(1)[0][1] == 1, "a unit was written twice"
    assert_complete(rd)


def test_cancelled_job_shows_as_cancelled(tmp_path):
    submit(tmp_path, "cancel", "debug.unit_delay_s=20")
    rd = RunDir(tmp_path / "cancel")
    gen = job_ids(rd, "generate")
    deadline = time.time() + 300
    while sacct_states(gen[0]).get(gen[0]) != "RUNNING":
        assert time.time() < deadline
        time.sleep(1)
    subprocess.run(["scancel", gen[0]], check=True)
    wait_final([gen[0]])
    status = lcr("status", str(rd.path)).stdout
    row = next(line for line in status.splitlines() if line.split()[:2] == ["generate", "0"])
    assert "cancelled" in row, status
    subprocess.run(["scancel", *job_ids(rd)], check=False)
    wait_final(job_ids(rd))


def test_hand_submitted_sbatch_chain(tmp_path):
    lcr("plan", str(DEMO), "--set", f"run.root={str(tmp_path)!r}", "--set", "run.name='hand'")
    rd = RunDir(tmp_path / "hand")
    env = dict(os.environ, PYTHON=sys.executable,
               SBATCH_FLAGS=f"--cpus-per-task=1 --gpus-per-node=1 --chdir={tmp_path}")
    out = subprocess.run(["bash", str(REPO / "sbatch" / "submit-all.sh"), str(rd.path)],
                         capture_output=True, text=True, env=env, check=True).stdout
    ids = dict(word.split("=") for word in out.split("(")[0].split())  # "generate=12 ..."
    states = wait_final([ids["report"]], timeout=900)
    assert states[ids["report"]] == "COMPLETED", list(rd.logs_dir.glob("*.out"))
    assert_complete(rd)
    gen_states = sacct_states(ids["generate"])
    assert sorted(gen_states) == [f"{ids['generate']}_{i}" for i in range(3)]
    assert set(gen_states.values()) == {"COMPLETED"}
