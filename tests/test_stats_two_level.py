"""stats.two_level_ci: a NumPy reference on fixed inputs, and coverage where the truth is known."""

import chex
import numpy as np
import pytest
from scipy import stats as scipy_stats

from ssljax import stats

# Differences of 7 evaluation seeds nested in 3 pretraining runs (unequal sizes on purpose).
D = np.asarray([0.041, 0.012, 0.030, -0.060, -0.004, 0.066, 0.051])
RUNS = ["p0", "p0", "p0", "p1", "p1", "p2", "p2"]


def _reference(d, groups, confidence):
    """The two-level interval written out with plain NumPy / SciPy."""
    groups = np.asarray(groups)
    means = np.array([d[groups == n].mean() for n in sorted(set(groups))])
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(means) - 1) * means.std(ddof=1)
    half /= np.sqrt(len(means))
    return means.mean(), (means.mean() - half, means.mean() + half)


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_two_level_matches_a_numpy_reference(confidence):
    out = stats.two_level_ci(D, RUNS, confidence)
    mean, ci = _reference(D, RUNS, confidence)
    chex.assert_trees_all_close((out["mean"], out["ci"]), (mean, ci), rtol=1e-12)
    assert (out["n_runs"], out["n_seeds"]) == (3, 7)
    # Every pretraining run weighs the same: not the plain mean of the 7 differences.
    assert abs(out["mean"] - D.mean()) > 1e-3
    # Variance components by the method of moments, written out.
    within = [D[:3] - D[:3].mean(), D[3:5] - D[3:5].mean(), D[5:] - D[5:].mean()]
    within_var = sum((w**2).sum() for w in within) / (7 - 3)
    means = np.array([D[:3].mean(), D[3:5].mean(), D[5:].mean()])
    n_h = 3 / (1 / 3 + 1 / 2 + 1 / 2)
    between_var = means.var(ddof=1) - within_var / n_h
    chex.assert_trees_all_close(out["within_sd"], np.sqrt(within_var), rtol=1e-12)
    chex.assert_trees_all_close(out["between_sd"], np.sqrt(max(between_var, 0)), rtol=1e-12)


def test_one_seed_per_run_is_the_t_interval_over_runs():
    out = stats.two_level_ci(D[:4], ["a", "b", "c", "d"])
    assert out["ci"] == stats.paired_t_ci(D[:4])[1]
    assert out["within_sd"] is None and out["between_sd"] is None


def test_two_level_edge_cases():
    one_run = stats.two_level_ci([0.1, 0.3], ["p", "p"])
    assert one_run["ci"] is None and one_run["n_runs"] == 1
    chex.assert_trees_all_close(one_run["mean"], 0.2)
    with pytest.raises(ValueError, match="one group per difference"):
        stats.two_level_ci([0.1, 0.2], ["p"])
    with pytest.raises(ValueError, match="one group per difference"):
        stats.two_level_ci([], [])


def _simulate(rng, true_gain, runs, seeds_per_run, sd_between, sd_within):
    """One study: J pretraining runs, each with its own true gain, n seeds each."""
    run_gains = true_gain + sd_between * rng.standard_normal(runs)
    d = np.repeat(run_gains, seeds_per_run) + sd_within * rng.standard_normal(runs * seeds_per_run)
    return d, np.repeat(np.arange(runs), seeds_per_run)


def test_two_level_covers_a_known_gain_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    true_gain, hits, naive_hits = 0.02, 0, 0
    for _ in range(1000):
        d, groups = _simulate(rng, true_gain, 3, 2, sd_between=0.03, sd_within=0.02)
        lo, hi = stats.two_level_ci(d, groups)["ci"]
        hits += lo <= true_gain <= hi
        naive_lo, naive_hi = stats.paired_t_ci(d)[1]
        naive_hits += naive_lo <= true_gain <= naive_hi
    assert 0.93 <= hits / 1000 <= 0.97
    # Seeds treated as independent: the pretraining run's shared luck is missed.
    assert naive_hits / 1000 < 0.88
