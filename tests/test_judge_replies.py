"""The openai judge backend against a real local HTTP server whose replies each test decides:
unusable replies (truncated JSON, an HTML page, `choices: []`, `content: null`) are judge errors
that are asked again and never cached, a shard whose judge mostly fails fails in one line, the
cache key covers what shapes a reply, structured outputs are asked for and given up cleanly
when refused, and replies cut at the judge's token limit are counted apart and asked again with
a larger budget. No model: the server is a few lines of http.server (tests/test_judge_vllm.py
runs a real vLLM server)."""

import json
from http.server import BaseHTTPRequestHandler

import pytest
from helpers import LocalServer
from test_merge import merged_run

from lcr.backends import REPLY_RETRIES
from lcr.cli import main as cli_main
from lcr.io import read_jsonl
from lcr.judge import JudgeError, judge_run, judge_shard
from lcr.report import build_report

KEY_ENV = "LCR_TEST_REPLIES_KEY"


def completion(content, finish="stop", tokens=3) -> bytes:
    return json.dumps({
        "id": "c1", "object": "chat.completion", "created": 1, "model": "stub",
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens},
    }).encode()


OK = (200, "application/json", completion("CORRECT"))
BAD_REPLIES = {
    "truncated JSON": (200, "application/json", completion("CORRECT")[:40]),
    "HTML page": (200, "text/html", b"<html><body><h1>Proxy login</h1></body></html>"),
    "choices: []": (200, "application/json", json.dumps({
        "id": "c1", "object": "chat.completion", "created": 1, "model": "stub",
        "choices": []}).encode()),
    "content: null": (200, "application/json", completion(None, "length", 256)),
}
WHAT = {"truncated JSON": "body is not JSON", "HTML page": "body is not a chat completion",
        "choices: []": "choices: []", "content: null": "content: null (finish_reason length"}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.log.append(body)
            n = len(self.server.log)
        code, ctype, data = self.server.behave(n, body)
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Server(LocalServer):
    handler = Handler
    default = staticmethod(lambda n, body: OK)

    @property
    def requests(self) -> list[dict]:
        return self.httpd.log


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    srv = Server()
    yield srv
    srv.stop()


def run(tmp_path, url, name="r", n_questions=4, **judge):
    settings = dict(backend="openai", model="stub-judge", base_url=url, api_key_env=KEY_ENV,
                    max_retries=0, timeout_s=5.0, concurrency=2)
    settings.update(judge)
    rd, _, _ = merged_run(tmp_path, name=name, n_questions=n_questions, **settings)
    return rd


@pytest.mark.parametrize("bad", list(BAD_REPLIES))
def test_unusable_replies_fail_the_shard_loudly_are_asked_again_and_never_cached(
        tmp_path, server, capsys, bad):
    rd = run(tmp_path, server.url)
    server.behave(lambda n, body: BAD_REPLIES[bad])
    assert cli_main(["judge", str(rd.path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    line = err[-1]  # one line: the endpoint, the share, the first bad reply, the way on
    assert line.startswith("lcr judge: error: [judge shard 0] 4 of 4 units ended in judge "
                           "errors, more than judge.max_error_share = 0.1; endpoint "
                           f"{server.url}; first bad reply: POST {server.url}/chat/completions: "
                           f"unusable reply, {WHAT[bad]}"), line
    assert "--retry-errors" in line
    assert len(server.requests) == 4 * (1 + REPLY_RETRIES)  # each asked again, then an error
    records = read_jsonl(rd.judge_file(0)).records
    assert len(records) == 4 and all(r["judge_error"] and r["verdict"] == "INVALID"
                                     for r in records)
    assert not rd.judge_marker(0).exists() and not rd.verdicts_file().exists()
    assert read_jsonl(rd.judge_cache).records == []  # judge errors are never cached
    # the endpoint is fixed: asked again (the shard was never done), every unit judged
    server.behave(lambda n, body: OK)
    assert cli_main(["judge", str(rd.path)]) == 0
    verdicts = read_jsonl(rd.verdicts_file()).records
    assert [v["verdict"] for v in verdicts] == ["CORRECT"] * 4
    assert not any(v.get("judge_error") for v in verdicts)


def test_judge_errors_under_the_share_leave_the_shard_done_and_retry_errors_asks_again(
        tmp_path, server):
    rd = run(tmp_path, server.url, n_questions=12, max_error_share=0.1)

    def one_null(n, body):  # the reply about question 5 is always content: null
        poisoned = "case 5?" in body["messages"][-1]["content"]
        return BAD_REPLIES["content: null"] if poisoned else OK

    server.behave(one_null)
    info = judge_shard(rd.path, 0)  # 1 of 12 units is under judge.max_error_share
    assert info["n_judge_errors"] == 1 and rd.judge_marker(0).exists()
    bad = [r for r in read_jsonl(rd.judge_file(0)).records if r.get("judge_error")]
    assert len(bad) == 1 and "content: null (finish_reason length, 256 tokens)" in bad[0][
        "reason"]
    assert bad[0]["judge_finish_reason"] == "length" and bad[0]["judge_output_tokens"] == 256
    asked = len(server.requests)
    assert judge_shard(rd.path, 0)["n_judge_errors"] == 1  # done: not asked again by itself
    assert len(server.requests) == asked
    server.behave(lambda n, body: OK)
    assert judge_shard(rd.path, 0, retry_errors=True)["n_judge_errors"] == 0
    assert len(server.requests) == asked + 1  # only the failed unit


def test_the_cache_key_covers_endpoint_model_prompt_sampling_and_mode(tmp_path, server):
    rd = run(tmp_path, server.url)
    judge_run(rd.path)
    assert len(server.requests) == 4
    asked = len(server.requests)
    judge_run(rd.path, out="same")  # nothing that shapes a reply changed: all from the cache
    assert len(server.requests) == asked
    other = Server()
    try:
        changes = {"url": [f"judge.base_url={other.url!r}"],
                   "model": ["judge.model=stub-judge-2"],
                   "tokens": ["judge.max_new_tokens=512"],
                   "mode": ["judge.structured=false"],
                   "prompt": ["judge.prompt=v1.0", "judge.force=true"]}
        for name, overrides in changes.items():
            before = len(server.requests) + len(other.requests)
            judge_run(rd.path, out=name, overrides=overrides)
            assert len(server.requests) + len(other.requests) == before + 4, name
        assert len(other.requests) == 4  # the new endpoint was asked, not the cache
    finally:
        other.stop()
    records = read_jsonl(rd.verdicts_file("tokens")).records
    assert {r["judge_max_new_tokens"] for r in records} == {512}
    assert {r["judge_endpoint"] for r in read_jsonl(rd.verdicts_file("url")).records} == {
        other.url}


def test_structured_outputs_asked_for_and_given_up_once_when_refused(tmp_path, server,
                                                                     capsys):
    def schema_or_400(n, body):
        if "response_format" in body or "structured_outputs" in body:
            return 400, "application/json", b'{"error": "response_format is not supported"}'
        return OK

    # an endpoint that honours the JSON schema (v1.1): the reply is read strictly
    server.behave(lambda n, body: (200, "application/json", completion('{"verdict":"CORRECT"}'))
                  if body.get("response_format", {}).get("type") == "json_schema" else OK)
    rd = run(tmp_path, server.url)
    judge_run(rd.path)
    fmt = server.requests[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["properties"][
        "verdict"]["enum"] == ["CORRECT", "INCORRECT"]
    records = read_jsonl(rd.verdicts_file()).records
    assert {(r["judge_structured"], r["verdict"], r.get("reason")) for r in records} == {
        ("json_schema", "CORRECT", None)}
    assert build_report([rd.path])["judge_structured"] == {"json_schema": 4}
    # v1.0 asks for vLLM's guided choice
    judge_run(rd.path, out="v10", overrides=["judge.prompt=v1.0", "judge.force=true"])
    assert server.requests[-1]["structured_outputs"] == {"choice": ["CORRECT", "INCORRECT"]}
    # an endpoint that refuses: free text from then on, said once
    capsys.readouterr()
    server.behave(schema_or_400)
    before = len(server.requests)
    judge_run(rd.path, out="refused", overrides=["judge.max_new_tokens=300"])
    err = capsys.readouterr().err
    assert err.count("refused structured outputs") == 1, err
    asked = server.requests[before:]
    assert "response_format" in asked[0] and "response_format" not in asked[1]
    assert len(asked) == 4 + 1  # the refused request once, then free text for all
    records = read_jsonl(rd.verdicts_file("refused")).records
    assert {(r["judge_structured"], r["verdict"]) for r in records} == {("none", "CORRECT")}
    # judge.structured = true: the refusal is an error naming the key
    with pytest.raises(JudgeError, match=r"judge\.structured = true"):
        judge_run(rd.path, out="strict", overrides=["judge.structured=true",
                                                   "judge.max_new_tokens=301"])


def test_an_endpoint_that_ignores_structured_outputs_is_read_as_prose(tmp_path, server):
    server.behave(lambda n, body: (200, "application/json",
                                   completion("The answer matches.\n\nVerdict: CORRECT")))
    rd = run(tmp_path, server.url)
    judge_run(rd.path)
    for r in read_jsonl(rd.verdicts_file()).records:
        assert (r["verdict"], r["judge_structured"]) == ("CORRECT", "none")
        assert r["reason"] == ("asked for json_schema, the judge answered in free text (read "
                               "as prose)")


def test_truncated_judge_replies_are_counted_apart_and_retried_with_a_larger_budget(
        tmp_path, server, capsys):
    def by_budget(n, body):  # step-by-step grading that needs more than 64 tokens
        if body["max_tokens"] < 64:
            return 200, "application/json", completion("Step 1: the year is CORRECT. Step 2: "
                                                       "the amount", "length", body["max_tokens"])
        return 200, "application/json", completion("Both match.\n\nVerdict: CORRECT", "stop", 9)

    server.behave(by_budget)
    rd = run(tmp_path, server.url, max_new_tokens=32, structured=False)
    info = judge_run(rd.path)
    assert info["n_judge_truncated"] == 4 and info["n_judge_errors"] == 0
    records = read_jsonl(rd.verdicts_file()).records
    assert all(r["verdict"] == "INVALID" and r["judge_finish_reason"] == "length"
               and r["judge_output_tokens"] == 32 and "cut at judge.max_new_tokens" in r["reason"]
               for r in records)
    report = build_report([rd.path])
    assert (report["n_judge_truncated"], report["n_unparsed"], report["n_judge_errors"]) == (
        4, 0, 0)
    assert any("--retry-truncated" in w for w in report["warnings"])
    # a budget no larger than the one they ran out of is refused
    assert cli_main(["judge", str(rd.path), "--retry-truncated", "32"]) == 2
    assert "must be more than judge.max_new_tokens = 32" in capsys.readouterr().err
    before = len(server.requests)
    assert cli_main(["judge", str(rd.path), "--retry-truncated", "128"]) == 0
    assert [r["max_tokens"] for r in server.requests[before:]] == [128] * 4
    records = read_jsonl(rd.verdicts_file()).records
    assert {(r["verdict"], r["judge_max_new_tokens"], r["judge_finish_reason"])
            for r in records} == {("CORRECT", 128, "stop")}
    assert build_report([rd.path])["n_judge_truncated"] == 0
