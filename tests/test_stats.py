"""Statistics: exact accuracy, intervals checked against independent computations, coverage."""

import time

import numpy as np
import pytest
import scipy.stats

from lcr.stats import (
    LENGTH_BUCKETS,
    cluster_bootstrap,
    clustered_se,
    length_bucket,
    naive_se,
    normal_interval,
    paired_difference,
    question_scores,
    question_table,
    summarize,
    unit_score,
)


def unit(q, s, verdict, seed=0, sample=0, status="ok", cat="legal", tokens=90_000, run=0):
    return {"key": f"{q}:{seed}:{sample}", "question_id": q, "document_set_id": s,
            "document_category": cat, "verdict": verdict, "status": status, "seed": seed,
            "sample": sample, "prompt_tokens": tokens, "run": run}


# (question, set, category, verdicts of seeds 0 and 1, statuses); scores worked out by hand.
FIXED = [
    ("q1", "A", "legal", ("CORRECT", "CORRECT"), ("ok", "ok")),  # 1
    ("q2", "A", "legal", ("CORRECT", "INCORRECT"), ("ok", "ok")),  # 1/2
    ("q3", "B", "legal", ("INVALID", "CORRECT"), ("ok", "ok")),  # 1/2
    ("q4", "B", "finance", ("INCORRECT", "INCORRECT"), ("ok", "ok")),  # 0
    ("q5", "C", "finance", ("CORRECT", "CORRECT"), ("too_long", "ok")),  # 1/2
    ("q6", "C", "finance", ("CORRECT", "INCORRECT"), ("ok", "error")),  # 1/2
    ("q7", "D", "finance", ("CORRECT", "CORRECT"), ("ok", "ok")),  # 1
]
FIXED_SCORES = {"q1": 1, "q2": 0.5, "q3": 0.5, "q4": 0, "q5": 0.5, "q6": 0.5, "q7": 1}


def fixed_units():
    return [unit(q, s, v, seed=i, status=st, cat=c)
            for q, s, c, vs, sts in FIXED for i, (v, st) in enumerate(zip(vs, sts))]


def independent_percentile_bootstrap(scores_by_q, set_of_q, B, level, seed):
    """The cluster bootstrap written out plainly: one loop per resample, lists of scores."""
    sets = sorted(set(set_of_q.values()))
    members = {s: [scores_by_q[q] for q in scores_by_q if set_of_q[q] == s] for s in sets}
    draws = np.random.default_rng(seed).integers(0, len(sets), size=(B, len(sets)))
    means = []
    for row in draws:
        pooled = [x for c in row for x in members[sets[c]]]
        means.append(sum(pooled) / len(pooled))
    alpha = 1 - level
    return np.quantile(means, [alpha / 2, 1 - alpha / 2])


def test_unit_score_counts_only_correct_generated_answers():
    assert unit_score(unit("q", "s", "CORRECT")) == 1.0
    assert unit_score(unit("q", "s", "INCORRECT")) == 0.0
    assert unit_score(unit("q", "s", "INVALID")) == 0.0
    assert unit_score(unit("q", "s", "CORRECT", status="too_long")) == 0.0
    assert unit_score({"question_id": "q", "document_set_id": "s", "verdict": "CORRECT"}) == 1.0
    with pytest.raises(ValueError, match="verdict 'maybe'"):
        unit_score(unit("q", "s", "maybe"))


def test_fixed_verdicts_give_exact_accuracy_and_counts():
    units = fixed_units()
    assert question_scores(units) == FIXED_SCORES
    s = summarize(units, B=2000, level=0.9, seed=7)
    assert s["accuracy"] == pytest.approx(4 / 7, abs=1e-15)
    assert (s["n_questions"], s["n_units"], s["n_seeds"], s["n_samples"]) == (7, 14, 2, 1)
    assert (s["n_correct"], s["n_invalid"], s["n_too_long"], s["n_error"]) == (8, 1, 1, 1)
    assert s["n_document_sets"] == 4
    assert s["per_category"]["legal"]["accuracy"] == pytest.approx(2 / 3)
    assert s["per_category"]["finance"]["accuracy"] == pytest.approx(0.5)
    assert [r["accuracy"] for r in s["per_seed"]] == pytest.approx([4 / 7, 4 / 7])


def test_interval_matches_independent_computation_with_same_rng():
    units = fixed_units()
    set_of_q = {q: s for q, s, *_ in FIXED}
    expected = independent_percentile_bootstrap(FIXED_SCORES, set_of_q, 3000, 0.9, 11)
    s = summarize(units, B=3000, level=0.9, seed=11)
    assert [s["ci_low"], s["ci_high"]] == pytest.approx(expected, abs=1e-12)
    table = question_table(units)
    low, high, samples = cluster_bootstrap(table.scores, table.clusters, 3000, 0.9, 11)
    assert [low, high] == pytest.approx(expected, abs=1e-12)
    assert samples.shape == (3000,)


def test_interval_on_aa_lcr_shape_matches_independent_computation():
    rng = np.random.default_rng(3)
    set_of_q = {f"q{i:03d}": f"set{i % 30:02d}" for i in range(100)}
    scores = {q: rng.integers(0, 4) / 3 for q in set_of_q}
    qs = sorted(scores)
    low, high, _ = cluster_bootstrap([scores[q] for q in qs], [set_of_q[q] for q in qs],
                                     2000, 0.95, 5)
    expected = independent_percentile_bootstrap(scores, set_of_q, 2000, 0.95, 5)
    assert [low, high] == pytest.approx(expected, abs=1e-12)


def test_without_clusters_the_interval_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(0)
    scores = rng.binomial(3, 0.35, size=100) / 3  # 100 questions x 3 seeds
    clusters = [f"set{i}" for i in range(100)]  # one question per set
    low, high, _ = cluster_bootstrap(scores, clusters, 10_000, 0.95, 1)
    ref = scipy.stats.bootstrap((scores,), np.mean, n_resamples=10_000, method="percentile",
                                confidence_level=0.95, rng=np.random.default_rng(2))
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert high == pytest.approx(ref.confidence_interval.high, abs=0.01)
    # with singleton clusters the clustered standard error is the naive one
    assert clustered_se(scores, clusters) == pytest.approx(naive_se(scores))


def test_bootstrap_of_30_sets_is_fast():
    rng = np.random.default_rng(0)
    scores = rng.random(100)
    clusters = [f"s{i % 30}" for i in range(100)]
    start = time.perf_counter()
    cluster_bootstrap(scores, clusters, 10_000, 0.95, 0)
    assert time.perf_counter() - start < 0.5


def test_clustered_se_exceeds_naive_when_sets_are_correlated():
    scores = np.array([1, 1, 1, 0, 0, 0, 1, 1, 0, 0], dtype=float)
    clusters = ["a", "a", "a", "b", "b", "b", "c", "c", "d", "d"]
    assert clustered_se(scores, clusters) > naive_se(scores)
    # Miller eq. 4 written out by hand
    d = scores - scores.mean()
    cross = sum(d[i] * d[j] for i in range(10) for j in range(10)
                if i != j and clusters[i] == clusters[j])
    assert clustered_se(scores, clusters) == pytest.approx(
        np.sqrt(scores.var(ddof=1) / 10 + cross / 100))


# --- coverage: synthetic clustered evals of known true accuracy -----------------------------

SET_SIZES = [4] * 10 + [3] * 20  # 100 questions over 30 document sets, as in AA-LCR


def synthetic_eval(rng, truth, n_seeds=3, set_conc=2.0, question_conc=4.0):
    """Per-question scores: set difficulty ~ Beta(mean truth), question ~ Beta(mean set's),
    each seed a coin of the question's probability. The expected accuracy is `truth`."""
    p_set = rng.beta(truth * set_conc, (1 - truth) * set_conc, size=len(SET_SIZES))
    p_q = np.repeat(p_set, SET_SIZES)
    p_q = rng.beta(p_q * question_conc + 1e-12, (1 - p_q) * question_conc + 1e-12)
    return rng.binomial(n_seeds, p_q) / n_seeds


def test_cluster_interval_covers_the_truth_and_naive_interval_does_not():
    truth, runs, level = 0.3, 400, 0.95
    clusters = np.repeat([f"set{i:02d}" for i in range(len(SET_SIZES))], SET_SIZES)
    rng = np.random.default_rng(2024)
    covered = naive_covered = analytic_covered = 0
    for r in range(runs):
        scores = synthetic_eval(rng, truth)
        low, high, _ = cluster_bootstrap(scores, clusters, 1000, level, seed=r)
        covered += low <= truth <= high
        lo, hi = normal_interval(scores.mean(), naive_se(scores), level)
        naive_covered += lo <= truth <= hi
        lo, hi = normal_interval(scores.mean(), clustered_se(scores, clusters), level)
        analytic_covered += lo <= truth <= hi
    coverage, naive, analytic = covered / runs, naive_covered / runs, analytic_covered / runs
    assert 0.92 <= coverage <= 0.98, coverage
    assert 0.90 <= analytic <= 0.98, analytic
    assert naive < 0.88, naive  # ignoring the document sets under-covers
    assert naive < coverage - 0.05


# --- breakdowns ------------------------------------------------------------------------------

def test_length_buckets_use_1024_token_k():
    assert [b[0] for b in LENGTH_BUCKETS] == ["<80K", "80-100K", "100-110K", "110-128K",
                                               "128K+"]
    assert length_bucket(0) == "<80K"
    assert length_bucket(81_919) == "<80K"
    assert length_bucket(81_920) == "80-100K"
    assert length_bucket(102_400) == "100-110K"
    assert length_bucket(112_640) == "110-128K"
    assert length_bucket(131_071) == "110-128K"
    assert length_bucket(131_072) == "128K+"
    assert length_bucket(None) == "unknown"


def test_per_length_bucket_and_seed_spread():
    units = [
        unit("q1", "A", "CORRECT", seed=0, tokens=50_000),
        unit("q1", "A", "INCORRECT", seed=1, tokens=50_000),
        unit("q2", "B", "CORRECT", seed=0, tokens=140_000, status="ok"),
        unit("q2", "B", "CORRECT", seed=1, tokens=None),
        unit("q3", "C", "INCORRECT", seed=0, tokens=None),
        unit("q3", "C", "INCORRECT", seed=1, tokens=None),
    ]
    s = summarize(units, B=500, seed=0)
    buckets = s["per_length_bucket"]
    assert list(buckets) == ["<80K", "128K+", "unknown"]
    assert buckets["<80K"]["accuracy"] == 0.5 and buckets["<80K"]["n"] == 1
    assert buckets["128K+"]["min_tokens"] == 131_072
    assert buckets["unknown"]["accuracy"] == 0.0
    spread = s["seed_spread"]
    assert spread["n"] == 3
    assert spread["value"] == pytest.approx(np.sqrt(0.5) / 3)  # std of (1, 0) is sqrt(1/2)
    assert spread["share_unstable"] == pytest.approx(1 / 3)
    assert spread["ci_low"] <= spread["value"] <= spread["ci_high"]


def test_one_seed_has_no_spread():
    s = summarize([unit(f"q{i}", f"s{i}", "CORRECT") for i in range(5)], B=100)
    assert s["seed_spread"]["n"] == 0 and s["seed_spread"]["value"] is None


def test_units_disagreeing_on_document_set_are_an_error():
    with pytest.raises(ValueError, match="q1.*document set"):
        question_table([unit("q1", "A", "CORRECT"), unit("q1", "B", "CORRECT", seed=1)])


# --- edge cases ------------------------------------------------------------------------------

def aa_lcr_units(verdict):
    return [unit(f"q{i:03d}", f"set{i % 30:02d}", verdict, seed=k)
            for i in range(100) for k in range(3)]


@pytest.mark.parametrize("verdict,acc", [("CORRECT", 1.0), ("INCORRECT", 0.0)])
def test_all_correct_and_all_wrong(verdict, acc):
    s = summarize(aa_lcr_units(verdict), B=1000)
    assert s["accuracy"] == acc
    assert (s["ci_low"], s["ci_high"]) == (acc, acc)
    assert (s["naive_ci_low"], s["naive_ci_high"]) == (acc, acc)
    assert s["se_clustered"] == 0 and s["se_naive"] == 0
    assert s["seed_spread"]["value"] == 0
    assert s["warnings"] == []


def test_invalid_only():
    s = summarize(aa_lcr_units("INVALID"), B=1000)
    assert s["accuracy"] == 0.0
    assert s["n_invalid"] == s["n_units"] == 300
    assert s["n_correct"] == 0
    assert any("every verdict is INVALID" in w for w in s["warnings"])


def test_one_cluster_gives_no_interval():
    units = [unit(f"q{i}", "only", "CORRECT" if i % 2 else "INCORRECT") for i in range(6)]
    s = summarize(units, B=1000)
    assert s["accuracy"] == 0.5
    assert s["n_document_sets"] == 1
    assert s["ci_low"] is None and s["ci_high"] is None and s["se_clustered"] is None
    assert s["se_naive"] is not None  # the naive error still pretends to know
    assert any("only 1 document set" in w for w in s["warnings"])
    # the raw bootstrap of one cluster is degenerate, which is why the summary refuses it
    low, high, _ = cluster_bootstrap([0, 1, 0, 1], ["x"] * 4, 100)
    assert low == high == 0.5


def test_empty_input_is_an_error():
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        cluster_bootstrap([], [])


# --- paired comparison -----------------------------------------------------------------------

def test_paired_difference():
    rng = np.random.default_rng(1)
    qs = [f"q{i:03d}" for i in range(100)]
    clusters = {q: f"set{i % 30}" for i, q in enumerate(qs)}
    b = {q: float(rng.integers(0, 2)) for q in qs}
    same = paired_difference(b, dict(b), clusters, B=1000)
    assert same["difference"] == 0 and (same["ci_low"], same["ci_high"]) == (0, 0)
    assert same["share_a_better"] == 0 and same["n_equal"] == 100
    better = {q: 1.0 for q in qs}
    c = paired_difference(better, b, clusters, B=1000, seed=3)
    assert c["difference"] == pytest.approx(1 - np.mean(list(b.values())))
    assert 0 < c["ci_low"] <= c["difference"] <= c["ci_high"]
    assert c["share_a_better"] == 1.0 and c["n_b_better"] == 0
    # the interval is the cluster bootstrap of the per-question differences
    diff = [better[q] - b[q] for q in qs]
    low, high, _ = cluster_bootstrap(diff, [clusters[q] for q in qs], 1000, 0.95, 3)
    assert (c["ci_low"], c["ci_high"]) == (low, high)
    with pytest.raises(ValueError, match="same questions"):
        paired_difference({"q1": 1.0}, {"q2": 1.0}, {"q1": "a", "q2": "a"})
