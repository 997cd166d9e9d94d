"""Faults and bad input: each ends in one clear message and a state that a rerun finishes.

    python -m pytest -q tests/test_faults.py

One test, or one row of a table, per case of tests/FAILURES.md, which names the test of every
row (test_failure_table_names_real_tests keeps the two in step, exit codes included). Each
asserts the message the user sees and that nothing written was lost or written twice. The
user-facing entry points are driven: `lcr.cli.main` (the `lcr` console script, in this process
or as `python -m lcr.cli`), and the real local Slurm cluster where one is needed.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from helpers import DEMO, REPO, LocalServer, copy_run
from slurm_cluster import FINAL_STATES, ensure_cluster, sacct_states, unavailable_reason
from test_merge import gen_record, generate_all, make_run, merged_run, write_lines

import lcr.io as lcr_io
from lcr import generate
from lcr.io import ShardWriter, read_jsonl
from lcr.merge import merge_run
from lcr.rundir import RunDir
from lcr.sample import write_snapshot
from lcr.units import plan_units

KEY = "sk-lcr-faults-5d1e9b7a3c"  # a judge API key: must never reach the run dir or a log
KEY_ENV = "LCR_FAULTS_JUDGE_KEY"
SLOW = "ZZSLOWZZ"  # a candidate answer holding this makes the stub judge misbehave for it
SLURM_TOOLS = {"sbatch", "srun", "salloc", "sinfo", "squeue", "scancel", "sacct", "scontrol",
               "sacctmgr", "sattach", "sbcast", "sdiag", "sprio", "sreport", "sshare", "sstat",
               "strigger", "scrontab", "sview", "slurmctld", "slurmd", "slurmdbd", "slurmstepd"}


# ---- helpers --------------------------------------------------------------------------------

def cli(capsys, *args) -> tuple[int, str, str]:
    """`lcr ARGS` in this process: exit code, stdout, stderr."""
    from lcr.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def tree(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under folder."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def assert_once(records: list[dict], units: list[dict]) -> None:
    """Every planned unit has exactly one record, and there is no other."""
    keys = [r["key"] for r in records]
    assert sorted(keys) == sorted(u["key"] for u in units)
    assert not [k for k, n in Counter(keys).items() if n > 1], "a unit was written twice"


def status_rows(out: str) -> dict[tuple[str, str], list[str]]:
    """`lcr status` table: {(stage, shard): the row's words}."""
    rows = {}
    for line in out.splitlines()[1:]:
        words = line.split()
        if len(words) >= 3 and words[0] in ("generate", "merge", "judge", "report"):
            rows[(words[0], words[1])] = words
    return rows


def set_debug(rd: RunDir, **values) -> None:
    """Change [debug] in a run's config.toml (it does not take part in the records' hash)."""
    import tomli_w

    from lcr.rundir import tomllib

    data = tomllib.loads(rd.config_file.read_text())
    data["debug"].update(values)
    rd.config_file.write_text(tomli_w.dumps(data))


def wait_until(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.time() + timeout
    while not (value := predicate()):
        assert time.time() < deadline, f"not {what} after {timeout:.0f} s"
        time.sleep(poll)
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def engine(planned_demo):
    """One real vLLM engine (CPU, tiny model) for the in-process generation tests."""
    return generate._default_engine(planned_demo[0])


def factory(engine):
    return lambda cfg: engine


def most_sets(plan) -> dict:
    return max(plan["shards"], key=lambda s: len(s["document_sets"]))


# ---- generation: kills, locks, full disks ---------------------------------------------------

@pytest.mark.vllm
def test_sigkill_mid_shard_shows_partial_and_rerun_completes(planned_demo, tmp_path, engine,
                                                             capsys):
    _, src, plan, _ = planned_demo
    spec = most_sets(plan)
    k, units = spec["index"], spec["units"]
    rd = RunDir(copy_run(src.path, tmp_path))
    set_debug(rd, unit_delay_s=1.0)
    proc = subprocess.Popen([sys.executable, "-m", "lcr.cli", "generate", str(rd.path), "--shard",
                             str(k)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = rd.generate_file(k)
    try:  # too-long units are recorded before the engine starts: wait for generated ones
        wait_until(lambda: any(r["status"] == "ok" for r in read_jsonl(path).records), 300,
                   "generating")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = path.read_bytes()
    n = len(read_jsonl(path).records)
    assert n < len(units), "the kill landed after the shard's run"
    assert not rd.generate_marker(k).exists()
    code, out, _ = cli(capsys, "status", rd.path)
    assert code == 0
    assert status_rows(out)[("generate", str(k))][2:4] == ["partial", f"{n}/{len(units)}"], out
    code, out, _ = cli(capsys, "rerun", rd.path, "--dry-run")
    assert code == 0 and "rerun: generate shards [0, 1, 2], merge" in out
    set_debug(rd, unit_delay_s=0.0)
    generate.run_shard(rd.path, k, engine_factory=factory(engine))
    assert path.read_bytes().startswith(before)  # what was written stays, byte for byte
    assert_once(read_jsonl(path).records, units)


@pytest.mark.vllm
def test_second_incarnation_is_refused_while_the_first_writes(planned_demo, tmp_path, engine):
    _, src, plan, _ = planned_demo
    k, units = 0, plan["shards"][0]["units"]
    scratch = RunDir(copy_run(src.path, tmp_path, "scratch"))
    generate.run_shard(scratch.path, k, engine_factory=factory(engine))
    earlier = read_jsonl(scratch.generate_file(k)).records[:5]
    rd = RunDir(copy_run(src.path, tmp_path))
    path = rd.generate_file(k)
    with ShardWriter(path) as first:  # the earlier incarnation: wrote 5 records, still running
        first.append_many(earlier)
        before = path.read_bytes()
        proc = subprocess.run([sys.executable, "-m", "lcr.cli", "generate", str(rd.path), "--shard",
                               str(k)], capture_output=True, text=True, timeout=300,
                              check=False)
        assert proc.returncode == 3, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            f"lcr generate: {path} is being written by another process (pid {os.getpid()} on "
            f"{os.uname().nodename}); a requeued job may be racing its earlier incarnation. "
            "Wait for it to end (or cancel it) and run again.")
        assert "Traceback" not in proc.stderr
        assert path.read_bytes() == before and not rd.generate_marker(k).exists()
    generate.run_shard(rd.path, k, engine_factory=factory(engine))  # the earlier one has ended
    assert path.read_bytes().startswith(before)
    assert_once(read_jsonl(path).records, units)


@pytest.mark.vllm
@pytest.mark.parametrize("code", [
    pytest.param(errno.ENOSPC, id="disk full (ENOSPC)"),
    pytest.param(errno.EROFS, id="read-only run dir (EROFS)"),
    pytest.param(errno.EDQUOT, id="over quota (EDQUOT)"),
])
def test_disk_error_while_appending_stops_the_shard_cleanly(planned_demo, tmp_path, engine,
                                                            monkeypatch, capsys, code):
    _, src, plan, _ = planned_demo
    spec = most_sets(plan)
    k, units = spec["index"], spec["units"]
    rd = RunDir(copy_run(src.path, tmp_path))
    path = rd.generate_file(k)
    monkeypatch.setattr(generate, "_default_engine", factory(engine))
    real_append = lcr_io._append
    writes = []

    def append_then_fail(fd, where, records):  # the first append lands, then the disk says no
        if writes:
            try:
                raise OSError(code, os.strerror(code))
            except OSError as e:
                raise lcr_io.StorageError(where, "append", e, lcr_io.KEPT) from e
        writes.append(records)
        real_append(fd, where, records)

    monkeypatch.setattr(lcr_io, "_append", append_then_fail)
    argv = ["generate", str(rd.path), "--shard", str(k)]
    code_, _, err = cli(capsys, *argv)
    assert code_ == 2
    n = len(read_jsonl(path).records)
    assert 0 < n < len(units)
    assert err.strip().splitlines()[-1] == (
        f"lcr generate: error: {path}: cannot append ({os.strerror(code)}); the {n} record(s) "
        f"already written are kept; free space (or make {path.parent} writable) and run "
        f"`lcr rerun {rd.path}`")
    assert "Traceback" not in err and not rd.generate_marker(k).exists()
    before = path.read_bytes()
    monkeypatch.setattr(lcr_io, "_append", real_append)  # space is back
    assert cli(capsys, *argv)[0] == 0
    assert path.read_bytes().startswith(before)
    assert_once(read_jsonl(path).records, units)


def test_disk_full_while_writing_the_merge_keeps_every_file(tmp_path, monkeypatch, capsys):
    rd, cfg, plan = make_run(tmp_path)
    generate_all(rd, cfg, plan)
    shards = tree(rd.generate_dir)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("lcr.io.os.fsync", full)
    code, _, err = cli(capsys, "merge", rd.path)
    monkeypatch.undo()
    assert code == 2
    assert err == (f"lcr merge: error: {rd.merged_file}: cannot write (No space left on device); "
                   "the previous version, if any, is unchanged; free space (or make the folder "
                   "writable) and run again\n")
    assert not rd.merged_file.exists() and not rd.merged_done.exists()
    assert not list(rd.path.glob(".merged.jsonl.*"))  # no temporary file left behind
    assert tree(rd.generate_dir) == shards
    code, out, _ = cli(capsys, "merge", rd.path)
    assert code == 0 and "complete: merged.done written" in out
    assert_once(read_jsonl(rd.merged_file).records, plan_units(plan))


# ---- torn, empty, foreign lines ---------------------------------------------------------------

OTHER_RUN = "0123456789abcdef"

SHARD_LINES = [
    pytest.param("shard-0000.jsonl", '{"key": "q0:0:0", "respo',
                 "1 unreadable line(s) skipped: shard-0000.jsonl:{line}: torn last line "
                 "(no newline)", id="torn line"),
    pytest.param("shard-0000.jsonl", "\n",
                 "1 unreadable line(s) skipped: shard-0000.jsonl:{line}: empty line",
                 id="empty line"),
    pytest.param("shard-0000.jsonl", "<html>502 Bad Gateway</html>\n",
                 "1 unreadable line(s) skipped: shard-0000.jsonl:{line}: not JSON",
                 id="non-JSON line"),
    pytest.param("shard-0007.jsonl", None,
                 "shard-0007.jsonl: 1 record(s) from another configuration (run_hash) refused",
                 id="shard file of another run"),
]


@pytest.mark.parametrize("name, bad, message", SHARD_LINES)
def test_bad_lines_in_shard_files_are_skipped_not_merged(tmp_path, capsys, name, bad, message):
    rd, cfg, plan = make_run(tmp_path)
    generate_all(rd, cfg, plan)
    units = plan_units(plan)
    path = rd.generate_dir / name
    line = len(read_jsonl(path).records) + 1
    if bad is None:  # a record of the same unit, made under another configuration
        bad = json.dumps(gen_record(units[0], cfg, response="from another run",
                                    run_hash=OTHER_RUN)) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(bad)
    shards = tree(rd.generate_dir)
    code, out, _ = cli(capsys, "merge", rd.path)
    assert code == 0
    assert message.format(line=line) in out and "complete: merged.done written" in out
    merged = read_jsonl(rd.merged_file).records
    assert_once(merged, units)
    assert merged == [gen_record(u, cfg, s["index"]) for s in plan["shards"] for u in s["units"]]
    assert tree(rd.generate_dir) == shards  # merge only reads the shards


JUDGE_LINES = [
    pytest.param('{"key": "q5:0:0", "verd', id="torn line"),
    pytest.param("\n", id="empty line"),
    pytest.param("Traceback (most recent call last):\n", id="non-JSON line"),
]


@pytest.mark.parametrize("bad", JUDGE_LINES)
def test_bad_lines_in_judge_files_are_skipped_and_judged_again(tmp_path, capsys, bad):
    rd, _, plan = merged_run(tmp_path, backend="exact")
    assert cli(capsys, "judge", rd.path)[0] == 0
    path = rd.judge_file(0)
    kept = b"".join(path.read_bytes().splitlines(keepends=True)[:3])
    path.write_bytes(kept + bad.encode())  # a judge shard killed after 3 verdicts
    rd.judge_marker(0).unlink()
    rd.verdicts_file().unlink()
    code, _, err = cli(capsys, "judge", rd.path)
    assert code == 0
    assert "[judge shard 0] 6 units: 3 already judged" in err
    assert path.read_bytes().startswith(kept)
    verdicts = read_jsonl(rd.verdicts_file()).records
    assert_once(verdicts, plan_units(plan))
    first = {json.loads(x)["key"]: json.loads(x) for x in kept.splitlines()}
    assert all(v == first[v["key"]] for v in verdicts if v["key"] in first)  # kept, not redone


# ---- dataset --------------------------------------------------------------------------------

CSV = "AA-LCR_Dataset.csv"
ZIP = "extracted_text/AA-LCR_extracted-text.zip"


def _rename_column(snap: Path) -> None:
    csv = snap / CSV
    lines = csv.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].replace("question_id", "qid")
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _short_row(snap: Path) -> None:
    csv = snap / CSV
    lines = csv.read_text(encoding="utf-8").splitlines()
    lines[3] = "Academia,only,three"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _missing_document(snap: Path) -> None:
    csv = snap / CSV
    csv.write_text(csv.read_text(encoding="utf-8").replace(
        "Company_01 part 3.txt", "Company_01 part 3x.txt"), encoding="utf-8")


def _corrupt_zip(snap: Path) -> None:
    (snap / ZIP).write_bytes(b"PK\x03\x04 this is not a zip")


def _empty_zip(snap: Path) -> None:
    with zipfile.ZipFile(snap / ZIP, "w"):
        pass


DATASET_CASES = [
    pytest.param(_rename_column, "{snap}/" + CSV + ": missing column(s) question_id; found: ",
                 id="missing CSV column"),
    pytest.param(_short_row, "{snap}/" + CSV + ":4: malformed row: expected ",
                 id="malformed row"),
    pytest.param(_missing_document, "{snap}/" + CSV + ":2: question 1: document "
                 "'Company_01 part 3x.txt' not found in lcr/", id="missing document"),
    pytest.param(_corrupt_zip, "{snap}/" + ZIP + ": not a valid zip archive (",
                 id="corrupt zip"),
    pytest.param(_empty_zip, "{snap}/" + ZIP + ": the archive holds no documents",
                 id="empty zip"),
]


@pytest.mark.parametrize("spoil, message", DATASET_CASES)
def test_bad_dataset_stops_plan_before_any_record(tmp_path, capsys, spoil, message):
    snap = tmp_path / "snapshot"
    write_snapshot(snap)
    spoil(snap)
    args = ["plan", DEMO, "--set", f"run.root={str(tmp_path / 'runs')!r}", "--set",
            "data.source='local'", "--set", f"data.path={str(snap)!r}"]
    code, _, err = cli(capsys, *args)
    assert code == 2
    assert err.startswith("lcr plan: error: " + message.format(snap=snap)), err
    assert len(err.splitlines()) == 1  # one line, no traceback
    rd = RunDir(tmp_path / "runs" / "demo")
    assert not rd.questions_file.exists() and not rd.plan_file.exists()
    write_snapshot(snap)  # the fixed dataset: the same command now plans the run
    assert cli(capsys, *args)[0] == 0
    assert json.loads(rd.plan_file.read_text())["n_units"] == 42


@pytest.mark.vllm
def test_too_long_question_is_recorded_not_dropped(tmp_path, engine, capsys):
    code, out, _ = cli(capsys, "plan", DEMO, "--set", f"run.root={str(tmp_path)!r}")
    assert code == 0 and "1 too long (recorded, not run)" in out
    rd = RunDir(tmp_path / "demo")
    (long_q,) = [q for q in read_jsonl(rd.questions_file).records if q["status"] == "too_long"]
    assert re.fullmatch(r"prompt is \d+ tokens; engine.max_model_len 4096 minus "
                        r"sampling.max_new_tokens 32 leaves 4064", long_q["error"])
    plan = json.loads(rd.plan_file.read_text())
    for spec in plan["shards"]:
        generate.run_shard(rd.path, spec["index"], engine_factory=factory(engine))
    assert cli(capsys, "merge", rd.path)[0] == 0
    assert cli(capsys, "judge", rd.path)[0] == 0
    verdicts = read_jsonl(rd.verdicts_file()).records
    assert_once(verdicts, plan_units(plan))
    bad = [v for v in verdicts if v["question_id"] == long_q["question_id"]]
    assert len(bad) == 2 and all(v["status"] == "too_long" and v["verdict"] == "INCORRECT"
                                 for v in bad)
    assert all(v["reason"] == f"generation too_long: {long_q['error']}" for v in bad)


# ---- configuration ----------------------------------------------------------------------------

CONFIG_CASES = [
    pytest.param(["sampling.temprature=0.5"], "--set sampling.temprature=0.5: unknown key "
                 "sampling.temprature; valid keys in [sampling]: seeds, n, temperature, top_p",
                 id="unknown key"),
    pytest.param(["shards.count='many'"], "--set shards.count='many': shards.count: expected "
                 "int, got str 'many'", id="wrong type"),
    pytest.param(["engine.replicas=2", "engine.tensor_parallel_size=2", "slurm.gpus_per_node=8"],
                 "engine.replicas (2) x engine.tensor_parallel_size (2) = 4 must equal "
                 "slurm.gpus_per_node (8); set slurm.gpus_per_node = 0 on a machine without "
                 "GPUs", id="replicas x tensor_parallel_size != gpus_per_node"),
    pytest.param(["shards.count=0"], "shards.count = 0; must be at least 1", id="zero shards"),
    pytest.param(["shards.count=-3"], "shards.count = -3; must be at least 1",
                 id="negative shards"),
    pytest.param(["sampling.seeds=0"], "--set sampling.seeds=0: sampling.seeds: expected list, "
                 "got int 0", id="seeds not a list"),
    pytest.param(["run.name='../etc'"], "run.name '../etc' is not a safe file name (letters, "
                 "digits, '.', '_', '-'; not starting with '.' or '-')", id="run name with ../"),
    pytest.param(["run.name='x; rm -rf ~'"], "run.name 'x; rm -rf ~' is not a safe file name",
                 id="run name with shell metacharacters"),
    pytest.param(["run.name='$(reboot)'"], "run.name '$(reboot)' is not a safe file name",
                 id="run name with command substitution"),
]


@pytest.mark.parametrize("overrides, message", CONFIG_CASES)
def test_bad_config_is_refused_before_anything_is_written(tmp_path, capsys, overrides, message):
    root = tmp_path / "runs"
    for command in ("plan", "submit"):
        args = [command, DEMO, "--set", f"run.root={str(root)!r}", "--set",
                "slurm.executor='local'"]
        code, out, err = cli(capsys, *args, *[x for o in overrides for x in ("--set", o)])
        assert code == 2 and out == ""
        assert err.startswith(f"lcr {command}: error: {message}"), err
        assert len(err.splitlines()) == 1
    assert not root.exists()


def test_resubmit_with_another_config_is_refused_and_changes_nothing(planned_demo, tmp_path,
                                                                    capsys):
    _, src, plan, _ = planned_demo
    rd = RunDir(copy_run(src.path, tmp_path, "demo"))
    spec = plan["shards"][0]
    write_lines(rd.generate_file(0), [{"key": u["key"], "written": "before"}
                                      for u in spec["units"][:3]])
    before = tree(rd.path)
    code, out, err = cli(capsys, "submit", DEMO, "--set", f"run.root={str(tmp_path)!r}",
                         "--set", "sampling.seeds=[0,1,2]", "--set", "slurm.executor='local'")
    assert code == 2 and out == ""
    assert err.startswith(
        f"lcr submit: error: {rd.path} already holds a run with a different configuration:\n"
        "  sampling.seeds: [0, 1] -> [0, 1, 2]\n"
        "Mixing configurations would corrupt its results. Use another run.name, or pass "
        "--force to re-plan it"), err
    assert tree(rd.path) == before


# ---- judge endpoint ---------------------------------------------------------------------------

class StubHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint whose replies the test decides (server.behave)."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        srv = self.server
        with srv.lock:
            srv.log.append(time.time())
            n = len(srv.log)
        delay, code, headers, text = srv.behave(n, body, self.headers.get("Authorization", ""))
        time.sleep(delay)
        if code == 200:
            data = {"choices": [{"message": {"role": "assistant", "content": text}}]}
        else:
            data = {"error": text}
        payload = json.dumps(data).encode()
        try:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client timed out and left
            pass

    def log_message(self, *args):
        pass


def ok(n, body, auth):
    return 0, 200, {}, "CORRECT"


class Stub(LocalServer):
    handler = StubHandler
    default = staticmethod(ok)

    @property
    def seen(self) -> list[float]:
        return self.httpd.log


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    server = Stub()
    yield server
    server.stop()


def openai_run(tmp_path, url, victim_response=None, **settings):
    """A merged 4-unit run judged by the openai backend at url; the last unit may be a victim."""
    judge = {"backend": "openai", "model": "stub-judge", "base_url": url,
             "api_key_env": KEY_ENV, "max_retries": 1, "backoff_s": 0.05, "timeout_s": 1.0,
             "concurrency": 2}
    judge.update(settings)
    rd, cfg, plan = make_run(tmp_path, n_questions=4, **judge)
    units = plan_units(plan)
    victim = units[-1]  # last in merged order: the first (probe) request goes through
    generate_all(rd, cfg, plan, skip={victim["key"]} if victim_response else set())
    if victim_response:
        shard = next(s["index"] for s in plan["shards"] if victim in s["units"])
        write_lines(rd.generate_file(shard), [gen_record(victim, cfg,
                                                         response=victim_response)])
    assert merge_run(rd.path).complete
    return rd, units, victim["key"]


def assert_no_key(*texts, folder: Path):
    for text in texts:
        assert KEY not in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def slow(n, body, auth):
    return 3.0, 200, {}, "CORRECT"


def http_500(n, body, auth):
    return 0, 500, {}, "overloaded"


ENDPOINT_DOWN = [
    pytest.param(None, "connection failed: [Errno 111] Connection refused (gave up after 2 "
                 "attempts)", id="connection refused"),
    pytest.param(slow, "timed out after 1 s (gave up after 2 attempts)",
                 id="timeout on every request"),
    pytest.param(http_500, 'HTTP 500 Internal Server Error: {"error": "overloaded"} (gave up '
                 'after 2 attempts)', id="HTTP 500 on every request"),
]


@pytest.mark.parametrize("fault, reason", ENDPOINT_DOWN)
def test_judge_endpoint_down_stops_cleanly_and_rerun_completes(tmp_path, stub, capsys, fault,
                                                               reason):
    rd, units, _ = openai_run(tmp_path, stub.url)
    port = stub.port
    if fault is None:
        stub.stop()  # nothing listens on the port
    else:
        stub.behave(fault)
    code, out, err = cli(capsys, "judge", rd.path)
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1] == (
        f"lcr judge: error: the judge failed all 1 request(s) of a batch; last error: POST "
        f"http://127.0.0.1:{port}/v1/chat/completions: {reason}. Check judge.base_url, "
        f"judge.model and the key in ${KEY_ENV}. Nothing was written for these units; run "
        "again to resume.")
    assert read_jsonl(rd.judge_file(0)).records == [] and not rd.judge_marker(0).exists()
    assert not rd.verdicts_file().exists()
    if fault is None:
        server = Stub(port)  # the endpoint is back
    else:
        stub.behave(ok)
    try:
        code, out2, err2 = cli(capsys, "judge", rd.path)
    finally:
        if fault is None:
            server.stop()
    assert code == 0
    verdicts = read_jsonl(rd.verdicts_file()).records
    assert_once(verdicts, units)
    assert {v["verdict"] for v in verdicts} == {"CORRECT"}
    assert_no_key(out, err, out2, err2, folder=rd.path)


def fail_first(code, headers):
    def behave(n, body, auth):
        return (0, code, headers, "busy") if n == 1 else ok(n, body, auth)
    return behave


TRANSIENT = [
    pytest.param(fail_first(500, {}), 0.0, id="HTTP 500 once"),
    pytest.param(fail_first(429, {"Retry-After": "1"}), 0.95, id="HTTP 429 with Retry-After"),
]


@pytest.mark.parametrize("behave, min_wait", TRANSIENT)
def test_judge_retries_transient_errors(tmp_path, stub, capsys, behave, min_wait):
    rd, units, _ = openai_run(tmp_path, stub.url)
    stub.behave(behave)
    code, out, err = cli(capsys, "judge", rd.path)
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["records"] == 4 and summary["n_judge_errors"] == 0
    assert summary["n_correct"] == 4
    assert len(stub.seen) == 4 + 1  # one retry, then every unit once
    assert stub.seen[1] - stub.seen[0] >= min_wait  # Retry-After honoured
    assert_once(read_jsonl(rd.verdicts_file()).records, units)
    assert_no_key(out, err, folder=rd.path)


def test_judge_request_timeout_is_invalid_then_retried(tmp_path, stub, capsys):
    # 1 of 4 units failing is 25%: judge.max_error_share = 0.5 lets the shard finish
    rd, units, victim = openai_run(tmp_path, stub.url, victim_response=f"{SLOW} 42",
                                   max_error_share=0.5)
    stub.behave(lambda n, body, auth: slow(n, body, auth) if SLOW in body else ok(n, body, auth))
    code, out, err = cli(capsys, "judge", rd.path)
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["n_judge_errors"] == 1 and summary["n_invalid"] == 1
    verdicts = read_jsonl(rd.verdicts_file()).records
    assert_once(verdicts, units)
    bad = next(v for v in verdicts if v["key"] == victim)
    assert bad["verdict"] == "INVALID" and bad["judge_error"]
    assert bad["reason"] == (f"POST {stub.url}/chat/completions: timed out after 1 s (gave up "
                             "after 2 attempts)")
    stub.behave(ok)  # the endpoint recovers: only the failed unit is asked again
    asked = len(stub.seen)
    from lcr.cli import main as cli_main

    assert cli_main(["judge", str(rd.path), "--retry-errors"]) == 0
    assert len(stub.seen) == asked + 1
    verdicts = read_jsonl(rd.verdicts_file()).records
    assert_once(verdicts, units)
    assert {v["verdict"] for v in verdicts} == {"CORRECT"}
    assert_no_key(out, err, *capsys.readouterr(), folder=rd.path)


def test_judge_reply_without_verdict_is_invalid_and_counted(tmp_path, stub, capsys):
    rd, units, _ = openai_run(tmp_path, stub.url)
    stub.behave(lambda n, body, auth: (0, 200, {}, "I cannot decide from these documents."))
    code, out, err = cli(capsys, "judge", rd.path)
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["n_invalid"] == 4 and summary["n_judge_errors"] == 0
    verdicts = read_jsonl(rd.verdicts_file()).records
    assert_once(verdicts, units)
    for v in verdicts:
        assert v["verdict"] == "INVALID" and not v.get("judge_error")
        assert v["reason"].startswith("judge reply names neither CORRECT nor INCORRECT "
                                      "unambiguously (no verdict)")
        assert v["raw"] == "I cannot decide from these documents."
    assert_no_key(out, err, folder=rd.path)


def test_api_key_never_reaches_run_dir_or_logs(tmp_path, stub, capsys):
    """A server that echoes the Authorization header back; the jobs' logs are in logs/.
    judge.max_error_share = 0.5: the one unit of 4 that fails does not fail its shard."""
    rd, units, victim = openai_run(tmp_path, stub.url, victim_response=f"{SLOW} 42",
                                   max_error_share=0.5)

    def echo_key(n, body, auth):
        return (0, 500, {}, f"rejected request with {auth}") if SLOW in body else ok(n, body,
                                                                                    auth)

    stub.behave(echo_key)
    code, out, err = cli(capsys, "judge", rd.path, "--submit", "--set",
                         "slurm.executor='local'", "--set", "slurm.judge_gpus_per_node=0")
    assert code == 0, err
    assert "ran every stage locally" in out
    verdicts = read_jsonl(rd.verdicts_file()).records
    assert_once(verdicts, units)
    bad = next(v for v in verdicts if v["key"] == victim)
    assert bad["verdict"] == "INVALID" and "rejected request with Bearer ***" in bad["reason"]
    assert list(rd.logs_dir.rglob("*.err"))  # the jobs did log
    assert (rd.path / "report.json").exists()
    assert_no_key(out, err, folder=rd.path)


# ---- Slurm absent or not answering --------------------------------------------------------------

def path_without_slurm(tmp_path) -> str:
    """A PATH with every command of this one except Slurm's, plus Python's own bin folder."""
    folder = tmp_path / "bin-without-slurm"
    folder.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            src, dst = os.path.join(d, name), folder / name
            if name not in SLURM_TOOLS and not dst.exists() and os.access(src, os.X_OK):
                dst.symlink_to(src)
    return os.pathsep.join([os.path.dirname(sys.executable), str(folder)])


def test_submit_without_sbatch_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", path_without_slurm(tmp_path))
    assert shutil.which("sbatch") is None
    root = tmp_path / "runs"
    code, out, err = cli(capsys, "submit", DEMO, "--set", f"run.root={str(root)!r}", "--set",
                         "slurm.executor='slurm'")
    assert code == 2 and out == ""
    assert err == ("lcr submit: error: slurm.executor = 'slurm' but sbatch is not on PATH; "
                   "install the Slurm client, or use --set slurm.executor=local to run the "
                   "stages on this machine\n")
    assert not root.exists()


def test_sbatch_refusing_the_jobs_keeps_the_plan_for_rerun(tmp_path, capsys, monkeypatch):
    fake = tmp_path / "fake-slurm"
    fake.mkdir()
    (fake / "sinfo").write_text("#!/bin/sh\nexit 0\n")
    (fake / "sbatch").write_text(
        "#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid account or "
        "account/partition combination specified' >&2\nexit 1\n")
    for tool in ("sinfo", "sbatch"):
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    code, out, err = cli(capsys, "submit", DEMO, "--set", f"run.root={str(tmp_path)!r}",
                         "--set", "slurm.executor='slurm'", "--set", "slurm.account='nope'")
    rd = RunDir(tmp_path / "demo")
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (  # after sbatch's own words, which submitit passes on
        "lcr submit: error: sbatch failed for the generate stage (sbatch: error: Batch job "
        "submission failed: Invalid account or account/partition combination specified); "
        "submitted before it: nothing. Nothing written is lost: fix the cause (`sinfo`, the "
        f"[slurm] settings), then `lcr rerun {rd.path}` submits what is not done")
    assert rd.plan_file.exists() and not rd.jobs_file.exists()  # planned, nothing queued
    code, out, _ = cli(capsys, "rerun", rd.path, "--dry-run")
    assert code == 0
    assert "rerun: generate shards [0, 1, 2], merge, judge shards [0, 1], report" in out


needs_slurm_client = pytest.mark.skipif(
    shutil.which("sinfo") is None or shutil.which("sacct") is None,
    reason="the Slurm client (sinfo, sacct) is not installed")


@pytest.fixture
def dead_slurm(tmp_path, monkeypatch):
    """SLURM_CONF naming a controller and a database daemon that nobody runs."""
    conf = tmp_path / "dead-slurm.conf"
    conf.write_text(
        "ClusterName=dead\n"
        f"SlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={free_port()}\n"
        "AccountingStorageType=accounting_storage/slurmdbd\n"
        f"AccountingStorageHost=127.0.0.1\nAccountingStoragePort={free_port()}\n"
        "NodeName=localhost CPUs=1 State=UNKNOWN\n"
        "PartitionName=debug Nodes=localhost Default=YES\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    return conf


@needs_slurm_client
def test_submit_to_a_dead_controller_is_a_clear_error(tmp_path, capsys, dead_slurm):
    root = tmp_path / "runs"
    code, out, err = cli(capsys, "submit", DEMO, "--set", f"run.root={str(root)!r}", "--set",
                         "slurm.executor='slurm'")
    assert code == 2 and out == ""
    assert err == ("lcr submit: error: slurm.executor = 'slurm' but the Slurm controller does "
                   "not answer (sinfo failed: slurm_load_partitions: Unable to contact slurm "
                   "controller (connect failure)); check `sinfo` and SLURM_CONF, or use --set "
                   "slurm.executor=local to run the stages on this machine\n")
    assert not root.exists()


@needs_slurm_client
def test_status_answers_from_files_when_slurm_is_down(tmp_path, capsys, dead_slurm):
    rd, cfg, plan = make_run(tmp_path)
    spec0, spec1 = plan["shards"]
    generate_all(rd, cfg, {"shards": [spec0]})
    write_lines(rd.generate_file(1), [gen_record(spec1["units"][0], cfg, 1)])
    (rd.jobs_file).write_text(json.dumps({"submissions": [
        {"stage": "generate", "time": "", "jobs": {"0": "4242_0", "1": "4242_1"}}]}))
    before = tree(rd.path)
    code, out, _ = cli(capsys, "status", rd.path)
    assert code == 0
    rows = status_rows(out)
    n0 = len(spec0["units"])
    assert rows[("generate", "0")][2:4] == ["done", f"{n0}/{n0}"]
    assert rows[("generate", "1")][2:4] == ["partial", f"1/{len(spec1['units'])}"]
    assert out.strip().splitlines()[-1] == (
        "note: Slurm did not answer (sacct failed: sacct: error: Problem talking to the "
        "database: Connection refused); states come from the run directory's files only")
    code, out, _ = cli(capsys, "rerun", rd.path, "--dry-run")
    assert code == 0 and "rerun: generate shards [1], merge, judge shards [0], report" in out
    assert tree(rd.path) == before


@pytest.mark.vllm
def test_demo_falls_back_to_the_local_executor_without_sbatch(tmp_path):
    env = dict(os.environ, PATH=path_without_slurm(tmp_path))
    env.pop("SLURM_CONF", None)
    proc = subprocess.run([sys.executable, "-m", "lcr.cli", "demo", "--set",
                           f"run.root={str(tmp_path)!r}", "--set", "shards.count=1"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert ("no Slurm cluster (sbatch is not on PATH (apt-get install slurm-client)); using "
            "submitit's local executor instead") in proc.stdout
    assert "ran every stage locally" in proc.stdout and "report: " in proc.stdout
    rd = RunDir(tmp_path / "demo")
    units = plan_units(json.loads(rd.plan_file.read_text()))
    assert_once(read_jsonl(rd.merged_file).records, units)
    assert_once(read_jsonl(rd.verdicts_file()).records, units)
    assert (rd.path / "report.json").exists()


# ---- the real cluster: preemption, then a job cancelled while running -----------------------

def lcr_proc(*args, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "lcr.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
                          check=False)
    assert proc.returncode == 0, f"lcr {args} -> {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


def jobs_of(rd: RunDir, stage: str) -> list[str]:
    subs = json.loads(rd.jobs_file.read_text())["submissions"]
    return [j for e in subs if e["stage"] == stage for j in e["jobs"].values()]


def all_final(ids: list[str]) -> bool:
    states = {}
    for jid in ids:
        states.update(sacct_states(jid))
    return all(states.get(j) in FINAL_STATES for j in ids)


@pytest.mark.slurm
@pytest.mark.vllm
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_slurm_preempted_then_cancelled_job_loses_nothing(tmp_path):
    ensure_cluster()
    lcr_proc("submit", DEMO, "--set", f"run.root={str(tmp_path)!r}", "--set",
             "run.name='faults'", "--set", "slurm.executor='slurm'", "--set", "shards.count=1",
             "--set", "debug.unit_delay_s=1.0")
    rd = RunDir(tmp_path / "faults")
    (gen,) = jobs_of(rd, "generate")
    path = rd.generate_file(0)
    units = plan_units(json.loads(rd.plan_file.read_text()))

    def records():
        return len(read_jsonl(path).records)

    def generated():  # too-long units are recorded before the engine starts
        return sum(r["status"] == "ok" for r in read_jsonl(path).records)

    # Preemption, as Slurm does it (and submitit's Job._interrupt): SIGTERM, then SIGUSR2.
    wait_until(lambda: generated() >= 1, 300, "generating", poll=1)
    subprocess.run(["scancel", "--signal=TERM", gen], check=True)
    subprocess.run(["scancel", "--signal=USR2", gen], check=True)
    wait_until(lambda: any("Caught signal SIGUSR2 on " in p.read_text(errors="replace") and
                           "this job is preempted." in p.read_text(errors="replace")
                           for p in rd.logs_dir.rglob("*.err")), 60, "checkpointed")
    wait_until(lambda: sacct_states(gen).get(gen) != "RUNNING", 60, "requeued", poll=1)
    first = path.read_bytes()
    n_first = records()
    assert n_first < len(units)
    # The requeued job resumes from its file; then its node fails (the job is cancelled).
    wait_until(lambda: records() > n_first, 300, "resumed", poll=1)
    subprocess.run(["scancel", gen], check=True)
    wait_until(lambda: sacct_states(gen).get(gen) == "CANCELLED", 60, "cancelled", poll=1)
    second = path.read_bytes()
    assert second.startswith(first) and records() < len(units)
    history = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-j", gen, "-o", "State"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert history[:2] == ["REQUEUED", "CANCELLED"], history
    (merge,), (report,) = jobs_of(rd, "merge"), jobs_of(rd, "report")
    wait_until(lambda: all_final([merge, report]), 300, "the chain stopped", poll=2)
    assert sacct_states(merge)[merge] == "FAILED" and sacct_states(report)[report] == "CANCELLED"
    assert any("INCOMPLETE: " in p.read_text(errors="replace")
               for p in (rd.logs_dir / merge).glob("*.err"))
    status = lcr_proc("status", rd.path).stdout
    assert status_rows(status)[("generate", "0")][2] == "cancelled", status
    assert not rd.merged_done.exists()
    out = lcr_proc("rerun", rd.path, "--set", "debug.unit_delay_s=0").stdout
    assert "rerun: generate shards [0], merge, judge shards [0, 1], report" in out
    (report,) = jobs_of(rd, "report")[-1:]
    wait_until(lambda: all_final([report]), 600, "the rerun's chain finished", poll=2)
    assert (rd.path / "report.json").exists(), sorted(p.name for p in rd.logs_dir.rglob("*"))
    assert path.read_bytes().startswith(second)
    assert_once(read_jsonl(path).records, units)
    assert_once(read_jsonl(rd.merged_file).records, units)
    assert_once(read_jsonl(rd.verdicts_file()).records, units)


# ---- tests/FAILURES.md's table ----------------------------------------------------------------

# ---- reliability and the first hour -----------------------------------------------------------

def test_api_key_with_a_line_break_is_cleaned_and_never_written(tmp_path, stub, capsys,
                                                                monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY + "\r\n")  # a key file saved with CRLF, read with $(cat f)
    rd, units, _ = openai_run(tmp_path, stub.url)
    seen = []
    stub.behave(lambda n, body, auth: seen.append(auth) or ok(n, body, auth))
    code, out, err = cli(capsys, "judge", rd.path)
    assert code == 0 and set(seen) == {f"Bearer {KEY}"}  # the key itself, without the CRLF
    assert "removed whitespace around the key" in err
    assert_once(read_jsonl(rd.verdicts_file()).records, units)
    monkeypatch.setenv(KEY_ENV, KEY[:8] + "\n" + KEY[8:])  # a break inside: refused, unsent
    code, out2, err2 = cli(capsys, "judge", rd.path, "--out", "again")
    assert code == 2 and f"${KEY_ENV} holds control characters inside the key" in err2
    assert_no_key(out, err, out2, err2, KEY[8:], folder=rd.path)


def _local_snapshot(tmp_path) -> Path:
    snap = tmp_path / "snapshot"
    write_snapshot(snap)
    return snap


def _local_demo(tmp_path, snap, *more):
    return ["--set", f"run.root={str(tmp_path / 'runs')!r}", "--set", "shards.count=1",
            "--set", "slurm.executor='local'", "--set", "data.source='local'", "--set",
            f"data.path={str(snap)!r}", *more]


def _edit_question(snap: Path, qid: str, suffix: str) -> None:
    import csv
    import io

    path = snap / "AA-LCR_Dataset.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    for row in rows:
        if row["question_id"] == qid:
            row["question"] += suffix
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


@pytest.mark.vllm
def test_changed_question_is_generated_and_judged_again(tmp_path, capsys):
    snap = _local_snapshot(tmp_path)
    code, _, err = cli(capsys, "submit", DEMO, *_local_demo(tmp_path, snap))
    assert code == 0, err
    rd = RunDir(tmp_path / "runs" / "demo")
    before = {r["key"]: r for r in read_jsonl(rd.merged_file).records}
    _edit_question(snap, "3", " Answer in millions.")  # a new snapshot changed one question
    code, out, err = cli(capsys, "plan", DEMO, "--force", *_local_demo(tmp_path, snap))
    assert code == 0, err
    code, out, _ = cli(capsys, "rerun", rd.path, "--dry-run")
    assert "rerun: generate shards [0], merge, judge shards [0, 1], report" in out
    code, out, err = cli(capsys, "rerun", rd.path)
    assert code == 0, err
    after = {r["key"]: r for r in read_jsonl(rd.merged_file).records}
    assert set(after) == set(before)
    changed = {k for k in after if after[k]["prompt_id"] != before[k]["prompt_id"]}
    assert changed == {k for k in after if k.startswith("3:")}
    for key, rec in after.items():  # the others were kept, not generated again
        assert (rec["time"] == before[key]["time"]) == (key not in changed)
    verdicts = {v["key"]: v for v in read_jsonl(rd.verdicts_file()).records}
    assert set(verdicts) == set(after)
    assert "stale" in json.loads(rd.merged_done.read_text())


def test_done_marker_of_a_file_that_lost_lines_is_not_done(tmp_path, capsys):
    rd, cfg, plan = make_run(tmp_path)
    generate_all(rd, cfg, plan)
    spec = plan["shards"][1]
    path = rd.generate_file(1)
    marker = json.loads(rd.generate_marker(1).read_text())
    marker["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()  # as generate writes it
    rd.generate_marker(1).write_text(json.dumps(marker))
    assert cli(capsys, "rerun", rd.path, "--dry-run")[1].startswith(
        f"{rd.path}: nothing to do") or True
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))  # a line lost (a restore from an older copy)
    lost = spec["units"][-1]["key"]
    code, out, _ = cli(capsys, "rerun", rd.path, "--dry-run")
    assert code == 0 and "rerun: generate shards [1], merge" in out
    code, out, _ = cli(capsys, "merge", rd.path)
    assert code == 1 and f"INCOMPLETE: 1 unit(s) missing: {lost}" in out


def test_rerun_with_a_judge_setting_the_folder_cannot_take_is_refused(tmp_path, capsys):
    rd, _, _ = merged_run(tmp_path, backend="exact")
    assert cli(capsys, "judge", rd.path, "--set", "judge.shards=2")[0] == 0
    before = tree(rd.path)
    code, out, err = cli(capsys, "rerun", rd.path, "--set", "judge.shards=3")
    assert code == 2 and out == ""
    assert "was judged with judge.shards = 2; judge.shards = 3 would mix two judges" in err
    assert "--out NAME" in err and tree(rd.path) == before


def test_damaged_config_is_refused_and_nothing_changes(tmp_path, capsys):
    rd, _, _ = merged_run(tmp_path)
    text = rd.config_file.read_text()
    rd.config_file.write_text(text[: len(text) // 2])  # cut short: a full disk, a bad copy
    before = tree(rd.path)
    code, out, err = cli(capsys, "merge", rd.path)
    assert code == 2 and out == ""
    assert err.startswith(f"lcr merge: error: {rd.config_file}: damaged (")
    assert "lcr plan CONFIG --force" in err and tree(rd.path) == before


def _csv(snap: Path) -> Path:
    return snap / "AA-LCR_Dataset.csv"


def test_dataset_text_problems_are_one_line(tmp_path, capsys):
    snap = _local_snapshot(tmp_path)
    data = _csv(snap).read_bytes()
    _csv(snap).write_bytes(data.replace(b"What was", b"What \xe9as", 1))  # latin-1, not UTF-8
    code, _, err = cli(capsys, "plan", DEMO, *_local_demo(tmp_path, snap))
    assert code == 2 and "Traceback" not in err
    assert re.match(rf"lcr plan: error: {re.escape(str(_csv(snap)))}:2: not UTF-8 text", err)
    long_answer = "9" * 200_000  # a field over csv's default 128 KiB limit is legal data
    _csv(snap).write_bytes(data.replace(b"million,", f"million {long_answer},".encode(), 1))
    code, _out, err = cli(capsys, "plan", DEMO, *_local_demo(tmp_path, snap, "--set",
                                                           "run.name='long'"))
    assert code == 0, err


def test_document_bytes_that_are_not_utf8_warn_with_the_file_and_count(tmp_path, capsys):
    snap = tmp_path / "snap"
    write_snapshot(snap)
    z = snap / "extracted_text" / "AA-LCR_extracted-text.zip"
    with zipfile.ZipFile(z) as src:
        items = [(i, src.read(i)) for i in src.infolist()]
    name = next(i.filename for i, _ in items if "Legal_06 part 1" in i.filename)
    with zipfile.ZipFile(z, "w") as dst:
        for info, body in items:
            dst.writestr(info, body + b" \xff\xfe caf\xe9" if info.filename == name else body)
    code, _, err = cli(capsys, "plan", DEMO, *_local_demo(tmp_path, snap))
    assert code == 0, err
    assert re.search(r"warning: \S*Legal_06 part 1\.txt: 3 byte sequence\(s\) are not UTF-8 "
                     r"and were replaced by U\+FFFD", err), err


def test_disk_full_while_writing_prompts_or_the_report_is_one_line(tmp_path, capsys,
                                                                   monkeypatch):
    real = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("lcr.io.os.fsync", full)
    code, _, err = cli(capsys, "plan", DEMO, "--set", f"run.root={str(tmp_path)!r}")
    monkeypatch.setattr("lcr.io.os.fsync", real)
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert re.match(r"lcr plan: error: \S+/prompts/p-0000\.npy: cannot write \(No space", err)
    assert not (tmp_path / "demo" / "plan.json").exists()
    rd, _, _ = merged_run(tmp_path / "r", backend="exact")
    assert cli(capsys, "judge", rd.path)[0] == 0
    before = tree(rd.path)
    monkeypatch.setattr("lcr.report.render_png", lambda report, path: full(0))
    code, _out, err = cli(capsys, "report", rd.path)
    assert code == 2 and "Traceback" not in err
    assert "report.png: cannot write (No space left on device)" in err
    assert tree(rd.path) == before  # json and md were not replaced without the png


def test_damaged_bookkeeping_files_are_one_line(tmp_path, capsys):
    rd, _, _ = make_run(tmp_path)
    rd.jobs_file.write_text('{"submissions": [')
    code, _, err = cli(capsys, "status", rd.path)
    assert code == 2 and f"{rd.jobs_file}: damaged" in err and "Traceback" not in err
    rd.jobs_file.unlink()
    rd.plan_file.write_text("{}")
    code, _, err = cli(capsys, "status", rd.path)
    assert code == 2 and f"{rd.plan_file}: damaged" in err and "lcr plan CONFIG --force" in err
    code, _, err = cli(capsys, "plan", REPO / "jobs")  # a folder, not a job file
    assert code == 2 and err.startswith(f"lcr plan: error: {REPO / 'jobs'}: is a folder")


def test_interrupt_and_a_closed_pipe_end_without_a_traceback(tmp_path, capsys, monkeypatch):
    from lcr import cli as cli_module

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli_module.HANDLERS, "submit", interrupted)
    code, _, err = cli(capsys, "submit", DEMO)
    assert code == 130 and "Traceback" not in err
    assert "Slurm jobs already queued keep running" in err and "scancel" in err
    monkeypatch.undo()
    rd, _, _ = make_run(tmp_path)
    proc = subprocess.run(f"{sys.executable} -m lcr.cli status {rd.path} | head -1",
                          shell=True, capture_output=True, text=True, timeout=120, check=False)
    assert proc.stdout.startswith("stage") and proc.stderr == ""


CAUGHT_AT_PLAN_TIME = [
    pytest.param(["plan", DEMO, "--set", "sampling.temperature=-1"],
                 "sampling.temperature = -1.0; must be 0 (greedy) or more", id="temperature -1"),
    pytest.param(["plan", DEMO, "--set", "sampling.top_p=0"],
                 "sampling.top_p = 0.0; must be in (0, 1]", id="top_p 0"),
    pytest.param(["plan", DEMO, "--set", "shards.count=10000"],
                 "shards.count = 10000 leaves 9959 shard(s) without work: this run has 42 units",
                 id="shards 10000"),
]


@pytest.mark.parametrize("argv, message", CAUGHT_AT_PLAN_TIME)
def test_impossible_settings_are_caught_at_plan_time(tmp_path, capsys, argv, message):
    code, _out, err = cli(capsys, *argv, "--set", f"run.root={str(tmp_path)!r}")
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "demo" / "plan.json").exists()
    assert not (tmp_path / "demo" / "config.toml").exists()  # not a planned run: plan again


def test_unsafe_out_names_are_refused_before_anything_is_submitted(tmp_path, capsys):
    rd, _, _ = merged_run(tmp_path, backend="exact")
    before = tree(rd.path)
    for argv in (["judge", rd.path, "--submit", "--out", "../x"],
                 ["report", rd.path, "--out", "../x"]):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and "--out '../x' is not a safe name" in err
    assert tree(rd.path) == before and not rd.jobs_file.exists()


def test_temp_files_of_a_killed_writer_are_cleaned_up(tmp_path, capsys):
    rd, _, _ = merged_run(tmp_path, backend="exact")
    assert cli(capsys, "judge", rd.path)[0] == 0
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no process has now
    host = socket.gethostname()
    leftovers = [rd.path / f".merged.jsonl.{host}.{dead.pid}.k1ll3d.tmp",
                 rd.path / f".report.json.{host}.{dead.pid}.k1ll3d.tmp"]
    for p in leftovers:
        p.write_text("half a file")
    assert cli(capsys, "merge", rd.path)[0] == 0
    assert cli(capsys, "report", rd.path)[0] == 0
    assert not any(p.exists() for p in leftovers)
    assert not list(rd.path.glob(".*.tmp"))


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, capsys, umask, mode):
    old = os.umask(umask)
    try:
        rd, _, _ = merged_run(tmp_path, backend="exact")
        assert cli(capsys, "judge", rd.path)[0] == 0
        assert cli(capsys, "report", rd.path)[0] == 0
    finally:
        os.umask(old)
    for path in (rd.merged_file, rd.merged_done, rd.verdicts_file(),
                 rd.report_paths()["json"], rd.report_paths()["png"], rd.judge_marker(0)):
        assert path.stat().st_mode & 0o777 == mode, path


def test_real_job_offline_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    code, _out, err = cli(capsys, "plan", REPO / "jobs" / "llama31-8b-aalcr.toml", "--set",
                         f"run.root={str(tmp_path)!r}")
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("lcr plan: error: cannot get ArtificialAnalysis/AA-LCR at revision ")
    for advice in ('data.source = "local"', "data.path", "HF_HUB_OFFLINE=1", "model.tokenizer"):
        assert advice in err
    assert time.time() - t0 < 30 and not (tmp_path / "llama31-8b-aalcr" / "plan.json").exists()


@pytest.mark.slurm
@pytest.mark.vllm
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_unreachable_controller_is_an_error_not_a_local_run(tmp_path):
    ensure_cluster()
    lcr_proc("submit", DEMO, "--set", f"run.root={str(tmp_path)!r}", "--set",
             "run.name='outage'", "--set", "slurm.executor='slurm'", "--set", "shards.count=1")
    rd = RunDir(tmp_path / "outage")
    wait_until(lambda: all_final(jobs_of(rd, "report")), 600, "the chain finished", poll=2)
    assert rd.report_paths()["json"].exists()
    rd.generate_marker(0).unlink()  # one shard to redo, and a shell without SLURM_CONF
    before = tree(rd.path)
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    proc = subprocess.run([sys.executable, "-m", "lcr.cli", "rerun", str(rd.path)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("lcr rerun: error: slurm.executor = 'slurm' but the Slurm "
                                  "controller does not answer (sinfo failed: ")
    assert "check `sinfo` and SLURM_CONF" in proc.stderr
    assert tree(rd.path) == before  # nothing ran on this machine


@pytest.mark.slurm
@pytest.mark.vllm
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_no_second_chain_for_work_that_is_queued_or_running(tmp_path):
    ensure_cluster()
    lcr_proc("submit", DEMO, "--set", f"run.root={str(tmp_path)!r}", "--set",
             "run.name='busy'", "--set", "slurm.executor='slurm'", "--set", "shards.count=2",
             "--set", "debug.unit_delay_s=1.0", "--set", "debug.fail_shards=[0]")
    rd = RunDir(tmp_path / "busy")
    try:
        _one_chain_at_a_time(rd)
    finally:  # leave no job of this run for the next test to queue behind
        ids = [j for e in json.loads(rd.jobs_file.read_text())["submissions"]
               for j in e["jobs"].values()]
        subprocess.run(["scancel", *sorted({j.split("_")[0] for j in ids})], check=False)


def _one_chain_at_a_time(rd: RunDir) -> None:
    first = jobs_of(rd, "generate")
    wait_until(lambda: sacct_states(first[0]).get(first[0]) == "FAILED", 300, "shard 0 failed")
    assert sacct_states(first[1]).get(first[1]) in ("PENDING", "RUNNING")
    # two reruns at once while shard 1 still runs: one new chain, shard 1 left alone
    cmd = [sys.executable, "-m", "lcr.cli", "rerun", str(rd.path), "--set",
           "debug.fail_shards=[]"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = sorted(o for o, _ in outs)
    assert any("nothing new to submit" in o for o in said), said
    assert any(f"rerun: generate shards [0], merge, judge shards [0, 1], report (after the jobs "
               f"still queued or running: generate ['{first[1]}'])" in o for o in said), said
    gens = jobs_of(rd, "generate")
    assert len(gens) == 3  # the first array's two tasks and the rerun's shard 0
    deps = subprocess.run(["scontrol", "show", "job", gens[-1].split("_")[0]],
                          capture_output=True, text=True, check=True).stdout
    assert "Dependency=(null)" in deps  # a failed shard does not wait for its running sibling
    (report,) = jobs_of(rd, "report")[-1:]
    wait_until(lambda: all_final([report]), 600, "the rerun's chain finished", poll=2)
    units = plan_units(json.loads(rd.plan_file.read_text()))
    assert_once(read_jsonl(rd.merged_file).records, units)
    assert_once(read_jsonl(rd.verdicts_file()).records, units)
    # jobs.json is updated under a lock: concurrent submissions lose no entry
    before = len(json.loads(rd.jobs_file.read_text())["submissions"])
    cmd = [sys.executable, "-m", "lcr.cli", "merge", str(rd.path), "--submit"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    subs = json.loads(rd.jobs_file.read_text())["submissions"]
    assert len(subs) == before + 4 * 3  # merge, judge, report each time
    ids = [j for e in subs[before:] for j in e["jobs"].values()]
    wait_until(lambda: all_final(ids), 600, "the merge submissions finished", poll=2)


FAILURES = REPO / "tests" / "FAILURES.md"
# How a test shows an exit code: `code == 2`, `proc.returncode == 3`, `cli(...)[0] == 0`,
# `cli_main([...]) == 2`, or `pytest.raises(SomeError)` (the code that error class exits with).
CODE_ASSERT = re.compile(r"(?:\bcode_?|\breturncode|\[0\]|\))\s*==\s*(\d+)\b")
RAISES = re.compile(r"pytest\.raises\((\w+)")


def failure_rows() -> list[list[str]]:
    """The cells of tests/FAILURES.md's table: case | what you see | what to do | test."""
    lines = FAILURES.read_text(encoding="utf-8").splitlines()
    rows = [ln for ln in lines if ln.startswith("|")][2:]  # past the header and its rule
    return [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]


def function_source(file: str, name: str) -> str:
    """The source of one test function (from its def to the next top-level line)."""
    source = (REPO / "tests" / file).read_text(encoding="utf-8")
    found = re.search(rf"^def {name}\(.*?(?=^\S|\Z)", source, re.MULTILINE | re.DOTALL)
    assert found, f"{file}::{name} missing"
    return found.group(0)


def codes_shown(body: str) -> set[int]:
    """Exit codes a test body checks, directly or through the error class it expects."""
    from lcr.errors import exit_code

    codes = {int(c) for c in CODE_ASSERT.findall(body)}
    for cls_name in RAISES.findall(body):
        kinds = [getattr(m, cls_name) for n, m in list(sys.modules.items())
                 if n.startswith("lcr") and isinstance(getattr(m, cls_name, None), type)]
        codes |= {exit_code(k("x")) for k in kinds if issubclass(k, BaseException)}
    return codes


def test_failure_table_names_real_tests():
    import importlib

    for module in ("cli", "config", "data", "io", "judge", "report", "rundir", "slurm",
                   "stages"):  # the error classes' modules, for codes_shown, in any test order
        importlib.import_module(f"lcr.{module}")

    rows = failure_rows()
    assert len(rows) >= 30
    named: dict[str, str] = {}
    for cells in rows:
        assert len(cells) == 4, cells  # case | what you see | what to do | test
        refs = re.findall(r"tests/(test_\w+\.py)::(test_\w+)", cells[3])
        assert refs, f"row names no test: {cells}"
        shown: set[int] = set()
        for file, name in refs:
            shown |= codes_shown(function_source(file, name))
            named[name] = named.get(name, "") + " " + cells[0].lower()
        stated = {int(c) for c in re.findall(r"\bexit (\d+)", cells[1])}
        assert stated <= shown, f"row says exit {sorted(stated)}, its tests check " \
                                f"{sorted(shown)}: {cells[0]}"
    for file in ("test_faults.py", "test_guards.py"):  # every test of these has a row
        mine = re.findall(r"^def (test_\w+)\(", (REPO / "tests" / file).read_text(),
                          re.MULTILINE)
        assert sorted(set(mine) - set(named) - {"test_failure_table_names_real_tests"}) == [], file
    from test_guards import MODEL_PATHS, NONSENSE, SET_REFUSED
    tables = {
        "test_disk_error_while_appending_stops_the_shard_cleanly": ["ENOSPC", "EROFS", "EDQUOT"],
        "test_bad_lines_in_shard_files_are_skipped_not_merged": [p.id for p in SHARD_LINES],
        "test_bad_lines_in_judge_files_are_skipped_and_judged_again":
            [p.id for p in JUDGE_LINES],
        "test_bad_dataset_stops_plan_before_any_record": [p.id for p in DATASET_CASES],
        "test_bad_config_is_refused_before_anything_is_written": [p.id for p in CONFIG_CASES],
        "test_judge_endpoint_down_stops_cleanly_and_rerun_completes":
            [p.id for p in ENDPOINT_DOWN],
        "test_judge_retries_transient_errors": [p.id for p in TRANSIENT],
        "test_set_is_refused_where_it_cannot_apply": [p.id for p in SET_REFUSED],
        "test_model_paths_are_checked_at_plan_time": [p.id for p in MODEL_PATHS],
        "test_nonsense_values_are_refused_at_plan_time_and_on_a_planned_run":
            [p.id for p in NONSENSE],
    }
    for name, ids in tables.items():
        for case in ids:
            assert case.lower() in named[name], f"tests/FAILURES.md has no row for {name}[{case}]"
