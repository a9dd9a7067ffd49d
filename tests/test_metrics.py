"""MedMNIST ACC/AUC against the official evaluator (`medmnist.evaluator`, test-only)."""

import contextlib
import warnings

import chex
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import roc_auc_score

from ssljax import metrics

with warnings.catch_warnings():
    # `import medmnist` warns that torch is absent; the evaluator itself does not need it.
    warnings.simplefilter("ignore")
    from medmnist import evaluator as official

# (task, number of score columns, y_true shape suffix): the shapes medmnist's npz files use.
CASES = [
    (metrics.BINARY, 2, (1,)),
    (metrics.MULTI_CLASS, 9, (1,)),
    (metrics.MULTI_LABEL, 14, (14,)),
    (metrics.ORDINAL, 5, (1,)),
]


def _random_case(task: str, num: int, n: int, seed: int, decimals: int | None):
    """Labels int [n, 1] or [n, L] and probabilities float [n, num]; rounding makes ties."""
    rng = np.random.default_rng(seed)
    if task == metrics.MULTI_LABEL:
        y_true = (rng.random((n, num)) < 0.3).astype(np.int64)
        y_score = rng.random((n, num))
    else:
        y_true = rng.integers(0, num, size=(n, 1))
        y_score = rng.dirichlet(np.ones(num), size=n)
    if decimals is not None:
        y_score = np.round(y_score, decimals)
    return y_true, y_score


@pytest.mark.parametrize("decimals", [None, 1, 2])
@pytest.mark.parametrize(("task", "num", "label_shape"), CASES)
def test_equals_official_evaluator(task, num, label_shape, decimals):
    y_true, y_score = _random_case(task, num, n=300, seed=num, decimals=decimals)
    chex.assert_shape(y_true, (300, *label_shape))
    got = metrics.evaluate(task, y_true, y_score)
    np.testing.assert_allclose(got["acc"], official.getACC(y_true, y_score, task), atol=1e-10)
    np.testing.assert_allclose(got["auc"], official.getAUC(y_true, y_score, task), atol=1e-10)
    assert 0.3 < got["auc"] < 0.7  # random scores: near chance, so the comparison is not vacuous


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("task", [metrics.BINARY, metrics.MULTI_LABEL])
def test_accuracy_threshold_equals_official(task, threshold):
    num = 2 if task == metrics.BINARY else 14
    y_true, y_score = _random_case(task, num, n=200, seed=1, decimals=1)
    np.testing.assert_allclose(
        metrics.accuracy(task, y_true, y_score, threshold),
        official.getACC(y_true, y_score, task, threshold),
        atol=1e-10,
    )


def test_binary_single_score_column_and_flat_labels():
    y_true, y_score = _random_case(metrics.BINARY, 2, n=100, seed=3, decimals=2)
    want = metrics.evaluate(metrics.BINARY, y_true, y_score)
    for score in (y_score[:, 1:], y_score[:, 1]):
        assert metrics.evaluate(metrics.BINARY, y_true[:, 0], score) == want


@pytest.mark.parametrize("seed", range(5))
def test_rank_auc_equals_sklearn_with_heavy_ties(seed):
    rng = np.random.default_rng(seed)
    positive = rng.random(500) < 0.2
    score = rng.integers(0, 6, size=500).astype(np.float64)
    np.testing.assert_allclose(
        metrics.binary_auc(positive, score), roc_auc_score(positive, score), atol=1e-12
    )
    # All scores tied: every pair counts one half.
    assert metrics.binary_auc(positive, np.zeros(500)) == 0.5


@pytest.mark.parametrize(("task", "num", "label_shape"), CASES)
def test_perfect_predictor_scores_one(task, num, label_shape):
    y_true, _ = _random_case(task, num, n=200, seed=0, decimals=None)
    if task == metrics.MULTI_LABEL:
        y_score = np.where(y_true == 1, 0.9, 0.1)
    else:
        y_score = np.full((200, num), 0.1 / (num - 1))
        y_score[np.arange(200), y_true[:, 0]] = 0.9
    assert metrics.evaluate(task, y_true, y_score) == {"acc": 1.0, "auc": 1.0}


def test_inverted_binary_predictor_scores_zero():
    y_true = np.array([0, 0, 1, 1])
    y_score = np.array([0.9, 0.8, 0.2, 0.1])
    assert metrics.evaluate(metrics.BINARY, y_true, y_score) == {"acc": 0.0, "auc": 0.0}


def test_class_without_positives_raises():
    y_true, y_score = _random_case(metrics.MULTI_CLASS, 9, n=100, seed=0, decimals=None)
    y_true[y_true == 4] = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The official code gives NaN with recent scikit-learn; older versions raise.
        with contextlib.suppress(ValueError):
            assert np.isnan(official.getAUC(y_true, y_score, metrics.MULTI_CLASS))
    with pytest.raises(ValueError, match="class 4"):
        metrics.auc(metrics.MULTI_CLASS, y_true, y_score)
    ml_true, ml_score = _random_case(metrics.MULTI_LABEL, 14, n=50, seed=0, decimals=None)
    ml_true[:, 7] = 1
    with pytest.raises(ValueError, match="label 7.*0 negative"):
        metrics.auc(metrics.MULTI_LABEL, ml_true, ml_score)


@pytest.mark.parametrize(
    ("task", "y_true", "y_score", "match"),
    [
        ("multiclass", np.zeros(3), np.ones((3, 2)), "not a MedMNIST task"),
        (metrics.MULTI_CLASS, np.array([0, 1, 5]), np.ones((3, 3)), r"\[0, 3\)"),
        (metrics.MULTI_CLASS, np.array([0, 1]), np.ones((3, 3)), "same, non-zero number"),
        (metrics.MULTI_CLASS, np.array([0, 1, 2]), np.ones(3), r"\[N, C\]"),
        (metrics.BINARY, np.array([0.5, 1.0]), np.ones(2), "integer"),
        (metrics.BINARY, np.array([0, 1]), np.array([0.2, np.nan]), "NaN"),
        (metrics.MULTI_LABEL, np.zeros((3, 2)), np.ones((3, 3)), "equal shape"),
    ],
)
def test_bad_input_is_named(task, y_true, y_score, match):
    with pytest.raises(ValueError, match=match):
        metrics.evaluate(task, y_true, y_score)


def test_probabilities():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=30.0, size=(50, 5))
    probs = metrics.probabilities(metrics.MULTI_CLASS, logits)
    chex.assert_shape(probs, (50, 5))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(probs.argmax(axis=1), logits.argmax(axis=1))
    reference = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, reference / reference.sum(1, keepdims=True), rtol=1e-12)

    sig = metrics.probabilities(metrics.MULTI_LABEL, logits)
    np.testing.assert_allclose(sig, 1.0 / (1.0 + np.exp(-logits)), rtol=1e-12)
    assert np.all(np.isfinite(metrics.probabilities(metrics.MULTI_LABEL, [[-1e4, 1e4]])))
    single = metrics.probabilities(metrics.BINARY, logits[:, :1])
    np.testing.assert_allclose(single, 1.0 / (1.0 + np.exp(-logits[:, :1])), rtol=1e-12)
    with pytest.raises(ValueError, match="one logit per class"):
        metrics.probabilities(metrics.MULTI_CLASS, logits[:, :1])


def test_confusion_matrix_equals_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, size=(120, 1))
    y_score = rng.dirichlet(np.ones(4), size=120)
    y_pred = metrics.predict_labels(metrics.MULTI_CLASS, y_score)
    cm = metrics.confusion_matrix(y_true, y_pred, num_classes=5)
    np.testing.assert_array_equal(
        cm, sk_confusion_matrix(y_true[:, 0], y_pred, labels=list(range(5)))
    )
    assert cm.sum() == 120 and cm[4].sum() == 0
    np.testing.assert_allclose(
        np.trace(cm) / 120, metrics.accuracy(metrics.MULTI_CLASS, y_true, y_score)
    )
    with pytest.raises(ValueError, match="y_pred holds classes outside"):
        metrics.confusion_matrix(y_true, y_pred + 3, num_classes=5)
