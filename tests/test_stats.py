"""ssljax.stats against SciPy and scikit-learn references and a plain-loop bootstrap."""

import chex
import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score

from ssljax import stats

# float [n] paired differences with no pattern.
D = np.asarray([0.031, -0.004, 0.058, 0.012, 0.027])


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_t_interval_matches_scipy(confidence):
    mean, (lo, hi) = stats.paired_t_ci(D, confidence)
    ref = scipy_stats.t.interval(confidence, len(D) - 1, loc=D.mean(), scale=scipy_stats.sem(D))
    chex.assert_trees_all_close(mean, D.mean(), rtol=1e-12)
    chex.assert_trees_all_close((lo, hi), ref, rtol=1e-12)
    # The same interval from the paired test of two arms whose differences are D.
    base = np.asarray([0.70, 0.81, 0.64, 0.77, 0.90])
    paired = scipy_stats.ttest_rel(base + D, base).confidence_interval(confidence)
    chex.assert_trees_all_close((lo, hi), (paired.low, paired.high), rtol=1e-9)


def test_t_interval_edge_cases():
    assert stats.paired_t_ci([0.2]) == (0.2, None)
    # Equal differences: zero width, at the difference itself (not a rounded mean).
    assert stats.paired_t_ci([0.1, 0.1, 0.1]) == (0.1, (0.1, 0.1))
    with pytest.raises(ValueError, match="non-empty"):
        stats.paired_t_ci([])
    with pytest.raises(ValueError, match="confidence"):
        stats.paired_t_ci(D, 1.5)


def test_excludes_zero_and_verdict():
    assert stats.excludes_zero((0.01, 0.2)) and stats.excludes_zero((-0.3, -0.1))
    assert not stats.excludes_zero((-0.01, 0.2)) and not stats.excludes_zero((0.0, 0.1))
    assert not stats.excludes_zero(None)
    assert stats.verdict((0.01, 0.2), (0.02, 0.1)) == "gain"
    assert stats.verdict((0.01, 0.2)) == "gain"  # no bootstrap: the t interval alone
    assert stats.verdict((0.01, 0.2), (-0.01, 0.1)) == "inconclusive"
    assert stats.verdict((-0.2, -0.01), (-0.1, -0.02)) == "loss"
    assert stats.verdict((-0.2, -0.01), (-0.1, 0.02)) == "inconclusive"
    # One seed: no t interval, no claim, whatever the bootstrap says.
    assert stats.verdict(None, (0.1, 0.2)) == "untested"
    # Equal differences on every seed (ACC moves in steps of 1/N): no spread, no claim.
    assert stats.verdict((0.083, 0.083), (0.01, 0.2)) == "untested"


def _pairwise_auc(positive, score):
    """ROC AUC by brute force over (positive, negative) pairs, ties counting one half."""
    diff = score[positive][:, None] - score[~positive][None, :]
    return np.mean((diff > 0) + 0.5 * (diff == 0))


def _reference_metrics(task, labels, scores, auc=_pairwise_auc):
    """(ACC, AUC) written out for each task, independent of ssljax.metrics."""
    if task == "binary-class":
        return np.mean((scores[:, -1] > 0.5) == labels), auc(labels == 1, scores[:, -1])
    if task == "multi-label, binary-class":
        acc = np.mean((scores > 0.5) == labels)
        return acc, np.mean([auc(labels[:, i] == 1, scores[:, i]) for i in range(4)])
    aucs = [auc(labels == c, scores[:, c]) for c in range(scores.shape[1])]
    return np.mean(scores.argmax(1) == labels), np.mean(aucs)


def _sklearn_auc(positive, score):
    return roc_auc_score(positive, score)


def _defined(task, labels, num_classes):
    if task == "multi-label, binary-class":
        return all(0 < labels[:, i].sum() < len(labels) for i in range(labels.shape[1]))
    return len(set(labels.tolist())) == (2 if task == "binary-class" else num_classes)


def _reference_bootstrap(task, labels, ours, base, n_boot, seed):
    """A plain loop: the documented draw, redrawing where a class is missing."""
    rng = np.random.default_rng(seed)
    gains, redrawn = [], 0
    while len(gains) < n_boot:
        idx = rng.integers(0, len(labels), size=len(labels))
        if not _defined(task, labels[idx], ours.shape[2]):
            redrawn += 1
            continue
        per_seed = [
            np.subtract(
                _reference_metrics(task, labels[idx], o[idx]),
                _reference_metrics(task, labels[idx], b[idx]),
            )
            for o, b in zip(ours, base, strict=True)
        ]
        gains.append(np.mean(per_seed, axis=0))
    return np.percentile(np.asarray(gains), [2.5, 97.5], axis=0), redrawn


def _problem(task, n, seeds=3, seed=0):
    """(labels, ours [S, N, C], base [S, N, C]): ours is informative, base barely."""
    rng = np.random.default_rng(seed)
    if task == "multi-label, binary-class":
        labels = (rng.random((n, 4)) < 0.3).astype(np.int64)
        signal = labels[None].astype(float)
    else:
        c = 2 if task == "binary-class" else 3
        labels = rng.integers(0, c, n)
        signal = np.eye(c)[labels][None]
    noise = rng.random((2, seeds, *signal.shape[1:]))
    ours, base = 0.6 * signal + noise[0], 0.1 * signal + noise[1]
    if task != "multi-label, binary-class":
        ours, base = ours / ours.sum(-1, keepdims=True), base / base.sum(-1, keepdims=True)
    return labels, ours.astype(np.float32), base.astype(np.float32)


@pytest.mark.parametrize("task", ["binary-class", "multi-class", "multi-label, binary-class"])
def test_bootstrap_matches_a_plain_loop(task):
    labels, ours, base = _problem(task, 40)
    got = stats.paired_bootstrap_ci(task, labels, ours, base, n_boot=200, seed=3)
    (ref_lo, ref_hi), redrawn = _reference_bootstrap(task, labels, ours, base, 200, 3)
    assert (got["n_boot"], got["redrawn"], got["n_images"], got["n_seeds"]) == (
        200,
        redrawn,
        40,
        3,
    )
    for i, metric in enumerate(("acc", "auc")):
        chex.assert_trees_all_close(got[metric]["interval"], (ref_lo[i], ref_hi[i]), atol=1e-12)
        full = np.mean(
            [
                np.subtract(
                    _reference_metrics(task, labels, o), _reference_metrics(task, labels, b)
                )
                for o, b in zip(ours, base, strict=True)
            ],
            axis=0,
        )
        chex.assert_trees_all_close(got[metric]["mean"], full[i], atol=1e-12)
    # Informative vs barely informative scores: a clear AUC gain.
    assert stats.excludes_zero(got["auc"]["interval"]) and got["auc"]["interval"][0] > 0


def test_bootstrap_redraws_resamples_without_a_class():
    # 2 positives in 12 images: about a quarter of the draws hold none.
    labels = np.asarray([1, 1] + [0] * 10)
    _, ours, base = _problem("binary-class", 12, seeds=2)
    got = stats.paired_bootstrap_ci("binary-class", labels, ours, base, n_boot=200, seed=1)
    (lo, hi), redrawn = _reference_bootstrap("binary-class", labels, ours, base, 200, 1)
    assert got["redrawn"] == redrawn > 20
    chex.assert_trees_all_close(got["auc"]["interval"], (lo[1], hi[1]), atol=1e-12)


def test_bootstrap_is_deterministic_and_seeded():
    labels, ours, base = _problem("binary-class", 60)
    a = stats.paired_bootstrap_ci("binary-class", labels, ours, base, n_boot=50, seed=0)
    b = stats.paired_bootstrap_ci("binary-class", labels, ours, base, n_boot=50, seed=0)
    c = stats.paired_bootstrap_ci("binary-class", labels, ours, base, n_boot=50, seed=1)
    assert a == b and a["auc"]["interval"] != c["auc"]["interval"]


def test_identical_arms_give_a_zero_interval():
    labels, ours, _ = _problem("multi-class", 30)
    got = stats.paired_bootstrap_ci("multi-class", labels, ours, ours, n_boot=20)
    assert got["auc"] == {"mean": 0.0, "interval": (0.0, 0.0)}
    assert not stats.excludes_zero(got["auc"]["interval"])


def test_bootstrap_errors():
    labels, ours, base = _problem("binary-class", 20)
    with pytest.raises(ValueError, match=r"\[S, N, C\]"):
        stats.paired_bootstrap_ci("binary-class", labels, ours, base[:2])
    with pytest.raises(ValueError, match="labels hold 19 images"):
        stats.paired_bootstrap_ci("binary-class", labels[:19], ours, base)
    with pytest.raises(ValueError, match="undefined on these test labels"):
        stats.paired_bootstrap_ci("binary-class", np.zeros(20, int), ours, base)
    # 5 classes of one image each: most draws miss one, so no interval is given.
    scores = np.full((1, 5, 5), 0.2)
    with pytest.raises(ValueError, match="too few test images"):
        stats.paired_bootstrap_ci("multi-class", np.arange(5), scores, scores, n_boot=50)
