"""Judge stage: grade every merged answer CORRECT / INCORRECT / INVALID, in resumable shards.

    lcr judge shards/demo --shard 0          # one judge shard (a Slurm array task)
    lcr judge shards/demo --finalize         # verdicts.jsonl once every shard is done
    lcr judge shards/demo --out qwen --set judge.model=Qwen/Qwen3-8B   # re-judge
    lcr judge shards/demo --retry-errors --retry-truncated 1024   # ask failed / cut ones again

Units are split between `judge.shards` shards round-robin by position in merged.jsonl
(unit i goes to shard i % shards): merged.jsonl is in plan order, grouped by document set,
so round-robin spreads long and short answers evenly. A shard appends one verdict per unit
to judge[-OUT]/shard-K.jsonl, skips keys already judged on a restart, and writes
shard-K.done last. A failed or empty generation is INCORRECT without asking the judge.

Backends (lcr.backends): `vllm` (offline engine), `openai` (any OpenAI-compatible endpoint,
through the openai client: retries with backoff, Retry-After honoured) and `exact` (offline
criteria match). Verdicts are decoded under structured outputs where the judge can give them
(judge.structured); replies are read by lcr.verdict (read_structured, else read_verdict, which
is told the judge's finish_reason). Every verdict record says how it was asked and answered:
judge_structured (the mode), judge_finish_reason, judge_output_tokens, judge_max_new_tokens,
judge_temperature, judge_endpoint, judge_weights.

Verdicts are cached in RUN_DIR/judge-cache.jsonl by everything that shapes a reply: the unit's
key, answer and official answer, the judge's model, prompt, prompt role and backend, its
endpoint (base_url, or the vllm judge's weight revision), temperature, max_new_tokens and
structured mode (lookups in "auto" try the structured entry, then the free-text one). Re-judging
unchanged answers costs nothing. Judge errors are never cached: a request that failed, or a
reply with nothing usable in it (not JSON, an HTML page, `choices: []`, `content: null`). The
unit is INVALID with `judge_error` and its reason; a batch in which every request failed stops
the shard, and a shard in which more than judge.max_error_share of the units end in judge
errors fails with one line naming the endpoint and the first bad reply (no done marker; `lcr
rerun` or `lcr judge --retry-errors` asks them again). `--retry-truncated N` asks again, with
N output tokens, the units whose judge reply was cut at judge.max_new_tokens before a verdict.

The judge settings of an output folder are kept in judge[-OUT]/settings.json; a later call
that changes the judge's identity (backend, model, prompt, prompt role, shards) for that folder
is refused. judge.prompt_role = "system" puts the filled judge text in the system message (the
seed's setup); it is part of every verdict record, the cache key and the folder's identity.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from lcr.backends import (  # noqa: F401 (the backends were defined here: re-exported)
    BACKENDS,
    TEMPERATURE,
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
    atomic_write_json,
    atomic_write_jsonl,
    read_done,
    read_jsonl,
    sha256_file,
    sha256_text,
    write_done,
)
from lcr.judgecache import VerdictCache
from lcr.overrides import override_planned
from lcr.prompts import judge_messages
from lcr.rundir import RunDir, check_out_name, quoted
from lcr.units import answers_sha, judge_shard_units, officials_sha, response_sha
from lcr.verdict import (  # noqa: F401 (parse_verdict: re-exported)
    parse_verdict,
    read_verdict,
    structured_verdict,
)

IDENTITY = ("backend", "model", "prompt", "prompt_role", "structured", "shards")  # per folder
# Identity keys added after verdicts were first written, with the value all older files had:
# a folder judged before judge.structured existed goes on in free text.
SETTING_DEFAULTS = {"prompt_role": "user", "structured": False}
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
        older = {k: v for k, v in SETTING_DEFAULTS.items() if k not in saved["judge"]}
        apply_values(cfg, {"judge": {**saved["judge"], **older}}, str(rd.judge_settings(out)))
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


def asked_with(cfg: Config) -> dict:
    """How the judge is asked, beyond its identity: recorded in every verdict, part of the
    cache key."""
    cls = BACKENDS[cfg.judge.backend]
    return {"judge_endpoint": cls.endpoint(cfg), "judge_temperature": TEMPERATURE,
            "judge_max_new_tokens": cfg.judge.max_new_tokens,
            "judge_structured_setting": cfg.judge.structured}


def cache_modes(cfg: Config) -> list[str]:
    """The structured modes whose cache entries answer a lookup, preferred first."""
    wanted = BACKENDS[cfg.judge.backend].wanted_mode(cfg)
    return [wanted, "none"] if cfg.judge.structured == "auto" and wanted != "none" else [wanted]


def _same_judge(rec: dict, ident: dict) -> bool:
    """A record (or done info) written by this judge; older ones lack the newer keys."""
    return all(rec.get(k, RECORD_DEFAULTS.get(k)) == v for k, v in ident.items())


# ----------------------------------------------------------------------------- records

def _with_officials(units: list[dict], answers: dict[str, str]) -> list[dict]:
    """Units tagged with the sha256 of their official answer: a verdict counts only for the
    answer key it was judged against (a new snapshot may correct keys)."""
    return [{**u, "official_sha256": sha256_text(answers.get(u["question_id"], ""))}
            for u in units]


def truncated(rec: dict) -> bool:
    """An INVALID verdict because the judge's reply was cut at its token limit."""
    return (rec.get("verdict") == "INVALID" and not rec.get("judge_error")
            and rec.get("judge_finish_reason") == "length")


def _superseded(rec: dict) -> bool:
    """A record a later one for the same unit replaces: a judge error or a cut reply."""
    return bool(rec.get("judge_error")) or truncated(rec)


def judged(path: Path, units: list[dict], ident: dict) -> dict[str, dict]:
    """Verdicts in a shard file for these units' current responses from this judge, by key;
    an answer from the judge beats an earlier judge error, a later reply one cut short."""
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
        if key not in have or _superseded(have[key]):
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
        **({"attention": unit["attention"]} if "attention" in unit else {}),  # that made it
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


def _read(result: Judged) -> tuple[str, str | None, str]:
    """(verdict, why it is INVALID or None, the mode the reply was in): a structured reply is
    read strictly, anything else as prose (lcr.verdict)."""
    if result.verdict:
        return result.verdict, None, result.mode
    if result.mode != "none":
        verdict = structured_verdict(result.raw, result.mode)
        if verdict:
            return verdict, None, result.mode
    verdict, why = read_verdict(result.raw, result.finish_reason)
    cut = result.finish_reason == "length"  # a structured reply cut short is still structured
    return verdict, why, result.mode if cut else "none"


def _reason(verdict: str, why: str | None, asked: str, used: str) -> str | None:
    parts = []
    if verdict == "INVALID":
        parts.append("judge reply cut at judge.max_new_tokens before a verdict"
                     if why == "truncated" else
                     f"judge reply names neither CORRECT nor INCORRECT unambiguously ({why})")
    if asked != used:
        parts.append(f"asked for {asked}, the judge answered in free text (read as prose)")
    return "; ".join(parts) or None


def _judge_fields(result: Judged, asked: dict, weights, budget: int) -> dict:
    return {**asked, "judge_max_new_tokens": budget, "judge_structured": result.mode,
            "judge_finish_reason": result.finish_reason,
            "judge_output_tokens": result.output_tokens, "judge_weights": weights}


def _from_judge(unit, ident, shard, result: Judged, ckey: str, fields: dict
                ) -> tuple[dict, dict | None]:
    """The verdict record of one judge result, and its cache entry (None for judge errors:
    those are asked again, never served from the cache)."""
    if result.error:
        return _record(unit, ident, shard, "INVALID", result.raw, reason=result.error,
                       judge_error=True, **fields), None
    verdict, why, used = _read(result)
    fields = {**fields, "judge_structured": used}
    reason = _reason(verdict, why, result.mode, used)
    entry = {"cache_key": ckey, "key": unit["key"], **ident, **fields, "verdict": verdict,
             "raw": result.raw, "reason": reason, "response_sha256": response_sha(unit),
             "time": round(time.time(), 3)}
    return _record(unit, ident, shard, verdict, result.raw, reason=reason, **fields), entry


def _from_cache(unit, ident, shard, hit: dict) -> dict:
    fields = {k: v for k, v in hit.items() if k.startswith("judge_") and k not in ident}
    return _record(unit, ident, shard, hit["verdict"], hit["raw"], reason=hit.get("reason"),
                   cached=True, **fields)


class Ask:
    """One shard's way of asking its judge: identity, how it is asked, the output budget."""

    def __init__(self, cfg: Config, budget: int | None = None):
        self.cfg, self.ident, self.asked = cfg, identity(cfg), asked_with(cfg)
        self.budget = budget or cfg.judge.max_new_tokens
        self.modes = cache_modes(cfg)
        self.weights = BACKENDS[cfg.judge.backend].weights(cfg)

    def cache_hit(self, cache: VerdictCache, unit: dict, official: str) -> dict | None:
        for mode in self.modes:
            hit = cache.get(VerdictCache.key(unit, official, self.ident, self.asked, mode,
                                             self.budget))
            if hit:
                return hit
        return None


def _pending(units, have, retry_truncated: int) -> list[dict]:
    """Units to judge now: not judged yet, judged with an error, or (retry_truncated) cut."""
    return [u for u in units if u["key"] not in have or have[u["key"]].get("judge_error")
            or (retry_truncated and truncated(have[u["key"]]))]


def judge_shard(run_dir: str | Path, shard: int, out: str = "", overrides=(), backend=None,
                retry_errors: bool = False, retry_truncated: int = 0) -> dict:
    """Judge one shard of merged.jsonl into judge[-OUT]/shard-K.jsonl; return the done info.

    retry_errors: a done shard with judge errors is judged again (its errors asked again);
    retry_truncated = N: units whose judge reply was cut at judge.max_new_tokens before a
    verdict are asked again with N output tokens."""
    rd = RunDir(run_dir)
    return _judge_shard(rd, judge_config(rd, overrides, out), shard, out, backend, retry_errors,
                        retry_truncated)


def _judge_shard(rd: RunDir, cfg: Config, shard: int, out: str, backend,
                 retry_errors: bool, retry_truncated: int = 0) -> dict:
    if not 0 <= shard < cfg.judge.shards:
        raise JudgeError(f"judge shard {shard} out of range: judge.shards = {cfg.judge.shards}")
    if retry_truncated and retry_truncated <= cfg.judge.max_new_tokens:
        raise ConfigError(f"--retry-truncated {retry_truncated} must be more than "
                          f"judge.max_new_tokens = {cfg.judge.max_new_tokens}, the budget the "
                          "cut replies ran out of")
    answers = rd.official_answers()
    units = _with_officials(judge_shard_units(rd.load_merged(), shard, cfg.judge.shards), answers)
    ident, label = identity(cfg), f"judge{'-' + out if out else ''} shard {shard}"
    info = rd.judge_done(shard, out, units, lambda marker: _same_judge(marker, ident))
    again = (retry_errors and info and info.get("n_judge_errors")) or (
        retry_truncated and info and info.get("n_judge_truncated", 1))
    if info and not again:
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
        pending = _pending(units, have, retry_truncated)
        todos = [(ask, _lookup(part, ask, questions, shard, writer, cache, stats))
                 for ask, part in ((Ask(cfg, b), part)
                                   for b, part in _by_budget(pending, have, cfg, retry_truncated))]
        print(f"[{label}] {len(units)} units: {len(units) - len(pending)} already judged, "
              f"{stats['cached']} from cache, {stats['no_judge']} failed generations, "
              f"{sum(len(t) for _, t in todos)} to ask {ident['judge_model']}", file=sys.stderr,
              flush=True)
        for ask, todo in todos:
            backend = _ask_judge(todo, ask, backend, questions, shard, writer, cache, stats,
                                 label)
        final = judged(path, units, ident)
        missing = [u["key"] for u in units if u["key"] not in final]
        if missing:
            raise JudgeError(f"[{label}] units without a verdict after the run: {missing[:5]}")
        mine = [final[u["key"]] for u in units]
        _check_error_share(mine, cfg, label, rd.path, out)
        counts = Counter(r["verdict"] for r in mine)
        info = {
            "records": len(mine), "sha256": sha256_file(path), "units_sha256": answers_sha(units),
            "officials_sha256": officials_sha(units, answers),
            **ident, "shard": shard, "shards": cfg.judge.shards,
            "n_correct": counts["CORRECT"], "n_incorrect": counts["INCORRECT"],
            "n_invalid": counts["INVALID"],
            "n_judge_errors": sum(bool(r.get("judge_error")) for r in mine),
            "n_judge_truncated": sum(truncated(r) for r in mine),
            "n_asked": stats["asked"], "n_cached": stats["cached"],
            "elapsed_s": round(time.time() - t0, 3), "file": path.name,
            "engine_start_s": getattr(backend, "engine_start_s", None),
        }
        write_done(rd.judge_marker(shard, out), info)
    return info


def _by_budget(pending, have, cfg: Config, retry_truncated: int):
    """The pending units by the output budget they are asked with: cut replies get
    retry_truncated tokens, the rest judge.max_new_tokens."""
    cut = [u for u in pending if retry_truncated and u["key"] in have
           and truncated(have[u["key"]])]
    rest = [u for u in pending if u not in cut]
    return [(b, part) for b, part in ((cfg.judge.max_new_tokens, rest), (retry_truncated, cut))
            if part]


def _lookup(units, ask: Ask, questions, shard, writer, cache, stats) -> list[dict]:
    """Write the verdicts that need no judge (failed generations, cache hits); return the
    units left to ask."""
    direct, todo = [], []
    for u in units:
        reason = _no_judge_reason(u)
        hit = None if reason else ask.cache_hit(cache, u, questions[u["question_id"]]["answer"])
        if reason:
            direct.append(_record(u, ask.ident, shard, "INCORRECT", "", reason=reason))
        elif hit:
            direct.append(_from_cache(u, ask.ident, shard, hit))
        else:
            todo.append(u)
    writer.append_many(direct)
    stats.update(no_judge=sum("cached" not in r for r in direct),
                 cached=sum("cached" in r for r in direct))
    return todo


def _ask_judge(todo, ask: Ask, backend, questions, shard, writer, cache, stats, label):
    """Ask the judge for `todo`, chunk by chunk; returns the backend (started on first use)."""
    if not todo:
        return backend
    backend = backend or make_backend(ask.cfg)
    for chunk in BACKENDS[ask.cfg.judge.backend].chunks(todo, ask.cfg):
        _judge_chunk(backend, ask, chunk, questions, shard, writer, cache, stats)
        print(f"[{label}] asked {stats['asked']} ({ask.budget} tokens each); {stats['errors']} "
              "judge errors", file=sys.stderr, flush=True)
    return backend


def _check_error_share(records: list[dict], cfg: Config, label: str, run: Path, out: str):
    """A shard whose judge mostly failed fails, in one line naming the endpoint and the first
    bad reply, instead of ending in a file of INVALIDs."""
    errors = [r for r in records if r.get("judge_error")]
    share = cfg.judge.max_error_share
    if errors and len(errors) > share * len(records):
        flag = f" --out {out}" if out else ""
        first, endpoint = errors[0].get("reason", ""), BACKENDS[cfg.judge.backend].endpoint(cfg)
        raise JudgeError(
            f"[{label}] {len(errors)} of {len(records)} units ended in judge errors, more than "
            f"judge.max_error_share = {share:g}; endpoint {endpoint}; "
            f"first bad reply: {first[:300]}. Fix the judge, then `lcr judge {quoted(run)}"
            f"{flag} --retry-errors` (judge errors are never cached)")


def _judge_chunk(backend, ask: Ask, chunk, questions, shard, writer, cache, stats) -> None:
    cfg = ask.cfg
    items = []
    for u in chunk:
        q = questions[u["question_id"]]
        messages = judge_messages(cfg.judge.prompt, q["question"], q["answer"], u["response"],
                                  role=cfg.judge.prompt_role)
        items.append(Item(u["key"], messages, q["answer"], u["response"]))
    results = backend.judge(items, max_new_tokens=ask.budget)
    if not (ask.weights or {}).get("revision"):  # a hub judge is in the cache once loaded
        ask.weights = BACKENDS[cfg.judge.backend].weights(cfg)
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
        key = VerdictCache.key(u, it.official, ask.ident, ask.asked, r.mode, ask.budget)
        fields = _judge_fields(r, ask.asked, ask.weights, ask.budget)
        rec, entry = _from_judge(u, ask.ident, shard, r, key, fields)
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
            "n_judge_errors": sum(bool(r.get("judge_error")) for r in records),
            "n_judge_truncated": sum(truncated(r) for r in records)}


def judge_run(run_dir: str | Path, out: str = "", overrides=(), backend=None,
              retry_errors: bool = False, retry_truncated: int = 0) -> dict:
    """Every judge shard here, one after the other (one backend, one reading of the run
    directory and of the judge settings), then finalize."""
    rd = RunDir(run_dir)
    cfg = judge_config(rd, overrides, out)
    backend = backend or make_backend(cfg)  # the vllm engine starts once, on first use
    for k in range(cfg.judge.shards):
        _judge_shard(rd, cfg, k, out, backend, retry_errors, retry_truncated)
    return _finalize(rd, cfg, out)
