"""Guards around a run: sealed settings, read-only roots, paths with spaces, --set where it
cannot apply, nonsense values, model paths, the plain sbatch chain, and the friction cases.

    python -m pytest -q tests/test_guards.py

Each test drives the `lcr` command (in this process, or as `python -m lcr.cli`), on the real
filesystem (a read-only tmpfs mount), the real vLLM CPU engine and the local Slurm cluster
where the case involves them. tests/FAILURES.md (or the README's failure table) names each.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import DEMO, REPO, copy_run
from slurm_cluster import ensure_cluster, sacct_states, unavailable_reason
from test_faults import cli, jobs_of, tree, wait_until
from test_merge import gen_record, make_run, mark_done, merged_run, write_lines

from lcr.config import load_config
from lcr.errors import exit_code
from lcr.io import read_jsonl
from lcr.overrides import sealed_settings
from lcr.rundir import RunDir
from lcr.stages import STAGES

needs_slurm = [pytest.mark.slurm, pytest.mark.vllm,
               pytest.mark.skipif(unavailable_reason() is not None,
                                  reason=str(unavailable_reason()))]


def lcr_run(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m lcr.cli ARGS` in a process of its own."""
    return subprocess.run([sys.executable, "-m", "lcr.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=env or dict(os.environ))


def chain_final(ids: list[str]) -> bool:
    """Every job (array task) in a final state; tasks cancelled before they ran included."""
    from lcr.status import ACTIVE, slurm_states

    states = slurm_states(ids)
    return all(states.get(j, "").upper() not in ACTIVE | {""} for j in ids)


def one_line_error(err: str, command: str) -> str:
    """The error line a command ended with: its last line, the only one of its kind (progress
    lines such as `[judge shard 0] ...` may come before it), and no traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith(f"lcr {command}: ")]
    assert errors == lines[-1:] and errors[0].startswith(f"lcr {command}: error: "), err
    return errors[0]


# ---- settings sealed at plan time ------------------------------------------------------------

def test_hand_edited_config_is_refused_by_every_stage(planned_demo, tmp_path, capsys):
    _, src, _, _ = planned_demo
    rd = RunDir(copy_run(src.path, tmp_path, "demo"))
    text = rd.config_file.read_text()
    assert "max_new_tokens = 32\n" in text
    rd.config_file.write_text(text.replace("max_new_tokens = 32\n", "max_new_tokens = 8\n"))
    before = tree(rd.path)
    for argv in (["generate", rd.path, "--shard", "0"], ["merge", rd.path],
                 ["judge", rd.path], ["status", rd.path], ["rerun", rd.path, "--dry-run"],
                 ["report", rd.path],
                 ["plan", DEMO, "--set", f"run.root={str(tmp_path)!r}"]):
        code, out, err = cli(capsys, *argv)
        assert code == 2 and out == "", (argv, out, err)
        assert "Traceback" not in err
        assert f"{rd.config_file} no longer holds the settings {rd.path} was planned " in err
        assert "  sampling.max_new_tokens: 32 -> 8\n" in err, err
        assert "`lcr plan CONFIG --force`" in err and f"`lcr rerun {rd.path} --set" in err
    assert tree(rd.path) == before  # nothing ran, nothing was written
    # what may change after planning is no part of the seal: it is what rerun --set writes
    rd.config_file.write_text(text.replace("time = 20\n", "time = 30\n"))
    assert cli(capsys, "status", rd.path)[0] == 0
    assert cli(capsys, "rerun", rd.path, "--dry-run", "--set", "slurm.time=40")[0] == 0


def _plan_argv(root, seeds):
    return ["plan", DEMO, "--force", "--set", f"run.root={str(root)!r}",
            "--set", f"sampling.seeds={seeds}"]


def test_concurrent_plans_of_one_run_take_turns(tmp_path):
    """Two `lcr plan --force` of one run at once, with different seeds, again and again:
    config.toml and plan.json always come from the same plan."""
    overlapped = 0
    for attempt in range(4):
        procs = [subprocess.Popen([sys.executable, "-m", "lcr.cli", *map(str, _plan_argv(
            tmp_path, seeds))], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for seeds in ("[0]", "[0,1,2]")]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        overlapped += any("waiting for the lock" in err for _, err in outs)
        rd = RunDir(tmp_path / "demo")
        cfg, meta = rd.load_config()  # refuses a config.toml that plan.json does not match
        plan = json.loads(rd.plan_file.read_text())
        questions = rd.load_questions()
        assert plan["generation_hash"] == meta["generation_hash"] == cfg.generation_hash()
        assert plan["settings"] == json.loads(json.dumps(sealed_settings(cfg)))
        assert plan["n_units"] == len(questions) * len(cfg.sampling.seeds), attempt
    assert overlapped, "the two plans never ran at the same time"
    assert not list(tmp_path.glob(".*.lock"))


# ---- a read-only run root ----------------------------------------------------------------

@pytest.fixture
def read_only_root(tmp_path):
    """A run root on a tmpfs holding a judged run (one generate shard to redo), remounted
    read-only."""
    from lcr.cli import main

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    root = tmp_path / "ro"
    root.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(root)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        rd, _, _ = merged_run(root, backend="exact")
        assert main(["judge", str(rd.path)]) == 0
        rd.generate_marker(0).unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        yield root, rd
    finally:
        subprocess.run(["umount", str(root)], check=False)


def test_read_only_run_root_is_one_line_at_every_command(read_only_root, capsys):
    root, rd = read_only_root
    with pytest.raises(OSError):
        (root / "probe").write_text("")  # the filesystem refuses root too
    before = tree(root)
    here = ["--set", f"run.root={str(root)!r}", "--set", "slurm.executor='local'"]
    for argv in (["plan", DEMO, *here], ["submit", DEMO, *here], ["rerun", rd.path],
                 ["rerun", rd.path, "--dry-run"],
                 ["demo", "--executor", "local", "--set", f"run.root={str(root)!r}"],
                 ["generate", rd.path, "--shard", "0"], ["merge", rd.path],
                 ["merge", rd.path, "--submit", "--set", "slurm.executor='local'"],
                 ["judge", rd.path], ["report", rd.path], ["export", rd.path],
                 ["plan", DEMO, "--set", f"run.root={str(root / 'new' / 'deeper')!r}"]):
        code, out, err = cli(capsys, *argv)
        line = one_line_error(err, argv[0])
        assert code == 2 and "(Read-only file system)" in line, (argv, err)
    assert tree(root) == before
    code, out, _ = cli(capsys, "status", rd.path)  # reading needs no write
    assert code == 0 and out.startswith("stage")


# ---- paths with spaces ---------------------------------------------------------------------

def test_compile_cache_under_a_root_with_a_space_is_reached_without_one(tmp_path,
                                                                       monkeypatch):
    from lcr.config import EngineSection
    from lcr.engine import compile_cache_dir

    monkeypatch.delenv("VLLM_CACHE_ROOT", raising=False)
    root = tmp_path / "runs with space"
    link = Path(compile_cache_dir(EngineSection(), str(root)))
    assert not any(c.isspace() for c in str(link))
    assert link.resolve() == (root / ".vllm-cache").resolve() and link.is_dir()
    assert compile_cache_dir(EngineSection(), str(root)) == str(link)  # the same link again
    plain = tmp_path / "plain"
    assert compile_cache_dir(EngineSection(), str(plain)) == str(plain / ".vllm-cache")


@pytest.mark.vllm
def test_engine_runs_under_a_root_with_a_space(tmp_path):
    """A real generate shard (vLLM CPU engine, torch.compile's C++ compile) with the run root
    and the compile cache both under paths that hold spaces."""
    root = tmp_path / "my runs"
    cache = Path(os.environ["LCR_CACHE"]) / "vllm cache with space"
    env = {**os.environ, "VLLM_CACHE_ROOT": str(cache)}
    assert lcr_run("plan", DEMO, "--set", f"run.root={str(root)!r}", "--set",
                   "shards.count=3", env=env).returncode == 0
    rd = RunDir(root / "demo")
    proc = lcr_run("generate", rd.path, "--shard", "2", env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = rd.shard(2)
    records = read_jsonl(rd.generate_file(2)).records
    assert sorted(r["key"] for r in records) == sorted(u["key"] for u in spec["units"])
    assert any(r["status"] == "ok" and r["output_tokens"] for r in records)
    assert list((cache / "torch_compile_cache").iterdir())  # the compile cache was written


# ---- --set where it cannot apply --------------------------------------------------------

SET_REFUSED = [
    pytest.param(["report", "{run}", "--set", "report.bogus=1"],
                 "--set report.bogus=1: unknown key report.bogus; valid keys in [report]: "
                 "bootstrap, ci_level, seed", id="report.bogus"),
    pytest.param(["report", "{run}", "--set", "sampling.n=2"],
                 "--set sampling.n=2: lcr report cannot apply sampling.n (it takes only "
                 "report.*", id="report with sampling.n"),
    pytest.param(["compare", "{run}", "{run}", "--set", "slurm.time=3"],
                 "lcr compare cannot apply slurm.time (it takes only report.*",
                 id="compare with slurm.time"),
    pytest.param(["export", "{run}", "--set", "report.ci_level=0.5"],
                 "lcr export cannot apply report.ci_level (it copies the run's files and "
                 "reads no setting)", id="export"),
    pytest.param(["merge", "{run}", "--set", "slurm.time=3"],
                 "lcr merge cannot apply slurm.time (it reads only the run's files; "
                 "`lcr merge RUN --submit --set slurm....`", id="merge without --submit"),
    pytest.param(["generate", "{run}", "--shard", "0", "--set", "engine.max_num_seqs=4"],
                 "lcr generate cannot apply engine.max_num_seqs (its job reads the run's "
                 "config.toml; `lcr rerun RUN --set ...`", id="generate"),
    pytest.param(["coverage", "--reps", "10", "--set", "report.bootstrap=5"],
                 "lcr coverage cannot apply report.bootstrap (it takes only report.ci_level",
                 id="coverage with report.bootstrap"),
    pytest.param(["coverage", "--reps", "10", "--set", "report.ci_level=1.5"],
                 "report.ci_level = 1.5; must be between 0 and 1", id="coverage ci_level 1.5"),
]


@pytest.mark.parametrize("argv, message", SET_REFUSED)
def test_set_is_refused_where_it_cannot_apply(tmp_path, capsys, argv, message):
    rd, _, _ = merged_run(tmp_path, backend="exact")
    assert cli(capsys, "judge", rd.path)[0] == 0
    before = tree(rd.path)
    code, out, err = cli(capsys, *[a.format(run=rd.path) for a in argv])
    assert code == 2 and out == "" and message in one_line_error(err, argv[0]), err
    assert tree(rd.path) == before


def test_set_report_values_take_effect(tmp_path, capsys):
    rd, cfg, plan = make_run(tmp_path, n_questions=12, n_sets=6, backend="exact")
    for spec in plan["shards"]:  # every third answer wrong: an interval of some width
        write_lines(rd.generate_file(spec["index"]), [
            gen_record(u, cfg, spec["index"], response=None if i % 3 else "no idea")
            for i, u in enumerate(spec["units"])])
        mark_done(rd, spec)
    assert cli(capsys, "merge", rd.path)[0] == 0
    assert cli(capsys, "judge", rd.path)[0] == 0
    width = {}
    for level in (0.95, 0.5):
        code, out, _ = cli(capsys, "report", rd.path, "--set", f"report.ci_level={level}")
        assert code == 0
        report = json.loads(rd.report_paths()["json"].read_text())
        assert report["ci_level"] == level
        width[level] = report["ci_high"] - report["ci_low"]
        code, out, _ = cli(capsys, "compare", rd.path, rd.path, "--force", "--set",
                           f"report.ci_level={level}")
        assert code == 0 and f"({level:.0%} " in out.splitlines()[2], out
    assert width[0.5] < width[0.95]
    code, out, _ = cli(capsys, "coverage", "--reps", "20", "--icc", "0.3", "--seeds", "1",
                       "--set", "report.ci_level=0.5")
    assert code == 0 and out.startswith("coverage of 50% intervals")
    cover = float(out.splitlines()[2].split()[3])
    assert cover < 0.9  # a 50% interval misses often; the 95% one would hold ~95%


# ---- status of a named re-judge ------------------------------------------------------------

def test_status_of_a_named_rejudge_reads_its_own_judge_shards(tmp_path, capsys):
    rd, _, _ = merged_run(tmp_path, backend="exact")  # the run's judge.shards is 1
    assert cli(capsys, "judge", rd.path, "--out", "two", "--set", "judge.shards=2")[0] == 0
    assert cli(capsys, "report", rd.path, "--out", "two")[0] == 0
    code, out, _ = cli(capsys, "status", rd.path, "--out", "two")
    assert code == 0
    judge = [ln.split() for ln in out.splitlines() if ln.startswith(("judge", "report"))]
    assert [row[:3] for row in judge] == [["judge", "0", "done"], ["judge", "1", "done"],
                                         ["report", "-", "done"]], out


# ---- model and tokenizer paths -----------------------------------------------------------

MODEL_PATHS = [
    pytest.param(["model.path='/nowhere/llama'", "model.tokenizer='tiny'"],
                 "model.path = '/nowhere/llama' does not exist; give a local folder holding "
                 "the model", id="missing model.path with model.tokenizer set"),
    pytest.param(["model.tokenizer='/nowhere/tok'"],
                 "model.tokenizer = '/nowhere/tok' does not exist", id="missing tokenizer"),
    pytest.param(["model.path='{empty}'", "model.tokenizer='tiny'"],
                 "model.path = '{empty}' holds no config.json, so vLLM cannot load a model",
                 id="model.path without config.json"),
]


@pytest.mark.parametrize("overrides, message", MODEL_PATHS)
def test_model_paths_are_checked_at_plan_time(tmp_path, capsys, overrides, message):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    root = tmp_path / "runs"
    for command in ("plan", "submit"):
        code, out, err = cli(capsys, command, DEMO, "--set", f"run.root={str(root)!r}",
                             "--set", "slurm.executor='local'",
                             *[x for o in overrides for x in ("--set", o.format(empty=empty))])
        assert code == 2 and out == ""
        assert message.format(empty=empty) in one_line_error(err, command)
    assert not root.exists()  # no folder left behind


# ---- nonsense values --------------------------------------------------------------------------

NONSENSE = [
    pytest.param("judge.max_retries=-3", "judge.max_retries = -3; must be at least 0",
                 id="judge.max_retries -3"),
    pytest.param("judge.timeout_s=-1", "judge.timeout_s = -1.0; must be more than 0",
                 id="judge.timeout_s -1"),
    pytest.param("judge.timeout_s=nan", "judge.timeout_s = nan; must be a finite number",
                 id="judge.timeout_s nan"),
    pytest.param("judge.concurrency=0", "judge.concurrency = 0; must be at least 1",
                 id="judge.concurrency 0"),
    pytest.param("judge.max_new_tokens=0", "judge.max_new_tokens = 0; must be at least 1",
                 id="judge.max_new_tokens 0"),
    pytest.param("slurm.time=0", "slurm.time = 0; must be at least 1", id="slurm.time 0"),
    pytest.param("slurm.cpus_per_task=0", "slurm.cpus_per_task = 0; must be at least 1",
                 id="slurm.cpus_per_task 0"),
    pytest.param("slurm.max_requeue=-1", "slurm.max_requeue = -1; must be at least 0",
                 id="slurm.max_requeue -1"),
    pytest.param("engine.gpu_memory_utilization=1.5",
                 "engine.gpu_memory_utilization = 1.5; must be more than 0 and at most 1",
                 id="engine.gpu_memory_utilization 1.5"),
    pytest.param("cost.prefill_tok_s=0", "cost.prefill_tok_s = 0.0; must be more than 0",
                 id="cost.prefill_tok_s 0"),
    pytest.param("debug.unit_delay_s=inf", "debug.unit_delay_s = inf; must be a finite number",
                 id="debug.unit_delay_s inf"),
]


@pytest.mark.parametrize("override, message", NONSENSE)
def test_nonsense_values_are_refused_at_plan_time_and_on_a_planned_run(tmp_path, capsys,
                                                                       override, message):
    code, _out, err = cli(capsys, "plan", DEMO, "--set", f"run.root={str(tmp_path / 'r')!r}",
                         "--set", override)
    assert code == 2 and message in one_line_error(err, "plan")
    assert not (tmp_path / "r").exists()
    rd, _, _ = merged_run(tmp_path, backend="exact")
    before = tree(rd.path)
    for argv in (["rerun", rd.path, "--dry-run", "--set", override],
                 ["judge", rd.path, "--set", override]):
        code, _out, err = cli(capsys, *argv)
        assert code == 2 and message in one_line_error(err, argv[0])
    assert tree(rd.path) == before


def test_negative_seeds_and_bad_numbers_on_the_command_line_are_refused(tmp_path, capsys):
    code, _, err = cli(capsys, "plan", DEMO, "--set", "sampling.seeds=[0,-1]")
    assert code == 2 and "sampling.seeds [0, -1]: seeds must be 0 or more" in err
    for argv, says in ((["coverage", "--reps", "0"], "argument --reps: 0 is out of range: "
                        "must be at least 1"),
                       (["coverage", "--truth", "1.5"], "argument --truth: 1.5 is out of range"),
                       (["coverage", "--truth", "x"], "argument --truth: 'x' is not a number"),
                       (["bench", "--scale", "0"], "argument --scale: 0 is out of range")):
        with pytest.raises(SystemExit) as e:
            cli(capsys, *argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and "Traceback" not in err


def test_export_to_a_folder_writes_into_it(tmp_path, capsys):
    rd, _, _ = merged_run(tmp_path, backend="exact")
    assert cli(capsys, "judge", rd.path)[0] == 0
    folder = tmp_path / "exports"
    folder.mkdir()
    code, out, err = cli(capsys, "export", rd.path, "--to", folder)
    assert code == 0, err
    assert out.strip() == f"wrote {folder / 'answers.parquet'}"
    import datasets

    table = datasets.load_dataset("parquet", data_files=str(folder / "answers.parquet"),
                                  split="train")
    assert len(table) == len(read_jsonl(rd.verdicts_file()).records)


# ---- friction ------------------------------------------------------------------------------

def _without_offline(**more) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE",
                                                             "TRANSFORMERS_OFFLINE")}
    return {**env, **more}


@pytest.fixture
def dead_hub(tmp_path):
    """HF_ENDPOINT at a local port where nothing listens (a hub that cannot be reached)."""
    from test_faults import free_port

    return f"http://127.0.0.1:{free_port()}"


def test_unreachable_hub_fails_in_seconds_without_retries(tmp_path, dead_hub):
    env = _without_offline(HF_ENDPOINT=dead_hub, HF_HOME=str(tmp_path / "hf"))
    for argv, says in (
            ([REPO / "jobs" / "llama31-8b-aalcr.toml"],
             "cannot get ArtificialAnalysis/AA-LCR at revision "),
            ([DEMO, "--set", "model.path='some-org/some-model'"],
             "cannot load the tokenizer of 'some-org/some-model'")):
        t0 = time.time()
        proc = lcr_run("plan", *argv, "--set", f"run.root={str(tmp_path / 'runs')!r}", env=env)
        took = time.time() - t0
        assert proc.returncode == 2 and says in one_line_error(proc.stderr, "plan")
        assert f"{dead_hub} does not answer" in proc.stderr or "not in the local cache" in \
            proc.stderr, proc.stderr
        assert "Retrying" not in proc.stderr and took < 15, (took, proc.stderr)
    assert not (tmp_path / "runs").exists()  # a failed plan leaves no folder


def test_failed_local_job_names_its_error_and_status_shows_no_eta(tmp_path, capsys):
    root = tmp_path / "runs"
    code, out, err = cli(capsys, "submit", DEMO, "--set", f"run.root={str(root)!r}", "--set",
                         "slurm.executor='local'", "--set", "shards.count=2", "--set",
                         "debug.fail_shards=[0]")
    assert code == 1 and "Traceback" not in err
    assert re.search(r"generate failed:\n  job \d+ \(\S+_log\.err\): RuntimeError: "
                     r"debug\.fail_shards: shard 0 fails on purpose\n", err), err
    rd = RunDir(root / "demo")
    code, out, _ = cli(capsys, "status", rd.path)
    assert code == 0 and "ETA" not in out
    assert not list(root.rglob("*.lock")) and not list(root.glob(".*.lock"))


@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_slurm)], ids=["slurm"])
def test_status_shows_each_failed_shards_error_and_no_eta_once_stopped(tmp_path, _):
    ensure_cluster()
    assert lcr_run("submit", DEMO, "--set", f"run.root={str(tmp_path)!r}", "--set",
                   "run.name='stops'", "--set", "slurm.executor='slurm'", "--set",
                   "shards.count=2", "--set", "debug.fail_shards=[0]").returncode == 0
    rd = RunDir(tmp_path / "stops")
    ids = [j for s in STAGES for j in jobs_of(rd, s.name)]
    try:
        wait_until(lambda: chain_final(ids), 600, "the chain stopped", poll=2)
    finally:
        subprocess.run(["scancel", *sorted({j.split("_")[0] for j in ids})], check=False)
    gen0 = jobs_of(rd, "generate")[0]
    assert sacct_states(gen0)[gen0] == "FAILED"
    out = lcr_run("status", rd.path).stdout
    assert re.search(rf"^generate shard 0 failed, job {gen0} \(logs/{gen0}/\S+_log\.err\): "
                     r"RuntimeError: debug\.fail_shards: shard 0 fails on purpose$", out,
                     re.MULTILINE), out
    merge = jobs_of(rd, "merge")[0]
    assert re.search(rf"^merge failed, job {merge} \(logs/{merge}/\S+_log\.err\): "
                     r"StageFailed: INCOMPLETE: 22 unit\(s\) missing: ", out, re.MULTILINE), out
    assert "ETA" not in out and "stopped (no job queued or running)" in out


def test_time_limit_shorter_than_engine_start_warns_at_plan_time(tmp_path, capsys):
    code, out, _ = cli(capsys, "plan", DEMO, "--set", f"run.root={str(tmp_path)!r}",
                       "--set", "slurm.time=2", "--set", "slurm.signal_delay_s=90")
    assert code == 0
    assert ("warning: slurm.time = 2 min cannot cover a generate engine start (~60 s, "
            "cost.engine_start_s) plus slurm.signal_delay_s = 90 s: every generate task would "
            "be requeued before it writes a record, then fail after slurm.max_requeue = 3 "
            "requeues; raise slurm.time") in out
    code, out, _ = cli(capsys, "plan", DEMO, "--set", f"run.root={str(tmp_path)!r}")
    assert code == 0 and "cannot cover" not in out


def test_a_fixed_window_the_assumed_cache_cannot_hold_warns_at_plan_time(tmp_path, capsys):
    """Before the jobs queue: the same check generate makes on the engine's real cache."""
    root = f"run.root={str(tmp_path)!r}"
    code, out, _ = cli(capsys, "plan", DEMO, "--set", root, "--set", "engine.batch_sets=3",
                       "--set", "cost.kv_tokens=2048")
    assert code == 0
    warned = [ln for ln in out.splitlines() if ln.startswith("warning: shard ")]
    assert warned and all(
        re.match(r"warning: shard \d+: engine.batch_sets = 3: the shard's [23] largest document "
                 r"sets need [\d,]+ tokens of KV cache at once .* but the engine's cache holds "
                 r"2,048: use engine.batch_sets = \"auto\" .* \(the cache as cost.kv_tokens "
                 r"assumes it; generate checks the engine's own at start and stops there\)$",
                 ln) for ln in warned), warned
    for more in ("engine.batch_sets='auto'", "cost.kv_tokens=10000000"):
        code, out, _ = cli(capsys, "plan", DEMO, "--set", root, "--set", "engine.batch_sets=3",
                           "--set", "cost.kv_tokens=2048", "--set", more, "--force")
        assert code == 0 and "warning: shard" not in out


def test_failed_plan_leaves_no_folder_and_no_lock(tmp_path, capsys):
    root = tmp_path / "new" / "root"
    code, _, err = cli(capsys, "plan", DEMO, "--set", f"run.root={str(root)!r}", "--set",
                       "data.source='local'", "--set", f"data.path={str(tmp_path / 'none')!r}")
    assert code == 2 and "dataset folder not found" in one_line_error(err, "plan")
    assert not (tmp_path / "new").exists()
    code, _, _ = cli(capsys, "plan", DEMO, "--set", f"run.root={str(root)!r}")
    assert code == 0 and sorted(p.name for p in root.iterdir()) == ["demo"]  # no lock file


def test_job_file_with_a_byte_order_mark_is_named_as_such(tmp_path, capsys):
    job = tmp_path / "bom.toml"
    job.write_bytes(b"\xef\xbb\xbf" + DEMO.read_bytes())
    code, out, err = cli(capsys, "plan", job, "--set", f"run.root={str(tmp_path)!r}")
    assert code == 2 and out == ""
    assert one_line_error(err, "plan") == (
        f"lcr plan: error: {job}: starts with a UTF-8 byte-order mark (BOM), which TOML does "
        "not allow; save it as UTF-8 without BOM (e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`)")


def test_lock_files_go_when_released(tmp_path, capsys):
    rd, _, _ = merged_run(tmp_path, backend="exact")
    assert cli(capsys, "judge", rd.path, "--submit", "--set", "slurm.executor='local'")[0] == 0
    assert cli(capsys, "rerun", rd.path, "--dry-run")[0] == 0
    assert not list(tmp_path.rglob("*.lock")), list(tmp_path.rglob("*.lock"))


def test_config_loads_keep_working_with_plan_json_of_older_runs(planned_demo, tmp_path):
    """A run planned before plan.json kept its settings is read as before (nothing to hold
    config.toml to)."""
    _, src, _, _ = planned_demo
    rd = RunDir(copy_run(src.path, tmp_path, "old"))
    plan = json.loads(rd.plan_file.read_text())
    del plan["settings"]
    rd.plan_file.write_text(json.dumps(plan))
    rd.config_file.write_text(rd.config_file.read_text().replace("max_new_tokens = 32\n",
                                                                 "max_new_tokens = 8\n"))
    assert rd.load_config()[0].sampling.max_new_tokens == 8
    assert load_config(DEMO).sampling.max_new_tokens == 32


H200 = 143_771 * 2**20  # what NVML reports for an H200 (bytes)


def test_settings_that_cannot_fit_the_card_fail_in_one_line_naming_the_setting(tmp_path):
    """Numbers from the H200 run (jobs/gpu-smoke/README.md): vLLM 0.26 itself refused
    gpu_memory_utilization 0.1 ("No available memory for the cache blocks") and 0.2 ("16.0 GiB
    KV cache is needed ... larger than the available KV cache memory (11.01 GiB)")."""
    from lcr.bench.workload import dummy_model_dir
    from lcr.config import EngineSection
    from lcr.fit import FitError, check_card, check_engine, model_sizes

    folder = dummy_model_dir(tmp_path)
    sizes = model_sizes(folder)
    assert sizes.params == 8_030_261_248 and sizes.source == "config.json"  # Llama-3.1-8B
    assert sizes.kv_bytes_per_token == 32 * 2 * 8 * 128 * 2  # 128 KiB: 16 GiB for 131,072
    with pytest.raises(FitError) as e:
        check_card(sizes, EngineSection(gpu_memory_utilization=0.1), H200)
    msg = str(e.value)
    assert msg.startswith("model.path: the weights take 15.0 GiB per GPU (from config.json, "
                          "engine.tensor_parallel_size = 1) but engine.gpu_memory_utilization "
                          "= 0.1 of this GPU's 140.4 GiB is 14.0 GiB") and "\n" not in msg
    assert exit_code(e.value) == 2
    with pytest.raises(FitError, match=r"^engine.max_model_len = 131072: one request that long "
                                       r"needs 16.0 GiB of KV cache per GPU.*~107,"):
        check_card(sizes, EngineSection(gpu_memory_utilization=0.2), H200)
    # the judge's own sizes are named as the judge's; what the engine layer calls
    with pytest.raises(FitError, match=r"^judge.max_model_len = 131072"):
        check_engine(str(folder), EngineSection(gpu_memory_utilization=0.2), "judge", H200)
    with pytest.raises(FitError, match=r"^judge.model: the weights take 15.0 GiB per GPU \(from "
                       r"config.json, judge.tensor_parallel_size = 1\) .* raise "
                       r"judge.tensor_parallel_size \(and slurm.judge_gpus_per_node\)"):
        check_engine(str(folder), EngineSection(gpu_memory_utilization=0.1), "judge", H200)
    other = tmp_path / "not-llama"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "t5", "d_model": 512}')
    check_engine(str(other), EngineSection(gpu_memory_utilization=0.01), "engine", H200)
    check_card(sizes, EngineSection(gpu_memory_utilization=0.2, max_model_len=65536), H200)
    check_card(sizes, EngineSection(gpu_memory_utilization=0.2, tensor_parallel_size=2), H200)
    check_card(sizes, EngineSection(), H200)  # the shipped settings fit
    # a fixed KV cache is vLLM's to check; checkpoint files count as they are on disk
    check_card(sizes, EngineSection(gpu_memory_utilization=0.2, kv_cache_memory_bytes=2**30),
               H200)
    (folder / "model-00001-of-00001.safetensors").write_bytes(b"\0" * 4096)
    assert model_sizes(folder).weight_bytes == 4096 and model_sizes(folder).source == "files"


def test_a_failed_jobs_error_is_read_through_process_prefixes(tmp_path):
    """torch.distributed writes "[rank0]: " before each line of an in-process engine's job, and
    vLLM "(EngineCore pid=N) "; pydantic ends its message with a link. The line status and
    submit show is the exception's own message, whole."""
    from lcr.status import last_error

    rd = RunDir(tmp_path)
    log = rd.logs_dir / "77" / "77_0_log.err"
    log.parent.mkdir(parents=True)
    message = ("engine.batch_sets = 8: the shard's 7 largest document sets need 26,752 tokens "
               "of KV cache at once (prompts and answer budgets), but the engine's cache holds "
               "6,144: use engine.batch_sets = \"auto\" (as many as fit) or at most 1, or more "
               "KV cache (engine.gpu_memory_utilization, engine.kv_cache_memory_bytes)")
    log.write_text("\n".join([
        "[rank0]: Traceback (most recent call last):",
        '[rank0]:   File "lcr/fit.py", line 131, in check_window',
        "[rank0]:     raise FitError(",
        f"[rank0]: lcr.fit.FitError: {message}", ""]))
    assert last_error(rd, "77") == (log, f"FitError: {message}")
    log.write_text("\n".join([
        "(EngineCore pid=9) Traceback (most recent call last):",
        '(EngineCore pid=9)   File "vllm/config.py", line 1, in x',
        "(EngineCore pid=9) pydantic_core._pydantic_core.ValidationError: 1 validation error",
        "(EngineCore pid=9)   Value error, max_model_len (16384) is too long [type=value_error]",
        "(EngineCore pid=9)     For further information visit https://errors.pydantic.dev/2",
        ""]))
    assert last_error(rd, "77")[1] == (
        "ValidationError:   Value error, max_model_len (16384) is too long [type=value_error]")
