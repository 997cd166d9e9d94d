"""Judge stage: grade every merged answer CORRECT / INCORRECT / INVALID, in resumable shards.

    python -m lcr.judge shards/demo --shard 0          # one judge shard (a Slurm array task)
    python -m lcr.judge shards/demo --finalize         # verdicts.jsonl once every shard is done
    python -m lcr.judge shards/demo --out qwen --set judge.model=Qwen/Qwen3-8B   # re-judge

Units are split between `judge.shards` shards round-robin by position in merged.jsonl
(unit i goes to shard i % shards): merged.jsonl is in plan order, grouped by document set,
so round-robin spreads long and short answers evenly. A shard appends one verdict per unit
to judge[-OUT]/shard-K.jsonl, skips keys already judged on a restart, and writes
shard-K.done last. A failed or empty generation is INCORRECT without asking the judge.

Backends (lcr.backends): `vllm` (offline engine), `openai` (any OpenAI-compatible endpoint,
stdlib HTTP, retries with backoff, Retry-After honoured) and `exact` (offline criteria match);
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

import argparse
import fcntl
import hashlib
import json
import os
import re
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
from lcr.config import Config, ConfigError, _apply, parse_override, validate
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
from lcr.prepare import load_prepared
from lcr.prompts import judge_messages
from lcr.rundir import RunDir
from lcr.verdict import exact_verdict, parse_verdict  # noqa: F401 (exact_verdict: re-exported)

IDENTITY = ("backend", "model", "prompt", "prompt_role", "shards")  # fixed per output folder
# Identity keys added after verdicts were first written, with the value all older files had.
SETTING_DEFAULTS = {"prompt_role": "user"}
RECORD_DEFAULTS = {"judge_prompt_role": "user"}
OVERRIDABLE = ("judge", "engine")  # sections `--set` may change on an existing run
CHUNK = 256  # units judged between two appends to the shard file
_SAFE_OUT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class JudgeError(RuntimeError):
    """A judge stage that cannot go on, with the reason and the fix."""


class EndpointError(JudgeError):
    """The judge endpoint failed every request of a batch: down, wrong URL, model or key."""


# ----------------------------------------------------------------------------- settings

def settings_file(rd: RunDir, out: str) -> Path:
    return rd.judge_dir(out) / "settings.json"


def judge_config(rd: RunDir, overrides=(), out: str = "") -> Config:
    """The run's config, then the output folder's saved [judge], then `--set` overrides."""
    if out and not _SAFE_OUT.match(out):
        raise ConfigError(f"--out {out!r} is not a safe name (letters, digits, '.', '_', '-')")
    cfg, _ = rd.load_config()
    saved = read_done(settings_file(rd, out))
    if saved:
        _apply(cfg, {"judge": saved["judge"]}, str(settings_file(rd, out)))
    for text in overrides:
        data = parse_override(text)
        if next(iter(data)) not in OVERRIDABLE:
            raise ConfigError(
                f"--set {text}: only judge.* and engine.* can be changed when judging an "
                f"existing run; the rest is fixed by {rd.config_file}"
            )
        _apply(cfg, data, f"--set {text}")
    validate(cfg)
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

def response_sha(unit: dict) -> str:
    return sha256_text(unit.get("response") or "")


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
        if not entries:
            return
        data = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # torn tail of a killed writer
                data = b"\n" + data
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
        self.entries.update((e["cache_key"], e) for e in entries)


# ----------------------------------------------------------------------------- shards

def load_merged(rd: RunDir) -> list[dict]:
    """merged.jsonl, only if merged.done vouches for exactly this file."""
    done = read_done(rd.merged_done)
    if done is None:
        raise JudgeError(
            f"{rd.merged_done}: missing, so the merge is not complete; run `lcr merge "
            f"{rd.path}` (it lists the missing units) and finish generation before judging"
        )
    if not rd.merged_file.exists() or sha256_file(rd.merged_file) != done.get("sha256"):
        raise JudgeError(f"{rd.merged_file} does not match {rd.merged_done} (sha256 differs); "
                         f"run `lcr merge {rd.path}` again")
    return read_jsonl(rd.merged_file).records


def shard_units(merged: list[dict], shard: int, shards: int) -> list[dict]:
    """Round-robin by position in merged.jsonl: unit i goes to shard i % shards."""
    return merged[shard::shards]


def units_sha(units: list[dict]) -> str:
    lines = sorted(f"{u['key']}\t{response_sha(u)}" for u in units)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def judged(path: Path, units: list[dict], ident: dict) -> dict[str, dict]:
    """Verdicts in a shard file for these units' current responses from this judge, by key;
    an answer from the judge beats an earlier endpoint error."""
    want = {u["key"]: response_sha(u) for u in units}
    have: dict[str, dict] = {}
    for rec in read_jsonl(path).records:
        key = rec.get("key")
        if want.get(key) != rec.get("response_sha256") or key is None:
            continue
        if not _same_judge(rec, ident):
            continue
        if key not in have or have[key].get("judge_error"):
            have[key] = rec
    return have


def _shard_done(rd: RunDir, shard: int, out: str, units: list[dict], ident: dict) -> dict | None:
    info = read_done(rd.judge_done(shard, out))
    if info and info.get("units_sha256") == units_sha(units) and _same_judge(info, ident):
        return info
    return None


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


def _chunks(items: list, backend_name: str, concurrency: int) -> list[list]:
    """A first chunk of one request probes an endpoint before many go out at once."""
    if backend_name != "openai" or not items:
        return [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    size = max(1, concurrency) * 4
    return [items[:1]] + [items[i:i + size] for i in range(1, len(items), size)]


def judge_shard(run_dir: str | Path, shard: int, out: str = "", overrides=(), backend=None,
                retry_errors: bool = False) -> dict:
    """Judge one shard of merged.jsonl into judge[-OUT]/shard-K.jsonl; return the done info."""
    rd = RunDir(run_dir)
    cfg = judge_config(rd, overrides, out)
    if not 0 <= shard < cfg.judge.shards:
        raise JudgeError(f"judge shard {shard} out of range: judge.shards = {cfg.judge.shards}")
    units = shard_units(load_merged(rd), shard, cfg.judge.shards)
    ident, label = identity(cfg), f"judge{'-' + out if out else ''} shard {shard}"
    info = _shard_done(rd, shard, out, units, ident)
    if info and not (retry_errors and info.get("n_judge_errors")):
        print(f"[{label}] already done ({info['records']} verdicts)", file=sys.stderr)
        return info
    if not settings_file(rd, out).exists():
        atomic_write_json(settings_file(rd, out), {"judge": vars(cfg.judge)})
    questions = {q["question_id"]: q for q in load_prepared(rd)}
    unknown = sorted({u["question_id"] for u in units} - set(questions))
    if unknown:
        raise JudgeError(f"{rd.questions_file} lacks questions {unknown[:5]} of merged.jsonl")
    path, t0, stats = rd.judge_file(shard, out), time.time(), Counter()
    cache = VerdictCache(rd.path / "judge-cache.jsonl")
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
        for chunk in _chunks(ask, cfg.judge.backend, cfg.judge.concurrency):
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
            "records": len(mine), "sha256": sha256_file(path), "units_sha256": units_sha(units),
            **ident, "shard": shard, "shards": cfg.judge.shards,
            "n_correct": counts["CORRECT"], "n_incorrect": counts["INCORRECT"],
            "n_invalid": counts["INVALID"],
            "n_judge_errors": sum(bool(r.get("judge_error")) for r in mine),
            "n_asked": stats["asked"], "n_cached": stats["cached"],
            "elapsed_s": round(time.time() - t0, 3), "file": path.name,
        }
        write_done(rd.judge_done(shard, out), info)
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
    cfg = judge_config(rd, overrides, out)
    merged, ident, shards = load_merged(rd), identity(cfg), cfg.judge.shards
    parts = [shard_units(merged, k, shards) for k in range(shards)]
    not_done = [k for k in range(shards) if not _shard_done(rd, k, out, parts[k], ident)]
    if not_done:
        flag = f" --out {out}" if out else ""
        raise JudgeError(
            f"{rd.judge_dir(out)}: judge shards not done: {not_done} of {shards}; run "
            f"`lcr judge {rd.path} --shard K{flag}` for each (or `lcr rerun {rd.path}`)"
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
    """Every judge shard here, one after the other (one backend), then finalize."""
    cfg = judge_config(RunDir(run_dir), overrides, out)
    backend = backend or make_backend(cfg)  # the vllm engine starts once, on first use
    for k in range(cfg.judge.shards):
        judge_shard(run_dir, k, out, overrides, backend, retry_errors)
    return finalize_verdicts(run_dir, out, overrides)


def run_judge_cli(run_dir, overrides, out: str = "", shard: int | None = None,
                  finalize: bool = False, retry_errors: bool = False) -> int:
    """`lcr judge`: one shard, the finalize step, or (neither) the whole stage locally."""
    try:
        if finalize:
            info = finalize_verdicts(run_dir, out, overrides)
        elif shard is not None:
            info = judge_shard(run_dir, shard, out, overrides, retry_errors=retry_errors)
        else:
            info = judge_run(run_dir, out, overrides, retry_errors=retry_errors)
    except (JudgeError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(info), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lcr.judge", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", help="run directory with a complete merge (merged.done)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--shard", type=int, default=None, help="judge one shard (array task)")
    what.add_argument("--finalize", action="store_true",
                      help="write verdicts[-OUT].jsonl once every judge shard is done")
    p.add_argument("--out", default="", help="judge into judge-OUT/ and verdicts-OUT.jsonl")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="judge.KEY=VALUE", help="judge (or engine) setting, repeatable")
    p.add_argument("--retry-errors", action="store_true",
                   help="ask the judge again for units that got an endpoint error")
    args = p.parse_args(argv)
    return run_judge_cli(args.run_dir, args.overrides, args.out, args.shard, args.finalize,
                         args.retry_errors)


if __name__ == "__main__":
    sys.exit(main())
