"""Prepare stage: render every prompt once, count its tokens, store the token ids.

    records = prepare(cfg, RunDir("shards/demo"))   # writes questions.jsonl and prompts/

Later jobs read token ids from prompts/ and never re-tokenise the ~3M document tokens.
A prompt longer than `engine.max_model_len - sampling.max_new_tokens` is either recorded as
too_long (data.too_long = "skip") or has the middle of its documents cut ("truncate").
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import jinja2  # noqa: F401 (apply_chat_template renders the chat template with it)
import numpy as np

from lcr.config import Config
from lcr.data import DataError, Question, load_questions
from lcr.hub import hub_offline, is_local
from lcr.io import atomic_write_jsonl, atomic_write_npy
from lcr.prompts import candidate_messages, documents_text
from lcr.rundir import RunDir

TRUNCATION_MARK = "\n\n[... middle of the documents truncated by lcr to fit the context ...]\n\n"


def check_model(cfg: Config) -> None:
    """model.path and model.tokenizer, before anything is written: a local folder must exist
    (and model.path hold a config.json); a hub id must be on the hub, or in the local cache
    when the hub does not answer (then only a warning: the jobs may have network)."""
    from lcr.tinymodel import resolve

    for key, name in (("model.path", cfg.model.path), ("model.tokenizer", cfg.model.tokenizer)):
        if not name:
            continue
        name = resolve(name)
        if is_local(name):
            _check_folder(key, Path(name).expanduser(), model=key == "model.path")
        elif key == "model.path" and cfg.model.tokenizer:  # else loading the tokenizer asks
            _check_hub_model(name)


def _check_folder(key: str, path: Path, model: bool) -> None:
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise DataError(f"{key} = {str(path)!r} {what}; give a local folder holding the "
                        "model (config.json and weights) or a hub id such as "
                        "meta-llama/Llama-3.1-8B-Instruct")
    if model and not (path / "config.json").is_file():
        raise DataError(f"{key} = {str(path)!r} holds no config.json, so vLLM cannot load a "
                        "model from it; point it at the folder holding config.json and the "
                        "weights")


def _check_hub_model(repo: str) -> None:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo, "config.json"), str):
        return
    offline = hub_offline()
    if offline:
        print(f"warning: model.path = {repo!r} is not in the local Hugging Face cache and "
              f"{offline}; the generate jobs will need it there, or network",
              file=sys.stderr, flush=True)
        return
    try:
        hf_hub_download(repo, "config.json", token=os.environ.get("HF_TOKEN") or None)
    except Exception as e:  # not found, gated, no config.json
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"model.path = {repo!r}: cannot get its config.json from the Hugging "
                        f"Face hub ({type(e).__name__}: {reason[:200]}); check the id, and log "
                        "in (`hf auth login` or HF_TOKEN) for a gated model") from None


def load_tokenizer(cfg: Config):
    from transformers import AutoTokenizer

    from lcr.tinymodel import resolve

    name = resolve(cfg.model.tokenizer or cfg.model.path)
    # no network: the local cache or an error at once, not after five retries per file
    offline = None if is_local(name) else hub_offline()
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError) as e:  # not found, gated, offline
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        reason = f"not in the local cache, and {offline}" if offline else reason
        raise DataError(f"cannot load the tokenizer of {name!r} ({reason[:200]}); offline or "
                        "gated: set model.tokenizer (or model.path) to a local folder holding "
                        "its tokenizer files, or log in (HF_TOKEN) on a machine with network"
                        ) from None
    tok.model_max_length = 1 << 30  # lengths are checked against engine.max_model_len here
    return tok


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(out, "keys"):  # transformers >= 5 returns a BatchEncoding
        out = out["input_ids"]
    return list(out)


def _truncate(tokenizer, q: Question, system: str, limit: int) -> tuple[list[int], int]:
    """Cut the middle of the documents until the chat prompt fits `limit` tokens."""
    doc_ids = tokenizer.encode(documents_text(q.documents), add_special_tokens=False)
    cut = 0
    ids = chat_ids(tokenizer, candidate_messages(q.documents, q.question, system))
    for _ in range(8):
        if len(ids) <= limit:
            return ids, cut
        cut = min(len(doc_ids), cut + (len(ids) - limit) + 8)
        head = (len(doc_ids) - cut) // 2
        text = (
            tokenizer.decode(doc_ids[:head])
            + TRUNCATION_MARK
            + tokenizer.decode(doc_ids[head + cut:])
        )
        ids = chat_ids(tokenizer, candidate_messages(q.documents, q.question, system, text))
    if len(ids) > limit:
        raise RuntimeError(f"question {q.question_id}: could not truncate to {limit} tokens")
    return ids, cut


def _save_ids(path: Path, ids: list[int]) -> str:
    arr = np.asarray(ids, dtype=np.int32)
    atomic_write_npy(path, arr)
    return hashlib.sha256(arr.tobytes()).hexdigest()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    x, y = np.asarray(a[:n]), np.asarray(b[:n])
    diff = np.nonzero(x != y)[0]
    return int(diff[0]) if len(diff) else n


def prepare(cfg: Config, run_dir: RunDir, log=print) -> list[dict]:
    questions = load_questions(cfg.data)
    tokenizer = load_tokenizer(cfg)
    limit = cfg.engine.max_model_len - cfg.sampling.max_new_tokens
    records, ids_by_q = [], {}
    for i, q in enumerate(questions):
        messages = candidate_messages(q.documents, q.question, cfg.model.system_prompt)
        ids = chat_ids(tokenizer, messages)
        rec = {
            "question_id": q.question_id,
            "document_category": q.document_category,
            "document_set_id": q.document_set_id,
            "question": q.question,
            "answer": q.answer,
            "filenames": q.filenames,
            "input_tokens": q.input_tokens,
            "prompt_tokens": len(ids),
            "status": "ok",
            "truncated_tokens": 0,
        }
        if len(ids) > limit and cfg.data.too_long == "truncate":
            ids, cut = _truncate(tokenizer, q, cfg.model.system_prompt, limit)
            rec["truncated_tokens"] = cut
            rec["full_prompt_tokens"], rec["prompt_tokens"] = rec["prompt_tokens"], len(ids)
        if len(ids) > limit:
            rec["status"] = "too_long"
            rec["error"] = (
                f"prompt is {len(ids)} tokens; engine.max_model_len {cfg.engine.max_model_len} "
                f"minus sampling.max_new_tokens {cfg.sampling.max_new_tokens} leaves {limit}"
            )
            rec["prompt_file"], rec["prompt_sha256"] = None, None
        else:
            rec["prompt_file"] = f"prompts/p-{i:04d}.npy"
            rec["prompt_sha256"] = _save_ids(run_dir.path / rec["prompt_file"], ids)
            ids_by_q[q.question_id] = ids
        records.append(rec)
    # Tokens a set's questions share: what the prefix cache can serve after the first one.
    by_set: dict[str, list[str]] = {}
    for rec in records:
        if rec["question_id"] in ids_by_q:
            by_set.setdefault(rec["document_set_id"], []).append(rec["question_id"])
    for rec in records:
        members = by_set.get(rec["document_set_id"], [])
        if rec["question_id"] not in ids_by_q:
            rec["shared_prefix_tokens"] = 0
            continue
        mine = ids_by_q[rec["question_id"]]
        others = [ids_by_q[m] for m in members if m != rec["question_id"]]
        rec["shared_prefix_tokens"] = max((_common_prefix(mine, o) for o in others), default=0)
    atomic_write_jsonl(run_dir.questions_file, records)
    n_long = sum(r["status"] == "too_long" for r in records)
    n_cut = sum(r["truncated_tokens"] > 0 for r in records)
    log(
        f"prepared {len(records)} questions in "
        f"{len({r['document_set_id'] for r in records})} document sets: "
        f"{sum(r['prompt_tokens'] for r in records):,} prompt tokens"
        + (f"; {n_long} too long (recorded, not run)" if n_long else "")
        + (f"; {n_cut} truncated" if n_cut else "")
    )
    return records
