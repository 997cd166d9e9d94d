"""Accuracy with honest confidence intervals: pure, seeded statistics on verdict units.

    s = summarize(units, B=10_000, level=0.95, seed=0)   # units: verdict records as dicts
    s["accuracy"], s["ci_low"], s["ci_high"]

Questions that share a document set are correlated (Miller, "Adding Error Bars to Evals",
arXiv:2411.00640), and AA-LCR has only 30 sets, so the interval is lcr.interval's: a small-sample
cluster t interval (CR2 variance, Bell-McCaffrey degrees of freedom, logit scale), an exact
binomial one where few sets hold a right (or a wrong) answer, and an exact bound where every
score is equal; never of zero width. It covers 94-96% in simulations of AA-LCR's shape for true
accuracies 0.15-0.85, and at least 0.93 at 0.03 and 0.97 (lcr.coverage). The percentile cluster
bootstrap (seeded), the clustered standard error's normal interval and the naive one are kept
beside it for contrast: they cover 91-93% and less. A row of fewer than MIN_SETS (5) document
sets gets no interval ("k sets: no interval"), one of fewer than ROUGH_SETS (10) is marked
`rough`. No file I/O here: every result is a function of the units and the seed.

Every number the report shows is computed here: `counts` (verdicts, generation failures, judge
errors, judge replies cut at the judge's limit, answers cut at max_new_tokens, the attention
that made the answers, structured modes), and each breakdown is a row of BREAKDOWNS, which
report.json, report.md and report.png all read.

A unit is a dict with at least `question_id`, `document_set_id` and `verdict`; optional are
`status` ("ok" when absent), `document_category`, `prompt_tokens`, `seed`, `sample` and `run`
(the index of its run directory when several are pooled; 0 when absent). A replicate is one
(run, seed) pair: per-seed breakdowns and the seed spread are over replicates.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from lcr.interval import KINDS as CI_KINDS
from lcr.interval import METHOD as CI_METHOD
from lcr.interval import cr2_variance, interval

VERDICTS = ("CORRECT", "INCORRECT", "INVALID")
K = 1024  # "128K" is the 131,072-token context window, so buckets count in units of 1,024
# (label, lowest prompt_tokens, first prompt_tokens beyond); None = no upper end.
LENGTH_BUCKETS = (
    ("<80K", 0, 80 * K),
    ("80-100K", 80 * K, 100 * K),
    ("100-110K", 100 * K, 110 * K),
    ("110-128K", 110 * K, 128 * K),
    ("128K+", 128 * K, None),
)
UNKNOWN_LENGTH = "unknown"
BOOTSTRAP_METHOD = "percentile cluster bootstrap over document sets"
ROUGH_SETS = 10  # a row of fewer document sets gets a rough interval
MIN_SETS = 5  # a row of fewer document sets gets no interval at all
SPREAD_MEASURE = (
    "per-question standard deviation (ddof=1) of per-seed scores, averaged over questions "
    "with at least 2 seeds"
)


def unit_score(unit: dict) -> float:
    """1 for a CORRECT verdict on a generated answer, 0 otherwise (INVALID and too_long too)."""
    verdict = unit["verdict"]
    if verdict not in VERDICTS:
        where = unit.get("key", unit.get("question_id"))
        raise ValueError(f"unit {where}: verdict {verdict!r}; expected one of {VERDICTS}")
    return 1.0 if verdict == "CORRECT" and unit.get("status") in (None, "ok") else 0.0


def replicate(unit: dict) -> tuple[int, int]:
    return (int(unit.get("run", 0)), int(unit.get("seed", 0)))


def question_scores(units) -> dict[str, float]:
    """question_id -> mean score over all its seeds and samples, sorted by question id."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for u in units:
        sums[u["question_id"]] += unit_score(u)
        counts[u["question_id"]] += 1
    return {q: sums[q] / counts[q] for q in sorted(sums)}


def replicate_scores(units) -> dict[str, dict[tuple[int, int], float]]:
    """question_id -> {(run, seed): mean score over that replicate's samples}."""
    sums: dict = defaultdict(lambda: defaultdict(float))
    counts: dict = defaultdict(lambda: defaultdict(int))
    for u in units:
        sums[u["question_id"]][replicate(u)] += unit_score(u)
        counts[u["question_id"]][replicate(u)] += 1
    return {
        q: {r: sums[q][r] / counts[q][r] for r in sorted(sums[q])} for q in sorted(sums)
    }


@dataclass
class QuestionTable:
    """One row per question, sorted by id."""

    ids: list[str]
    scores: np.ndarray  # mean over seeds and samples
    clusters: list[str]  # document set
    categories: list[str]
    prompt_tokens: list[int | None]  # the largest count seen among its units
    n_units: np.ndarray


def question_table(units) -> QuestionTable:
    """Aggregate units per question; a question's set and category must agree across units."""
    units = list(units)
    scores = question_scores(units)
    info: dict[str, dict] = {}
    for u in units:
        q = u["question_id"]
        row = info.setdefault(
            q, {"set": u["document_set_id"], "cat": u.get("document_category") or "(none)",
                "tokens": None, "n": 0},
        )
        for field, value in (("set", u["document_set_id"]),
                             ("cat", u.get("document_category") or "(none)")):
            if value != row[field]:
                what = "document set" if field == "set" else "category"
                raise ValueError(
                    f"question {q}: units disagree on its {what} ({row[field]!r} vs {value!r})"
                )
        tokens = u.get("prompt_tokens")
        if tokens is not None:
            row["tokens"] = max(tokens, row["tokens"] or 0)
        row["n"] += 1
    ids = list(scores)
    return QuestionTable(
        ids=ids,
        scores=np.array([scores[q] for q in ids], dtype=float),
        clusters=[info[q]["set"] for q in ids],
        categories=[info[q]["cat"] for q in ids],
        prompt_tokens=[info[q]["tokens"] for q in ids],
        n_units=np.array([info[q]["n"] for q in ids], dtype=int),
    )


def length_bucket(tokens: int | None) -> str:
    if tokens is None:
        return UNKNOWN_LENGTH
    for label, low, high in LENGTH_BUCKETS:
        if tokens >= low and (high is None or tokens < high):
            return label
    raise ValueError(f"prompt_tokens {tokens} is negative")


def _cluster_index(clusters) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct labels, each item's position among them)."""
    labels, inverse = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
    return labels, inverse.ravel()


def bootstrap_means(scores, clusters, B: int = 10_000, seed: int = 0) -> np.ndarray:
    """B cluster-bootstrap means of `scores`.

    Each resample draws the clusters (sorted by label) with replacement, as row b of
    `np.random.default_rng(seed).integers(0, n_clusters, size=(B, n_clusters))`, and its mean
    is the mean of the scores of all items in the drawn clusters, a cluster drawn twice
    counting twice.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        raise ValueError("no scores to bootstrap")
    labels, inverse = _cluster_index(clusters)
    if inverse.size != scores.size:
        raise ValueError(f"{scores.size} scores but {inverse.size} cluster labels")
    sums = np.bincount(inverse, weights=scores, minlength=labels.size)
    counts = np.bincount(inverse, minlength=labels.size).astype(float)
    draws = np.random.default_rng(seed).integers(0, labels.size, size=(B, labels.size))
    return sums[draws].sum(axis=1) / counts[draws].sum(axis=1)


def percentile_interval(samples, level: float = 0.95) -> tuple[float, float]:
    alpha = 1.0 - level
    low, high = np.quantile(np.asarray(samples), [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def cluster_bootstrap(
    scores, clusters, B: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, np.ndarray]:
    """Percentile cluster-bootstrap interval of the mean: (low, high, the B resampled means)."""
    samples = bootstrap_means(scores, clusters, B, seed)
    low, high = percentile_interval(samples, level)
    return low, high, samples


def naive_se(scores) -> float:
    """Standard error of the mean treating items as independent; nan below 2 items."""
    scores = np.asarray(scores, dtype=float)
    if scores.size < 2:
        return math.nan
    return float(np.sqrt(scores.var(ddof=1) / scores.size))


def clustered_se(scores, clusters) -> float:
    """Miller (2024) eq. 4: the naive variance plus the within-cluster covariance terms.

    SE^2 = SE_naive^2 + 1/n^2 * sum_c sum_{i != j in c} (s_i - mean)(s_j - mean).
    nan below 2 clusters: one cluster says nothing about variation between clusters.
    """
    scores = np.asarray(scores, dtype=float)
    labels, inverse = _cluster_index(clusters)
    if labels.size < 2 or scores.size < 2:
        return math.nan
    dev = scores - scores.mean()
    per_cluster = np.bincount(inverse, weights=dev, minlength=labels.size)
    cross = (np.sum(per_cluster**2) - np.sum(dev**2)) / scores.size**2
    return float(np.sqrt(naive_se(scores) ** 2 + cross))


def normal_interval(mean: float, se: float, level: float = 0.95) -> tuple[float, float]:
    """mean +- z * se, clipped to [0, 1] since scores are shares."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return max(0.0, mean - z * se), min(1.0, mean + z * se)


def _none_if_nan(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def no_interval(n_sets: int) -> str:
    return f"{n_sets} set{'s' if n_sets != 1 else ''}: no interval"


def estimate(scores, clusters, level: float = 0.95, share: bool = True) -> dict:
    """Mean, its interval (lcr.interval), standard errors, n and the number of clusters.

    Below MIN_SETS clusters there is no interval (`ci_note` says so): a few sets say next to
    nothing about the variation between sets, and numbers to three decimals would claim a
    certainty the data cannot give. Below ROUGH_SETS it is `rough`. `ci_kind` names which of
    lcr.interval's intervals it is (CI_KINDS), `ci_n_eff` the effective sample size of an
    exact one.
    """
    scores = np.asarray(scores, dtype=float)
    n_clusters = len(set(clusters))
    iv = interval(scores, clusters, level, share=share) if n_clusters >= MIN_SETS else None
    return {
        "accuracy": float(scores.mean()),
        "ci_low": iv.low if iv else None,
        "ci_high": iv.high if iv else None,
        "ci_df": iv.df if iv else None,
        "ci_kind": iv.kind if iv else None,
        "ci_n_eff": iv.n_eff if iv else None,
        "ci_note": None if iv else no_interval(n_clusters),
        "rough": n_clusters < ROUGH_SETS,
        "n": int(scores.size),
        "n_document_sets": n_clusters,
        "se_clustered": _none_if_nan(clustered_se(scores, clusters)),
        "se_cr2": _none_if_nan(math.sqrt(cr2_variance(scores, clusters))),
        "se_naive": _none_if_nan(naive_se(scores)),
    }


def _breakdown(table: QuestionTable, labels: list[str], order, level) -> dict:
    out = {}
    for name in order:
        rows = [i for i, label in enumerate(labels) if label == name]
        if rows:
            out[name] = estimate(table.scores[rows], [table.clusters[i] for i in rows], level)
    return out


def per_category(table: QuestionTable, level=0.95) -> dict:
    return _breakdown(table, table.categories, sorted(set(table.categories)), level)


def per_length_bucket(table: QuestionTable, level=0.95) -> dict:
    labels = [length_bucket(t) for t in table.prompt_tokens]
    order = [b[0] for b in LENGTH_BUCKETS] + [UNKNOWN_LENGTH]
    out = _breakdown(table, labels, order, level)
    bounds = {label: (low, high) for label, low, high in LENGTH_BUCKETS}
    for name, row in out.items():
        row["min_tokens"], row["max_tokens_excl"] = bounds.get(name, (None, None))
        low, high = row["min_tokens"], row["max_tokens_excl"]
        row["label"] = (f"{name} ({low:,}-{high:,})" if high else f"{name} (>= {low:,})"
                        if low is not None else f"{name} (no count)")
    return out


@dataclass(frozen=True)
class Breakdown:
    """One breakdown of the questions: report.json's `key`, report.md's table and, where
    `panel` is set, a panel of report.png."""

    key: str
    title: str  # report.md heading
    column: str  # report.md's first column
    rows: Callable[[QuestionTable, float], dict]  # name -> estimate(...) row
    panel: str = ""  # report.png panel title; "" = not in the figure
    color: str = "tab:blue"


BREAKDOWNS = (
    Breakdown("per_category", "Per category", "category", per_category,
              "per category", "tab:blue"),
    Breakdown("per_length_bucket", "Per prompt length (tokens incl. chat template)",
              "prompt length", per_length_bucket, "per prompt length\n(tokens, K = 1,024)",
              "tab:green"),
)


def per_seed(units, table: QuestionTable, level=0.95) -> list[dict]:
    """One entry per replicate (run, seed): accuracy over the questions it holds."""
    reps = replicate_scores(units)
    cluster_of = dict(zip(table.ids, table.clusters))
    by_rep: dict = defaultdict(dict)
    for q, per_rep in reps.items():
        for r, score in per_rep.items():
            by_rep[r][q] = score
    out = []
    for (run, s), scores in sorted(by_rep.items()):
        qids = sorted(scores)
        row = estimate([scores[q] for q in qids], [cluster_of[q] for q in qids], level)
        out.append({"run": run, "seed": s, **row})
    return out


def seed_spread(units, table: QuestionTable, level=0.95) -> dict:
    """Mean within-question standard deviation across seeds, with its interval.

    Also the share of questions whose seeds disagree: how often a rerun flips the answer.
    """
    reps = replicate_scores(units)
    cluster_of = dict(zip(table.ids, table.clusters))
    qids = [q for q in sorted(reps) if len(reps[q]) >= 2]
    empty = {"measure": SPREAD_MEASURE, "value": None, "ci_low": None, "ci_high": None,
             "n": 0, "n_document_sets": 0, "share_unstable": None}
    if not qids:
        return empty
    values = [np.array(list(reps[q].values())) for q in qids]
    spread = np.array([v.std(ddof=1) for v in values])
    row = estimate(spread, [cluster_of[q] for q in qids], level, share=False)
    unstable = float(np.mean([v.max() > v.min() for v in values]))
    return {**empty, "value": row["accuracy"], "ci_low": row["ci_low"],
            "ci_high": row["ci_high"], "n": row["n"],
            "n_document_sets": row["n_document_sets"], "share_unstable": unstable}


def _cut_at_max_new_tokens(units: list[dict]) -> int | None:
    """Answers whose generation stopped at sampling.max_new_tokens (finish_reason "length");
    None when a unit does not say (verdicts older than the field, no merge to read it from)."""
    if any("finish_reason" not in u for u in units):
        return None
    return sum(u["finish_reason"] == "length" for u in units)


def _attention(units: list[dict]) -> dict:
    made = Counter(u.get("attention", "not recorded") for u in units
                   if (u.get("status") or "ok") == "ok")
    return dict(sorted(made.items())) if set(made) - {"not recorded"} else {}


def judge_truncated(unit: dict) -> bool:
    """An INVALID verdict because the judge's reply was cut at judge.max_new_tokens."""
    return (unit["verdict"] == "INVALID" and not unit.get("judge_error")
            and unit.get("judge_finish_reason") == "length")


def counts(units) -> dict:
    """Every count the report shows, for these units. The judge's INVALIDs split into requests
    that failed or gave an unusable reply (`n_judge_errors`), replies cut at the judge's token
    limit (`n_judge_truncated`) and replies without a clear verdict (`n_unparsed`)."""
    units = list(units)
    verdicts = Counter(u["verdict"] for u in units)
    statuses = Counter(u.get("status") or "ok" for u in units)
    errors = sum(bool(u.get("judge_error")) for u in units)
    truncated = sum(judge_truncated(u) for u in units)
    return {
        "n_units": len(units),
        "n_correct": int(sum(unit_score(u) for u in units)),
        "n_incorrect": verdicts["INCORRECT"],
        "n_invalid": verdicts["INVALID"],
        "n_too_long": statuses["too_long"],
        "n_error": statuses["error"],
        "n_seeds": len({replicate(u) for u in units}),
        "n_samples": len({int(u.get("sample", 0)) for u in units}),
        "n_judge_errors": errors,
        "n_judge_truncated": truncated,
        "n_unparsed": verdicts["INVALID"] - errors - truncated,
        "n_cut_at_max_new_tokens": _cut_at_max_new_tokens(units),
        # which attention made the answers (engine.shared_prefix_attention); {} if none says
        "attention": _attention(units),
        # how the judge was asked; records older than judge.structured were free text
        "judge_structured": dict(sorted(Counter(
            u.get("judge_structured") or "none" for u in units
            if u.get("judge_backend") != "exact" and (u.get("raw") or u.get("judge_error"))
        ).items())),
    }


def summarize(units, B: int = 10_000, level: float = 0.95, seed: int = 0) -> dict:
    """Everything the report shows, as plain JSON-able values (None where undefined)."""
    units = list(units)
    if not units:
        raise ValueError("no units to summarize")
    table = question_table(units)
    overall = estimate(table.scores, table.clusters, level)
    acc, se_c, se_n = overall["accuracy"], overall["se_clustered"], overall["se_naive"]
    analytic = normal_interval(acc, se_c, level) if se_c is not None else (None, None)
    naive = normal_interval(acc, se_n, level) if se_n is not None else (None, None)
    boot = (cluster_bootstrap(table.scores, table.clusters, B, level, seed)[:2]
            if overall["n_document_sets"] >= 2 else (None, None))
    out = {
        **{k: v for k, v in overall.items() if k != "n"},
        "ci_level": level,
        "ci_method": CI_METHOD,
        "ci_kinds": CI_KINDS,
        "bootstrap_method": BOOTSTRAP_METHOD,
        "bootstrap_ci_low": boot[0],
        "bootstrap_ci_high": boot[1],
        "bootstrap_resamples": B,
        "bootstrap_seed": seed,
        "analytic_ci_low": analytic[0],
        "analytic_ci_high": analytic[1],
        "naive_ci_low": naive[0],
        "naive_ci_high": naive[1],
        "n_questions": overall["n"],
        **counts(units),
        **{b.key: b.rows(table, level) for b in BREAKDOWNS},
        "breakdowns": [{"key": b.key, "title": b.title, "column": b.column, "panel": b.panel,
                        "color": b.color} for b in BREAKDOWNS],
        "per_seed": per_seed(units, table, level),
        "seed_spread": seed_spread(units, table, level),
        "per_question": {
            q: {"score": float(s), "n_units": int(n), "document_set_id": c,
                "document_category": cat, "prompt_tokens": t}
            for q, s, n, c, cat, t in zip(table.ids, table.scores, table.n_units,
                                          table.clusters, table.categories, table.prompt_tokens)
        },
    }
    out["warnings"] = _warnings(out, table)
    return out


def _warnings(s: dict, table: QuestionTable) -> list[str]:
    out = []
    sets = s["n_document_sets"]
    if sets < MIN_SETS:
        out.append(f"only {sets} document set{'s' if sets != 1 else ''}: variation between "
                   "sets cannot be estimated, so no interval is given")
    elif sets < ROUGH_SETS:
        out.append(f"only {sets} document sets: the interval is rough")
    if s["ci_kind"] == "zero variance":
        out.append(f"every question scores {s['accuracy']:.3f}: the interval is an exact "
                   f"binomial bound on {s['ci_n_eff']:.1f} effective sets, not an estimate of "
                   "the spread")
    if s["n_invalid"] and s["n_invalid"] == s["n_units"]:
        out.append("every verdict is INVALID: the judge output was never parsed; "
                   "accuracy 0 says nothing about the model")
    elif s["n_invalid"]:
        out.append(f"{s['n_invalid']} INVALID verdicts counted as wrong")
    if s["n_judge_truncated"]:
        out.append(f"{s['n_judge_truncated']} judge replies were cut at judge.max_new_tokens "
                   "before a verdict (INVALID); `lcr judge RUN --retry-truncated N` asks "
                   "again with N tokens")
    if s["n_too_long"]:
        out.append(f"{s['n_too_long']} units too long for the context window counted as wrong")
    if s["n_error"]:
        out.append(f"{s['n_error']} units whose generation failed counted as wrong")
    if table.n_units.min() != table.n_units.max():
        out.append(
            f"questions have between {table.n_units.min()} and {table.n_units.max()} units; "
            "each question still weighs the same"
        )
    return out


def paired_difference(
    scores_a: dict[str, float],
    scores_b: dict[str, float],
    clusters: dict[str, str],
    B: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Mean of per-question differences A - B with its interval (lcr.interval, on [-1, 1]).

    The differences are paired by question, so what the sets share cancels. The percentile
    cluster bootstrap is kept for contrast: both runs are resampled through the same drawn
    document sets, and `share_a_better` is the share of resamples whose mean is above 0.
    """
    if set(scores_a) != set(scores_b):
        only_a, only_b = set(scores_a) - set(scores_b), set(scores_b) - set(scores_a)
        raise ValueError(
            f"paired comparison needs the same questions: {len(only_a)} only in A "
            f"(e.g. {sorted(only_a)[:3]}), {len(only_b)} only in B (e.g. {sorted(only_b)[:3]})"
        )
    qids = sorted(scores_a)
    diff = np.array([scores_a[q] - scores_b[q] for q in qids])
    labels = [clusters[q] for q in qids]
    samples = bootstrap_means(diff, labels, B, seed)
    n_clusters = len(set(labels))
    iv, boot = None, (None, None)
    if n_clusters >= MIN_SETS:
        iv = interval(diff, labels, level, bounds=(-1.0, 1.0), share=False)
    if n_clusters >= 2:
        boot = percentile_interval(samples, level)
    se_c, se_n = clustered_se(diff, labels), naive_se(diff)
    return {
        "difference": float(diff.mean()),
        "ci_low": iv.low if iv else None,
        "ci_high": iv.high if iv else None,
        "ci_df": iv.df if iv else None,
        "ci_kind": iv.kind if iv else None,
        "ci_note": None if iv else no_interval(n_clusters),
        "ci_level": level,
        "ci_method": "paired " + CI_METHOD,
        "bootstrap_method": "paired " + BOOTSTRAP_METHOD,
        "bootstrap_ci_low": boot[0],
        "bootstrap_ci_high": boot[1],
        "bootstrap_resamples": B,
        "bootstrap_seed": seed,
        "se_clustered": _none_if_nan(se_c),
        "se_naive": _none_if_nan(se_n),
        "share_a_better": float(np.mean(samples > 0)),
        "share_b_better": float(np.mean(samples < 0)),
        "accuracy_a": float(np.mean([scores_a[q] for q in qids])),
        "accuracy_b": float(np.mean([scores_b[q] for q in qids])),
        "n_questions": len(qids),
        "n_document_sets": n_clusters,
        "n_a_better": int(np.sum(diff > 0)),
        "n_b_better": int(np.sum(diff < 0)),
        "n_equal": int(np.sum(diff == 0)),
    }
