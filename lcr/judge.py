"""Judge stage: grade every merged answer CORRECT / INCORRECT / INVALID, in resumable shards.

    lcr judge shards/demo --shard 0          # one judge shard (a Slurm array task)
    lcr judge shards/demo --finalize         # verdicts.jsonl once every shard is done
    lcr judge shards/demo --out qwen --set judge.model=Qwen/Qwen3-8B   # re-judge

Units are split between `judge.shards` shards round-robin by position in merged.jsonl
(unit i goes to shard i % shards): merged.jsonl is in plan order, grouped by document set,
so round-robin spreads long and short answers evenly. A shard appends one verdict per unit
to judge[-OUT]/shard-K.jsonl, skips keys already judged on a restart, and writes
shard-K.done last. A failed or empty generation is INCORRECT without asking the judge.

Backends (lcr.backends): `vllm` (offline engine), `openai` (any OpenAI-compatible endpoint,
through the openai client: retries with backoff, Retry-After honoured) and `exact` (offline
criteria match);
replies are read by lcr.verdict.parse_verdict. Verdicts are cached in RUN_DIR/judge-cache.jsonl
by (key, response sha256, official-answer sha256, judge model, prompt, backend), so re-judging
unchanged answers costs nothing. Endpoint failures are never cached: the unit is INVALID with a
reason, and a batch in which every request failed (the endpoint is down) stops the shard with
an error instead.

The judge settings of an output folder are kept in judge[-OUT]/settings.json; a later call
that changes the judge's identity (backend, model, prompt, prompt role, shards) for that folder
is refused. judge.prompt_role = "system" puts the filled judge text in the system message (the
seed's setup); it is part of every verdict record, the cache key and the folder's identity.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

from lcr.backends import (  # noqa: F401 (the backends were defined here: re-exported)
    BACKENDS,
    ExactBackend,
    Item,
    Judged,
    OpenAIBackend,
    VllmBackend,
    judge_model_name,
    make_backend,
)
from lcr.config import Config, ConfigError, apply_values
from lcr.criteria import exact_verdict  # noqa: F401 (re-exported: it was defined here)
from lcr.errors import StageFailure
from lcr.io import (
    ShardWriter,
    append_locked,
    atomic_write_json,
    atomic_write_jsonl,
    read_done,
    read_jsonl,
    sha256_file,
    sha256_text,
    write_done,
)
from lcr.overrides import override_planned
from lcr.prompts import judge_messages
from lcr.rundir import RunDir, check_out_name, quoted
from lcr.units import answers_sha, judge_shard_units, officials_sha, response_sha
from lcr.verdict import parse_verdict

IDENTITY = ("backend", "model", "prompt", "prompt_role", "shards")  # fixed per output folder
# Identity keys added after verdicts were first written, with the value all older files had.
SETTING_DEFAULTS = {"prompt_role": "user"}
RECORD_DEFAULTS = {"judge_prompt_role": "user"}


class JudgeError(StageFailure, RuntimeError):
    """A judge stage that cannot go on, with the reason and the fix."""


class EndpointError(JudgeError):
    """The judge endpoint failed every request of a batch: down, wrong URL, model or key."""


# ----------------------------------------------------------------------------- settings

def judge_config(rd: RunDir, overrides=(), out: str = "") -> Config:
    """The run's config, then the output folder's saved [judge], then `--set` overrides."""
    check_out_name(out)
    cfg, _ = rd.load_config()
    saved = read_done(rd.judge_settings(out))
    if saved:
        apply_values(cfg, {"judge": saved["judge"]}, str(rd.judge_settings(out)))
    override_planned(cfg, overrides, str(rd.path))
    for key in IDENTITY if saved else ():
        was = saved["judge"].get(key, SETTING_DEFAULTS.get(key))
        if was != getattr(cfg.judge, key):
            raise ConfigError(
                f"{rd.judge_dir(out)} was judged with judge.{key} = {was!r}; "
                f"judge.{key} = {getattr(cfg.judge, key)!r} would mix two judges in one folder. "
                "Use another --out NAME for the new judge."
            )
    return cfg


def identity(cfg: Config) -> dict:
    return {"judge_model": judge_model_name(cfg), "judge_prompt": cfg.judge.prompt,
            "judge_backend": cfg.judge.backend, "judge_prompt_role": cfg.judge.prompt_role}


def _same_judge(rec: dict, ident: dict) -> bool:
    """A record (or done info) written by this judge; older ones lack the newer keys."""
    return all(rec.get(k, RECORD_DEFAULTS.get(k)) == v for k, v in ident.items())


# ----------------------------------------------------------------------------- cache

class VerdictCache:
    """Append-only judge-cache.jsonl shared by every shard and output folder (flock'd appends)."""

    def __init__(self, path: Path):
        self.path = path
        self.entries = {r["cache_key"]: r for r in read_jsonl(path).records if "cache_key" in r}

    @staticmethod
    def key(unit: dict, official: str, ident: dict) -> str:
        parts = [unit["key"], response_sha(unit), sha256_text(official), ident["judge_model"],
                 ident["judge_prompt"], ident["judge_backend"]]
        if ident["judge_prompt_role"] != "user":  # entries made before the role keep their key
            parts.append(ident["judge_prompt_role"])
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def get(self, cache_key: str) -> dict | None:
        return self.entries.get(cache_key)

    def add(self, entries: list[dict]) -> None:
        append_locked(self.path, entries)
        self.entries.update((e["cache_key"], e) for e in entries)


def _with_officials(units: list[dict], answers: dict[str, str]) -> list[dict]:
    """Units tagged with the sha256 of their official answer: a verdict counts only for the
    answer key it was judged against (a new snapshot may correct keys)."""
    return [{**u, "official_sha256": sha256_text(answers.get(u["question_id"], ""))}
            for u in units]


def judged(path: Path, units: list[dict], ident: dict) -> dict[str, dict]:
    """Verdicts in a shard file for these units' current responses from this judge, by key;
    an answer from the judge beats an earlier endpoint error."""
    want = {u["key"]: response_sha(u) for u in units}
    official = {u["key"]: u.get("official_sha256") for u in units}
    have: dict[str, dict] = {}
    for rec in read_jsonl(path).records:
        key = rec.get("key")
        if want.get(key) != rec.get("response_sha256") or key is None:
            continue
        if rec.get("official_sha256") not in (None, official.get(key)):
            continue  # judged against an official answer that has changed since
        if not _same_judge(rec, ident):
            continue
        if key not in have or have[key].get("judge_error"):
            have[key] = rec
    return have


def _record(unit: dict, ident: dict, shard: int, verdict: str, raw: str, **extra) -> dict:
    rec = {
        "key": unit["key"],
        "question_id": unit["question_id"],
        "seed": unit["seed"],
        "sample": unit["sample"],
        "document_set_id": unit["document_set_id"],
        "document_category": unit.get("document_category"),
        "status": unit["status"],
        "prompt_tokens": unit.get("prompt_tokens"),
        "output_tokens": unit.get("output_tokens"),
        "finish_reason": unit.get("finish_reason"),  # "length": cut at max_new_tokens
        "verdict": verdict,
        **ident,
        "raw": raw,
        "response_sha256": response_sha(unit),
        "official_sha256": unit.get("official_sha256"),
        "shard": shard,
        "time": round(time.time(), 3),
    }
    rec.update({k: v for k, v in extra.items() if v is not None})
    return rec


def _no_judge_reason(unit: dict) -> str | None:
    if unit["status"] != "ok":
        return f"generation {unit['status']}: {unit.get('error') or 'no reason recorded'}"
    if not (unit.get("response") or "").strip():
        return "empty response"
    return None


def _from_judge(unit, ident, shard, result: Judged, ckey: str) -> tuple[dict, dict | None]:
    """The verdict record of one judge result, and its cache entry (None for errors)."""
    if result.error:
        return _record(unit, ident, shard, "INVALID", result.raw, reason=result.error,
                       judge_error=True), None
    verdict = result.verdict or parse_verdict(result.raw)
    reason = "judge reply names neither CORRECT nor INCORRECT unambiguously" if (
        verdict == "INVALID" and result.verdict is None) else None
    entry = {"cache_key": ckey, "key": unit["key"], **ident, "verdict": verdict,
             "raw": result.raw, "reason": reason, "response_sha256": response_sha(unit),
             "time": round(time.time(), 3)}
    return _record(unit, ident, shard, verdict, result.raw, reason=reason), entry


def judge_shard(run_dir: str | Path, shard: int, out: str = "", overrides=(), backend=None,
                retry_errors: bool = False) -> dict:
    """Judge one shard of merged.jsonl into judge[-OUT]/shard-K.jsonl; return the done info."""
    rd = RunDir(run_dir)
    return _judge_shard(rd, judge_config(rd, overrides, out), shard, out, backend, retry_errors)


def _judge_shard(rd: RunDir, cfg: Config, shard: int, out: str, backend,
                 retry_errors: bool) -> dict:
    if not 0 <= shard < cfg.judge.shards:
        raise JudgeError(f"judge shard {shard} out of range: judge.shards = {cfg.judge.shards}")
    answers = rd.official_answers()
    units = _with_officials(judge_shard_units(rd.load_merged(), shard, cfg.judge.shards), answers)
    ident, label = identity(cfg), f"judge{'-' + out if out else ''} shard {shard}"
    info = rd.judge_done(shard, out, units, lambda marker: _same_judge(marker, ident))
    if info and not (retry_errors and info.get("n_judge_errors")):
        print(f"[{label}] already done ({info['records']} verdicts)", file=sys.stderr)
        return info
    if not rd.judge_settings(out).exists():
        atomic_write_json(rd.judge_settings(out), {"judge": vars(cfg.judge)})
    questions = {q["question_id"]: q for q in rd.load_questions()}
    unknown = sorted({u["question_id"] for u in units} - set(questions))
    if unknown:
        raise JudgeError(f"{rd.questions_file} lacks questions {unknown[:5]} of merged.jsonl")
    path, t0, stats = rd.judge_file(shard, out), time.time(), Counter()
    cache = VerdictCache(rd.judge_cache)
    with ShardWriter(path) as writer:
        have = judged(path, units, ident)
        pending = [u for u in units if u["key"] not in have or have[u["key"]].get("judge_error")]
        direct, ask = [], []
        for u in pending:
            official = questions[u["question_id"]]["answer"]
            reason, hit = _no_judge_reason(u), None
            if reason is None:
                hit = cache.get(VerdictCache.key(u, official, ident))
            if reason:
                direct.append(_record(u, ident, shard, "INCORRECT", "", reason=reason))
            elif hit:
                direct.append(_record(u, ident, shard, hit["verdict"], hit["raw"],
                                      reason=hit.get("reason"), cached=True))
            else:
                ask.append(u)
        writer.append_many(direct)
        stats.update(no_judge=sum("cached" not in r for r in direct),
                     cached=sum("cached" in r for r in direct))
        print(f"[{label}] {len(units)} units: {len(units) - len(pending)} already judged, "
              f"{stats['cached']} from cache, {stats['no_judge']} failed generations, "
              f"{len(ask)} to ask {ident['judge_model']}", file=sys.stderr, flush=True)
        if ask:
            backend = backend or make_backend(cfg)
        for chunk in BACKENDS[cfg.judge.backend].chunks(ask, cfg):
            _judge_chunk(backend, cfg, chunk, questions, ident, shard, writer, cache, stats)
            print(f"[{label}] asked {stats['asked']}/{len(ask)}; {stats['errors']} endpoint "
                  f"errors", file=sys.stderr, flush=True)
        final = judged(path, units, ident)
        missing = [u["key"] for u in units if u["key"] not in final]
        if missing:
            raise JudgeError(f"[{label}] units without a verdict after the run: {missing[:5]}")
        mine = [final[u["key"]] for u in units]
        counts = Counter(r["verdict"] for r in mine)
        info = {
            "records": len(mine), "sha256": sha256_file(path), "units_sha256": answers_sha(units),
            "officials_sha256": officials_sha(units, answers),
            **ident, "shard": shard, "shards": cfg.judge.shards,
            "n_correct": counts["CORRECT"], "n_incorrect": counts["INCORRECT"],
            "n_invalid": counts["INVALID"],
            "n_judge_errors": sum(bool(r.get("judge_error")) for r in mine),
            "n_asked": stats["asked"], "n_cached": stats["cached"],
            "elapsed_s": round(time.time() - t0, 3), "file": path.name,
        }
        write_done(rd.judge_marker(shard, out), info)
    return info


def _judge_chunk(backend, cfg, chunk, questions, ident, shard, writer, cache, stats) -> None:
    items = []
    for u in chunk:
        q = questions[u["question_id"]]
        messages = judge_messages(cfg.judge.prompt, q["question"], q["answer"], u["response"],
                                  role=cfg.judge.prompt_role)
        items.append(Item(u["key"], messages, q["answer"], u["response"]))
    results = backend.judge(items)
    if len(results) != len(items):
        raise JudgeError(f"judge backend returned {len(results)} results for {len(items)}")
    if all(r.error and r.fatal for r in results):
        raise EndpointError(
            f"the judge failed all {len(items)} request(s) of a batch; last error: "
            f"{results[-1].error}. Check judge.base_url, judge.model and the key in "
            f"${cfg.judge.api_key_env}. Nothing was written for these units; run again "
            "to resume."
        )
    records, entries = [], []
    for u, it, r in zip(chunk, items, results):
        rec, entry = _from_judge(u, ident, shard, r, VerdictCache.key(u, it.official, ident))
        records.append(rec)
        if entry:
            entries.append(entry)
    writer.append_many(records)
    cache.add(entries)
    stats.update(asked=len(items), errors=sum(bool(r.error) for r in results))


def finalize_verdicts(run_dir: str | Path, out: str = "", overrides=()) -> dict:
    """verdicts[-OUT].jsonl with every merged unit exactly once, in merged order."""
    rd = RunDir(run_dir)
    return _finalize(rd, judge_config(rd, overrides, out), out)


def _finalize(rd: RunDir, cfg: Config, out: str) -> dict:
    merged = _with_officials(rd.load_merged(), rd.official_answers())
    ident, shards = identity(cfg), cfg.judge.shards
    parts = [judge_shard_units(merged, k, shards) for k in range(shards)]
    not_done = [k for k in range(shards)
                if not rd.judge_done(k, out, parts[k], lambda m: _same_judge(m, ident))]
    if not_done:
        flag = f" --out {out}" if out else ""
        raise JudgeError(
            f"{rd.judge_dir(out)}: judge shards not done: {not_done} of {shards}; run "
            f"`lcr judge {quoted(rd.path)} --shard K{flag}` for each (or "
            f"`lcr rerun {quoted(rd.path)}`)"
        )
    by_key = {}
    for k in range(shards):
        by_key.update(judged(rd.judge_file(k, out), parts[k], ident))
    records = [by_key.get(u["key"]) for u in merged]
    missing = [u["key"] for u, r in zip(merged, records) if r is None]
    if missing or len(by_key) != len(merged):
        raise JudgeError(f"verdicts missing for {len(missing)} unit(s): {missing[:5]}")
    atomic_write_jsonl(rd.verdicts_file(out), records)
    counts = Counter(r["verdict"] for r in records)
    return {"verdicts": str(rd.verdicts_file(out)), "records": len(records), **ident,
            "n_correct": counts["CORRECT"], "n_incorrect": counts["INCORRECT"],
            "n_invalid": counts["INVALID"],
            "n_judge_errors": sum(bool(r.get("judge_error")) for r in records)}


def judge_run(run_dir: str | Path, out: str = "", overrides=(), backend=None,
              retry_errors: bool = False) -> dict:
    """Every judge shard here, one after the other (one backend, one reading of the run
    directory and of the judge settings), then finalize."""
    rd = RunDir(run_dir)
    cfg = judge_config(rd, overrides, out)
    backend = backend or make_backend(cfg)  # the vllm engine starts once, on first use
    for k in range(cfg.judge.shards):
        _judge_shard(rd, cfg, k, out, backend, retry_errors)
    return _finalize(rd, cfg, out)
