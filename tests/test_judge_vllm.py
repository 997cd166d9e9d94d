"""The vllm and openai judge backends for real: vLLM on CPU with the tiny model, a real
OpenAI-compatible vLLM server on 127.0.0.1, and a stub in front of it for 500 / 429 faults.

The tiny model's free-text replies are noise, so those verdicts are mostly INVALID: they are
counted, not dropped. Under structured outputs (judge.structured, the default "auto") even the
tiny model can only answer CORRECT or INCORRECT: no INVALID.
"""

import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from test_merge import gen_record, generate_all, make_run, merged_run, write_lines

from lcr.cli import main as cli_main
from lcr.io import read_jsonl
from lcr.judge import (
    EndpointError,
    JudgeError,
    judge_config,
    judge_run,
    judge_shard,
    make_backend,
)
from lcr.merge import merge_run
from lcr.tinymodel import tiny_model
from lcr.units import plan_units
from lcr.verdict import CHOICES, structured_verdict

pytestmark = pytest.mark.vllm

KEY = "sk-lcr-test-7f3a9c1e5b"  # the API key: must never reach the run directory
KEY_ENV = "LCR_TEST_JUDGE_KEY"
SERVED = "tiny-judge"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_no_key(*texts, folder=None):
    for text in texts:
        assert KEY not in text
    for path in folder.rglob("*") if folder else ():
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def openai_settings(url, **kw):
    return dict(backend="openai", model=SERVED, base_url=url, api_key_env=KEY_ENV,
                max_new_tokens=32, concurrency=4, **kw)


def test_endpoint_down_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(KEY_ENV, KEY)
    port = free_port()  # nothing listens there
    rd, _, _ = merged_run(tmp_path, **openai_settings(
        f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_s=0.01))
    t0 = time.time()
    with pytest.raises(EndpointError) as e:
        judge_run(rd.path)
    msg = str(e.value)
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in msg
    assert "refused" in msg.lower() and "3 attempts" in msg and KEY_ENV in msg
    assert time.time() - t0 < 5  # one probe request, not a whole shard of retries
    assert not rd.judge_marker(0).exists()
    assert read_jsonl(rd.judge_file(0)).records == []  # no file of INVALIDs
    assert cli_main(["judge", str(rd.path)]) == 1
    captured = capsys.readouterr()
    assert "refused" in captured.err.lower()
    assert_no_key(msg, captured.out, captured.err, folder=rd.path)


def test_vllm_judge_on_cpu(tmp_path):
    rd, cfg, plan = make_run(
        tmp_path, n_questions=4, seeds=(0, 1), backend="vllm", model="tiny",  # lcr.tinymodel
        tensor_parallel_size=1, max_model_len=4096, kv_cache_memory_bytes=64 << 20,
        max_new_tokens=32)  # the tiny tokenizer spells {"verdict":"INCORRECT"} in ~22 tokens
    failed = plan_units(plan)[0]
    generate_all(rd, cfg, plan, skip={failed["key"]})
    write_lines(rd.generate_file(0), [gen_record(failed, cfg, status="error", response="")])
    assert merge_run(rd.path).complete
    overrides = ["engine.enable_chunked_prefill=false", "engine.max_num_seqs=16",
                 "engine.enforce_eager=true",
                 "judge.shards=2"]
    backend = make_backend(judge_config(rd, overrides))
    try:
        info = judge_run(rd.path, overrides=overrides, backend=backend)
        verdicts = read_jsonl(rd.verdicts_file()).records
        assert len(verdicts) == len({v["key"] for v in verdicts}) == 8 == info["records"]
        assert info["n_correct"] + info["n_incorrect"] + info["n_invalid"] == 8
        by_key = {v["key"]: v for v in verdicts}
        assert by_key[failed["key"]]["verdict"] == "INCORRECT"
        assert "error" in by_key[failed["key"]]["reason"]
        judged = [v for v in verdicts if v["key"] != failed["key"]]
        assert all(v["judge_backend"] == "vllm" and v["judge_prompt"] == "v1.1" for v in judged)
        assert all(v["judge_model"] == "tiny" for v in judged)  # the name, not a cache path
        assert all(isinstance(v["raw"], str) and v["raw"] for v in judged)
        assert info["n_judge_errors"] == 0
        # decoded under the v1.1 JSON schema: every reply is {"verdict": ...}, none INVALID
        assert {v["judge_structured"] for v in judged} == {"json_schema"}
        assert all(structured_verdict(v["raw"], "json_schema") == v["verdict"] for v in judged)
        assert info["n_invalid"] == 0
        for v in judged:  # how the judge was asked and how it stopped
            assert v["judge_finish_reason"] == "stop" and 0 < v["judge_output_tokens"] <= 32
            assert (v["judge_max_new_tokens"], v["judge_temperature"]) == (32, 0.0)
            assert v["judge_weights"]["source"] == "local" and v["judge_weights"]["revision"]
            assert v["judge_endpoint"].startswith("vllm:tiny@")
        # a second judge of the same answers is served from the cache: no engine call
        again = judge_run(rd.path, out="again", overrides=overrides, backend=backend)
        assert [v["verdict"] for v in read_jsonl(rd.verdicts_file("again")).records] == [
            v["verdict"] for v in verdicts]
        assert again["records"] == 8
        # the judge text in the system message (the seed's setup) is another judge: asked
        # again through the engine, the tiny model's chat template takes the system message
        sys_overrides = [*overrides, "judge.prompt_role=system"]
        info = judge_run(rd.path, out="sys", overrides=sys_overrides, backend=backend)
        moved = [v for v in read_jsonl(rd.verdicts_file("sys")).records
                 if v["key"] != failed["key"]]
        assert info["records"] == 8 and len(moved) == 7
        assert all(v["judge_prompt_role"] == "system" and not v.get("cached") and v["raw"]
                   for v in moved)
        # v1.0 under structured outputs is a choice of exactly CORRECT or INCORRECT (a
        # backend of its own for that prompt, on the engine already started)
        v10 = [*overrides, "judge.prompt=v1.0", "judge.force=true"]
        chooser = make_backend(judge_config(rd, v10, "v10"))
        chooser.engine = backend.engine
        judge_run(rd.path, out="v10", overrides=v10, backend=chooser)
        chosen = [v for v in read_jsonl(rd.verdicts_file("v10")).records
                  if v["key"] != failed["key"]]
        assert {v["judge_structured"] for v in chosen} == {"choice"}
        assert all(v["raw"] in CHOICES and v["raw"] == v["verdict"] for v in chosen)
        # judge.structured = false: free text, read as prose (the tiny model's is noise)
        free = [*overrides, "judge.structured=false"]
        talker = make_backend(judge_config(rd, free, "free"))
        talker.engine = backend.engine
        judge_run(rd.path, out="free", overrides=free, backend=talker)
        prose = [v for v in read_jsonl(rd.verdicts_file("free")).records
                 if v["key"] != failed["key"]]
        assert {v["judge_structured"] for v in prose} == {"none"}
        assert all(v["judge_finish_reason"] in ("stop", "length") for v in prose)
    finally:
        backend.engine = None
        gc.collect()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real OpenAI-compatible vLLM server of the tiny model, with an API key."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(tiny_model()), "--served-model-name", SERVED,
           "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "4096",
           "--no-enable-chunked-prefill", "--kv-cache-memory-bytes", str(64 << 20),
           "--max-num-seqs", "16", "--enforce-eager", "--api-key", KEY,
           # compact JSON under response_format (as lcr's own vllm judge engine does)
           "--structured-outputs-config",
           '{"backend": "xgrammar", "disable_any_whitespace": true}']
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited {proc.returncode}:\n"
                            + log_path.read_text()[-3000:])
            try:
                req = urllib.request.Request(f"{url}/models",
                                             headers={"Authorization": f"Bearer {KEY}"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("vLLM server not up after 240 s:\n" + log_path.read_text()[-3000:])
            time.sleep(1)
        yield SimpleNamespace(url=url, port=port)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_openai_backend_real_server(tmp_path, server, monkeypatch, capfd):
    monkeypatch.setenv(KEY_ENV, KEY)
    rd, _, _ = merged_run(tmp_path, n_questions=4, seeds=(0, 1),
                               **openai_settings(server.url, max_retries=2, backoff_s=0.05))
    info = judge_run(rd.path)
    verdicts = read_jsonl(rd.verdicts_file()).records
    assert len(verdicts) == len({v["key"] for v in verdicts}) == 8 == info["records"]
    assert info["n_judge_errors"] == 0
    assert info["n_correct"] + info["n_incorrect"] + info["n_invalid"] == 8
    assert all(v["judge_model"] == SERVED and v["judge_backend"] == "openai" for v in verdicts)
    assert all(v["raw"] for v in verdicts)
    # response_format with the v1.1 JSON schema, honoured by the real server: no INVALID
    assert {v["judge_structured"] for v in verdicts} == {"json_schema"}
    assert all(structured_verdict(v["raw"], "json_schema") == v["verdict"] for v in verdicts)
    assert info["n_invalid"] == 0
    assert all(v["judge_finish_reason"] == "stop" and v["judge_output_tokens"] > 0
               for v in verdicts)
    # v1.0: the server's guided choice (structured_outputs.choice)
    info = judge_run(rd.path, out="v10", overrides=["judge.prompt=v1.0", "judge.force=true"])
    chosen = read_jsonl(rd.verdicts_file("v10")).records
    assert {v["judge_structured"] for v in chosen} == {"choice"} and info["n_invalid"] == 0
    assert all(v["raw"] in CHOICES for v in chosen)
    # without the key the server answers 401: a clear error, not a file of INVALIDs
    monkeypatch.delenv(KEY_ENV)
    other, _, _ = merged_run(tmp_path, name="nokey", n_questions=2,
                             **openai_settings(server.url, max_retries=2, backoff_s=0.05))
    with pytest.raises(EndpointError, match="HTTP 401"):
        judge_run(other.path)
    assert not other.judge_marker(0).exists()
    captured = capfd.readouterr()
    assert_no_key(captured.out, captured.err, folder=tmp_path)


class Stub(BaseHTTPRequestHandler):
    """Forwards to the real server, after serving the queued faults; POISON always fails."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        with srv.lock:
            srv.seen.append(time.time())
            fault = srv.faults.pop(0) if srv.faults else None
        if fault is None and srv.poison and b"POISON" in body:
            fault = (503, {})
        if fault:
            code, headers = fault
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            data = json.dumps({"error": f"stub fault {code}"}).encode()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        req = urllib.request.Request(
            srv.target + self.path, data=body,
            headers={"Content-Type": "application/json",
                     "Authorization": self.headers.get("Authorization", "")})
        with urllib.request.urlopen(req, timeout=60) as r:
            data, code = r.read(), r.status
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub(server):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    httpd.target, httpd.seen, httpd.faults = f"http://127.0.0.1:{server.port}", [], []
    httpd.poison, httpd.lock = False, threading.Lock()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_500_then_429_with_retry_after_are_retried(tmp_path, stub, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    stub.faults = [(500, {}), (429, {"Retry-After": "1"})]
    rd, _, _ = merged_run(tmp_path, n_questions=3,
                               **openai_settings(stub.url, max_retries=3, backoff_s=0.05))
    info = judge_run(rd.path)
    assert info["records"] == 3 and info["n_judge_errors"] == 0
    assert stub.faults == [] and len(stub.seen) == 3 + 2
    # the probe: 500, retry after 0.05 s backoff, 429, retry after Retry-After (1 s)
    assert stub.seen[1] - stub.seen[0] < 0.9
    assert stub.seen[2] - stub.seen[1] >= 0.95
    assert_no_key(folder=rd.path)


def test_exhausted_retries_give_invalid_with_reason(tmp_path, stub, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    settings = openai_settings(stub.url, max_retries=2, backoff_s=0.01)
    rd, cfg, plan = make_run(tmp_path, n_questions=4, **settings)
    victim = plan_units(plan)[-1]
    generate_all(rd, cfg, plan, skip={victim["key"]})
    shard = next(s["index"] for s in plan["shards"] if victim in s["units"])
    write_lines(rd.generate_file(shard), [gen_record(victim, cfg, response="POISON 42")])
    assert merge_run(rd.path).complete
    merged = read_jsonl(rd.merged_file).records
    assert merged[0]["key"] != victim["key"]  # the probe request goes through
    stub.poison = True
    # 1 of 4 units is more than judge.max_error_share (0.1): the shard fails, naming the
    # endpoint and the first bad reply, and is not done
    with pytest.raises(JudgeError) as e:
        judge_shard(rd.path, 0)
    assert "1 of 4 units ended in judge errors" in str(e.value)
    assert f"endpoint {stub.url}; first bad reply: POST {stub.url}/chat/completions" in str(
        e.value)
    assert not rd.judge_marker(0).exists()
    rec = next(r for r in read_jsonl(rd.judge_file(0)).records if r["key"] == victim["key"])
    assert rec["verdict"] == "INVALID" and rec["judge_error"]
    assert f"POST {stub.url}/chat/completions" in rec["reason"]
    assert "HTTP 503" in rec["reason"] and "3 attempts" in rec["reason"]
    cache = read_jsonl(rd.path / "judge-cache.jsonl").records
    assert victim["key"] not in {c["key"] for c in cache}  # endpoint errors are not cached
    # the endpoint recovers: only the failed unit is asked again
    stub.poison = False
    before = len(stub.seen)
    info = judge_shard(rd.path, 0)
    assert info["n_judge_errors"] == 0 and len(stub.seen) == before + 1
    assert_no_key(folder=rd.path)
