"""The report stage: accuracy with honest intervals from one or more judged run directories.

    lcr report shards/llama-8b                   # report.json, report.md, report.png in it
    lcr report shards/llama-s0 shards/llama-s1   # pooled as extra seeds, written into the first
    lcr compare shards/llama-8b shards/qwen-7b   # paired difference, printed; writes nothing

Pooling: every unit of every run dir is one replicate of its question, labelled (run index,
seed); a question's score is the mean over all its units. Two dirs holding the same seed are
pooled as distinct replicates (with a warning: that is honest only if they are independent
draws). A pooled report is written into the first run dir under the usual names; its `runs`
field lists every dir that went into it. With `out=NAME` (verdicts judged with `--out NAME`)
the verdicts are read from verdicts-NAME.jsonl and the files are named report-NAME.*.

The judge (model, prompt, backend) is the one named in the verdict records, which must agree
within a file; config.toml is used only for a field the records lack. Every number comes from
lcr.stats (`summarize` over all units, `counts` per run through lcr.provenance); this module
loads, checks and writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from lcr.backends import BACKENDS
from lcr.config import Config, ReportSection
from lcr.errors import InputError
from lcr.io import durable_path, sha256_file
from lcr.overrides import with_overrides
from lcr.provenance import fill_from_merge, judge_setup, run_setup
from lcr.render import compare_text, render_markdown, render_png, summary_line
from lcr.rundir import RunDir, check_out_name
from lcr.stats import paired_difference, question_scores, question_table, summarize

__all__ = ["ReportError", "build_report", "compare_runs", "compare_text", "render_markdown",
           "run_compare", "run_report", "write_report"]

# Settings that change what a number means: how answers were sampled and cut, and what the
# engine could see. Runs that differ here are not seeds of one evaluation, nor a fair pair.
SETTING_KEYS = (
    "sampling.temperature", "sampling.top_p", "sampling.top_k", "sampling.max_new_tokens",
    "data.too_long", "engine.max_model_len", "engine.kv_cache_dtype", "engine.dtype",
)
# What must agree for runs to be pooled as seeds of one evaluation (seeds may differ).
POOL_KEYS = (
    "model.path", "model.system_prompt", "judge.model", "judge.prompt", "judge.prompt_role",
    "judge.backend", "data.revision", "data.source", *SETTING_KEYS,
)
# What must agree for two runs to be compared: the questions, the judge and the settings,
# not the model.
COMPARE_KEYS = ("judge.model", "judge.prompt", "judge.prompt_role", "judge.backend",
                "data.revision", "data.source", *SETTING_KEYS)
# The judge is whoever wrote the verdicts (a re-judge with --out differs from config.toml).
# Backend first: a missing judge_model of the exact backend is "exact", not [judge].model.
JUDGE_FIELDS = {"judge.backend": "judge_backend", "judge.model": "judge_model",
                "judge.prompt": "judge_prompt", "judge.prompt_role": "judge_prompt_role"}
# Judge fields recorded since a later version: older verdicts were all judged this way.
RECORD_DEFAULTS = {"judge_prompt_role": "user"}


class ReportError(InputError, ValueError):
    """Run directories that cannot be reported on (or pooled), with the reason and the fix."""


def _get(cfg: Config, dotted: str):
    section, key = dotted.split(".", 1)
    return getattr(getattr(cfg, section), key)


def verdict_judge(records: list[dict], path: Path, cfg: Config) -> tuple[dict, list[str]]:
    """The judge named in the verdict records (one per file), and warnings for the fields no
    record has, which are taken from config.toml."""
    judge, warnings = {}, []
    for dotted, field in JUDGE_FIELDS.items():
        values = {rec.get(field, RECORD_DEFAULTS.get(field)) for rec in records}
        if len(values) > 1:
            shown = ", ".join(sorted(repr(v) for v in values))
            raise ReportError(f"{path}: verdicts from more than one judge ({field}: {shown}); "
                              "judge each into its own --out NAME")
        value = values.pop()
        if value is None:
            value = _get(cfg, dotted)
            if dotted == "judge.model":  # what lcr.judge writes for this backend
                value = BACKENDS[judge["judge.backend"]].model_name(cfg)
            warnings.append(f"{path}: no {field} in the records; taken from config.toml "
                            f"({value!r})")
        judge[dotted] = value
    return judge, warnings


def run_identity(cfg: Config, judge: dict) -> dict:
    """What POOL_KEYS names for one run: model and data from config.toml, the judge from its
    verdicts."""
    return {k: judge[k] if k in judge else _get(cfg, k) for k in POOL_KEYS}


def differences(first: dict, other: dict, keys=POOL_KEYS) -> list[str]:
    return [f"{k} differs ({first[k]!r} vs {other[k]!r})" for k in keys if first[k] != other[k]]


def check_same(runs: list[tuple[Path, dict]], keys, force: bool, verb: str) -> list[str]:
    """Raise ReportError naming every differing key of every run, with both values, unless
    force; return them as warnings if forced."""
    first_dir, first = runs[0]
    problems = [(path, differences(first, ident, keys)) for path, ident in runs[1:]]
    problems = [(path, diffs) for path, diffs in problems if diffs]
    if problems and not force:
        raise ReportError(
            f"cannot {verb} runs whose settings differ:\n  "
            + "\n  ".join(f"{path} vs {first_dir}: {'; '.join(diffs)}"
                          for path, diffs in problems)
            + "\npass --force to do it anyway"
        )
    return [f"forced: {path} vs {first_dir}: {d}" for path, diffs in problems for d in diffs]


def load_units(run_dirs: list[Path], per_run: list[list[dict]], force: bool = False):
    """Units of all runs, each tagged with its run index; plus pooling warnings."""
    warnings = []
    first_q = {r["question_id"] for r in per_run[0]}
    seeds_seen: dict[int, Path] = {}
    for d, records in zip(run_dirs, per_run):
        qids = {r["question_id"] for r in records}
        if qids != first_q:
            msg = (f"{d} and {run_dirs[0]} hold different questions ({len(qids - first_q)} "
                   f"only in {d}, {len(first_q - qids)} only in {run_dirs[0]})")
            if not force:
                raise ReportError(f"cannot pool: {msg}; pass --force to pool anyway")
            warnings.append(f"forced: {msg}")
        for s in sorted({int(r["seed"]) for r in records}):
            if s in seeds_seen:
                warnings.append(
                    f"seed {s} is in both {seeds_seen[s]} and {d}: pooled as distinct "
                    "replicates, honest only if the two runs are independent draws"
                )
            seeds_seen.setdefault(s, d)
    units = [{**r, "run": i} for i, records in enumerate(per_run) for r in records]
    return units, warnings


def _as_list(run_dirs) -> list[Path]:
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ReportError("no run directory given")
    seen: dict[str, Path] = {}
    for d in dirs:
        real = os.path.realpath(d)
        if real in seen:
            raise ReportError(f"{seen[real]} and {d} are the same run; pooling a run with itself "
                              "would count its answers twice as extra seeds")
        seen[real] = d
    return dirs


def _load_runs(run_dirs, force: bool, out: str):
    """Configs, verdicts and identities of runs pooled as seeds, checked to agree."""
    dirs = _as_list(run_dirs)
    loaded = [RunDir(d).load_config() for d in dirs]
    per_run = [fill_from_merge(d, RunDir(d).load_verdicts(out)) for d in dirs]
    idents, judges, warnings = [], [], []
    for d, (cfg, _), records in zip(dirs, loaded, per_run):
        judge, more = verdict_judge(records, RunDir(d).verdicts_file(out), cfg)
        idents.append(run_identity(cfg, judge))
        judges.append(judge)
        warnings += more
    warnings += check_same(list(zip(dirs, idents)), POOL_KEYS, force, "pool")
    units, more = load_units(dirs, per_run, force)
    return dirs, loaded, idents, units, warnings + more, judges


def build_report(
    run_dirs, force: bool = False, out: str = "", report_cfg: ReportSection | None = None,
    report_set=(),
) -> dict:
    """The content of report.json for one run dir or several pooled as seeds."""
    dirs, loaded, idents, units, warnings, judges = _load_runs(run_dirs, force, out)
    cfg = loaded[0][0]
    rc = report_cfg or with_overrides(cfg, report_set).report  # --set report.*
    report = summarize(units, B=rc.bootstrap, level=rc.ci_level, seed=rc.seed)
    for row in report["per_seed"]:
        row["run_dir"] = str(dirs[row["run"]])
    report["warnings"] = warnings + report["warnings"]
    setups = [run_setup(d, c, meta, [u for u in units if u["run"] == i])
              for i, (d, (c, meta)) in enumerate(zip(dirs, loaded))]
    report.update(
        runs=[str(d) for d in dirs],
        verdicts_files=[str(RunDir(d).verdicts_file(out)) for d in dirs],
        verdicts_sha256=[sha256_file(RunDir(d).verdicts_file(out)) for d in dirs],
        out=out,
        forced=force,
        model={"path": cfg.model.path, "system_prompt": cfg.model.system_prompt,
               "weights": setups[0]["model_weights"]},
        judge={**judge_setup(units, cfg, judges[0]),
               "models_in_verdicts": sorted({ident["judge.model"] for ident in idents})},
        data={"source": cfg.data.source, "revision": cfg.data.revision},
        sampling=[{**dataclasses.asdict(c.sampling), "run_dir": str(d)}
                  for d, (c, _) in zip(dirs, loaded)],
        run_meta=[
            {"run_dir": str(d), "git": meta.get("git", {}),
             "generation_hash": meta.get("generation_hash", "")}
            for d, (_, meta) in zip(dirs, loaded)
        ],
        provenance=setups,
    )
    if len(dirs) > 1:  # a name of its own: the first run's own report stays its own
        real = "\n".join(os.path.realpath(d) for d in dirs)
        report["pool"] = hashlib.sha256(real.encode()).hexdigest()[:8]
    report["summary"] = summary_line(report)
    return report


def write_report(run_dir: str | Path, report: dict) -> list[Path]:
    """report.json, report.md and report.png (report-OUT.* for `out`, report-pool-ID.* for a
    pool) replaced as a set: all three are rendered first; json, the one `lcr status` reads,
    is renamed last; if any fails, none is replaced."""
    paths = RunDir(run_dir).report_paths(report.get("out", ""), report.get("pool", ""))
    with durable_path(paths["json"]) as tj, durable_path(paths["md"]) as tm, \
            durable_path(paths["png"]) as tp:
        tj.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        tm.write_text(render_markdown(report))
        render_png(report, tp)
    return list(paths.values())


def run_report(run_dirs, force: bool = False, out: str = "", where: list | None = None,
               report_set=()) -> str:
    """`lcr report`: build, write into the first run dir, return the summary line (and add the
    paths written to `where`); `report_set`: --set report.* overrides."""
    report = build_report(run_dirs, force=force, out=check_out_name(out), report_set=report_set)
    paths = write_report(_as_list(run_dirs)[0], report)
    if where is not None:
        where += paths
    return report["summary"]


def compare_runs(
    run_a, run_b, force: bool = False, out: str = "", report_cfg: ReportSection | None = None,
    report_set=(),
) -> dict:
    """Paired per-question comparison of A and B (each one run dir or a list pooled as seeds).

    The questions and the judge must agree (COMPARE_KEYS); the models may differ. With force,
    differing question sets are cut to the questions both hold.
    """
    dirs_a, loaded_a, idents_a, units_a, warnings, _ = _load_runs(run_a, force, out)
    dirs_b, loaded_b, idents_b, units_b, more, _ = _load_runs(run_b, force, out)
    cfg_a, cfg_b = loaded_a[0][0], loaded_b[0][0]
    warnings += more + check_same([(dirs_a[0], idents_a[0]), (dirs_b[0], idents_b[0])],
                                  COMPARE_KEYS, force, "compare")
    scores_a, scores_b = question_scores(units_a), question_scores(units_b)
    if set(scores_a) != set(scores_b):
        msg = (f"A and B hold different questions ({len(set(scores_a) - set(scores_b))} only "
               f"in A, {len(set(scores_b) - set(scores_a))} only in B)")
        if not force:
            raise ReportError(f"cannot compare: {msg}; pass --force to use the common ones")
        common = set(scores_a) & set(scores_b)
        if not common:
            raise ReportError(f"cannot compare: {msg}, and none in common")
        warnings.append(f"forced: {msg}; compared on the {len(common)} common questions")
        scores_a = {q: s for q, s in scores_a.items() if q in common}
        scores_b = {q: s for q, s in scores_b.items() if q in common}
    table_a, table_b = question_table(units_a), question_table(units_b)
    clusters = dict(zip(table_a.ids, table_a.clusters))
    for q, c in zip(table_b.ids, table_b.clusters):
        if q in clusters and clusters[q] != c:
            raise ReportError(f"question {q} is in document set {clusters[q]} in A but {c} in B")
    rc = report_cfg or with_overrides(cfg_a, report_set).report
    result = paired_difference(scores_a, scores_b, clusters, rc.bootstrap, rc.ci_level, rc.seed)
    result.update(
        runs_a=[str(d) for d in dirs_a], runs_b=[str(d) for d in dirs_b],
        model_a=cfg_a.model.path, model_b=cfg_b.model.path, warnings=warnings,
    )
    return result


def run_compare(run_a, run_b, force: bool = False, out: str = "",
                report_set=()) -> str:
    """`lcr compare`: the paired comparison as text; writes nothing, so no run dir changes."""
    return compare_text(compare_runs(run_a, run_b, force=force, out=out, report_set=report_set))
