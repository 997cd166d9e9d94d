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
within a file; config.toml is used only for a field the records lack.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import textwrap
from pathlib import Path

from lcr.config import Config, ReportSection
from lcr.io import atomic_write_json, atomic_write_text, read_jsonl
from lcr.rundir import RunDir
from lcr.stats import (
    LENGTH_BUCKETS,
    paired_difference,
    question_scores,
    question_table,
    summarize,
)

# What must agree for runs to be pooled as seeds of one evaluation.
POOL_KEYS = (
    "model.path", "model.system_prompt", "judge.model", "judge.prompt", "judge.backend",
    "data.revision", "data.source",
)
# What must agree for two runs to be compared: the questions and the judge, not the model.
COMPARE_KEYS = ("judge.model", "judge.prompt", "judge.backend", "data.revision", "data.source")
REQUIRED = ("key", "question_id", "seed", "sample", "document_set_id", "verdict")
# The judge is whoever wrote the verdicts (a re-judge with --out differs from config.toml).
# Backend first: a missing judge_model of the exact backend is "exact", not [judge].model.
JUDGE_FIELDS = {"judge.backend": "judge_backend", "judge.model": "judge_model",
                "judge.prompt": "judge_prompt"}


class ReportError(ValueError):
    """Run directories that cannot be reported on (or pooled), with the reason and the fix."""


def _get(cfg: Config, dotted: str):
    section, key = dotted.split(".", 1)
    return getattr(getattr(cfg, section), key)


def verdict_judge(records: list[dict], path: Path, cfg: Config) -> tuple[dict, list[str]]:
    """The judge named in the verdict records (one per file), and warnings for the fields no
    record has, which are taken from config.toml."""
    judge, warnings = {}, []
    for dotted, field in JUDGE_FIELDS.items():
        values = {rec.get(field) for rec in records}
        if len(values) > 1:
            shown = ", ".join(sorted(repr(v) for v in values))
            raise ReportError(f"{path}: verdicts from more than one judge ({field}: {shown}); "
                              "judge each into its own --out NAME")
        value = values.pop()
        if value is None:
            value = _get(cfg, dotted)
            if dotted == "judge.model" and judge["judge.backend"] == "exact":
                value = "exact"  # no model judged: what lcr.judge writes for this backend
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
    """Raise ReportError on the first differing key unless force; return warnings if forced."""
    warnings = []
    first_dir, first = runs[0]
    for path, ident in runs[1:]:
        diffs = differences(first, ident, keys)
        if diffs and not force:
            raise ReportError(
                f"cannot {verb} {path} with {first_dir}: {diffs[0]}; "
                "pass --force to do it anyway"
            )
        warnings += [f"forced: {path} vs {first_dir}: {d}" for d in diffs]
    return warnings


def load_verdicts(run_dir: str | Path, out: str = "") -> list[dict]:
    """The verdict records of one run dir, checked for the fields and keys the report needs."""
    path = RunDir(run_dir).verdicts_file(out)
    if not path.exists():
        flag = f" --out {out}" if out else ""
        raise ReportError(f"{path}: no such file; run `lcr judge {run_dir}{flag}` first")
    read = read_jsonl(path)
    if read.bad_lines:
        line, why = read.bad_lines[0]
        raise ReportError(
            f"{path}: {len(read.bad_lines)} unreadable line(s), first line {line}: {why}; "
            f"the file is written whole, so run `lcr judge {run_dir}` again"
        )
    if not read.records:
        raise ReportError(f"{path}: no verdict records; run `lcr judge {run_dir}` first")
    seen = set()
    for i, rec in enumerate(read.records, start=1):
        missing = [f for f in REQUIRED if f not in rec]
        if missing:
            raise ReportError(f"{path}: record {i} lacks {', '.join(missing)}")
        if rec["key"] in seen:
            raise ReportError(f"{path}: key {rec['key']} appears twice")
        seen.add(rec["key"])
    return read.records


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
    return dirs


def _load_runs(run_dirs, force: bool, out: str):
    """Configs, verdicts and identities of runs pooled as seeds, checked to agree."""
    dirs = _as_list(run_dirs)
    loaded = [RunDir(d).load_config() for d in dirs]
    per_run = [load_verdicts(d, out) for d in dirs]
    idents, warnings = [], []
    for d, (cfg, _), records in zip(dirs, loaded, per_run):
        judge, more = verdict_judge(records, RunDir(d).verdicts_file(out), cfg)
        idents.append(run_identity(cfg, judge))
        warnings += more
    warnings += check_same(list(zip(dirs, idents)), POOL_KEYS, force, "pool")
    units, more = load_units(dirs, per_run, force)
    return dirs, loaded, idents, units, warnings + more


def build_report(
    run_dirs, force: bool = False, out: str = "", report_cfg: ReportSection | None = None
) -> dict:
    """The content of report.json for one run dir or several pooled as seeds."""
    dirs, loaded, idents, units, warnings = _load_runs(run_dirs, force, out)
    cfg = loaded[0][0]
    rc = report_cfg or cfg.report
    report = summarize(units, B=rc.bootstrap, level=rc.ci_level, seed=rc.seed)
    for row in report["per_seed"]:
        row["run_dir"] = str(dirs[row["run"]])
    report["warnings"] = warnings + report["warnings"]
    report.update(
        runs=[str(d) for d in dirs],
        verdicts_files=[str(RunDir(d).verdicts_file(out)) for d in dirs],
        out=out,
        forced=force,
        model={"path": cfg.model.path, "system_prompt": cfg.model.system_prompt},
        judge={
            "model": idents[0]["judge.model"],
            "prompt": idents[0]["judge.prompt"],
            "backend": idents[0]["judge.backend"],
            "models_in_verdicts": sorted({ident["judge.model"] for ident in idents}),
        },
        data={"source": cfg.data.source, "revision": cfg.data.revision},
        sampling=[{**dataclasses.asdict(c.sampling), "run_dir": str(d)}
                  for d, (c, _) in zip(dirs, loaded)],
        run_meta=[
            {"run_dir": str(d), "git": meta.get("git", {}),
             "generation_hash": meta.get("generation_hash", "")}
            for d, (_, meta) in zip(dirs, loaded)
        ],
    )
    report["summary"] = summary_line(report)
    return report


def _fmt_level(level: float) -> str:
    return f"{level * 100:g}%"


def _interval(low, high, digits: int = 2) -> str:
    if low is None:
        return "[n/a]"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def summary_line(r: dict) -> str:
    reps = f"{r['n_questions']} questions x {r['n_seeds']} seed{'s' if r['n_seeds'] != 1 else ''}"
    if r["n_samples"] > 1:
        reps += f" x {r['n_samples']} samples"
    parts = [
        (f"{_fmt_level(r['ci_level'])} cluster bootstrap over {r['n_document_sets']} "
         "document sets"),
        reps,
        f"{r['n_invalid']} invalid verdict{'s' if r['n_invalid'] != 1 else ''}",
    ]
    if r["n_too_long"]:
        parts.append(f"{r['n_too_long']} too long")
    if r["n_error"]:
        parts.append(f"{r['n_error']} generation errors")
    return (f"accuracy {r['accuracy']:.3f} {_interval(r['ci_low'], r['ci_high'])} "
            f"({'; '.join(parts)})")


def _num(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _breakdown_rows(breakdown: dict) -> list[list]:
    return [
        [name, row["n"], row["n_document_sets"], _num(row["accuracy"]),
         _interval(row["ci_low"], row["ci_high"], 3)]
        for name, row in breakdown.items()
    ]


def render_markdown(r: dict) -> str:
    level = _fmt_level(r["ci_level"])
    head = ["n questions", "document sets", "accuracy", f"{level} interval"]
    se_c, se_n = r["se_clustered"], r["se_naive"]
    overview = [
        ["accuracy", _num(r["accuracy"])],
        [(f"{level} interval: cluster bootstrap over document sets "
          f"({r['bootstrap_resamples']:,} resamples, seed {r['bootstrap_seed']})"),
         _interval(r["ci_low"], r["ci_high"], 3)],
        ["clustered standard error (Miller 2024) and its normal interval",
         f"{_num(se_c)} {_interval(r['analytic_ci_low'], r['analytic_ci_high'], 3)}"],
        ["naive standard error, ignoring document sets (too narrow; for contrast)",
         f"{_num(se_n)} {_interval(r['naive_ci_low'], r['naive_ci_high'], 3)}"],
        ["questions / document sets", f"{r['n_questions']} / {r['n_document_sets']}"],
        ["seeds (run, seed pairs) / samples per seed", f"{r['n_seeds']} / {r['n_samples']}"],
        ["units: correct / incorrect / invalid",
         f"{r['n_units']}: {r['n_correct']} / {r['n_incorrect']} / {r['n_invalid']}"],
        ["generation: too long / error", f"{r['n_too_long']} / {r['n_error']}"],
    ]
    spread = r["seed_spread"]
    buckets = {b[0]: f"{b[1]:,}-{b[2]:,}" if b[2] else f">= {b[1]:,}" for b in LENGTH_BUCKETS}
    length_rows = [[f"{row[0]} ({buckets.get(row[0], 'no count')})"] + row[1:]
                   for row in _breakdown_rows(r["per_length_bucket"])]
    seed_rows = [
        [row["run"], row["run_dir"], row["seed"], row["n"], _num(row["accuracy"]),
         _interval(row["ci_low"], row["ci_high"], 3)]
        for row in r["per_seed"]
    ]
    run_rows = [[i, d, f] for i, (d, f) in enumerate(zip(r["runs"], r["verdicts_files"]))]
    parts = [
        f"# AA-LCR report: {r['model']['path']}",
        f"`{r['summary']}`",
        _table(["", "value"], overview),
        "## Per category",
        _table(["category"] + head, _breakdown_rows(r["per_category"])),
        "## Per prompt length (tokens incl. chat template)",
        _table(["prompt length"] + head, length_rows),
        "## Per seed",
        _table(["run", "run dir", "seed", "n questions", "accuracy", f"{level} interval"],
               seed_rows),
        "## Spread across seeds",
        (f"{spread['measure']}: {_num(spread['value'])} "
         f"{_interval(spread['ci_low'], spread['ci_high'], 3)} over {spread['n']} questions; "
         f"the seeds disagree on {spread['share_unstable']:.0%} of them."
         if spread["n"] else "One seed per question: no spread to measure."),
        "## Runs",
        (f"Model `{r['model']['path']}` (system prompt {r['model']['system_prompt']}); judge "
         f"`{r['judge']['model']}` ({r['judge']['backend']}, prompt {r['judge']['prompt']}); "
         f"data {r['data']['source']} @ {r['data']['revision']}."),
        _table(["run", "run dir", "verdicts"], run_rows),
    ]
    if r["warnings"]:
        parts += ["## Warnings", "\n".join(f"- {w}" for w in r["warnings"])]
    return "\n\n".join(parts) + "\n"


def _bars(ax, names: list[str], rows: list[dict], title: str, colors: list[str]) -> None:
    acc = [row["accuracy"] for row in rows]
    low = [row["accuracy"] - row["ci_low"] if row["ci_low"] is not None else 0 for row in rows]
    high = [row["ci_high"] - row["accuracy"] if row["ci_high"] is not None else 0
            for row in rows]
    x = range(len(rows))
    ax.bar(x, acc, color=colors, yerr=[low, high], capsize=4, ecolor="black")
    labels = [f"{textwrap.fill(n, 14)}\n(n={row['n']})" for n, row in zip(names, rows)]
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def render_png(r: dict, path: Path) -> None:
    """Accuracy per category and overall, and per prompt length, with interval bars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    level = _fmt_level(r["ci_level"])
    overall = {"accuracy": r["accuracy"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
               "n": r["n_questions"]}
    cats = list(r["per_category"])
    lens = list(r["per_length_bucket"])
    # A floor on the length panel's width: with one bucket and many categories it was too
    # narrow for its title, which ran off the right edge.
    fig, axes = plt.subplots(
        1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [len(cats) + 1, max(len(lens), 3)]}
    )
    _bars(axes[0], ["overall"] + cats, [overall] + [r["per_category"][c] for c in cats],
          "per category", ["tab:orange"] + ["tab:blue"] * len(cats))
    _bars(axes[1], lens, [r["per_length_bucket"][b] for b in lens],
          "per prompt length\n(tokens, K = 1,024)", ["tab:green"] * len(lens))
    axes[1].set_ylabel("")
    fig.suptitle(f"{r['model']['path']}: {r['summary']}\n"
                 f"bars: {level} cluster-bootstrap intervals over document sets", fontsize=9)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


def report_paths(run_dir: str | Path, out: str = "") -> dict[str, Path]:
    stem = "report" if not out else f"report-{out}"
    return {ext: Path(run_dir) / f"{stem}.{ext}" for ext in ("json", "md", "png")}


def write_report(run_dir: str | Path, report: dict) -> list[Path]:
    """Write report.json, report.md and report.png (report-OUT.* for `out`) atomically."""
    paths = report_paths(run_dir, report.get("out", ""))
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["md"], render_markdown(report))
    render_png(report, paths["png"])
    return list(paths.values())


def run_report(run_dirs, force: bool = False, out: str = "") -> str:
    """`lcr report`: build, write into the first run dir, return the summary line."""
    report = build_report(run_dirs, force=force, out=out)
    write_report(_as_list(run_dirs)[0], report)
    return report["summary"]


def compare_runs(
    run_a, run_b, force: bool = False, out: str = "", report_cfg: ReportSection | None = None
) -> dict:
    """Paired per-question comparison of A and B (each one run dir or a list pooled as seeds).

    The questions and the judge must agree (COMPARE_KEYS); the models may differ. With force,
    differing question sets are cut to the questions both hold.
    """
    dirs_a, loaded_a, idents_a, units_a, warnings = _load_runs(run_a, force, out)
    dirs_b, loaded_b, idents_b, units_b, more = _load_runs(run_b, force, out)
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
    rc = report_cfg or cfg_a.report
    result = paired_difference(scores_a, scores_b, clusters, rc.bootstrap, rc.ci_level, rc.seed)
    result.update(
        runs_a=[str(d) for d in dirs_a], runs_b=[str(d) for d in dirs_b],
        model_a=cfg_a.model.path, model_b=cfg_b.model.path, warnings=warnings,
    )
    return result


def compare_text(c: dict) -> str:
    level = _fmt_level(c["ci_level"])
    lines = [
        f"A: {', '.join(c['runs_a'])} ({c['model_a']}): accuracy {c['accuracy_a']:.3f}",
        f"B: {', '.join(c['runs_b'])} ({c['model_b']}): accuracy {c['accuracy_b']:.3f}",
        (f"A - B = {c['difference']:+.3f} {_interval(c['ci_low'], c['ci_high'], 3)} "
         f"({level} paired cluster bootstrap over {c['n_document_sets']} document sets; "
         f"{c['n_questions']} questions)"),
        (f"A beats B in {c['share_a_better']:.1%} of {c['bootstrap_resamples']:,} resamples, "
         f"B beats A in {c['share_b_better']:.1%}; per question: A better {c['n_a_better']}, "
         f"B better {c['n_b_better']}, equal {c['n_equal']}"),
        (f"clustered standard error of the difference {_num(c['se_clustered'])} "
         f"(naive {_num(c['se_naive'])})"),
    ]
    lines += [f"warning: {w}" for w in c["warnings"]]
    return "\n".join(lines)


def run_compare(run_a, run_b, force: bool = False, out: str = "") -> str:
    """`lcr compare`: the paired comparison as text; writes nothing, so no run dir changes."""
    return compare_text(compare_runs(run_a, run_b, force=force, out=out))
