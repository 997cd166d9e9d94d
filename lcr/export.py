"""`lcr export RUN`: one row per judged answer, as a Parquet table `datasets` opens.

    lcr export shards/llama31-8b-aalcr                  # shards/llama31-8b-aalcr/answers.parquet
    lcr export shards/llama31-8b-aalcr --to /tmp/       # /tmp/answers.parquet
    python -c "import datasets; print(datasets.load_dataset('parquet',
        data_files='shards/llama31-8b-aalcr/answers.parquet', split='train'))"

Rows join verdicts[-OUT].jsonl with merged.jsonl (the answer text) and questions.jsonl (the
question and the official answer), in verdict order: question, category, seed, answer,
verdict, reason, tokens, and the ids to trace a row back to the run directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from lcr.io import durable_path
from lcr.rundir import RunDir


def export_rows(rd: RunDir, out: str = "") -> list[dict]:
    verdicts = rd.load_verdicts(out)
    answers = {r["key"]: r for r in rd.load_merged()}
    questions = {q["question_id"]: q for q in rd.load_questions()}
    rows = []
    for v in verdicts:
        a, q = answers.get(v["key"], {}), questions.get(v["question_id"], {})
        rows.append({
            "key": v["key"], "question_id": v["question_id"],
            "document_set_id": v["document_set_id"],
            "document_category": v.get("document_category") or q.get("document_category"),
            "seed": int(v["seed"]), "sample": int(v["sample"]),
            "question": q.get("question"), "official_answer": q.get("answer"),
            "answer": a.get("response"), "status": a.get("status", v.get("status")),
            "verdict": v["verdict"], "reason": v.get("reason"),
            "judge_model": v.get("judge_model"), "prompt_tokens": a.get("prompt_tokens"),
            "cached_tokens": a.get("cached_tokens"), "output_tokens": a.get("output_tokens"),
            "finish_reason": a.get("finish_reason"),
        })
    return rows


def export_parquet(run_dir: str | Path, out: str = "", to: str | Path | None = None) -> Path:
    """Write the table (atomically) and return its path."""
    import datasets

    rd = RunDir(run_dir)
    name = "answers.parquet" if not out else f"answers-{out}.parquet"
    path = Path(to) if to else rd.path / name
    if to and (path.is_dir() or str(to).endswith(os.sep)):  # a folder: the file goes in it
        path = path / name
    table = datasets.Dataset.from_list(export_rows(rd, out))
    with durable_path(path) as tmp:
        table.to_parquet(str(tmp))
    return path
