"""The judge stage without a model: verdict parsing (lcr.verdict), the exact backend, shards,
resume, cache."""

import json

import pytest
from test_merge import gen_record, generate_all, make_run, merged_run, write_lines

from lcr.cli import main as cli_main
from lcr.config import ConfigError
from lcr.criteria import exact_verdict
from lcr.io import read_jsonl, sha256_text
from lcr.judge import (
    ExactBackend,
    JudgeError,
    finalize_verdicts,
    judge_config,
    judge_run,
    judge_shard,
)
from lcr.merge import merge_run
from lcr.rundir import RunDir, RunDirError
from lcr.units import judge_shard_units, plan_units
from lcr.verdict import parse_verdict, read_structured, read_verdict

C, I, X = "CORRECT", "INCORRECT", "INVALID"

VERDICT_CASES = [
    # plain words, any case and spacing
    ("CORRECT", C),
    ("INCORRECT", I),
    ("correct", C),
    ("incorrect.", I),
    ("  Correct  \n", C),
    ("CORRECT!", C),
    ("NOT CORRECT", I),
    ("not correct.", I),
    # markdown emphasis and labels
    ("**CORRECT**", C),
    ("**INCORRECT**", I),
    ("`CORRECT`", C),
    ("> INCORRECT", I),
    ("Verdict: CORRECT", C),
    ("**Verdict:** INCORRECT", I),
    ("verdict: not correct", I),
    ("Final verdict: **INCORRECT**", I),
    ("My verdict is incorrect", I),
    # JSON, fenced, with extra keys, nested text that mentions the other word
    ('{"verdict": "CORRECT"}', C),
    ('{"verdict": "incorrect"}', I),
    ('```json\n{"verdict": "CORRECT"}\n```', C),
    ('Here is my assessment.\n```json\n{\n  "verdict": "INCORRECT"\n}\n```', I),
    ('{"verdict": "INCORRECT", "confidence": 0.9}', I),
    ('```json\n{"reasoning": "first looked INCORRECT, but matches", "verdict": "CORRECT"}\n```',
     C),
    ("{'verdict': 'CORRECT'}", C),
    ('{"result": {"verdict": "CORRECT"}}', C),
    # reasoning blocks are ignored
    ("<think>maybe CORRECT, maybe INCORRECT</think>\nINCORRECT", I),
    ("<think>\nThe answer looks INCORRECT at first.\n</think>\n\n**CORRECT**", C),
    ("<think>Verdict: CORRECT</think>\n{\"verdict\": \"INCORRECT\"}", I),
    ("the opening tag was in the template... CORRECT?</think>\nINCORRECT", I),
    ("<think>still thinking, probably CORRECT", X),  # reasoning cut off: no verdict
    # a verdict leading a sentence, upper-case verdicts in prose
    ("INCORRECT. The candidate says 41, the official answer is 42.", I),
    ("Correct - both give 42.", C),
    ("The candidate gives 42 like the official answer, so it is CORRECT.", C),
    ("The candidate answer is NOT CORRECT because it names 41.", I),
    ("Both give 42.\n\nINCORRECT", I),
    # ambiguous or empty: INVALID, never a guess
    ("", X),
    ("   \n ", X),
    ("I cannot decide.", X),
    ("The candidate is correct.", C),  # any case, where it is the verdict on the answer
    ("The candidate answer is not entirely correct.", X),
    ("Correct answer is 42 but the candidate says 41", X),
    ("CORRECT or INCORRECT", X),
    ("CORRECT\nINCORRECT", X),
    ("Verdict: CORRECT\n\nVerdict: INCORRECT", X),
    ('{"verdict": "PARTIALLY CORRECT"}', X),
    ('{"verdict": true}', X),
    ('{"verdict": "CORRECT"} {"verdict": "INCORRECT"}', X),
    ('{"verdict": "CORRECT"}\nINCORRECT', X),
    ("NOT INCORRECT", X),
    ("INCORRECTLY", X),
    ("CORRECTNESS is hard to judge", X),
    (None, X),
]


@pytest.mark.parametrize("text,want", VERDICT_CASES)
def test_parse_verdict(text, want):
    assert parse_verdict(text) == want


# Replies written to break the parser (issue 13): negations, hedges, questions, quotes of the
# candidate, retractions, reasoning blocks, JSON with reasons, markdown. A negative reply must
# never become CORRECT; conflicting claims are INVALID.
ADVERSARIAL_CASES = [
    # lower-case negation before an upper-case verdict word: never CORRECT
    ("The answer is not CORRECT.", I),
    ("The candidate answer isn't CORRECT.", I),
    ("The candidate answer isn’t CORRECT: it says 41.", I),
    ("It cannot be considered CORRECT.", I),
    ("Hardly CORRECT", I),
    ("The candidate's figure is no longer CORRECT after the v1.1 fix.", I),
    ("I do not think the answer is CORRECT.", I),
    ("Nothing in the candidate answer is CORRECT.", I),
    ("The candidate fails to be CORRECT on the second criterion.", I),
    ("The answer is far from CORRECT.", I),
    ("This is never CORRECT for a ratio.", I),
    ("It is neither CORRECT nor complete.", I),
    ("The candidate answer is not CORRECT; INCORRECT.", I),
    ("**Not CORRECT**", I),
    ("NOT CORRECT: the candidate names 2019, the official answer 2021.", I),
    # hedges and double negations: not a clean verdict
    ("The answer is partially CORRECT.", X),
    ("Mostly CORRECT, but the second figure is wrong.", X),
    ("The answer is not entirely CORRECT.", X),
    ("The answer is not INCORRECT.", X),
    ("The answer isn't INCORRECT, and it isn't CORRECT either.", I),
    ("CORRECT, not INCORRECT.", C),
    # questions and hypotheticals claim nothing
    ("Is the candidate answer CORRECT? No.", I),  # a rubric: the judge's own answer
    ("Is the candidate answer CORRECT? No, it is INCORRECT.", I),
    ("It would be CORRECT if it said 14. It says 12, so INCORRECT.", I),
    ("The candidate would be CORRECT only with the official rounding.", X),
    ("The answer is CORRECT if we accept 12.4 as 12.", X),
    ("Verdict: INCORRECT (it would be CORRECT had it named both firms)", I),
    # quotes of the candidate answer are not the judge's claim
    ('The candidate wrote "Correct: 12 infringements", but the official answer is 14. '
     "INCORRECT", I),
    ('"Correct: 12 infringements"\nThe official answer is 14, so the answer is INCORRECT.', I),
    ("The candidate answered “CORRECT total: 12” while the official answer is 14. INCORRECT", I),
    ("The candidate said 'Correct, 12 cases', the official answer says 14: INCORRECT", I),
    ("> Correct: 12 infringements\n\nThe official answer is 14. INCORRECT", I),
    ("> Correct: 12 infringements\n\nThe official answer is 12. CORRECT", C),
    ('Verdict: "CORRECT"', C),
    ('Verdict: "INCORRECT"', I),
    ('The candidate wrote "Correct: 12 infringements".', X),
    ("> INCORRECT\n> \n> The total differs.", I),
    ("> **Verdict:** CORRECT", C),
    # retractions: the final committed verdict counts (issue 19); conflicts with nothing
    # between them stay INVALID
    ("CORRECT... wait, no: INCORRECT", I),
    ("CORRECT. Actually, on second thought, INCORRECT.", I),
    ("Verdict: CORRECT\nCorrection: the years differ, so INCORRECT.", I),
    ("INCORRECT\n\nHmm, re-reading it, the answer is CORRECT.", C),
    ("~~CORRECT~~ INCORRECT", I),
    ("~~INCORRECT~~ **CORRECT**", C),
    ("<s>CORRECT</s> INCORRECT", I),
    ("Verdict: CORRECT or INCORRECT", X),
    ("Reply only with CORRECT or INCORRECT.\n\nINCORRECT", I),
    ("CORRECT/INCORRECT: CORRECT", C),
    # thinking blocks
    ("<think>The answer is CORRECT... no.</think>\nThe answer is not CORRECT.", I),
    ("<think>Verdict: CORRECT</think>", X),
    ("<thinking>It matches: CORRECT</thinking>\n\nINCORRECT", I),
    ("<reasoning>\nINCORRECT at first glance\n</reasoning>\nVerdict: CORRECT", C),
    ("wait, the total is 12 so CORRECT</think>\n\nThe answer is not CORRECT.", I),
    # JSON, with reasons, nested, fenced, v1.1 style
    ('{"verdict": "CORRECT"}', C),
    ('{"verdict": "INCORRECT"}', I),
    ('```json\n{"verdict": "INCORRECT"}\n```', I),
    ('{"reasoning": "The candidate says 12, which is not CORRECT.", "verdict": "INCORRECT"}', I),
    ('{"reason": "Correct: 12 matches 12", "verdict": "CORRECT"}', C),
    ('{"reason": "Matches the OFFICIAL ANSWER; not INCORRECT", "verdict": "CORRECT"}', C),
    ('{"verdict": "not correct", "reason": "41 vs 42"}', I),
    ('{"verdict": "CORRECT", "confidence": "low"}\n\nOn reflection it is not CORRECT.', I),
    ('{"verdict": "INCORRECT"}\nThe answer is not CORRECT.', I),
    ('{"verdict": "Partially CORRECT"}', X),
    ('{"verdict": "CORRECT"}\n{"verdict": "CORRECT"}', C),
    ('{"verdict": null}', X),
    ('{"verdict": ["CORRECT"]}', X),
    ('{"grade": "INCORRECT", "notes": "The candidate wrote \\"Correct: 12\\""}', I),
    ('{"assessment": {"verdict": "INCORRECT", "why": "wrong year"}}', I),
    ('Here is the JSON:\n{"verdict": "CORRECT"}\nThe candidate answer is CORRECT.', C),
    # markdown and layout
    ("### Verdict\n\n**INCORRECT**", I),
    ("| verdict |\n|---|\n| CORRECT |", C),
    ("- The figures match.\n- The units match.\n\n**Final verdict: CORRECT**", C),
    ("__INCORRECT__ - the official answer is 14", I),
    ("`INCORRECT`\n\nThe candidate gave 12; the OFFICIAL ANSWER is 14.", I),
    ("The CANDIDATE ANSWER matches the OFFICIAL ANSWER.\n\nCORRECT", C),
    ("The candidate answer (12) differs from the official one (14). INCORRECT.", I),
    # lower-case prose counts where it is the verdict on the whole answer (issue 19)
    ("The answer is correct.", C),
    ("The answer is not correct.", I),
    ("Correct answer: 14. The candidate gives 12.", X),
    ("incorrectly rounded, otherwise fine", X),
    # conjunctions start a new clause; a negation reaches across a few words only
    ("It is not 2019 but the total is CORRECT.", C),
    ("I do not think that the answer is CORRECT.", I),
    ("It does not say 2019, so INCORRECT.", I),
    ("The candidate did not round, and its answer is CORRECT.", C),
]


@pytest.mark.parametrize("text,want", ADVERSARIAL_CASES)
def test_parse_verdict_adversarial(text, want):
    assert parse_verdict(text) == want


# Cases of each kind issue 19 names (the held-out table, tests/test_verdict_heldout.py, is
# checked apart): (reply, finish_reason, verdict).
ISSUE_19_CASES = [
    # the final committed verdict counts
    ("At first glance the candidate seems INCORRECT since it says 'about 12'. But the question "
     "allows rounding.\n\nVerdict: CORRECT", "stop", C),
    ("The candidate's total matches. Some might call it INCORRECT for the missing unit, but "
     "the question asks for no unit.\n\nFinal verdict: CORRECT", "stop", C),
    ("Verdict: INCORRECT\n\nVerdict: CORRECT", "stop", X),  # nothing between: no commitment
    ("INCORRECT\n\nWait, I misread the candidate: it does give 14.\n\nCORRECT", "stop", C),
    ("CORRECT\n\nHmm, no. The candidate gives 2019, the official answer says 2021. INCORRECT",
     "stop", I),
    # negation over the whole clause, asides included
    ("The candidate does not, despite the long explanation, reach a CORRECT total.", "stop", I),
    ("None of the three firms the candidate names is, as far as the documents go, CORRECT.",
     "stop", I),
    ("It is not, in my view, CORRECT.", "stop", I),
    ("I cannot, given the rounding the question demands, accept this as CORRECT.", "stop", I),
    ("Nobody reading the documents would call this CORRECT.", "stop", I),
    # rubric forms
    ("Correct: no", "stop", I),
    ("CORRECT: YES", "stop", C),
    ("Is the answer correct? Yes.", "stop", C),
    ("**Correct:** false", "stop", I),
    ("Incorrect: no", "stop", X),  # a double negative is no clear commitment
    # a verdict word qualifying something else
    ("The candidate misses the CORRECT value of 3.5%.", "stop", X),
    ("Correct figure: 14; candidate: 12.", "stop", X),
    ("Correct: 14. Candidate: 12.", "stop", X),  # a label of a value
    ("The CORRECT ranking is A, B, C. The candidate gives A, B, C.\n\nCORRECT", "stop", C),
    ("INCORRECT: the CORRECT year is 2021.", "stop", I),
    # any case where it stands alone as the verdict
    ("correct", "stop", C),
    ("Incorrect", "stop", I),
    ("The candidate's answer is incorrect.", "stop", I),
    ("the response is correct", "stop", C),
    ("Overall, correct.", "stop", C),
    ("The years differ, so it is incorrect.", "stop", I),
    ("The year is correct, but the amount is wrong.", "stop", I),  # a part right is no verdict
    ("The official answer is correct per the documents; the candidate says 12.", "stop", X),
    # JSON: extra keys, contradicting keys, qualifiers
    ('{"verdict": "INCORRECT", "explanation": "The candidate says 12.", "score": 0}', "stop",
     I),
    ('{"verdict": "CORRECT", "correct": false}', "stop", X),
    ('{"verdict": "CORRECT", "is_correct": true}', "stop", C),
    ('{"verdict": "INCORRECT - the year differs"}', "stop", I),
    ('{"verdict": "CORRECT, since 67.5% equals 0.675"}', "stop", C),
    ('{"is_correct": false}', "stop", I),
    ('{"verdict": "CORRECT answer"}', "stop", X),
    # zh, es, de, fr
    ("结论：正确", "stop", C),
    ("答案不正确。", "stop", I),
    ("判断：错误", "stop", I),
    ("候选答案正确", "stop", C),
    ("CORRECTO", "stop", C),
    ("La respuesta no es correcta.", "stop", I),
    ("Veredicto: correcta", "stop", C),
    ("FALSCH", "stop", I),
    ("Bewertung: richtig", "stop", C),
    ("Die Antwort ist korrekt.", "stop", C),
    ("nicht korrekt", "stop", I),
    ("Verdict : CORRECT", "stop", C),
    ("La réponse est incorrecte.", "stop", I),
    ("Réponse : correcte", "stop", C),
    ("La réponse n'est pas correcte.", "stop", I),
    # cut at the judge's token limit: INVALID unless the verdict came first
    ("CORRECT\n\nThe candidate gives 14 as the official answer does, and the", "length", C),
    ("Let me check each figure. The first figure is CORRECT. The second", "length", X),
    ('{"verdict": "INCORRECT"', "length", I),
    ("<think>The candidate says 14, which", "length", X),
    ("Verdict: INCORRECT\nReason: the candidate", "length", I),
    ("INCORRECT... wait, let me re-check the second", "length", X),  # it was reconsidering
    ("The answer is CORRECT.", "length", X),  # a sentence, not a verdict it began with
    # never CORRECT unless the judge clearly committed to it
    ("The candidate seems to be on the right track, probably CORRECT.", "stop", X),
    ("CORRECT?", "stop", X),
    ("Could be CORRECT.", "stop", X),
    ("I am not sure whether it is CORRECT.", "stop", X),
    ("It looks CORRECT at first, but the unit is wrong.", "stop", X),
    ("I'm not able to determine whether the candidate answer is CORRECT without the "
     "documents.", "stop", X),
    ("There is nothing INCORRECT about the candidate's answer.", "stop", X),  # not a verdict
    ("The answer given is not the CORRECT one.", "stop", I),
    ("Candidate: 14. Official: 14. Match. CORRECT", "stop", C),
    ("The candidate answer is correct in substance but uses the wrong unit, which the question "
     "requires. INCORRECT.", "stop", I),
]


@pytest.mark.parametrize("text,finish,want", ISSUE_19_CASES)
def test_parse_verdict_issue_19_cases(text, finish, want):
    assert parse_verdict(text, finish_reason=finish) == want


def test_reasons_of_invalid_replies():
    assert read_verdict("Step 1: the year is CORRECT. Step", "length") == ("INVALID", "truncated")
    assert read_verdict("CORRECT\nINCORRECT") == ("INVALID", "contradicting verdicts")
    assert read_verdict("I cannot decide.") == ("INVALID", "no verdict")
    assert read_verdict("   ") == ("INVALID", "empty reply")
    assert read_verdict('{"verdict": "PARTIALLY CORRECT"}') == ("INVALID", "ambiguous verdict")


def test_structured_replies_are_read_strictly():
    assert read_structured("CORRECT", "choice") == (C, None)
    assert read_structured(" INCORRECT\n", "choice") == (I, None)
    assert read_structured('{"verdict": "CORRECT"}', "json_schema") == (C, None)
    # an endpoint that ignored the request: read as prose, and the reason says so
    assert read_structured("The answer is CORRECT.", "choice") == (
        C, "not the choice asked for; read as prose")
    assert read_structured('{"verdict": "CORRECT", "x": 1', "json_schema") == (
        C, "not the json_schema asked for; read as prose")
    assert read_structured("", "json_schema") == (
        X, "not the json_schema asked for; read as prose: empty reply")


def test_quotes_and_retractions_never_turn_a_reply_correct():
    assert len(ADVERSARIAL_CASES) >= 60
    for text, want in VERDICT_CASES + ADVERSARIAL_CASES:
        if not isinstance(text, str):
            continue
        # a quoted candidate line before the judge's reply changes nothing
        assert parse_verdict(f'The candidate wrote: "Correct: 12 infringements"\n{text}') == want
        # a later retraction to INCORRECT never leaves CORRECT standing
        assert parse_verdict(f"{text}\nWait, no: INCORRECT.") != C, text
        if want != C:  # and a negative reply stays negative in a reasoning model's framing
            assert parse_verdict(f"<think>Surely CORRECT.</think>\n{text}") != C, text


EXACT_CASES = [
    ("42", "The answer is 42.", C),
    ("42", "The answer is 420.", I),
    ("12", "It is 12.4", I),  # no rounding for a bare integer
    ("12.3%", "It rose 12.34%", C),  # rounds to the criterion's precision
    ("1,234", "about 1234 units", C),
    ("$1.2 million", "revenue of 1,200,000 dollars", C),
    ("$1.2 million", "revenue of $1,234,567", C),
    ("5bn", "five billion... precisely 5 billion", C),
    ("67.5%", "a share of 0.675", C),
    ("0.675", "a share of 67.5%", C),
    ("Apple; Banana", "apple and banana", C),
    ("Apple; Banana", "apple only", I),
    ("Apple, 12%", "Apple's share is 12.0%", C),
    ("Apple, 12%", "Pear's share is 12%", I),
    ("The Hague", "It is in the hague.", C),
    ("£3.5m", "about 3.5 million pounds", C),
    ("-3.2%", "a change of -3.2%", C),
    ("2019-2020", "from 2019 to 2020", C),
    ("", "anything", X),
]


@pytest.mark.parametrize("official,response,want", EXACT_CASES)
def test_exact_verdict(official, response, want):
    assert exact_verdict(official, response)[0] == want


def test_moved_names_stay_importable_from_judge():
    import lcr.backends
    import lcr.criteria
    import lcr.judge
    import lcr.verdict

    assert lcr.judge.parse_verdict is lcr.verdict.parse_verdict
    assert lcr.judge.exact_verdict is lcr.criteria.exact_verdict
    for name in ("ExactBackend", "VllmBackend", "OpenAIBackend", "make_backend", "BACKENDS"):
        assert getattr(lcr.judge, name) is getattr(lcr.backends, name), name


class Counting:
    """A real backend, counting the units it is asked to judge."""

    def __init__(self, inner):
        self.inner, self.model, self.calls = inner, inner.model, 0

    def judge(self, items, **kw):
        self.calls += len(items)
        return self.inner.judge(items, **kw)


def exact_run(tmp_path, **kw):
    kw.setdefault("backend", "exact")
    return merged_run(tmp_path, **kw)


def counting(rd, out="", overrides=()):
    return Counting(ExactBackend(judge_config(rd, overrides, out)))


def test_judge_run_every_unit_once_and_fields(tmp_path):
    rd, _, _ = exact_run(tmp_path, shards=2, seeds=(0, 1), n_questions=5)
    info = judge_run(rd.path)
    verdicts = read_jsonl(rd.verdicts_file()).records
    merged = read_jsonl(rd.merged_file).records
    assert [v["key"] for v in verdicts] == [m["key"] for m in merged]  # once each, merged order
    assert info["records"] == len(merged) == 10
    assert info["n_correct"] == 10  # the hand-made responses give each answer
    for v in verdicts:
        for field in ("key", "question_id", "seed", "sample", "document_set_id",
                      "document_category", "status", "prompt_tokens", "verdict", "judge_model",
                      "judge_prompt", "judge_backend", "raw", "response_sha256", "time",
                      "output_tokens", "finish_reason"):
            assert field in v, field
        assert (v["judge_model"], v["judge_prompt"], v["judge_backend"]) == (
            "exact", "v1.1", "exact")
    # what the report needs to count answers cut at max_new_tokens, from the merged record
    by_key = {m["key"]: m for m in merged}
    assert all((v["output_tokens"], v["finish_reason"]) == (
        by_key[v["key"]]["output_tokens"], by_key[v["key"]]["finish_reason"]) for v in verdicts)
    again = rd.verdicts_file().read_bytes()
    finalize_verdicts(rd.path)
    assert rd.verdicts_file().read_bytes() == again


def test_failed_generation_is_incorrect_without_the_judge(tmp_path):
    rd, cfg, plan = make_run(tmp_path, backend="exact")
    units = plan_units(plan)
    bad, empty = units[0], units[1]
    generate_all(rd, cfg, plan, skip={bad["key"], empty["key"]})
    shard_of = {u["key"]: s["index"] for s in plan["shards"] for u in s["units"]}
    write_lines(rd.generate_file(shard_of[bad["key"]]),
                [gen_record(bad, cfg, status="too_long", response="")])
    write_lines(rd.generate_file(shard_of[empty["key"]]),
                [gen_record(empty, cfg, response="  \n")])
    assert merge_run(rd.path).complete
    backend = counting(rd)
    judge_run(rd.path, backend=backend)
    assert backend.calls == len(units) - 2
    verdicts = {v["key"]: v for v in read_jsonl(rd.verdicts_file()).records}
    assert verdicts[bad["key"]]["verdict"] == "INCORRECT"
    assert "too_long" in verdicts[bad["key"]]["reason"]
    assert verdicts[bad["key"]]["raw"] == "" and verdicts[bad["key"]]["status"] == "too_long"
    assert verdicts[empty["key"]]["verdict"] == "INCORRECT"
    assert verdicts[empty["key"]]["reason"] == "empty response"


def test_shard_resumes_from_half_a_file(tmp_path):
    rd, _, _ = exact_run(tmp_path, n_questions=8)
    merged = read_jsonl(rd.merged_file).records
    half = merged[:4]
    hand = [{
        "key": u["key"], "question_id": u["question_id"], "seed": u["seed"],
        "sample": u["sample"], "document_set_id": u["document_set_id"],
        "document_category": u["document_category"], "status": u["status"],
        "prompt_tokens": u["prompt_tokens"], "verdict": "INCORRECT", "judge_model": "exact",
        "judge_prompt": "v1.1", "judge_backend": "exact", "raw": "written by hand",
        "response_sha256": sha256_text(u["response"]), "time": 1.0,
    } for u in half]
    # a verdict of another judge and one for an older response do not count as judged
    other = dict(hand[0], key=merged[5]["key"], judge_model="someone-else")
    stale = dict(hand[0], key=merged[6]["key"], response_sha256="0" * 64)
    write_lines(rd.judge_file(0), hand + [other, stale], tail='{"key": "q7:0:0", "ver')
    backend = counting(rd)
    info = judge_shard(rd.path, 0, backend=backend)
    assert backend.calls == len(merged) - len(half)
    assert info["records"] == len(merged)
    assert rd.judge_marker(0).exists()
    finalize_verdicts(rd.path)
    verdicts = read_jsonl(rd.verdicts_file()).records
    assert sorted(v["key"] for v in verdicts) == sorted(u["key"] for u in merged)
    by_key = {v["key"]: v for v in verdicts}
    assert all(by_key[u["key"]]["raw"] == "written by hand" for u in half)
    assert by_key[merged[5]["key"]]["judge_model"] == "exact"
    assert by_key[merged[6]["key"]]["verdict"] == "CORRECT"
    # a done shard is not judged again
    assert judge_shard(rd.path, 0, backend=backend)["records"] == len(merged)
    assert backend.calls == len(merged) - len(half)


def test_judge_shards_split_and_finalize_waits(tmp_path):
    rd, _, _ = exact_run(tmp_path, n_questions=7, seeds=(0, 1))
    overrides = ["judge.shards=3"]
    merged = read_jsonl(rd.merged_file).records
    parts = [judge_shard_units(merged, k, 3) for k in range(3)]
    assert sorted(u["key"] for p in parts for u in p) == sorted(u["key"] for u in merged)
    assert [len(p) for p in parts] == [5, 5, 4]  # the remainder is not dropped
    judge_shard(rd.path, 0, overrides=overrides)
    judge_shard(rd.path, 2, overrides=overrides)
    with pytest.raises(JudgeError, match=r"not done: \[1\]"):
        finalize_verdicts(rd.path, overrides=overrides)
    assert cli_main(["judge", str(rd.path), "--finalize"]) == 1  # settings.json remembers 3 shards
    assert not rd.verdicts_file().exists()
    assert cli_main(["judge", str(rd.path), "--shard", "1"]) == 0
    assert cli_main(["judge", str(rd.path), "--finalize"]) == 0
    verdicts = read_jsonl(rd.verdicts_file()).records
    assert [v["key"] for v in verdicts] == [u["key"] for u in merged]
    assert {v["shard"] for v in verdicts} == {0, 1, 2}
    with pytest.raises(JudgeError, match="out of range"):
        judge_shard(rd.path, 3)


def test_verdict_cache_makes_a_rejudge_free(tmp_path):
    rd, _, _ = exact_run(tmp_path)
    first = counting(rd)
    judge_run(rd.path, backend=first)
    assert first.calls == 6
    cache = read_jsonl(rd.path / "judge-cache.jsonl").records
    assert len(cache) == 6
    second = counting(rd, out="again")
    judge_run(rd.path, out="again", backend=second)
    assert second.calls == 0
    a = read_jsonl(rd.verdicts_file()).records
    b = read_jsonl(rd.verdicts_file("again")).records
    assert [(v["key"], v["verdict"]) for v in a] == [(v["key"], v["verdict"]) for v in b]
    assert all(v.get("cached") for v in b)
    # another judge prompt is another cache entry
    third = counting(rd, "v10", ["judge.prompt=v1.0", "judge.force=true"])
    judge_run(rd.path, out="v10", overrides=["judge.prompt=v1.0", "judge.force=true"],
              backend=third)
    assert third.calls == 6


def test_judge_needs_a_complete_merge(tmp_path):
    rd, cfg, plan = make_run(tmp_path, backend="exact")
    generate_all(rd, cfg, plan, skip={plan_units(plan)[0]["key"]})
    merge_run(rd.path)
    with pytest.raises(RunDirError, match="lcr merge"):
        judge_shard(rd.path, 0)
    assert cli_main(["judge", str(rd.path)]) == 2  # an input is missing (README: exit codes)


def test_merged_file_changed_after_done(tmp_path):
    rd, _, _ = exact_run(tmp_path)
    with open(rd.merged_file, "a") as f:
        f.write("\n")
    with pytest.raises(RunDirError, match="sha256 differs"):
        judge_run(rd.path)


def test_protocol_must_match_revision(tmp_path):
    rd, _, _ = exact_run(tmp_path)
    with pytest.raises(ConfigError) as e:
        judge_run(rd.path, overrides=["judge.prompt=v1.0"])
    assert "judge.prompt" in str(e.value) and "data.revision" in str(e.value)
    assert "judge.force" in str(e.value)
    assert not rd.judge_dir().exists()
    judge_run(rd.path, out="old", overrides=["judge.prompt=v1.0", "judge.force=true"])
    assert read_jsonl(rd.verdicts_file("old")).records[0]["judge_prompt"] == "v1.0"


def test_out_folder_keeps_its_judge(tmp_path):
    rd, _, _ = exact_run(tmp_path)
    judge_shard(rd.path, 0, out="x", overrides=["judge.shards=2"])
    settings = json.loads((rd.judge_dir("x") / "settings.json").read_text())
    assert settings["judge"]["shards"] == 2
    judge_shard(rd.path, 1, out="x")  # no --set: the folder's saved settings apply
    finalize_verdicts(rd.path, out="x")
    with pytest.raises(ConfigError, match="another --out"):
        judge_shard(rd.path, 0, out="x", overrides=["judge.shards=3"])
    with pytest.raises(ConfigError, match="model.path is fixed once .* is planned"):
        judge_run(rd.path, overrides=["model.path=other"])
    with pytest.raises(ConfigError, match="unknown key"):
        judge_run(rd.path, overrides=["judge.modle=x"])
    with pytest.raises(ConfigError, match="safe name"):
        judge_run(rd.path, out="../escape")


def test_cli_main(tmp_path, capsys):
    rd, _, _ = exact_run(tmp_path)
    assert cli_main(["judge", str(rd.path), "--set", "judge.shards=2", "--shard", "0"]) == 0
    assert cli_main(["judge", str(rd.path), "--finalize"]) == 1
    assert "not done: [1]" in capsys.readouterr().err
    assert cli_main(["judge", str(rd.path)]) == 0  # missing shard, then finalize
    assert len(read_jsonl(RunDir(rd.path).verdicts_file()).records) == 6


class Recording(Counting):
    """Counting, and keeping the messages the judge was sent."""

    def __init__(self, inner):
        super().__init__(inner)
        self.messages = []

    def judge(self, items, **kw):
        self.messages += [it.messages for it in items]
        return super().judge(items, **kw)


def test_prompt_role_is_part_of_the_judge_identity(tmp_path):
    from lcr.prompts import SYSTEM_ROLE_USER_TURN

    rd, _, _ = exact_run(tmp_path)
    judge_run(rd.path)
    user = read_jsonl(rd.verdicts_file()).records
    assert {v["judge_prompt_role"] for v in user} == {"user"}
    # the same folder cannot mix the two roles
    with pytest.raises(ConfigError, match="judge.prompt_role = 'user'.*another --out"):
        judge_config(rd, ["judge.prompt_role=system"])
    # another role is another judge: no cache hit, the judge is asked, the records say so
    overrides = ["judge.prompt_role=system"]
    backend = Recording(ExactBackend(judge_config(rd, overrides, "sys")))
    judge_run(rd.path, out="sys", overrides=overrides, backend=backend)
    assert backend.calls == len(user)
    assert all([m["role"] for m in msgs] == ["system", "user"] and
               msgs[1]["content"] == SYSTEM_ROLE_USER_TURN and
               "CANDIDATE ANSWER TO ASSESS" in msgs[0]["content"] for msgs in backend.messages)
    records = read_jsonl(rd.verdicts_file("sys")).records
    assert {v["judge_prompt_role"] for v in records} == {"system"}
    assert json.loads((rd.judge_dir("sys") / "settings.json").read_text())["judge"][
        "prompt_role"] == "system"
    again = counting(rd, "sys")
    judge_run(rd.path, out="sys", backend=again)  # the folder remembers its role
    assert again.calls == 0


def test_folders_judged_before_the_prompt_role_existed_stay_done(tmp_path):
    rd, _, _ = exact_run(tmp_path)
    judge_run(rd.path)

    for path in [rd.judge_file(0), rd.path / "judge-cache.jsonl"]:  # JSONL
        recs = read_jsonl(path).records
        assert recs and all(r.pop("judge_prompt_role") == "user" for r in recs)
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    done = json.loads(rd.judge_marker(0).read_text())
    assert done.pop("judge_prompt_role") == "user"
    rd.judge_marker(0).write_text(json.dumps(done))
    settings = json.loads((rd.judge_dir() / "settings.json").read_text())
    assert settings["judge"].pop("prompt_role") == "user"
    assert settings["judge"].pop("structured") == "auto"
    (rd.judge_dir() / "settings.json").write_text(json.dumps(settings))
    # a folder judged before judge.structured existed goes on in free text, as it was judged
    assert judge_config(rd).judge.structured is False
    with pytest.raises(ConfigError, match="judge.structured = False.*another --out"):
        judge_config(rd, ["judge.structured=auto"])
    backend = counting(rd)
    assert judge_shard(rd.path, 0, backend=backend)["records"] == 6
    assert backend.calls == 0
    fresh = counting(rd, "again")  # entries lacking the field still answer: the key decides
    judge_run(rd.path, out="again", backend=fresh)
    assert fresh.calls == 0
