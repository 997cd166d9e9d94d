"""The one CLI: every command's --help, the exit-code policy, the export, the override table."""

import json
import re

import pytest
from helpers import DEMO, REPO, lock_held_elsewhere
from test_merge import generate_all, make_run, merged_run

from lcr.cli import _parser, describe, main
from lcr.rundir import RunDir

COMMANDS = ["plan", "submit", "status", "rerun", "generate", "merge", "judge", "report",
            "compare", "export", "bench", "demo", "coverage"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_works_everywhere(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "--set" in capsys.readouterr().out


def test_plan_help_shows_every_key_with_its_meaning():
    text = describe()
    assert "[sampling]" in text and "temperature = 0.0  # 0 = greedy" in text
    assert 'executor = "slurm"  # "slurm", or "local"' in text
    assert "max_new_tokens = 2048  # output budget per unit" in text
    assert "plan" in _parser().format_help()


def test_exit_codes_follow_one_policy(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lcr.rundir.LOCK_WAIT_S", 1.0)
    # 2: the configuration or an input is wrong
    assert main(["plan", str(DEMO), "--set", "sampling.temprature=1"]) == 2
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    # 1: a stage ran and did not finish (the merge lists what is missing)
    rd, cfg, plan = make_run(tmp_path)
    generate_all(rd, cfg, plan, skip={plan["shards"][0]["units"][0]["key"]})
    assert main(["merge", str(rd.path)]) == 1
    assert "INCOMPLETE" in capsys.readouterr().out
    # 3: a lock is held (someone submits for this run right now)
    lock = rd.path.parent / f".{rd.path.name}.lock"
    with lock_held_elsewhere(lock) as pid:
        assert main(["rerun", str(rd.path), "--dry-run"]) == 3
    assert f"pid {pid}" in capsys.readouterr().err
    assert not lock.exists()  # removed by its holder when released


def test_every_error_class_carries_its_exit_code():
    import importlib
    import pkgutil

    import lcr
    from lcr.errors import InputError, LcrError, LockHeld, StageFailure, exit_code

    classes = {}
    for info in pkgutil.iter_modules(lcr.__path__):
        module = importlib.import_module(f"lcr.{info.name}")
        for name, obj in vars(module).items():
            if (isinstance(obj, type) and issubclass(obj, Exception)
                    and obj.__module__ == module.__name__):
                classes[name] = obj
    assert set(classes) >= {"ConfigError", "DataError", "LockedError", "StorageError",
                            "JudgeError", "EndpointError", "ReportError", "RunDirError",
                            "SlurmError", "StageError", "StageFailed", "RevisionError"}
    bases = {InputError: 2, StageFailure: 1, LockHeld: 3}
    for name, cls in classes.items():
        if cls in bases or cls is LcrError:
            continue
        (base,) = [b for b in bases if issubclass(cls, b)]  # exactly one kind of failure
        assert cls.exit_code == bases[base], name
    assert exit_code(FileNotFoundError(2, "x")) == 2 and exit_code(KeyError("bug")) is None
    # the builtins they always were still catch them
    assert issubclass(classes["ConfigError"], ValueError)
    assert issubclass(classes["StorageError"], OSError)


def test_only_what_may_change_can_change_on_a_planned_run(tmp_path, capsys):
    rd, _, _ = make_run(tmp_path)
    assert main(["rerun", str(rd.path), "--dry-run", "--set", "sampling.temperature=0.7"]) == 2
    err = capsys.readouterr().err
    assert "sampling.temperature is fixed once" in err and "slurm.*" in err
    assert main(["status", str(rd.path), "--set", "engine.max_model_len=8192"]) == 2
    assert main(["rerun", str(rd.path), "--dry-run", "--set", "slurm.time=30",
                 "--set", "engine.max_num_seqs=32"]) == 0


def test_multi_node_engines_are_refused(capsys):
    assert main(["plan", str(DEMO), "--set", "slurm.nodes=2"]) == 2
    assert "slurm.nodes = 2" in capsys.readouterr().err


def test_export_writes_a_table_that_datasets_opens(tmp_path, capsys):
    import datasets

    rd, _, _ = merged_run(tmp_path, backend="exact", seeds=(0, 1))
    assert main(["judge", str(rd.path)]) == 0
    capsys.readouterr()
    assert main(["export", str(rd.path)]) == 0
    path = RunDir(rd.path).path / "answers.parquet"
    assert f"wrote {path}" in capsys.readouterr().out
    table = datasets.load_dataset("parquet", data_files=str(path), split="train")
    verdicts = [json.loads(line) for line in rd.verdicts_file().read_text().splitlines()]
    assert table.num_rows == len(verdicts) == 12
    row = table[0]
    assert row["key"] == verdicts[0]["key"] and row["verdict"] == verdicts[0]["verdict"]
    assert row["question"].startswith("How many") and row["answer"] and row["seed"] in (0, 1)
    for column in ("question", "document_category", "seed", "answer", "verdict", "reason",
                   "prompt_tokens", "output_tokens", "official_answer"):
        assert column in table.column_names
    assert main(["export", str(rd.path), "--out", "nothing"]) == 2  # no such verdicts


def test_sbatch_scripts_call_the_one_cli():
    for script in (REPO / "sbatch").glob("*.sbatch"):
        text = script.read_text()
        assert "-m lcr.cli " in text and "-m lcr.generate" not in text, script.name


def test_commands_printed_for_copying_quote_their_paths(tmp_path, capsys):
    rd, cfg, plan = make_run(tmp_path / "with space")
    generate_all(rd, cfg, plan, skip={plan["shards"][0]["units"][0]["key"]})
    assert main(["merge", str(rd.path)]) == 1
    assert f"`lcr rerun '{rd.path}'`" in capsys.readouterr().out


def test_chains_follow_the_stage_table():
    from lcr.stages import STAGES, chain_from

    assert chain_from(STAGES[0].name) == STAGES
    assert [s.name for s in chain_from("judge")] == ["judge", "report"]
    assert [s.name for s in STAGES if s.per_out] == ["judge", "report"]  # judge-OUT/, report-OUT
    with pytest.raises(KeyError, match="the stages are generate, merge, judge, report"):
        chain_from("extract")


# ---- documented commands and flags that no other test runs (tests/test_docs.py parses them)

def test_compare_from_the_command_line_with_out_and_force(tmp_path, capsys):
    from test_report import make_run as verdict_run
    from test_report import records

    recs = records(seeds=(0,), rng_seed=5)
    better = [dict(r, verdict="CORRECT") if i % 3 == 0 else r for i, r in enumerate(recs)]
    a = verdict_run(tmp_path, "a", better, out="strict")
    b = verdict_run(tmp_path, "b", recs, out="strict", sampling__temperature=0.7)
    assert main(["compare", str(a), str(b), "--out", "strict"]) == 2
    assert "sampling.temperature differs (0.0 vs 0.7)" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--out", "strict", "--force"]) == 0
    assert "A - B = +" in capsys.readouterr().out
    assert main(["compare", str(a), str(b)]) == 2  # without --out: their own verdicts, none
    assert "verdicts.jsonl: no such file" in capsys.readouterr().err


def test_export_to_a_file_of_a_rejudge(tmp_path, capsys):
    rd, _, _ = merged_run(tmp_path, backend="exact")
    assert main(["judge", str(rd.path), "--out", "again"]) == 0
    target = tmp_path / "elsewhere" / "rows.parquet"
    target.parent.mkdir()
    assert main(["export", str(rd.path), "--out", "again", "--to", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    assert target.stat().st_size > 0 and not (rd.path / "answers-again.parquet").exists()
    assert main(["export", str(rd.path), "--out", "again"]) == 0
    assert (rd.path / "answers-again.parquet").exists()


def test_coverage_from_the_command_line(capsys):
    argv = ["coverage", "--reps", "40", "--truth", "0.3", "--icc", "0.3", "--seeds", "1"]
    assert main(argv) == 0
    plain = capsys.readouterr().out
    assert main([*argv, "--bootstrap", "--seed", "1"]) == 0
    both = capsys.readouterr().out
    assert "percentile bootstrap" in both and "percentile bootstrap" not in plain
    # one cell: coverage shares, each with its mean width
    assert re.match(r" 0\.30 0\.30 +1 +0\.\d{4} \[0\.\d{3}\]", plain.splitlines()[2])


def test_submit_force_replans_a_run_with_another_config(tmp_path, capsys):
    base = ["--set", f"run.root={str(tmp_path)!r}", "--set", "slurm.executor='local'"]
    assert main(["plan", str(DEMO), *base]) == 0
    more = [*base, "--set", "sampling.seeds=[0,1,2]"]
    assert main(["submit", str(DEMO), *more, "--dry-run"]) == 2  # refused: another config
    assert "--force" in capsys.readouterr().err
    assert main(["submit", str(DEMO), *more, "--dry-run", "--force"]) == 0
    assert "===== generate (sbatch script; not submitted) =====" in capsys.readouterr().out
    plan = json.loads(RunDir(tmp_path / "demo").plan_file.read_text())
    assert {u["seed"] for s in plan["shards"] for u in s["units"]} == {0, 1, 2}
