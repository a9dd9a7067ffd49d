"""MedMNIST's ACC and AUC, computed exactly as the official `medmnist.evaluator` does.

Pure NumPy: scikit-learn and pandas (which the official evaluator imports) are test-only
dependencies, and the tests check these functions against `getACC` / `getAUC` to 1e-10.

Conventions, per task (the strings are medmnist's `INFO[flag]["task"]`):

- `binary-class`: `y_true` int [N] or [N, 1] in {0, 1}; `y_score` float [N, 2] (softmax) or
  [N, 1] / [N] (the positive-class probability). The positive score is the last column, as in
  the official code; ACC thresholds it at `threshold`.
- `multi-class` and `ordinal-regression` (scored alike): `y_true` int [N] or [N, 1] in
  [0, C); `y_score` float [N, C]. ACC uses the argmax; AUC is one-vs-rest, averaged over the
  C columns.
- `multi-label, binary-class`: `y_true` int [N, L] in {0, 1}; `y_score` float [N, L]
  (sigmoid). ACC and AUC are averaged over labels; ACC thresholds at `threshold`.

A label or class with no positive or no negative example has no ROC AUC. The official
evaluator hands this to `sklearn.metrics.roc_auc_score`, which raises (older scikit-learn)
or warns and returns a NaN that poisons the average (recent versions, e.g. 1.9). Here `auc` raises
a ValueError that names the class, so a NaN never reaches model selection silently.
"""

import numpy as np

# The task strings have one home, the dataset registry; re-exported for scoring code.
from ssljax.data.registry import (  # noqa: F401
    BINARY,
    MULTI_CLASS,
    MULTI_LABEL,
    ORDINAL,
    TASKS,
    check_task,
)


def _integer_labels(y_true: np.ndarray) -> np.ndarray:
    """y_true: any numeric array holding whole numbers -> int64, same shape."""
    labels = y_true.astype(np.int64)
    if not np.array_equal(labels, y_true):
        raise ValueError("y_true must hold integer class labels; got non-integer values")
    return labels


def _prepare(task: str, y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """Validates and reshapes to the official layout.

    Returns y_true int64 [N] (or [N, L] for multi-label) and y_score float64 [N] for binary,
    [N, C] for multi-class / ordinal, [N, L] for multi-label.
    """
    check_task(task)
    y_true = _integer_labels(np.asarray(y_true))
    y_score = np.asarray(y_score, dtype=np.float64)
    if task != MULTI_LABEL and y_true.ndim == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    if task == BINARY and y_score.ndim == 2:
        y_score = y_score[:, -1]

    if task == MULTI_LABEL:
        if y_true.ndim != 2 or y_score.shape != y_true.shape:
            raise ValueError(
                f"task {task!r} needs y_true [N, L] and y_score [N, L] of equal shape; got "
                f"y_true {y_true.shape}, y_score {y_score.shape}"
            )
    else:
        want_score_ndim = 1 if task == BINARY else 2
        if y_true.ndim != 1 or y_score.ndim != want_score_ndim:
            raise ValueError(
                f"task {task!r} needs y_true [N] or [N, 1] and y_score "
                f"{'[N], [N, 1] or [N, 2]' if task == BINARY else '[N, C]'}; got "
                f"y_true {y_true.shape}, y_score {y_score.shape}"
            )
    if y_true.shape[0] != y_score.shape[0] or y_true.shape[0] == 0:
        raise ValueError(
            f"y_true and y_score need the same, non-zero number of examples; got "
            f"{y_true.shape[0]} and {y_score.shape[0]}"
        )
    if not np.all(np.isfinite(y_score)):
        raise ValueError("y_score holds NaN or inf; check the model's outputs")

    num_values = 2 if task in (BINARY, MULTI_LABEL) else y_score.shape[1]
    if y_true.min() < 0 or y_true.max() >= num_values:
        raise ValueError(
            f"task {task!r}: labels must lie in [0, {num_values}); got values from "
            f"{y_true.min()} to {y_true.max()} (does y_score have one column per class?)"
        )
    return y_true, y_score


def predict_labels(task: str, y_score, threshold: float = 0.5) -> np.ndarray:
    """The hard predictions the official ACC scores.

    Args:
      task: a medmnist task string.
      y_score: float [N, C] / [N, L] probabilities (binary: [N, 2], [N, 1] or [N]).
      threshold: decision threshold on the positive score (binary and multi-label).

    Returns:
      int64 [N] class indices, or int64 [N, L] in {0, 1} for multi-label.
    """
    check_task(task)
    y_score = np.asarray(y_score, dtype=np.float64)
    if task == MULTI_LABEL:
        return (y_score > threshold).astype(np.int64)
    if task == BINARY:
        positive = y_score[:, -1] if y_score.ndim == 2 else y_score
        return (positive > threshold).astype(np.int64)
    return np.argmax(y_score, axis=-1)


def accuracy(task: str, y_true, y_score, threshold: float = 0.5) -> float:
    """MedMNIST ACC (`medmnist.evaluator.getACC`); shapes as in the module docstring."""
    y_true, y_score = _prepare(task, y_true, y_score)
    correct = y_true == predict_labels(task, y_score, threshold)
    if task == MULTI_LABEL:
        return float(np.mean(np.mean(correct, axis=0)))
    return float(np.mean(correct))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """x: float [N] -> float64 [N] 1-based ranks, tied values sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts_group = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.concatenate([starts[1:], [x.shape[0]]])
    # The ranks start+1 .. end (1-based, inclusive) average to (start + 1 + end) / 2.
    group_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(x.shape[0], dtype=np.float64)
    ranks[order] = group_rank[group]
    return ranks


def binary_auc(positive: np.ndarray, score: np.ndarray, what: str = "y_true") -> float:
    """ROC AUC by the Mann-Whitney rank formula; ties count one half, as in sklearn.

    Args:
      positive: bool [N], true for positive examples.
      score: float [N], higher means more likely positive.
      what: names the label or class in the error for a degenerate case.
    """
    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"ROC AUC is undefined for {what}: it has {n_pos} positive and {n_neg} negative "
            "examples; evaluate on a split that holds both"
        )
    ranks = _average_ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc(task: str, y_true, y_score) -> float:
    """MedMNIST AUC (`medmnist.evaluator.getAUC`); shapes as in the module docstring.

    Raises a ValueError if a label (multi-label), the positive class (binary) or any class
    (multi-class / ordinal, one-vs-rest) has no positive or no negative example.
    """
    y_true, y_score = _prepare(task, y_true, y_score)
    if task == BINARY:
        return binary_auc(y_true == 1, y_score, "the binary labels")
    if task == MULTI_LABEL:
        per_label = [
            binary_auc(y_true[:, i] == 1, y_score[:, i], f"label {i}")
            for i in range(y_score.shape[1])
        ]
    else:
        per_label = [
            binary_auc(y_true == i, y_score[:, i], f"class {i} (one-vs-rest)")
            for i in range(y_score.shape[1])
        ]
    return float(np.mean(per_label))


def evaluate(task: str, y_true, y_score) -> dict[str, float]:
    """Both MedMNIST scores: {'acc': float, 'auc': float}; shapes as in the module docstring."""
    return {"acc": accuracy(task, y_true, y_score), "auc": auc(task, y_true, y_score)}


def probabilities(task: str, logits) -> np.ndarray:
    """Scores the metrics expect, from a classifier's logits.

    Args:
      task: a medmnist task string.
      logits: float [N, C] (one per class; binary [N, 2]), float [N, L] for multi-label, or
        float [N, 1] for a binary classifier with a single positive-class logit.

    Returns:
      float64, the shape of `logits`: softmax over classes, or a sigmoid per column for
      multi-label and single-logit binary.
    """
    check_task(task)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, C]; got shape {logits.shape}")
    if task == MULTI_LABEL or (task == BINARY and logits.shape[1] == 1):
        # The two-branch form never exponentiates a large positive number.
        e = np.exp(-np.abs(logits))
        return np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if logits.shape[1] < 2:
        raise ValueError(f"task {task!r} needs one logit per class (>= 2); got {logits.shape}")
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts of (true, predicted) class pairs.

    Args:
      y_true: int [N] or [N, 1] true classes in [0, num_classes).
      y_pred: int [N] predicted classes (e.g. from `predict_labels`).
      num_classes: C.

    Returns:
      int64 [C, C]; row = true class, column = predicted class (sklearn's layout).
    """
    y_true = _integer_labels(np.asarray(y_true)).reshape(-1)
    y_pred = _integer_labels(np.asarray(y_pred)).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape} vs {y_pred.shape}")
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} holds classes outside [0, {num_classes}): {values.min()} to {values.max()}"
            )
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)
