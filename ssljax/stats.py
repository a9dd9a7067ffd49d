"""Confidence intervals for paired gains: over seeds (t) and over test images (bootstrap).

A gain of a method over random initialisation is measured on the same seeds (so the same
labelled subset) and the same test images. Two sources of chance move it: the seed (the
labelled subset, the initialisation of the head, the batch order) and the finite test set.
`paired_t_ci` covers the first, `paired_bootstrap_ci` the second; the report claims a gain
only where both intervals exclude 0.

Where the evaluation seeds start from several pretraining runs (seed i from pretraining run
p(i)), the pretraining run is a third source of chance, shared by its seeds: `two_level_ci`
puts a t interval over the pretraining runs' mean differences, which carries both levels.
"""

import math
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from ssljax import metrics

Interval = tuple[float, float]
# Redraws allowed per valid resample before the bootstrap gives up: a test set on which most
# resamples lose a class cannot carry an interval.
MAX_REDRAW_RATIO = 1.0


def paired_t_ci(d, confidence: float = 0.95) -> tuple[float, Interval | None]:
    """Mean of paired differences and its two-sided Student t confidence interval.

    Args:
      d: float [n], one difference (ours - base) per seed.
      confidence: the interval's coverage, in (0, 1).
    Returns:
      (mean, (low, high)) with n - 1 degrees of freedom; the interval is None for n < 2 and
      has zero width when all differences are equal.
    Raises:
      ValueError: d is empty or not one-dimensional, or confidence is outside (0, 1).
    """
    d = np.asarray(d, np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"d must be a non-empty float [n] array; got shape {d.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    if np.all(d == d[0]):
        # Exactly: a mean of equal numbers can round away from them.
        return float(d[0]), (None if d.size < 2 else (float(d[0]), float(d[0])))
    mean = float(d.mean())
    if d.size < 2:
        return mean, None
    half = scipy_stats.t.ppf((1.0 + confidence) / 2.0, d.size - 1) * d.std(ddof=1)
    half /= np.sqrt(d.size)
    return mean, (mean - float(half), mean + float(half))


def two_level_ci(d, groups, confidence: float = 0.95) -> dict:
    """Mean paired difference and its t interval when seeds are nested in pretraining runs.

    The differences of one pretraining run are averaged first (m_j, j = 1..J); the gain is
    the mean of the m_j (each pretraining run weighs the same), and the interval is Student
    t's over the m_j with J - 1 degrees of freedom. Each m_j varies by the pretraining run
    (between-run variance s_b^2) and by its n_j evaluation seeds (s_w^2 / n_j), so the
    spread of the m_j measures both levels at once; with equal n_j and normal effects the
    interval's coverage is exact, and no variance component needs estimating. Treating all
    seeds as independent instead (`paired_t_ci`) ignores that seeds of one pretraining run
    share its luck and covers the truth less often than stated (tests/test_stats.py).

    Args:
      d: float [n], one difference (ours - base) per evaluation seed.
      groups: [n] hashables, the pretraining run of each seed (e.g. its workdir).
      confidence: the interval's coverage, in (0, 1).
    Returns:
      {'mean', 'ci' ((low, high); None for J < 2), 'n_runs' (J), 'n_seeds' (n),
      'within_sd' (pooled sd of d within runs; None without a run of 2+ seeds),
      'between_sd' (method-of-moments sd of the runs' true gains, floored at 0; None where
      within_sd is)}.
    Raises:
      ValueError: d and groups differ in length, d is empty, or confidence is outside (0, 1).
    """
    d = np.asarray(d, np.float64)
    groups = list(groups)
    if d.ndim != 1 or d.size == 0 or len(groups) != d.size:
        raise ValueError(f"need one group per difference; got d {d.shape}, {len(groups)} groups")
    runs = list(dict.fromkeys(groups))
    members = [d[[g == run for g in groups]] for run in runs]
    means = np.asarray([m.mean() for m in members])
    mean, ci = paired_t_ci(means, confidence)
    out = {"mean": mean, "ci": ci, "n_runs": len(runs), "n_seeds": int(d.size)}
    out["within_sd"] = out["between_sd"] = None
    dof = sum(len(m) - 1 for m in members)
    if dof > 0 and len(runs) > 1:
        within_var = sum(((m - m.mean()) ** 2).sum() for m in members) / dof
        n_harmonic = len(members) / sum(1.0 / len(m) for m in members)
        between_var = max(float(means.var(ddof=1)) - within_var / n_harmonic, 0.0)
        out["within_sd"], out["between_sd"] = (
            float(np.sqrt(within_var)),
            float(np.sqrt(between_var)),
        )
    return out


def paired_gain(
    ours: dict[int, float],
    base: dict[int, float],
    confidence: float = 0.95,
    runs: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Paired comparison over the seeds both have: d = ours - base.

    `runs` names the pretraining run each seed of `ours` started from. Where the seeds come
    from 2 or more pretraining runs, mean and interval are `two_level_ci`'s (a t
    interval over the runs' mean differences, so pretraining variance is in it; 'levels' 2);
    otherwise `paired_t_ci` over seeds ('levels' 1).

    Returns {n (seeds), n_runs (pretraining runs; 1 without `runs`), levels, mean (None
    when n = 0), t (paired t statistic over seeds, n - 1 degrees of freedom; None when
    n < 2 or all differences are equal), up (seeds with d > 0), ci (the interval at
    `confidence`; None when n < 2, or fewer than 2 runs where levels is 2), within_sd /
    between_sd (two_level_ci's variance components; levels 2 only)}.
    """
    seeds = sorted(ours.keys() & base.keys())
    d = np.asarray([ours[s] - base[s] for s in seeds], np.float64)
    out: dict[str, Any] = {"n": len(d), "mean": None, "t": None, "up": int((d > 0).sum())}
    out.update(ci=None, n_runs=1, levels=1)
    groups = [runs[s] for s in seeds] if runs else []
    if len(set(groups)) >= 2:
        two = two_level_ci(d, groups, confidence)
        out.update(levels=2, mean=two["mean"], ci=two["ci"], n_runs=two["n_runs"])
        out.update(within_sd=two["within_sd"], between_sd=two["between_sd"])
    elif len(d):
        out["mean"], out["ci"] = paired_t_ci(d, confidence)
    if len(d) >= 2:
        sd = float(d.std(ddof=1))
        # Equal differences (up to float rounding of the scores) leave t undefined.
        if sd > 1e-9:
            out["t"] = float(d.mean()) / (sd / math.sqrt(len(d)))
    return out


def excludes_zero(interval: Interval | None) -> bool:
    """True when the closed interval lies entirely above or entirely below 0 (None: False)."""
    return interval is not None and (interval[0] > 0.0 or interval[1] < 0.0)


def metric_defined(task: str, labels: np.ndarray, num_columns: int) -> bool:
    """Whether MedMNIST AUC exists on these labels: every class (one-vs-rest) or label has a
    positive and a negative example.

    Args:
      labels: int [N] (or [N, 1]) classes, or int [N, L] in {0, 1} for multi-label.
      num_columns: C, the score columns (classes; binary: 1 or 2).
    """
    labels = np.asarray(labels)
    if task == metrics.MULTI_LABEL:
        positives = labels.sum(axis=0)
        return bool(np.all((positives > 0) & (positives < labels.shape[0])))
    counts = np.bincount(labels.reshape(-1), minlength=max(2, num_columns))
    if task == metrics.BINARY:
        return bool(counts[0] > 0 and counts[1] > 0)
    return bool(np.all(counts[:num_columns] > 0) and np.count_nonzero(counts) > 1)


def _check_bootstrap_inputs(task, labels, ours, base) -> None:
    if ours.shape != base.shape or ours.ndim != 3 or ours.shape[0] == 0:
        raise ValueError(
            f"scores_ours and scores_base must both be float [S, N, C] with S >= 1; got "
            f"{ours.shape} and {base.shape}"
        )
    if labels.shape[0] != ours.shape[1]:
        raise ValueError(f"labels hold {labels.shape[0]} images, the scores {ours.shape[1]}")
    if not metric_defined(task, labels, ours.shape[2]):
        raise ValueError(f"{task} AUC is undefined on these test labels (a class lacks examples)")


def _gains(task: str, labels: np.ndarray, ours: np.ndarray, base: np.ndarray) -> np.ndarray:
    """float64 [2]: the mean over seeds of (ours - base) for (ACC, AUC).

    ours, base: float64 [S, N, C] scores of the images whose labels are `labels`.
    """
    total = np.zeros(2)
    for o, b in zip(ours, base, strict=True):
        mo, mb = metrics.evaluate(task, labels, o), metrics.evaluate(task, labels, b)
        total += (mo["acc"] - mb["acc"], mo["auc"] - mb["auc"])
    return total / ours.shape[0]


def paired_bootstrap_ci(
    task: str,
    labels,
    scores_ours,
    scores_base,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Percentile bootstrap over test images of the seed-mean paired gain in ACC and AUC.

    Each resample draws N image indices with replacement, `rng.integers(0, N, size=N)` from
    `np.random.default_rng(seed)`, one draw after another; the same indices serve every seed
    and both arms. A draw on which AUC is undefined (a class or label without a positive or
    a negative image) is discarded and drawn again, so the interval rests on n_boot valid
    resamples (conditional on every class being present, as on the full test set).

    Args:
      task: a MedMNIST task string (see ssljax.metrics).
      labels: int [N] or [N, 1] classes, or int [N, L] for multi-label; the test labels.
      scores_ours, scores_base: float [S, N, C] test scores of S seeds (seed i of both arms
        paired), C classes (binary: 1 or 2) or L labels.
      n_boot: valid resamples.
      seed: seeds the generator; the result is a pure function of the arguments.
      confidence: coverage of the two-sided percentile interval.
    Returns:
      {'acc' | 'auc': {'mean': float (the gain on the full test set), 'interval': (low,
      high)}, 'n_boot', 'redrawn' (draws discarded), 'n_images', 'n_seeds'}.
    Raises:
      ValueError: shapes disagree, AUC is undefined on the full labels, or more than
        MAX_REDRAW_RATIO * n_boot draws had to be discarded.
    """
    labels = np.asarray(labels)
    ours = np.asarray(scores_ours, np.float64)
    base = np.asarray(scores_base, np.float64)
    _check_bootstrap_inputs(task, labels, ours, base)
    if not 0.0 < confidence < 1.0 or n_boot < 1:
        raise ValueError(f"need n_boot >= 1 and confidence in (0, 1); got {n_boot}, {confidence}")
    full = _gains(task, labels, ours, base)
    # One array so each resample is a single fancy index: [2, S, N, C] -> [2, S, N', C].
    both = np.stack([ours, base])
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    draws = np.empty((n_boot, 2))
    redrawn = 0
    for b in range(n_boot):
        while True:
            idx = rng.integers(0, n, size=n)
            if metric_defined(task, labels[idx], ours.shape[2]):
                break
            redrawn += 1
            if redrawn > MAX_REDRAW_RATIO * n_boot:
                raise ValueError(
                    f"AUC was undefined on {redrawn} bootstrap draws of {n} images: a class "
                    "has too few test images for a bootstrap interval"
                )
        sample = both[:, :, idx]
        draws[b] = _gains(task, labels[idx], sample[0], sample[1])
    q = 100.0 * np.asarray([(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    out: dict = {"n_boot": n_boot, "redrawn": redrawn, "n_images": n, "n_seeds": len(ours)}
    for i, metric in enumerate(("acc", "auc")):
        lo, hi = np.percentile(draws[:, i], q)
        out[metric] = {"mean": float(full[i]), "interval": (float(lo), float(hi))}
    return out


def verdict(t_interval: Interval | None, boot_interval: Interval | None = None) -> str:
    """The words the report may use for a paired gain.

    'gain' / 'loss' when the t interval over seeds and the bootstrap interval over test images
    (where there is one) both lie entirely above / below 0; 'untested' without a t interval
    of positive width (fewer than 2 seeds, or every seed's difference equal, as ACC's steps
    of 1/N make likely: no spread was measured, so none can be excluded); else
    'inconclusive'.
    """
    if t_interval is None or t_interval[0] == t_interval[1]:
        return "untested"
    present = [i for i in (t_interval, boot_interval) if i is not None]
    if all(i[0] > 0.0 for i in present):
        return "gain"
    if all(i[1] < 0.0 for i in present):
        return "loss"
    return "inconclusive"
