"""Label budgets: deterministic, stratified, nested subsets of the training split.

Each class gets one fixed permutation of its members per seed, and every budget takes a
prefix of it. So for one seed the 1% subset lies inside the 10% subset, which lies inside
the 100% one, and a per-class count subset is nested the same way: comparisons across label
budgets differ only in how many labels they see, not which.
"""

import math

import ml_collections
import numpy as np

from ssljax.data import registry


def stratification_key(labels: np.ndarray, task: str) -> np.ndarray:
    """The class each example is stratified by: int64 [N].

    Single-label tasks: the label itself (labels: int [N]). Multi-label tasks (labels: 0/1
    [N, L]): the index of the first positive label, or L for an example with none (in
    ChestMNIST, 'no finding', the largest group). A label that is positive only together
    with a lower-indexed one has no stratum of its own and so no guaranteed member; in
    exchange every example has exactly one key and the budget stays the stated fraction.
    """
    registry.check_task(task)
    labels = np.asarray(labels)
    if task != registry.MULTI_LABEL:
        return labels.reshape(-1).astype(np.int64)
    positive = labels != 0
    return np.where(positive.any(axis=1), positive.argmax(axis=1), labels.shape[1]).astype(np.int64)


def label_subset(
    labels: np.ndarray,
    task: str,
    *,
    fraction: float | None = None,
    per_class: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Indices of a stratified subset of the training split.

    Args:
      labels: the training labels, int [N] or, for multi-label tasks, 0/1 [N, L].
      task: one of `registry.TASKS`.
      fraction: keep round(fraction * n_c) examples of each class c (at least 1); in (0, 1].
      per_class: keep min(per_class, n_c) examples of each class instead.
      seed: non-negative; the same seed always gives the same, nested subsets.

    Returns:
      int64 [M], sorted indices into the training split; every class that has examples
      keeps at least one.
    """
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction (data.label_fraction) and per_class")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"data.label_fraction={fraction!r} must be in (0, 1], e.g. 0.01 or 0.1")
    if per_class is not None and per_class < 1:
        raise ValueError(f"data.labels_per_class={per_class!r} must be a positive count")
    if seed < 0:
        raise ValueError(f"seed={seed} must be non-negative")
    keys = stratification_key(labels, task)
    if len(keys) == 0:
        raise ValueError("the training split has no examples to take a label subset of")
    chosen = []
    for c in np.unique(keys):
        members = np.flatnonzero(keys == c)
        order = np.random.default_rng((seed, int(c))).permutation(len(members))
        if per_class is not None:
            k = min(per_class, len(members))
        else:
            # Rounding half up is monotone in fraction, which keeps the subsets nested.
            k = max(1, math.floor(fraction * len(members) + 0.5))
        chosen.append(members[order[:k]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def subset_from_config(
    labels: np.ndarray, task: str, data_config: ml_collections.ConfigDict, seed: int
) -> np.ndarray:
    """`label_subset` as `config.data` asks: `labels_per_class` if > 0, else `label_fraction`."""
    if data_config.labels_per_class > 0:
        return label_subset(labels, task, per_class=data_config.labels_per_class, seed=seed)
    return label_subset(labels, task, fraction=data_config.label_fraction, seed=seed)
