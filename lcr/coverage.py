"""How often an interval holds the true accuracy, in simulated evaluations of AA-LCR's shape.

    lcr coverage --reps 20000 --truth 0.03,0.15,0.3,0.5,0.85,0.97 --icc 0.2,0.4

AA-LCR's real shape: 100 questions over 30 document sets of 12, 7, 5 (x3), 4 (x8), 3 (x5),
2 (x7) and 1 (x5) questions. One simulated evaluation draws each set's difficulty p_s from a
Beta law with mean `truth` and intra-set correlation `icc` (the correlation of two questions'
verdicts in one set: var(p_s) = icc * truth * (1 - truth)), each question's p_q from a Beta
law around p_s, and each seed's verdict as a coin of p_q. The expected accuracy is `truth`;
a question's score is the mean over its seeds, as in the report. An interval method covers
an evaluation when it holds `truth`; the table also gives each method's mean width.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lcr.interval import interval, t_interval
from lcr.stats import cluster_bootstrap, clustered_se, normal_interval

AA_LCR_SET_SIZES = (12, 7, 5, 5, 5, 4, 4, 4, 4, 4, 4, 4, 4, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2,
                    1, 1, 1, 1, 1)
Method = Callable[[np.ndarray, np.ndarray, float], tuple[float, float]]


def set_labels(sizes=AA_LCR_SET_SIZES) -> np.ndarray:
    return np.repeat([f"set{i:02d}" for i in range(len(sizes))], sizes)


def simulate(rng: np.random.Generator, reps: int, truth: float, icc: float, seeds: int,
             sizes=AA_LCR_SET_SIZES, question_conc: float = 2.0) -> np.ndarray:
    """(reps, questions) per-question scores of `reps` independent simulated evaluations."""
    conc = 1 / icc - 1  # a Beta(m c, (1 - m) c) has variance m (1 - m) / (c + 1)
    p_set = rng.beta(truth * conc, (1 - truth) * conc, size=(reps, len(sizes)))
    p_q = np.repeat(p_set, sizes, axis=1)
    p_q = rng.beta(p_q * question_conc + 1e-12, (1 - p_q) * question_conc + 1e-12)
    return rng.binomial(seeds, p_q) / seeds


def reported(scores, clusters, level):
    iv = interval(scores, clusters, level)
    return iv.low, iv.high


def t_alone(scores, clusters, level):
    low, high, _ = t_interval(scores, clusters, level)
    return low, high


def percentile_bootstrap(scores, clusters, level, B: int = 1000):
    low, high, _ = cluster_bootstrap(scores, clusters, B, level, seed=0)
    return low, high


def normal_clustered(scores, clusters, level):
    return normal_interval(float(np.mean(scores)), clustered_se(scores, clusters), level)


METHODS: dict[str, Method] = {
    "reported": reported,
    "t interval alone": t_alone,
    "percentile bootstrap": percentile_bootstrap,
    "normal, clustered SE": normal_clustered,
}


def coverage(method: Method, reps: int, truth: float, icc: float, seeds: int, seed: int = 0,
             level: float = 0.95) -> dict:
    """Share of `reps` simulated evaluations whose interval holds `truth`, and of those whose
    interval lies wholly below it (missed high) or above it (missed low); and its mean width."""
    rng = np.random.default_rng(seed)
    scores, labels = simulate(rng, reps, truth, icc, seeds), set_labels()
    below = above = 0
    width = 0.0
    for row in scores:
        low, high = method(row, labels, level)
        below += high < truth
        above += low > truth
        width += high - low
    return {"coverage": 1 - (below + above) / reps, "below": below / reps,
            "above": above / reps, "width": width / reps, "reps": reps}


def coverage_table(reps: int, truths, iccs, seeds_list, bootstrap: bool = False,
                   seed: int = 0, level: float = 0.95) -> str:
    """`lcr coverage`: the coverage of each interval method at `level`, one row per cell."""
    names = [m for m in METHODS if bootstrap or m != "percentile bootstrap"]
    lines = [f"coverage of {level:.0%} intervals, {reps:,} simulated evaluations per row, mean "
             "width in brackets; AA-LCR's 30 sets",
             "truth  icc seeds  " + "  ".join(f"{m:>22}" for m in names)]
    for truth in truths:
        for icc in iccs:
            for seeds in seeds_list:
                cells = [coverage(METHODS[m], reps, truth, icc, seeds, seed, level)
                         for m in names]
                lines.append(f"{truth:5.2f} {icc:4.2f} {seeds:5d}  " + "  ".join(
                    f"{c['coverage']:13.4f} [{c['width']:.3f}]" for c in cells))
    return "\n".join(lines)
