"""Merge stage: every generation shard of a run into one merged.jsonl, in plan order.

    lcr merge shards/demo      # exit 0 only when every planned unit has a record

Reads every `generate/shard-*.jsonl` (replica part files too, done or not) and keeps every
valid record of this run: a record from another configuration (other `run_hash`) is refused,
one made from a question that changed since (other `prompt_id`) is ignored,
a torn or invalid line is skipped, a duplicate key keeps one record by a fixed rule (status
"ok" first, then the earliest `time`, then file name and line order). Each of these is
reported. merged.jsonl is always written (atomically) with what there is; merged.done is
written only when every planned unit is present, so a Slurm chain stops at an incomplete run.
A stale merged.done (from an earlier, complete plan) is removed when the run is no longer
complete. Shard files are only read. Running it again gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lcr.io import atomic_write_jsonl, read_jsonl, sha256_file, write_done
from lcr.rundir import RunDir, quoted
from lcr.units import plan_units, unit_key

REQUIRED = ("key", "question_id", "seed", "sample", "document_set_id", "status", "response")
SHOW = 20  # missing keys and problems listed in the printed summary


@dataclass
class MergeResult:
    path: Path  # merged.jsonl
    records: int = 0  # records written to merged.jsonl
    planned: int = 0  # units in plan.json
    missing: list[str] = field(default_factory=list)  # planned keys without a record
    shards_not_done: list[int] = field(default_factory=list)  # plan shards without .done
    duplicates: int = 0  # records dropped as exact duplicates (same key, same response)
    conflicts: list[str] = field(default_factory=list)  # keys with differing records
    refused: dict[str, int] = field(default_factory=dict)  # file -> records of another run_hash
    stale: dict[str, int] = field(default_factory=dict)  # file -> records of a changed prompt
    bad_lines: list[str] = field(default_factory=list)  # "file:line: reason"
    unplanned: list[str] = field(default_factory=list)  # keys of this run that plan.json lacks
    sha256: str = ""  # of merged.jsonl

    @property
    def complete(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        lines = [f"merged {self.records}/{self.planned} planned units into {self.path}"]
        if self.duplicates:
            lines.append(f"{self.duplicates} exact duplicate record(s) dropped")
        if self.conflicts:
            lines.append(f"{len(self.conflicts)} key(s) with conflicting records, one kept "
                         f"(ok first, then earliest time): {_head(self.conflicts)}")
        for name, n in sorted(self.refused.items()):
            lines.append(f"{name}: {n} record(s) from another configuration (run_hash) refused")
        for name, n in sorted(self.stale.items()):
            lines.append(f"{name}: {n} record(s) made from a question that has changed since "
                         "(prompt_id) ignored: that question is generated again")
        if self.bad_lines:
            lines.append(f"{len(self.bad_lines)} unreadable line(s) skipped: "
                         + "; ".join(self.bad_lines[:SHOW]))
        if self.unplanned:
            lines.append(f"{len(self.unplanned)} record key(s) not in plan.json ignored: "
                         f"{_head(self.unplanned)}")
        if self.shards_not_done:
            lines.append(f"shards not done: {self.shards_not_done}")
        if self.missing:
            lines.append(f"INCOMPLETE: {len(self.missing)} unit(s) missing: "
                         f"{_head(self.missing)}; merged.done not written. Run the shards "
                         f"that are not done (`lcr rerun {quoted(self.path.parent)}`), then "
                         "merge again.")
        else:
            lines.append("complete: merged.done written")
        return "\n".join(lines)


def _head(keys: list[str]) -> str:
    more = f" ... (+{len(keys) - SHOW} more)" if len(keys) > SHOW else ""
    return ", ".join(keys[:SHOW]) + more


def _problem(rec: dict) -> str | None:
    """Why a JSON object is not a usable generation record, or None."""
    missing = [f for f in REQUIRED if f not in rec]
    if missing:
        return f"not a generation record (lacks {', '.join(missing)})"
    if rec["key"] != unit_key(rec["question_id"], rec["seed"], rec["sample"]):
        return f"key {rec['key']!r} does not match question_id:seed:sample"
    return None


def _read_shards(rd: RunDir, run_hash: str, result: MergeResult) -> list[tuple]:
    """(record, file name, line) of every valid record of this run, in file and line order."""
    out, ids = [], rd.prompt_id_map()
    for path in rd.generate_files():
        read = read_jsonl(path)
        bad = {line for line, _ in read.bad_lines}
        lines = [n for n in range(1, len(read.records) + len(bad) + 1) if n not in bad]
        result.bad_lines += [f"{path.name}:{line}: {why}" for line, why in read.bad_lines]
        for rec, line in zip(read.records, lines):
            why = _problem(rec)
            if why:
                result.bad_lines.append(f"{path.name}:{line}: {why}")
            elif rec.get("run_hash") != run_hash:
                result.refused[path.name] = result.refused.get(path.name, 0) + 1
            elif not rd.current(rec, run_hash, ids):
                result.stale[path.name] = result.stale.get(path.name, 0) + 1
            else:
                out.append((rec, path.name, line))
    return out


def _preference(item: tuple) -> tuple:
    rec, name, line = item
    t = rec.get("time")
    t = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else float("inf")
    return (rec["status"] != "ok", t, name, line)


def _dedupe(items: list[tuple], result: MergeResult) -> dict[str, dict]:
    by_key: dict[str, list[tuple]] = {}
    for item in items:
        by_key.setdefault(item[0]["key"], []).append(item)
    chosen = {}
    for key, group in by_key.items():
        group.sort(key=_preference)
        chosen[key] = group[0][0]
        if len({(r["status"], r["response"]) for r, _, _ in group}) > 1:
            result.conflicts.append(key)
        else:
            result.duplicates += len(group) - 1
    result.conflicts.sort()
    return chosen


def merge_run(run_dir: str | Path) -> MergeResult:
    """Write merged.jsonl (and merged.done when complete); the result says what happened."""
    rd = RunDir(run_dir)
    plan = rd.load_plan()
    units = plan_units(plan)
    result = MergeResult(path=rd.merged_file, planned=len(units))
    run_hash = rd.run_hash()  # what generate stamps on its records
    chosen = _dedupe(_read_shards(rd, run_hash, result), result)
    planned = {u["key"] for u in units}
    result.unplanned = sorted(set(chosen) - planned)
    merged = [chosen[u["key"]] for u in units if u["key"] in chosen]
    result.missing = [u["key"] for u in units if u["key"] not in chosen]
    result.shards_not_done = [s["index"] for s in plan["shards"] if not rd.generate_done(s)]
    result.records = len(merged)
    if not result.complete and rd.merged_done.exists():
        rd.merged_done.unlink()  # it described a complete merge this file no longer is
    atomic_write_jsonl(rd.merged_file, merged)
    result.sha256 = sha256_file(rd.merged_file)
    if result.complete:
        write_done(rd.merged_done, {
            "records": result.records,
            "sha256": result.sha256,
            "missing": 0,
            "duplicates": result.duplicates,
            "conflicts": len(result.conflicts),
            "conflict_keys": result.conflicts,
            "refused": result.refused,
            "stale": result.stale,
            "bad_lines": len(result.bad_lines),
            "shards_not_done": result.shards_not_done,
            "run_hash": run_hash,
            "n_ok": sum(r["status"] == "ok" for r in merged),
            "n_too_long": sum(r["status"] == "too_long" for r in merged),
            "n_error": sum(r["status"] == "error" for r in merged),
        })
    return result
