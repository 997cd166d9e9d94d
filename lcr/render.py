"""What a report looks like: the summary line, report.md, report.png and the compare text.

    text = render_markdown(report)          # report: the report.json dict (lcr.report)
    render_png(report, Path("report.png"))

Pure functions of the report dict, except render_png, which writes the (temporary) path it is
given: lcr.report makes the report's three files durable together.
Breakdown rows of fewer than 10 document sets (`rough`) keep their interval in the tables,
marked rough, and get no error bar in the figure.
"""

from __future__ import annotations

import re
from pathlib import Path

from lcr.provenance import setup_markdown
from lcr.stats import LENGTH_BUCKETS, ROUGH_SETS


def _fmt_level(level: float) -> str:
    return f"{level * 100:g}%"


def _interval(low, high, digits: int = 2) -> str:
    if low is None:
        return "[n/a]"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _sets(n: int) -> str:
    return f"{n} set{'s' if n != 1 else ''}"


def summary_line(r: dict) -> str:
    reps = f"{r['n_questions']} questions x {r['n_seeds']} seed{'s' if r['n_seeds'] != 1 else ''}"
    if r["n_samples"] > 1:
        reps += f" x {r['n_samples']} samples"
    parts = [
        f"{_fmt_level(r['ci_level'])} cluster t interval over {r['n_document_sets']} "
        "document sets",
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


def _row_interval(row: dict) -> str:
    """A breakdown row's interval: n/a below 2 sets, marked rough below ROUGH_SETS."""
    if row["ci_low"] is None:
        return f"n/a ({_sets(row['n_document_sets'])})"
    text = _interval(row["ci_low"], row["ci_high"], 3)
    return f"{text} rough ({_sets(row['n_document_sets'])})" if row.get("rough") else text


def _breakdown_rows(breakdown: dict) -> list[list]:
    return [[name, row["n"], row["n_document_sets"], _num(row["accuracy"]), _row_interval(row)]
            for name, row in breakdown.items()]


def _overview(r: dict) -> list[list]:
    level = _fmt_level(r["ci_level"])
    df = f" (df = {r['ci_df']:.1f})" if r.get("ci_df") else ""
    return [
        ["accuracy", _num(r["accuracy"])],
        [f"{level} interval: {r['ci_method']}{df}", _interval(r["ci_low"], r["ci_high"], 3)],
        [(f"{r['bootstrap_method']} ({r['bootstrap_resamples']:,} resamples, seed "
          f"{r['bootstrap_seed']}; too narrow with few sets, for contrast)"),
         _interval(r["bootstrap_ci_low"], r["bootstrap_ci_high"], 3)],
        ["clustered standard error (Miller 2024) and its normal interval (too narrow with few "
         "sets, for contrast)",
         f"{_num(r['se_clustered'])} {_interval(r['analytic_ci_low'], r['analytic_ci_high'], 3)}"],
        ["naive standard error, ignoring document sets (too narrow; for contrast)",
         f"{_num(r['se_naive'])} {_interval(r['naive_ci_low'], r['naive_ci_high'], 3)}"],
        ["questions / document sets", f"{r['n_questions']} / {r['n_document_sets']}"],
        ["seeds (run, seed pairs) / samples per seed", f"{r['n_seeds']} / {r['n_samples']}"],
        ["units: correct / incorrect / invalid",
         f"{r['n_units']}: {r['n_correct']} / {r['n_incorrect']} / {r['n_invalid']}"],
        ["generation: too long / error", f"{r['n_too_long']} / {r['n_error']}"],
        ["invalid verdicts: judge request failed / reply without a verdict",
         f"{r.get('n_judge_errors', 'n/a')} / {r.get('n_unparsed', 'n/a')}"],
        ["answers cut at max_new_tokens (finish_reason length)",
         _num(r.get("n_cut_at_max_new_tokens"), 0)],
    ]


def render_markdown(r: dict) -> str:
    level = _fmt_level(r["ci_level"])
    head = ["n questions", "document sets", "accuracy", f"{level} interval"]
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
    rough = (f"Rows of fewer than {ROUGH_SETS} document sets have a rough interval (its set "
             "count says how rough); a row of one set has none.")
    parts = [
        f"# AA-LCR report: {r['model']['path']}",
        f"`{r['summary']}`",
        _table(["", "value"], _overview(r)),
        "## Per category",
        _table(["category"] + head, _breakdown_rows(r["per_category"])),
        "## Per prompt length (tokens incl. chat template)",
        _table(["prompt length"] + head, length_rows),
        rough,
        "## Per seed",
        _table(["run", "run dir", "seed", "n questions", "accuracy", f"{level} interval"],
               seed_rows),
        "## Spread across seeds",
        (f"{spread['measure']}: {_num(spread['value'])} "
         f"{_interval(spread['ci_low'], spread['ci_high'], 3)} over {spread['n']} questions; "
         f"the seeds disagree on {spread['share_unstable']:.0%} of them."
         if spread["n"] else "One seed per question: no spread to measure."),
    ]
    if r.get("provenance"):
        parts += ["## Setup", setup_markdown(r)]
    parts += [
        "## Runs",
        (f"Model `{r['model']['path']}` (system prompt {r['model']['system_prompt']}); judge "
         f"`{r['judge']['model']}` ({r['judge']['backend']}, prompt {r['judge']['prompt']}); "
         f"data {r['data']['source']} @ {r['data']['revision']}."),
        _table(["run", "run dir", "verdicts"], run_rows),
    ]
    if r["warnings"]:
        parts += ["## Warnings", "\n".join(f"- {w}" for w in r["warnings"])]
    return "\n\n".join(parts) + "\n"


def wrap_label(name: str, width: int = 14) -> str:
    """Break a label at spaces or after '_', '-' and '/', never inside a word: a word longer
    than `width` keeps its line ("Government_Consultations" -> "Government_\\nConsultations")."""
    lines: list[str] = []
    for word in name.split(" "):
        for i, piece in enumerate(re.findall(r"[^_/-]*[_/-]+|[^_/-]+", word) or [word]):
            sep = " " if i == 0 and lines and lines[-1] else ""
            if lines and len(lines[-1]) + len(sep) + len(piece) <= width:
                lines[-1] += sep + piece
            else:
                lines.append(piece)
    return "\n".join(lines)


def _bars(ax, names: list[str], rows: list[dict], title: str, colors: list[str]) -> None:
    """Accuracy bars with interval whiskers; rough rows (few sets) get none and a pale bar."""
    acc = [row["accuracy"] for row in rows]
    firm = [i for i, row in enumerate(rows) if row["ci_low"] is not None and not row.get("rough")]
    bars = ax.bar(range(len(rows)), acc, color=colors)
    for i, bar in enumerate(bars.patches):
        bar.set_alpha(1.0 if i in firm else 0.45)
    if firm:
        ax.errorbar(firm, [acc[i] for i in firm], fmt="none", capsize=4, ecolor="black",
                    yerr=[[acc[i] - rows[i]["ci_low"] for i in firm],
                          [rows[i]["ci_high"] - acc[i] for i in firm]])
    labels = [f"{wrap_label(n)}\n(n={row['n']}, {_sets(row['n_document_sets'])})"
              for n, row in zip(names, rows)]
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
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
               "n": r["n_questions"], "n_document_sets": r["n_document_sets"],
               "rough": r["n_document_sets"] < ROUGH_SETS}
    cats = list(r["per_category"])
    lens = list(r["per_length_bucket"])
    # A floor on the length panel's width: with one bucket and many categories it was too
    # narrow for its title, which ran off the right edge.
    fig, axes = plt.subplots(
        1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [len(cats) + 1, max(len(lens), 3)]}
    )
    _bars(axes[0], ["overall"] + cats, [overall] + [r["per_category"][c] for c in cats],
          "per category", ["tab:orange"] + ["tab:blue"] * len(cats))
    _bars(axes[1], lens, [r["per_length_bucket"][b] for b in lens],
          "per prompt length\n(tokens, K = 1,024)", ["tab:green"] * len(lens))
    axes[1].set_ylabel("")
    fig.suptitle(f"{r['model']['path']}: {r['summary']}\n"
                 f"bars: {level} cluster t intervals over document sets; none (pale bar) for "
                 f"rows of fewer than {ROUGH_SETS} sets", fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)


def compare_text(c: dict) -> str:
    level = _fmt_level(c["ci_level"])
    df = f", {c['ci_df']:.1f} df" if c.get("ci_df") else ""
    lines = [
        f"A: {', '.join(c['runs_a'])} ({c['model_a']}): accuracy {c['accuracy_a']:.3f}",
        f"B: {', '.join(c['runs_b'])} ({c['model_b']}): accuracy {c['accuracy_b']:.3f}",
        (f"A - B = {c['difference']:+.3f} {_interval(c['ci_low'], c['ci_high'], 3)} "
         f"({level} paired cluster t interval{df} over {c['n_document_sets']} document sets; "
         f"{c['n_questions']} questions)"),
        (f"percentile paired cluster bootstrap, for contrast: "
         f"{_interval(c['bootstrap_ci_low'], c['bootstrap_ci_high'], 3)}; A beats B in "
         f"{c['share_a_better']:.1%} of {c['bootstrap_resamples']:,} resamples, B beats A in "
         f"{c['share_b_better']:.1%}; per question: A better {c['n_a_better']}, "
         f"B better {c['n_b_better']}, equal {c['n_equal']}"),
        (f"clustered standard error of the difference {_num(c['se_clustered'])} "
         f"(naive {_num(c['se_naive'])})"),
    ]
    lines += [f"warning: {w}" for w in c["warnings"]]
    return "\n".join(lines)
