"""The merge stage on hand-made run directories: what is kept, refused, reported and written."""

import hashlib
import json
import subprocess
import sys

from lcr.cli import main as cli_main
from lcr.config import Config
from lcr.io import atomic_write_json, atomic_write_jsonl, read_jsonl, write_done
from lcr.merge import merge_run
from lcr.plan import make_plan
from lcr.provenance import config_toml
from lcr.rundir import RunDir
from lcr.units import keys_sha as units_sha
from lcr.units import plan_units


def make_run(tmp_path, n_questions=6, n_sets=3, seeds=(0,), shards=2, name="run",
             judge_shards=1, **judge):
    """config.toml, questions.jsonl and plan.json of a small run; no generation yet."""
    cfg = Config()
    cfg.run.name, cfg.run.root = name, str(tmp_path)
    cfg.sampling.seeds, cfg.shards.count = list(seeds), shards
    cfg.judge.shards = judge_shards
    for key, value in judge.items():
        setattr(cfg.judge, key, value)
    questions = [{
        "question_id": f"q{i}", "document_set_id": f"set{i % n_sets}",
        "document_category": ["legal", "finance"][i % 2], "question": f"How many in case {i}?",
        "answer": f"{(i + 1) * 1000:,} units", "prompt_tokens": 1000 + 10 * i,
        "shared_prefix_tokens": 900, "status": "ok",
    } for i in range(n_questions)]
    rd = RunDir(tmp_path / name)
    rd.path.mkdir(parents=True)
    rd.config_file.write_text(config_toml(cfg))
    atomic_write_jsonl(rd.questions_file, questions)
    plan = make_plan(questions, cfg)
    atomic_write_json(rd.plan_file, plan)
    return rd, cfg, plan


def gen_record(unit, cfg, shard=0, response=None, status="ok", t=1000.0, run_hash=None):
    i = int(unit["question_id"][1:])
    rec = {
        "key": unit["key"], "question_id": unit["question_id"], "seed": unit["seed"],
        "sample": unit["sample"], "document_set_id": unit["document_set_id"],
        "document_category": ["legal", "finance"][i % 2], "status": status,
        "response": f"There are {(i + 1) * 1000} units." if response is None else response,
        "prompt_tokens": 1000 + 10 * i, "cached_tokens": 0, "output_tokens": 7,
        "finish_reason": "stop", "elapsed_s": 0.1, "model": "tiny", "shard": shard,
        "part": None, "run_hash": run_hash or cfg.generation_hash(), "time": t,
    }
    if status != "ok":
        rec["error"] = f"{status} on purpose"
    return rec


def write_lines(path, records, tail=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records) + tail)


def mark_done(rd, spec):
    write_done(rd.generate_marker(spec["index"]),
               {"records": len(spec["units"]), "units_sha256": units_sha(spec["units"])})


def generate_all(rd, cfg, plan, skip=(), done=True):
    """Every planned unit written to its shard file (except `skip` keys), shards marked done."""
    for spec in plan["shards"]:
        recs = [gen_record(u, cfg, spec["index"]) for u in spec["units"] if u["key"] not in skip]
        write_lines(rd.generate_file(spec["index"]), recs)
        if done:
            mark_done(rd, spec)


def merged_run(tmp_path, **kw):
    """A complete, merged run: what the judge tests start from."""
    rd, cfg, plan = make_run(tmp_path, **kw)
    generate_all(rd, cfg, plan)
    assert merge_run(rd.path).complete
    return rd, cfg, plan


def tree_hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir())}


def test_complete_run_in_plan_order(tmp_path):
    rd, cfg, plan = make_run(tmp_path)
    generate_all(rd, cfg, plan)
    result = merge_run(rd.path)
    assert result.complete and not result.missing and not result.shards_not_done
    merged = read_jsonl(rd.merged_file).records
    assert [r["key"] for r in merged] == [u["key"] for u in plan_units(plan)]
    done = json.loads(rd.merged_done.read_text())
    assert done["records"] == len(merged) == 6
    assert done["missing"] == 0 and done["duplicates"] == 0 and done["conflicts"] == 0
    assert done["sha256"] == hashlib.sha256(rd.merged_file.read_bytes()).hexdigest()
    assert cli_main(["merge", str(rd.path)]) == 0


def test_torn_and_invalid_lines_are_skipped_and_reported(tmp_path):
    rd, cfg, plan = make_run(tmp_path)
    spec0, spec1 = plan["shards"]
    first, rest = spec0["units"][0], spec0["units"][1:]
    write_lines(rd.generate_file(0), [gen_record(first, cfg)])
    with open(rd.generate_file(0), "a") as f:
        f.write("this is not json\n")
        f.write(json.dumps({"key": "q0:0:0", "hello": 1}) + "\n")
    write_lines(rd.generate_file(0), [gen_record(u, cfg) for u in rest],
                tail='{"key": "' + first["key"] + '", "respo')  # killed mid-line
    generate_all_spec(rd, cfg, spec1)
    result = merge_run(rd.path)
    assert result.complete, result.summary()
    assert len(result.bad_lines) == 3
    assert any(b.startswith("shard-0000.jsonl:2: not JSON") for b in result.bad_lines)
    assert any(b.startswith("shard-0000.jsonl:3: not a generation record") for b in
               result.bad_lines)
    torn_line = 4 + len(rest)
    assert any(b.startswith(f"shard-0000.jsonl:{torn_line}: torn") for b in result.bad_lines)
    assert "unreadable line" in result.summary()


def generate_all_spec(rd, cfg, spec, done=True):
    write_lines(rd.generate_file(spec["index"]), [gen_record(u, cfg, spec["index"])
                                                   for u in spec["units"]])
    if done:
        mark_done(rd, spec)


def test_exact_and_conflicting_duplicates(tmp_path):
    rd, cfg, plan = make_run(tmp_path)
    generate_all(rd, cfg, plan)
    units = plan_units(plan)
    a, b, c = units[0], units[1], units[2]
    extra = [
        gen_record(a, cfg, t=2000.0),  # exact duplicate (same response), later time
        gen_record(b, cfg, status="error", response="", t=10.0),  # error beats nothing
        gen_record(c, cfg, response="Another answer.", t=10.0),  # earlier, different answer
    ]
    write_lines(rd.generate_file(0, part=1), extra)
    result = merge_run(rd.path)
    assert result.complete
    assert result.duplicates == 1
    assert result.conflicts == sorted([b["key"], c["key"]])
    merged = {r["key"]: r for r in read_jsonl(rd.merged_file).records}
    assert len(merged) == len(units)
    assert merged[a["key"]]["time"] == 1000.0  # earliest of the exact duplicates
    assert merged[b["key"]]["status"] == "ok"  # ok beats an earlier error
    assert merged[c["key"]]["response"] == "Another answer."  # both ok: earliest time wins
    done = json.loads(rd.merged_done.read_text())
    assert done["duplicates"] == 1 and done["conflicts"] == 2


def test_conflict_tie_breaks_by_file_then_line(tmp_path):
    rd, cfg, plan = make_run(tmp_path)
    generate_all(rd, cfg, plan)
    u = plan_units(plan)[0]
    write_lines(rd.generate_file(0, part=2), [gen_record(u, cfg, response="z-late-file")])
    write_lines(rd.generate_file(0, part=1), [gen_record(u, cfg, response="y-first-line"),
                                              gen_record(u, cfg, response="x-second-line")])
    merge_run(rd.path)
    merged = {r["key"]: r for r in read_jsonl(rd.merged_file).records}
    # same status and time: shard-0000.jsonl sorts before the part files
    assert merged[u["key"]]["response"] == gen_record(u, cfg)["response"]
    (rd.generate_file(0)).write_text("")  # test-made file; merge itself never edits shards
    merge_run(rd.path)
    merged = {r["key"]: r for r in read_jsonl(rd.merged_file).records}
    assert merged[u["key"]]["response"] == "y-first-line"


def test_record_from_another_run_is_refused(tmp_path):
    rd, cfg, plan = make_run(tmp_path)
    victim = plan_units(plan)[0]
    generate_all(rd, cfg, plan, skip={victim["key"]})
    stray = rd.generate_dir / "shard-0007.jsonl"
    write_lines(stray, [gen_record(victim, cfg, run_hash="0123456789abcdef")])
    result = merge_run(rd.path)
    assert result.refused == {"shard-0007.jsonl": 1}
    assert result.missing == [victim["key"]]
    assert not result.complete and not rd.merged_done.exists()
    assert "another configuration" in result.summary()
    assert victim["key"] not in {r["key"] for r in read_jsonl(rd.merged_file).records}


def test_missing_unit_and_undone_shard(tmp_path):
    rd, cfg, plan = make_run(tmp_path)
    spec0, spec1 = plan["shards"]
    generate_all_spec(rd, cfg, spec0)
    lost = spec1["units"][-1]
    write_lines(rd.generate_file(1), [gen_record(u, cfg, 1) for u in spec1["units"][:-1]])
    result = merge_run(rd.path)
    assert not result.complete
    assert result.missing == [lost["key"]] and result.shards_not_done == [1]
    assert result.records == len(plan_units(plan)) - 1
    assert not rd.merged_done.exists()
    assert len(read_jsonl(rd.merged_file).records) == result.records  # what it has
    assert cli_main(["merge", str(rd.path)]) != 0
    # the shard finishes: now complete
    write_lines(rd.generate_file(1), [gen_record(lost, cfg, 1)])
    mark_done(rd, spec1)
    assert cli_main(["merge", str(rd.path)]) == 0 and rd.merged_done.exists()


def test_stale_done_marker_is_removed_when_plan_grows(tmp_path):
    rd, cfg, plan = make_run(tmp_path)
    generate_all(rd, cfg, plan)
    assert merge_run(rd.path).complete
    extra = dict(plan_units(plan)[0], key="q0:0:1", sample=1)
    plan["shards"][0]["units"].append(extra)
    atomic_write_json(rd.plan_file, plan)
    result = merge_run(rd.path)
    assert result.missing == ["q0:0:1"]
    assert not rd.merged_done.exists()


def test_idempotent_and_shards_untouched(tmp_path):
    rd, cfg, plan = make_run(tmp_path)
    generate_all(rd, cfg, plan)
    u = plan_units(plan)[0]
    write_lines(rd.generate_file(1, part=0), [gen_record(u, cfg, response="other", t=5.0)],
                tail='{"torn')
    before = tree_hashes(rd.generate_dir)
    merge_run(rd.path)
    first = (rd.merged_file.read_bytes(), rd.merged_done.read_bytes())
    merge_run(rd.path)
    assert (rd.merged_file.read_bytes(), rd.merged_done.read_bytes()) == first
    assert tree_hashes(rd.generate_dir) == before


def test_cli_exit_status_lists_missing(tmp_path):
    rd, cfg, plan = make_run(tmp_path)
    lost = plan_units(plan)[2]["key"]
    generate_all(rd, cfg, plan, skip={lost})
    proc = subprocess.run([sys.executable, "-m", "lcr.cli", "merge", str(rd.path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1  # a stage that ran and did not finish (README: exit codes)
    assert lost in proc.stdout and "INCOMPLETE" in proc.stdout
