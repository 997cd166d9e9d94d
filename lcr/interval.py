"""The reported interval of a mean of per-question scores over clustered questions.

    iv = interval(scores, clusters, level=0.95)   # scores in [0, 1]; iv.low, iv.high, iv.kind

AA-LCR has only 30 document sets, of 1 to 12 questions. With so few clusters the usual
intervals are too narrow: in simulations of AA-LCR's shape (lcr.coverage) the percentile
cluster bootstrap and the normal interval on the clustered standard error cover 91-93%
instead of 95%. The reported interval is one of three, chosen by what the data can support:

- `t`: a cluster t interval on the logit scale, from three known small-sample fixes: the CR2
  ("bias-reduced linearisation") clustered variance (Bell & McCaffrey 2002); a t quantile with
  the Bell-McCaffrey (Satterthwaite) degrees of freedom, about 20 for AA-LCR's unequal sets
  rather than 29 (Imbens & Kolesár 2016); the interval built on the logit scale and mapped
  back, so that a small accuracy's skew does not make it miss on the high side. It covers
  94-96% for true accuracies 0.15-0.85.
- `exact`: where fewer than SPARSE_SETS document sets hold any right answer (or any wrong one),
  the clustered variance rests on a handful of sets and the t interval covers only 0.82-0.89
  (true accuracy 0.03; jobs/STATISTICS.md). There the interval is Korn & Graubard's (1998)
  exact binomial one for rare proportions in clustered samples, the one the NCHS standards for
  proportions use:
  Clopper-Pearson on the effective sample size n_eff = p(1-p)/var (CR2 variance; at most n),
  scaled by (z/t_df)^2 for the few degrees of freedom.
- `zero variance`: where every score is equal (0 of 100 right, say), no variance can be
  estimated, so neither of the above applies, and a zero-width interval would claim a certainty
  the data lacks. The bound is exact binomial (Clopper-Pearson with none of n_eff questions
  differing) on the effective number of sets n_eff = n^2 / sum(n_c^2): the design effect with
  an intra-set correlation of 1, the only one the data cannot contradict, so the bound holds
  whatever the true correlation. At most a share u = 1 - (alpha/2)^(1/n_eff) of questions could
  score otherwise, each by at most the range: [m - u (m - lo), m + u (hi - m)]. For AA-LCR's
  sets, 0 of 100 gives [0, 0.161].

A pure function of its inputs: no random numbers, nothing read or written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

METHOD = ("cluster t interval on the logit scale: CR2 clustered variance over document sets, "
          "Bell-McCaffrey degrees of freedom; Korn-Graubard exact binomial interval on the "
          "effective sample size where fewer than 5 sets hold a right (or a wrong) answer; "
          "exact binomial bound on the effective number of sets where every score is equal")
KINDS = {
    "t": "cluster t interval (logit scale, CR2 variance, Bell-McCaffrey df)",
    "exact": "Korn-Graubard exact binomial interval on the effective sample size "
             "(few sets hold a right or a wrong answer)",
    "zero variance": "exact binomial bound on the effective number of sets (every score "
                     "equal: intra-set correlation taken as 1)",
}
SPARSE_SETS = 5  # fewer sets than this hold a right (or a wrong) answer: the exact interval


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    df: float  # Bell-McCaffrey degrees of freedom of the design
    kind: str  # a key of KINDS
    n_eff: float | None = None  # the effective sample size of an exact interval


def _clusters(clusters) -> tuple[np.ndarray, np.ndarray]:
    """(each item's cluster position, the cluster sizes), clusters sorted by label."""
    _, inverse, sizes = np.unique(np.asarray(clusters, dtype=str), return_inverse=True,
                                  return_counts=True)
    return inverse.ravel(), sizes.astype(float)


def cr2_variance(scores, clusters) -> float:
    """CR2 variance of the mean: sum_c S_c^2 / (1 - n_c/n) / n^2, where S_c is the sum of
    set c's deviations from the mean and n_c its size; nan below 2 clusters."""
    scores = np.asarray(scores, dtype=float)
    inverse, sizes = _clusters(clusters)
    n = scores.size
    if sizes.size < 2:
        return math.nan
    sums = np.bincount(inverse, weights=scores - scores.mean(), minlength=sizes.size)
    return float(np.sum(sums**2 / (1 - sizes / n)) / n**2)


def bell_mccaffrey_df(sizes) -> float:
    """Satterthwaite degrees of freedom of the CR2 variance of a mean, under independent
    errors of equal variance (Bell & McCaffrey 2002, Imbens & Kolesár 2016).

    With a_c = (1 - n_c/n)^(-1/2) / n, the variance is e'GG'e for the residuals e, where
    G'G = diag(a^2 n) - (a n)(a n)' / n; the df is tr(G'G)^2 / tr((G'G)^2). C - 1 for equal
    sizes; fewer when they differ.
    """
    sizes = np.asarray(sizes, dtype=float)
    n = sizes.sum()
    a = (1 - sizes / n) ** -0.5 / n
    an = a * sizes
    gram = np.diag(a * a * sizes) - np.outer(an, an) / n
    return float(np.trace(gram) ** 2 / np.sum(gram * gram))


def t_quantile(p: float, df: float) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def _checked(scores, clusters, bounds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=float)
    inverse, sizes = _clusters(clusters)
    if sizes.size < 2:
        raise ValueError("a cluster interval needs at least 2 clusters")
    if scores.min() < bounds[0] or scores.max() > bounds[1]:
        raise ValueError(f"scores outside {bounds}")
    return scores, inverse, sizes


def t_interval(scores, clusters, level: float = 0.95,
               bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float, float]:
    """(low, high, degrees of freedom) of the cluster t interval of the mean of `scores`,
    which lie within `bounds` ((-1, 1) for paired differences); (mean, mean) when the
    variance is 0 (`interval` never reports that). Needs 2 clusters."""
    scores, _, sizes = _checked(scores, clusters, bounds)
    lo, hi = bounds
    mean, var = float(scores.mean()), cr2_variance(scores, clusters)
    df = bell_mccaffrey_df(sizes)
    if var <= 0:
        return mean, mean, df
    share = (mean - lo) / (hi - lo)  # strictly inside (0, 1): a nonzero variance needs both
    se = math.sqrt(var) / (hi - lo) / (share * (1 - share))
    center, half = math.log(share / (1 - share)), t_quantile(0.5 + level / 2, df) * se
    low, high = (1 / (1 + math.exp(-(center + d))) for d in (-half, half))
    return lo + (hi - lo) * low, lo + (hi - lo) * high, df


def effective_sets(sizes) -> float:
    """n^2 / sum(n_c^2): the sample size with every set one observation (correlation 1)."""
    sizes = np.asarray(sizes, dtype=float)
    return float(sizes.sum() ** 2 / np.sum(sizes**2))


def zero_variance_bound(mean: float, sizes, level: float = 0.95,
                        bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float, float]:
    """(low, high, n_eff) for scores that are all `mean`: Clopper-Pearson with none of n_eff
    (the effective number of sets) differing bounds the share u that could; each could move
    the mean by at most the range."""
    n_eff = effective_sets(sizes)
    u = 1 - ((1 - level) / 2) ** (1 / n_eff)
    lo, hi = bounds
    return mean - u * (mean - lo), mean + u * (hi - mean), n_eff


def clopper_pearson(x: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of x successes in n trials (x and n need not be whole)."""
    from scipy.special import betaincinv

    alpha = 1 - level
    low = 0.0 if x <= 0 else float(betaincinv(x, n - x + 1, alpha / 2))
    high = 1.0 if x >= n else float(betaincinv(x + 1, n - x, 1 - alpha / 2))
    return low, high


def korn_graubard(mean: float, var: float, n: int, df: float,
                  level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, n_eff): Clopper-Pearson on n_eff = p(1-p)/var (at most n), scaled by
    (z/t_df)^2 for the degrees of freedom (Korn & Graubard 1998)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    n_eff = min(mean * (1 - mean) / var, float(n)) * (z / t_quantile(0.5 + level / 2, df)) ** 2
    low, high = clopper_pearson(mean * n_eff, n_eff, level)
    return low, high, n_eff


def sets_holding(scores, inverse, sizes, bounds) -> tuple[int, int]:
    """(sets with a score above the lower bound, sets with a score below the upper one)."""
    above = np.bincount(inverse, weights=scores > bounds[0], minlength=sizes.size) > 0
    below = np.bincount(inverse, weights=scores < bounds[1], minlength=sizes.size) > 0
    return int(above.sum()), int(below.sum())


def interval(scores, clusters, level: float = 0.95, bounds: tuple[float, float] = (0.0, 1.0),
             share: bool = True) -> Interval:
    """The reported interval (module docstring): never of zero width. Needs 2 clusters.
    The `exact` kind is for shares of right answers only (not for paired differences or the
    seed spread: `share=False`)."""
    scores, inverse, sizes = _checked(scores, clusters, bounds)
    mean, var = float(scores.mean()), cr2_variance(scores, clusters)
    df = bell_mccaffrey_df(sizes)
    if var <= 0 or np.ptp(scores) == 0:
        low, high, n_eff = zero_variance_bound(mean, sizes, level, bounds)
        return Interval(low, high, df, "zero variance", n_eff)
    if share and tuple(bounds) == (0.0, 1.0) and min(sets_holding(scores, inverse, sizes,
                                                        bounds)) < SPARSE_SETS:
        low, high, n_eff = korn_graubard(mean, var, scores.size, df, level)
        return Interval(low, high, df, "exact", n_eff)
    low, high, df = t_interval(scores, clusters, level, bounds)
    return Interval(low, high, df, "t")
