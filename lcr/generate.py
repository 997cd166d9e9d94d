"""Generate stage: run one shard of plan.json on one node, resumable, one record per unit.

    lcr generate shards/demo --shard 3

Keys already in the shard's JSONL are skipped (a torn last line is ignored), units are fed
to the engine within the KV-budgeted set window (lcr.feed) so each set's documents are
prefilled once and served from vLLM's prefix cache, one fsynced record is appended per unit
as it finishes, and `shard-0003.done` is written last. With engine.replicas = R > 1 the
shard's sets are split between R engine processes, each on its own GPUs and writing its own
part file. A full or read-only disk stops the shard with one line that says how many records
are kept.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from lcr.config import Config
from lcr.cost import replica_parts
from lcr.feed import feed, make_group
from lcr.fit import check_window
from lcr.io import ShardWriter, StorageError, read_done, sha256_file, write_done
from lcr.rundir import RunDir, quoted
from lcr.units import by_set, keys_sha, prompt_id, prompts_sha
from lcr.window import Capacity


class Progress:
    def __init__(self, label: str, total: int, already: int):
        self.label, self.total, self.done = label, total, already
        self.start = time.time()
        self.engine_start_s = 0.0
        self.attention = ""  # shared-prefix attention: "on", or why it is off
        self.prompt = self.cached = self.output = 0

    def add(self, records: list[dict]) -> None:
        self.done += len(records)
        for r in records:
            if r.get("status") != "ok":
                continue
            self.prompt += r.get("prompt_tokens") or 0
            self.cached += r.get("cached_tokens") or 0
            self.output += r.get("output_tokens") or 0
        dt = max(time.time() - self.start, 1e-9)
        hit = self.cached / self.prompt if self.prompt else 0.0
        print(
            f"[{self.label}] {self.done}/{self.total} units; prompt {self.prompt / dt:,.0f} tok/s, "
            f"generated {self.output / dt:,.1f} tok/s; prefix-cache hit {hit:.2f}",
            file=sys.stderr, flush=True,
        )

    def summary(self) -> dict:
        dt = time.time() - self.start
        return {
            "elapsed_s": round(dt, 3),
            "engine_start_s": self.engine_start_s,
            "shared_prefix_attention": self.attention,
            "prompt_tokens": self.prompt,
            "cached_tokens": self.cached,
            "output_tokens": self.output,
            "prompt_tok_s": round(self.prompt / dt, 1) if dt else 0.0,
            "output_tok_s": round(self.output / dt, 2) if dt else 0.0,
            "cache_hit": round(self.cached / self.prompt, 4) if self.prompt else 0.0,
        }


def _record(u: dict, q: dict, cfg: Config, shard: int, part, run_hash: str, **fields) -> dict:
    rec = {
        "key": u["key"],
        "question_id": u["question_id"],
        "seed": u["seed"],
        "sample": u["sample"],
        "document_set_id": u["document_set_id"],
        "document_category": q["document_category"],
        "status": "ok",
        "response": "",
        "prompt_tokens": q["prompt_tokens"],
        "cached_tokens": 0,
        "output_tokens": 0,
        "finish_reason": None,
        "elapsed_s": 0.0,
        "model": cfg.model.path,
        "shard": shard,
        "part": part,
        "run_hash": run_hash,
        "prompt_id": prompt_id(q),  # the prompt it was made from (a changed question: redo)
        "time": round(time.time(), 3),
    }
    rec.update(fields)
    return rec


def run_units(run_dir: RunDir, cfg: Config, shard: int, part, units: list[dict],
              out: Path, engine_factory=None) -> dict:
    """Generate `units` into `out` (resuming), return the summary for the done marker."""
    run_hash = run_dir.run_hash()
    qinfo = {q["question_id"]: q for q in run_dir.load_questions()}
    label = f"shard {shard}" + (f" part {part}" if part is not None else "")
    with ShardWriter(out) as writer:
        have = run_dir.generation_records(shard, run_hash)
        pending = [u for u in units if u["key"] not in have]
        progress = Progress(label, len(units), len(units) - len(pending))
        print(f"[{label}] {len(units)} units, {len(units) - len(pending)} already written",
              file=sys.stderr, flush=True)
        if shard in cfg.debug.fail_shards:
            raise RuntimeError(f"debug.fail_shards: shard {shard} fails on purpose")
        too_long = [u for u in pending if qinfo[u["question_id"]]["status"] != "ok"]
        records = [
            _record(u, qinfo[u["question_id"]], cfg, shard, part, run_hash, status="too_long",
                    error=qinfo[u["question_id"]].get("error", "prompt too long"))
            for u in too_long
        ]
        writer.append_many(records)
        if records:
            progress.add(records)
        runnable = [u for u in pending if qinfo[u["question_id"]]["status"] == "ok"]
        if runnable:
            t_start = time.time()
            engine = (engine_factory or _default_engine)(cfg)
            progress.engine_start_s = round(time.time() - t_start, 3)
            groups, cap = _groups(run_dir, cfg, qinfo, runnable, engine)
            print(f"[{label}] {len(groups)} document sets; KV cache {cap.kv_tokens:,} tokens; "
                  f"window: {cfg.engine.batch_sets}", file=sys.stderr, flush=True)

            def params_of(u):  # a unit's own max_tokens: bench workloads of varied length
                return engine.params(cfg.sampling, seed=u["seed"] * 1000 + u["sample"],
                                     max_tokens=u.get("max_tokens"))

            progress.attention = getattr(engine, "shared_prefix", "")
            mode = "shared_prefix" if progress.attention == "on" else "stock"
            for u, c in feed(engine, groups, cap, params_of):
                rec = _record(u, qinfo[u["question_id"]], cfg, shard, part, run_hash,
                              attention=mode, **_fields(c))
                writer.append(rec)
                progress.add([rec])
                if cfg.debug.unit_delay_s:
                    time.sleep(cfg.debug.unit_delay_s)
        final = run_dir.generation_records(shard, run_hash)
        mine = [final[u["key"]] for u in units if u["key"] in final]
        missing = [u["key"] for u in units if u["key"] not in final]
        if missing:
            raise RuntimeError(f"[{label}] units without a record after the run: {missing[:5]}")
        info = progress.summary()
        info.update(
            records=len(mine),
            sha256=sha256_file(out),
            units_sha256=keys_sha(units),
            prompts_sha256=prompts_sha(units, {k: prompt_id(q) for k, q in qinfo.items()}),
            n_ok=sum(r["status"] == "ok" for r in mine),
            n_too_long=sum(r["status"] == "too_long" for r in mine),
            n_error=sum(r["status"] == "error" for r in mine),
            file=out.name,
            weights=_weights(cfg),  # which weights made these records (report provenance)
        )
        return info


def _weights(cfg: Config) -> dict:
    from lcr.tinymodel import resolve
    from lcr.weights import weight_revision

    return weight_revision(resolve(cfg.model.path))


def _fields(c) -> dict:
    """Record fields of one completion; a refused or failed request becomes too_long / error."""
    fields = dict(response=c.text, prompt_tokens=c.prompt_tokens, cached_tokens=c.cached_tokens,
                  output_tokens=c.output_tokens, finish_reason=c.finish_reason,
                  elapsed_s=c.elapsed)
    if c.error:
        long = re.search(r"maximum (context|model) length|longer than the maximum", c.error)
        fields.update(status="too_long" if long else "error", error=c.error)
    return fields


def _groups(run_dir: RunDir, cfg: Config, qinfo: dict, units: list[dict], engine):
    """The shard's units as one group per document set, and the window's capacity."""
    ids: dict[str, list[int]] = {}
    groups = []
    for set_id, members in by_set(units).items():
        prompts = []
        for u in members:
            q = qinfo[u["question_id"]]
            if u["question_id"] not in ids:
                ids[u["question_id"]] = run_dir.prompt_ids(q)
            prompts.append(ids[u["question_id"]])
        groups.append(make_group(set_id, members, prompts,
                                 [cfg.sampling.max_new_tokens] * len(members)))
    kv_tokens, block = engine.kv_capacity()
    bs = cfg.engine.batch_sets
    cap = Capacity(kv_tokens=kv_tokens, block=block, max_seqs=cfg.engine.max_num_seqs,
                   max_sets=0 if bs == "auto" else int(bs))
    check_window([g.demand for g in groups], cap)  # before a request goes in
    return groups, cap


def _default_engine(cfg: Config):
    from lcr.engine import Engine, compile_cache_dir
    from lcr.tinymodel import resolve

    return Engine(resolve(cfg.model.path), cfg.engine,
                  cache_dir=compile_cache_dir(cfg.engine, cfg.run.root),
                  tokenizer=resolve(cfg.model.tokenizer or cfg.model.path),
                  trust_remote_code=cfg.model.trust_remote_code)


def visible_devices(count: int) -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        return [d for d in env.split(",") if d.strip()]
    return [str(i) for i in range(count)]


def run_shard(run_dir: str | Path, shard: int, part: int | None = None,
              parts: int | None = None, engine_factory=None) -> dict:
    """Run one shard (or one replica part of it); returns the done-marker content."""
    rd = RunDir(run_dir)
    cfg, _ = rd.load_config()
    spec = rd.shard(shard)
    done = rd.generate_done(spec)
    if done:
        print(f"[shard {shard}] already done ({done['records']} records)", file=sys.stderr)
        return done
    replicas = parts or cfg.engine.replicas
    if replicas > 1 and part is None:
        return _run_replicas(rd, cfg, spec, replicas)
    qinfo = {q["question_id"]: q for q in rd.load_questions()}
    units = spec["units"] if part is None else replica_parts(spec, replicas, qinfo, cfg)[part]
    if part is not None and rd.generate_done(spec, part, units):
        return rd.generate_done(spec, part, units)
    out = rd.generate_file(shard, part)
    try:
        info = run_units(rd, cfg, shard, part, units, out, engine_factory)
        write_done(rd.generate_marker(shard, part), info)
    except StorageError as e:
        kept = len(rd.generation_records(shard, rd.run_hash()))
        raise StorageError(e.path, e.action, e, (
            f"; the {kept} record(s) already written are kept; free space (or make "
            f"{e.path.parent} writable) and run `lcr rerun {quoted(rd.path)}`")) from e
    return info


def _run_replicas(rd: RunDir, cfg: Config, spec: dict, replicas: int) -> dict:
    """One engine process per replica, each with its own GPUs; the shard is done when all are."""
    tp = cfg.engine.tensor_parallel_size
    devices = visible_devices(replicas * tp)
    procs = []
    for r in range(replicas):
        env = dict(os.environ)
        if len(devices) >= replicas * tp:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[r * tp:(r + 1) * tp])
        cmd = [sys.executable, "-m", "lcr.cli", "generate", str(rd.path), "--shard",
               str(spec["index"]), "--part", str(r), "--parts", str(replicas)]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"[shard {spec['index']}] replica exit codes {codes}; rerun to finish")
    infos = [read_done(rd.generate_marker(spec["index"], r)) or {} for r in range(replicas)]
    info = {
        "records": sum(i.get("records", 0) for i in infos),
        "units_sha256": keys_sha(spec["units"]),
        "prompts_sha256": prompts_sha(spec["units"], rd.prompt_id_map()),
        "parts": infos,
        "elapsed_s": max(i.get("elapsed_s", 0) for i in infos),
        "weights": infos[0].get("weights"),
    }
    for k in ("prompt_tokens", "cached_tokens", "output_tokens", "n_ok", "n_too_long", "n_error"):
        info[k] = sum(i.get(k, 0) for i in infos)
    info["cache_hit"] = round(info["cached_tokens"] / info["prompt_tokens"], 4) if info[
        "prompt_tokens"] else 0.0
    write_done(rd.generate_marker(spec["index"]), info)
    return info
