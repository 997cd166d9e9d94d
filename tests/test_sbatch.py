"""Rendered sbatch scripts (golden file) and the plain scripts in sbatch/, run on the local
Slurm cluster by sbatch/submit-all.sh."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DEMO, REPO
from slurm_cluster import ensure_cluster, unavailable_reason
from test_faults import jobs_of, wait_until
from test_guards import chain_final, lcr_run

from lcr.config import ConfigError, load_config
from lcr.rundir import RunDir
from lcr.slurm import render_scripts
from lcr.stages import STAGES

needs_slurm = [pytest.mark.slurm, pytest.mark.vllm,
               pytest.mark.skipif(unavailable_reason() is not None,
                                  reason=str(unavailable_reason()))]

GOLDEN = Path(__file__).parent / "golden" / "sbatch-llama31-8b-aalcr.txt"
JOB = REPO / "jobs" / "llama31-8b-aalcr.toml"


def rendered(*overrides):
    cfg = load_config(JOB, ["run.root='/runs'", *overrides])
    scripts = render_scripts(cfg, RunDir(cfg.run_dir), python="python3")
    return "".join(f"===== {stage}\n{text}" for stage, text in scripts.items())


def test_rendered_scripts_match_the_golden_file():
    text = rendered()
    if os.environ.get("LCR_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_values_reaching_the_shell_are_quoted_or_refused():
    text = rendered("slurm.partition='gpu large'", "slurm.account=\"it's\"")
    assert "#SBATCH --partition='gpu large'" in text
    assert "#SBATCH --account='it'\"'\"'s'" in text
    with pytest.raises(ConfigError, match="line breaks are not allowed"):
        rendered('slurm.qos="high\\n#SBATCH --nodes=64"')
    with pytest.raises(ConfigError, match="not a safe file name"):
        rendered("run.name='x $(reboot)'")


@pytest.mark.parametrize("script", sorted((REPO / "sbatch").glob("*.sbatch"))
                         + [REPO / "sbatch" / "submit-all.sh"], ids=lambda p: p.name)
def test_plain_scripts_parse_and_demand_a_run_dir(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"]})
    assert proc.returncode != 0 and "usage:" in proc.stderr


@pytest.mark.parametrize("jid, expanded", [
    ("12", ["12"]),
    ("12_3", ["12_3"]),
    ("12_[0-2]", ["12_0", "12_1", "12_2"]),
    ("12_[0-1,5%2]", ["12_0", "12_1", "12_5"]),
])
def test_pending_array_lines_expand_to_task_ids(jid, expanded):
    from lcr.status import expand_array

    assert expand_array(jid) == expanded


# ---- the plain sbatch chain --------------------------------------------------------------

SUBMIT_ALL = REPO / "sbatch" / "submit-all.sh"


def test_plain_chain_follows_the_stage_table(planned_demo):
    _, rd, plan, _ = planned_demo
    proc = subprocess.run([sys.executable, "-m", "lcr.plain", str(rd.path)],
                          capture_output=True, text=True, check=True)
    names = [s.name for s in STAGES]
    assert proc.stdout.splitlines()[0] == f"STAGES=({' '.join(names)})"
    for stage in STAGES:
        assert (REPO / "sbatch" / f"{stage.name}.sbatch").is_file(), stage.name
        assert f"AFTER_{stage.name}={stage.after}" in proc.stdout
    assert f"--array={','.join(str(s['index']) for s in plan['shards'])}%64" in proc.stdout
    body = SUBMIT_ALL.read_text().split("set -euo pipefail")[1]
    assert 'for stage in "${STAGES[@]}"' in body  # the table's stages, not a list of its own
    assert not [name for name in names if name in body]


def _dependencies(job_ids: dict) -> dict:
    deps = {}
    for stage, job in job_ids.items():
        shown = subprocess.run(["scontrol", "show", "job", job.split("_")[0]],
                               capture_output=True, text=True, check=True).stdout
        deps[stage] = re.search(r"Dependency=(\S+)", shown).group(1)
    return deps


@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_slurm)], ids=["slurm"])
def test_submit_all_runs_the_chain_to_a_report(tmp_path, _):
    ensure_cluster()
    root = tmp_path / "plain runs"  # a space in the path, as users have
    assert lcr_run("plan", DEMO, "--set", f"run.root={str(root)!r}", "--set",
                   "shards.count=2", "--set", "run.name='plain'").returncode == 0
    rd = RunDir(root / "plain")
    env = {**os.environ, "SBATCH_FLAGS": "--hold", "PYTHON": sys.executable}  # held: to read
    # the dependencies before the jobs run
    proc = subprocess.run(["bash", str(SUBMIT_ALL), str(rd.path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first = {s.name: jobs_of(rd, s.name)[0] for s in STAGES}
    ids = [j for s in STAGES for j in jobs_of(rd, s.name)]
    try:
        deps = _dependencies(first)
        previous = None
        for stage in STAGES:  # each stage after the one before, as the table says
            want = f"{stage.after}:{previous}" if previous else "(null)"
            assert deps[stage.name].startswith(want), (stage.name, deps)
            previous = first[stage.name].split("_")[0] + ("_*" if stage.array else "")
        masters = sorted({j.split("_")[0] for j in ids})
        subprocess.run(["scontrol", "release", *masters], check=True)
        wait_until(lambda: chain_final(ids), 600, "the plain chain finished", poll=2)
    finally:
        subprocess.run(["scancel", *sorted({j.split("_")[0] for j in ids})], check=False)
    report = json.loads(rd.report_paths()["json"].read_text())
    assert report["n_units"] == json.loads(rd.plan_file.read_text())["n_units"]
    code_out = lcr_run("status", rd.path)
    rows = [ln.split() for ln in code_out.stdout.splitlines()[1:-1]]
    assert all(row[2] == "done" and row[-1] in ids for row in rows), code_out.stdout
    logs = sorted(p.name for p in rd.logs_dir.iterdir())
    assert f"lcr-merge-{first['merge']}.out" in logs and len(logs) == len(ids)


@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_slurm)], ids=["slurm"])
def test_submit_all_refuses_half_a_chain(tmp_path, _):
    """A judge stage the cluster cannot take (8 GPUs; the node has 4): nothing is queued."""
    ensure_cluster()
    assert lcr_run("plan", DEMO, "--set", f"run.root={str(tmp_path)!r}", "--set",
                   "run.name='half'", "--set", "slurm.judge_gpus_per_node=8").returncode == 0
    rd = RunDir(tmp_path / "half")
    proc = subprocess.run(["bash", str(SUBMIT_ALL), str(rd.path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == ("submit-all.sh: sbatch refuses the judge stage, so nothing was "
                           "queued: allocation failure: Requested node configuration is not "
                           "available\n"), proc.stderr
    queued = subprocess.run(["squeue", "-h", "-n", "lcr-generate-half", "-o", "%i"],
                            capture_output=True, text=True, check=True).stdout
    assert queued.strip() == "" and not rd.jobs_file.exists()
