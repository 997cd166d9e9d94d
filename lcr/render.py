"""What a report looks like: the summary line, report.md, report.png and the compare text.

    text = render_markdown(report)          # report: the report.json dict (lcr.report)
    render_png(report, Path("report.png"))

Pure functions of the report dict, except render_png, which writes the (temporary) path it is
given: lcr.report makes the report's three files durable together. Nothing is counted here:
every number comes from the report dict (lcr.stats computes them), and the breakdown tables and
figure panels are the rows of its `breakdowns` list, in order. Breakdown rows of fewer than 10
document sets (`rough`) keep their interval in the tables, marked rough, and get no error bar in
the figure; rows of fewer than 5 sets have none ("k sets: no interval"). Every bar carries its
value, so an accuracy of 0 is a visible 0, not an empty axis.
"""

from __future__ import annotations

import re
from pathlib import Path

from lcr.provenance import setup_markdown
from lcr.stats import MIN_SETS, ROUGH_SETS

# How the summary line and the tables name each kind of interval (lcr.interval.KINDS).
KIND_NAMES = {"t": "cluster t interval", "exact": "exact binomial interval (Korn-Graubard)",
              "zero variance": "exact binomial bound (every score equal)"}
KIND_MARKS = {"t": "", "exact": " exact", "zero variance": " bound, all equal"}


def _fmt_level(level: float) -> str:
    return f"{level * 100:g}%"


def _interval(low, high, digits: int = 2) -> str:
    if low is None:
        return "[n/a]"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _sets(n: int) -> str:
    return f"{n} set{'s' if n != 1 else ''}"


def _interval_name(r: dict) -> str:
    if r.get("ci_low") is None:
        return f"no interval: {_sets(r['n_document_sets'])}"
    name = KIND_NAMES.get(r.get("ci_kind") or "t", "cluster t interval")
    return f"{_fmt_level(r['ci_level'])} {name} over {r['n_document_sets']} document sets"


def summary_line(r: dict) -> str:
    reps = f"{r['n_questions']} questions x {r['n_seeds']} seed{'s' if r['n_seeds'] != 1 else ''}"
    if r["n_samples"] > 1:
        reps += f" x {r['n_samples']} samples"
    parts = [
        _interval_name(r),
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
    """A breakdown row's interval: none below MIN_SETS sets, marked rough below ROUGH_SETS,
    its kind named where it is not the t interval."""
    if row["ci_low"] is None:
        return row.get("ci_note") or f"{_sets(row['n_document_sets'])}: no interval"
    text = _interval(row["ci_low"], row["ci_high"], 3) + KIND_MARKS.get(row.get("ci_kind"), "")
    return f"{text} rough ({_sets(row['n_document_sets'])})" if row.get("rough") else text


def _breakdown_rows(breakdown: dict) -> list[list]:
    return [[row.get("label", name), row["n"], row["n_document_sets"], _num(row["accuracy"]),
             _row_interval(row)] for name, row in breakdown.items()]


def _judge_modes(modes: dict) -> str:
    return ", ".join(f"{mode} {n}" for mode, n in modes.items()) or "n/a"


def _overview(r: dict) -> list[list]:
    level = _fmt_level(r["ci_level"])
    df = f" (df = {r['ci_df']:.1f})" if r.get("ci_df") else ""
    kind = r.get("ci_kind")
    used = (f"; this one: {r['ci_kinds'][kind]}" + (
        f", n_eff = {r['ci_n_eff']:.1f}" if r.get("ci_n_eff") else "")) if kind and kind != "t" \
        and r.get("ci_kinds") else ""
    return [
        ["accuracy", _num(r["accuracy"])],
        [f"{level} interval: {r['ci_method']}{df}{used}",
         _interval(r["ci_low"], r["ci_high"], 3) if r["ci_low"] is not None
         else r.get("ci_note") or "n/a"],
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
        ["invalid verdicts: judge request failed or unusable / judge reply cut at "
         "judge.max_new_tokens / reply without a verdict",
         f"{r['n_judge_errors']} / {r['n_judge_truncated']} / {r['n_unparsed']}"],
        ["judge replies by structured mode (choice, json_schema; none = free text)",
         _judge_modes(r.get("judge_structured") or {})],
        ["answers cut at max_new_tokens (finish_reason length)",
         _num(r.get("n_cut_at_max_new_tokens"), 0)],
    ]


def _spread_interval(spread: dict) -> str:
    if spread["ci_low"] is None:
        return f"({_sets(spread['n_document_sets'])}: no interval)"
    return _interval(spread["ci_low"], spread["ci_high"], 3)


def render_markdown(r: dict) -> str:
    level = _fmt_level(r["ci_level"])
    head = ["n questions", "document sets", "accuracy", f"{level} interval"]
    spread = r["seed_spread"]
    seed_rows = [
        [row["run"], row["run_dir"], row["seed"], row["n"], _num(row["accuracy"]),
         _row_interval({**row, "rough": False})]
        for row in r["per_seed"]
    ]
    run_rows = [[i, d, f] for i, (d, f) in enumerate(zip(r["runs"], r["verdicts_files"]))]
    rough = (f"Rows of fewer than {ROUGH_SETS} document sets have a rough interval (its set "
             f"count says how rough); rows of fewer than {MIN_SETS} sets have none. \"exact\" "
             "marks a Korn-Graubard exact binomial interval (few sets hold a right or a wrong "
             "answer), \"bound, all equal\" an exact bound where every score is equal.")
    parts = [
        f"# AA-LCR report: {r['model']['path']}",
        f"`{r['summary']}`",
        _table(["", "value"], _overview(r)),
    ]
    for b in r["breakdowns"]:
        parts += [f"## {b['title']}", _table([b["column"]] + head, _breakdown_rows(r[b["key"]]))]
    parts += [
        rough,
        "## Per seed",
        _table(["run", "run dir", "seed", "n questions", "accuracy", f"{level} interval"],
               seed_rows),
        "## Spread across seeds",
        (f"{spread['measure']}: {_num(spread['value'])} {_spread_interval(spread)} over "
         f"{spread['n']} questions; "
         f"the seeds disagree on {spread['share_unstable']:.0%} of them."
         if spread["n"] else "One seed per question: no spread to measure."),
    ]
    if r.get("provenance"):
        parts += ["## Setup", setup_markdown(r)]
    parts += [
        "## Runs",
        (f"Model `{r['model']['path']}` (system prompt {r['model']['system_prompt']}); judge "
         f"`{r['judge']['model']}` ({r['judge']['backend']}, {r['judge']['prompt_text']}); "
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
    """Accuracy bars with interval whiskers and value labels; rough rows (few sets) get no
    whiskers and a pale bar; a bar of 0 gets a visible line at 0 besides its label."""
    acc = [row["accuracy"] for row in rows]
    firm = [i for i, row in enumerate(rows) if row["ci_low"] is not None and not row.get("rough")]
    bars = ax.bar(range(len(rows)), acc, color=colors)
    for i, bar in enumerate(bars.patches):
        bar.set_alpha(1.0 if i in firm else 0.45)
    zeros = [i for i, a in enumerate(acc) if a == 0]
    if zeros:  # a zero-height bar draws nothing: mark where it stands
        ax.hlines([0] * len(zeros), [i - 0.4 for i in zeros], [i + 0.4 for i in zeros],
                  colors=[colors[i] for i in zeros], linewidth=3, zorder=3)
    if firm:
        ax.errorbar(firm, [acc[i] for i in firm], fmt="none", capsize=4, ecolor="black",
                    yerr=[[acc[i] - rows[i]["ci_low"] for i in firm],
                          [rows[i]["ci_high"] - acc[i] for i in firm]])
    for i, row in enumerate(rows):  # the value above the bar (and above its whisker)
        top = row["ci_high"] if i in firm else acc[i]
        ax.text(i, min(top + 0.02, 0.97), f"{acc[i]:.2f}", ha="center", va="bottom",
                fontsize=7)
    labels = [f"{wrap_label(n)}\n(n={row['n']}, {_sets(row['n_document_sets'])})"
              for n, row in zip(names, rows)]
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def figure(r: dict):
    """Accuracy overall and per row of each breakdown with a panel, with interval bars (the
    caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    level = _fmt_level(r["ci_level"])
    overall = {"accuracy": r["accuracy"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
               "n": r["n_questions"], "n_document_sets": r["n_document_sets"],
               "rough": r["n_document_sets"] < ROUGH_SETS}
    panels = [b for b in r["breakdowns"] if b["panel"]]
    widths = [len(r[b["key"]]) for b in panels]
    widths[0] += 1  # the overall bar
    # A floor on a panel's width: with one bucket and many categories the length panel was
    # too narrow for its title, which ran off the right edge.
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 5), squeeze=False,
                             gridspec_kw={"width_ratios": [max(w, 3) for w in widths]})
    for k, (ax, b) in enumerate(zip(axes[0], panels)):
        names, rows = list(r[b["key"]]), list(r[b["key"]].values())
        colors = [b["color"]] * len(rows)
        if k == 0:
            names, rows, colors = ["overall"] + names, [overall] + rows, ["tab:orange"] + colors
        _bars(ax, names, rows, b["panel"], colors)
        if k:
            ax.set_ylabel("")
    fig.suptitle(f"{r['model']['path']}: {r['summary']}\n"
                 f"bars: {level} intervals over document sets (lcr.interval); none (pale bar) "
                 f"for rows of fewer than {ROUGH_SETS} sets", fontsize=9)
    fig.tight_layout()
    return fig


def render_png(r: dict, path: Path) -> None:
    from matplotlib import pyplot as plt

    fig = figure(r)
    try:
        fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)


def _compare_kind(c: dict, level: str) -> str:
    if c["ci_low"] is None:
        return c.get("ci_note") or "no interval"
    if c.get("ci_kind") == "zero variance":
        return f"{level} exact bound: every question's difference is equal"
    return f"{level} paired cluster t interval"


def compare_text(c: dict) -> str:
    level = _fmt_level(c["ci_level"])
    df = f", {c['ci_df']:.1f} df" if c.get("ci_df") else ""
    lines = [
        f"A: {', '.join(c['runs_a'])} ({c['model_a']}): accuracy {c['accuracy_a']:.3f}",
        f"B: {', '.join(c['runs_b'])} ({c['model_b']}): accuracy {c['accuracy_b']:.3f}",
        (f"A - B = {c['difference']:+.3f} {_interval(c['ci_low'], c['ci_high'], 3)} "
         f"({_compare_kind(c, level)}{df} over {c['n_document_sets']} document sets; "
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
