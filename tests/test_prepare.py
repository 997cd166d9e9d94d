"""Prepare stage: token counts with the model's chat template, too-long policies."""

import numpy as np
from helpers import demo_config

from lcr.plan import plan_run
from lcr.prepare import chat_ids, load_tokenizer
from lcr.prompts import candidate_messages


def test_counts_match_the_chat_template(planned_demo):
    cfg, run_dir, _, questions = planned_demo
    from lcr.data import load_questions

    tok = load_tokenizer(cfg)
    by_id = {q.question_id: q for q in load_questions(cfg.data)}
    for rec in questions:
        q = by_id[rec["question_id"]]
        ids = chat_ids(tok, candidate_messages(q.documents, q.question))
        assert rec["prompt_tokens"] == len(ids)
        if rec["status"] == "ok":
            assert run_dir.prompt_ids(rec) == ids
            assert ids[0] == tok.bos_token_id


def test_too_long_is_recorded_not_fatal(planned_demo):
    cfg, _, _, questions = planned_demo
    long = [q for q in questions if q["status"] == "too_long"]
    assert len(long) == 1
    assert long[0]["prompt_tokens"] > cfg.engine.max_model_len - cfg.sampling.max_new_tokens
    assert "max_model_len 4096" in long[0]["error"] and long[0]["prompt_file"] is None


def test_truncate_cuts_the_middle_to_fit(tmp_path):
    cfg = demo_config(tmp_path, "data.too_long='truncate'", "run.name='cut'")
    _, _, questions = plan_run(cfg, log=lambda *_: None)
    cut = [q for q in questions if q["truncated_tokens"] > 0]
    assert len(cut) == 1
    limit = cfg.engine.max_model_len - cfg.sampling.max_new_tokens
    assert cut[0]["status"] == "ok" and cut[0]["prompt_tokens"] <= limit
    assert cut[0]["full_prompt_tokens"] > limit
    ids = np.load(tmp_path / "cut" / cut[0]["prompt_file"])
    text = load_tokenizer(cfg).decode(ids.tolist())
    assert "truncated by lcr" in text and text.rstrip().endswith("assistant<|end_header_id|>")
    assert "END QUESTION" in text and "BEGIN DOCUMENT 1:" in text


def test_shared_prefix_is_the_documents(planned_demo):
    _, _, _, questions = planned_demo
    multi = [q for q in questions if q["document_set_id"] == "Company_01"]
    assert len(multi) == 5
    for q in multi:
        assert 0.9 * q["prompt_tokens"] < q["shared_prefix_tokens"] < q["prompt_tokens"]
