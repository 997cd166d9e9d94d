"""The run directory's readers: one command reads each bookkeeping file once, and what a
reader keeps follows the file when it changes.

    python -m pytest -q tests/test_rundir.py
"""

import json

from helpers import open_counts
from test_merge import merged_run

from lcr.cli import main
from lcr.io import atomic_write_json
from lcr.rundir import RunDir

# Asked for by many checks of one command: plan.json and questions.jsonl per shard and marker,
# merged.jsonl per judge shard, config.toml and the judge folder's settings.json (read by
# judge_config) per judge shard.
ONCE = ("config.toml", "plan.json", "questions.jsonl", "merged.jsonl", "merged.done",
        "settings.json")


def test_each_command_reads_each_file_once(tmp_path, capsys):
    rd, _, _ = merged_run(tmp_path, n_questions=9, shards=3, judge_shards=3, backend="exact")
    run = str(rd.path)
    for argv in (["merge", run], ["judge", run], ["report", run], ["status", run],
                 ["rerun", run, "--dry-run"], ["export", run],
                 ["judge", run, "--shard", "1", "--out", "again"]):
        with open_counts(rd.path) as opened:
            assert main(argv) == 0, capsys.readouterr().err
        assert {name: opened[name] for name in ONCE if opened[name] > 1} == {}, argv
    assert "nothing to do; every stage is done" in capsys.readouterr().out


def test_what_a_reader_keeps_follows_the_file(tmp_path):
    rd, _, plan = merged_run(tmp_path, backend="exact")
    rd = RunDir(rd.path)
    cfg, _ = rd.load_config()
    cfg.sampling.seeds.append(7)  # a caller changing its Config changes no one else's
    assert rd.load_config()[0].sampling.seeds == [0]
    assert len(rd.load_plan()["shards"]) == 2
    atomic_write_json(rd.plan_file, {**plan, "shards": plan["shards"][:1]})  # replaced
    assert len(rd.load_plan()["shards"]) == 1
    before = len(rd.load_questions())
    with open(rd.questions_file, "a") as f:  # the same file grown in place
        f.write(json.dumps({**rd.load_questions()[0], "question_id": "q99"}) + "\n")
    assert len(rd.load_questions()) == before + 1
    assert rd.merge_done() is not None
    with open(rd.merged_file, "a") as f:  # merged.jsonl no longer what merged.done vouches for
        f.write("{}\n")
    assert rd.merge_done() is None
