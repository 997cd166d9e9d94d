"""Rendered sbatch scripts (golden file) and the plain scripts in sbatch/."""

import os
import subprocess
from pathlib import Path

import pytest
from helpers import REPO

from lcr.config import ConfigError, load_config
from lcr.rundir import RunDir
from lcr.slurm import render_scripts

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
