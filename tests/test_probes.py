"""kNN and linear probe on synthetic features, against NumPy and scikit-learn references."""

import chex
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from ssljax import metrics, probes

L2_VALUES = (1e-4, 1e-2, 1e-1)


def _clusters(n: int, num_classes: int, dim: int, spread: float, seed: int):
    """Gaussian blobs: features float32 [n, dim], labels int64 [n, 1] (medmnist layout)."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).normal(size=(num_classes, dim)) * 3.0
    labels = rng.integers(0, num_classes, size=n)
    features = centers[labels] + spread * rng.normal(size=(n, dim))
    return features.astype(np.float32), labels[:, None]


def _knn_reference(train, targets, query, k, metric, temperature):
    """Brute-force NumPy kNN; targets float [N, C] one-hot or 0/1 per label."""
    if metric == "cosine":
        train = train / np.linalg.norm(train, axis=1, keepdims=True)
        query = query / np.linalg.norm(query, axis=1, keepdims=True)
        closeness = query @ train.T
    else:
        closeness = -((query[:, None, :] - train[None, :, :]) ** 2).sum(-1)
    out = np.zeros((query.shape[0], targets.shape[1]))
    for i, row in enumerate(closeness):
        nearest = np.argsort(-row)[:k]
        w = np.exp(row[nearest] / temperature) if metric == "cosine" else np.ones(k)
        out[i] = w @ targets[nearest] / w.sum()
    return out


@pytest.mark.parametrize("metric", probes.KNN_METRICS)
def test_knn_separated_clusters_near_perfect(metric):
    train_x, train_y = _clusters(200, 4, 16, spread=0.3, seed=0)
    query_x, query_y = _clusters(90, 4, 16, spread=0.3, seed=1)
    k = 20 if metric == "cosine" else 11
    scores = probes.knn_predict(
        train_x, train_y, query_x, num_classes=4, task=metrics.MULTI_CLASS, k=k, metric=metric
    )
    chex.assert_shape(scores, (90, 4))
    chex.assert_type(scores, np.float32)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert metrics.accuracy(metrics.MULTI_CLASS, query_y, scores) >= 0.99


def test_knn_hand_computed_example():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 1], [-1, 0], [3, 0.2]], np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2])
    query = np.array([[1, 0.05], [0.05, 2]], np.float32)
    kwargs = {"num_classes": 3, "task": metrics.MULTI_CLASS, "k": 3}
    # Euclidean: [1, .05] is nearest to train 0, 1 (class 0) then 3 (class 1), since
    # train 5 is 2 away. [.05, 2] is nearest to 3, 2 (class 1) then 1 (class 0).
    euclid = probes.knn_predict(train, labels, query, metric="euclidean", **kwargs)
    np.testing.assert_allclose(euclid, [[2 / 3, 1 / 3, 0], [1 / 3, 2 / 3, 0]], atol=1e-6)
    # Cosine: direction only, so train 5 = [3, .2] joins the top 3 of the first query.
    cosine = probes.knn_predict(train, labels, query, metric="cosine", temperature=0.5, **kwargs)
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    q0 = query[0] / np.linalg.norm(query[0])
    w = np.exp(unit[[0, 1, 5]] @ q0 / 0.5)
    np.testing.assert_allclose(cosine[0], [(w[0] + w[1]) / w.sum(), 0, w[2] / w.sum()], atol=1e-6)
    onehot = np.eye(3)[labels]
    np.testing.assert_allclose(
        cosine, _knn_reference(train, onehot, query, 3, "cosine", 0.5), atol=1e-6
    )


@pytest.mark.parametrize("metric", probes.KNN_METRICS)
def test_knn_matches_numpy_and_chunking_is_invisible(metric):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(120, 8)).astype(np.float32)
    labels = rng.integers(0, 5, size=120)
    query = rng.normal(size=(37, 8)).astype(np.float32)
    kwargs = {"num_classes": 5, "task": metrics.MULTI_CLASS, "k": 7, "metric": metric}
    whole = probes.knn_predict(train, labels, query, **kwargs)
    chunked = probes.knn_predict(train, labels, query, batch_size=10, **kwargs)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    want = _knn_reference(train, np.eye(5)[labels], query, 7, metric, 0.07)
    np.testing.assert_allclose(whole, want, atol=1e-5)


def test_knn_euclidean_equals_sklearn():
    train_x, train_y = _clusters(150, 3, 6, spread=3.0, seed=0)
    query_x, _ = _clusters(40, 3, 6, spread=3.0, seed=1)
    ours = probes.knn_predict(
        train_x, train_y, query_x, num_classes=3, task=metrics.ORDINAL, k=11, metric="euclidean"
    )
    sk = KNeighborsClassifier(n_neighbors=11).fit(train_x, train_y[:, 0]).predict_proba(query_x)
    np.testing.assert_allclose(ours, sk, atol=1e-6)
    assert 0.0 < ours.max(axis=1).min() < 1.0  # overlapping blobs: mixed votes happen


def test_knn_multi_label():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(100, 8)).astype(np.float32)
    targets = (train[:, :4] > 0).astype(np.int64)  # label j: sign of feature j
    query = rng.normal(size=(50, 8)).astype(np.float32)
    scores = probes.knn_predict(
        train, targets, query, num_classes=4, task=metrics.MULTI_LABEL, k=10, temperature=0.1
    )
    chex.assert_shape(scores, (50, 4))
    want = _knn_reference(train, targets.astype(float), query, 10, "cosine", 0.1)
    np.testing.assert_allclose(scores, want, atol=1e-5)
    assert metrics.auc(metrics.MULTI_LABEL, (query[:, :4] > 0).astype(int), scores) > 0.8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 500}, r"k=500 must lie in \[1, 120\]"),
        ({"metric": "manhattan"}, "unknown kNN metric 'manhattan'"),
        ({"num_classes": 3}, r"classes in \[0, 3\)"),
        ({"task": "multi-class, ordinal"}, "not a MedMNIST task"),
    ],
)
def test_knn_bad_input(kwargs, match):
    rng = np.random.default_rng(0)
    args = {"num_classes": 5, "task": metrics.MULTI_CLASS, **kwargs}
    with pytest.raises(ValueError, match=match):
        probes.knn_predict(
            rng.normal(size=(120, 4)), rng.integers(0, 5, 120), np.ones((3, 4)), **args
        )
    with pytest.raises(ValueError, match="3 dims but train_features 4"):
        probes.knn_predict(
            np.ones((9, 4)), np.zeros(9), np.ones((2, 3)), num_classes=2, task="binary-class", k=3
        )


def test_linear_probe_separable_and_equals_sklearn():
    train_x, train_y = _clusters(300, 3, 12, spread=4.0, seed=0)
    val_x, val_y = _clusters(200, 3, 12, spread=4.0, seed=1)
    test_x, test_y = _clusters(200, 3, 12, spread=4.0, seed=2)
    probe = probes.train_linear_probe(
        train_x,
        train_y,
        val_x,
        val_y,
        task=metrics.MULTI_CLASS,
        num_classes=3,
        l2_values=L2_VALUES,
    )
    assert probe.l2 in L2_VALUES
    assert list(probe.val_scores) == list(L2_VALUES)
    assert probe.val_scores[probe.l2]["auc"] == max(s["auc"] for s in probe.val_scores.values())
    chex.assert_shape(
        (probe.weights, probe.bias, probe.mean, probe.std), ((12, 3), (3,), (12,), (12,))
    )
    proba = probes.predict_proba(probe, test_x)
    chex.assert_shape(proba, (200, 3))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    scores = metrics.evaluate(metrics.MULTI_CLASS, test_y, proba)
    assert scores["auc"] > 0.9 and scores["acc"] > 0.7, scores
    # Same objective as sklearn's: mean loss + l2/2 |W|^2  <=>  C = 1 / (l2 * N).
    standardised = (train_x - train_x.mean(0)) / train_x.std(0)
    sk = LogisticRegression(C=1 / (probe.l2 * 300), tol=1e-10, max_iter=10_000)
    sk.fit(standardised, train_y[:, 0])
    want = sk.predict_proba((test_x - train_x.mean(0)) / train_x.std(0))
    np.testing.assert_allclose(proba, want, atol=2e-3)


def test_linear_probe_shuffled_labels_at_chance():
    # Labels independent of the features: test AUC ~ 0.5. With 500 positives and 500
    # negatives the AUC's std under chance is ~0.018; the tolerance 0.08 is over 4 std.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1600, 12)).astype(np.float32)
    y = rng.integers(0, 2, size=(1600, 1))
    probe = probes.train_linear_probe(
        x[:400],
        y[:400],
        x[400:600],
        y[400:600],
        task=metrics.BINARY,
        num_classes=2,
        l2_values=L2_VALUES,
    )
    test_auc = metrics.auc(metrics.BINARY, y[600:], probes.predict_proba(probe, x[600:]))
    assert abs(test_auc - 0.5) < 0.08, test_auc


def test_linear_probe_multi_label():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 10)).astype(np.float32)
    mixing = rng.normal(size=(10, 5))
    y = ((x @ mixing + 0.5 * rng.normal(size=(500, 5))) > 0).astype(np.int64)
    probe = probes.train_linear_probe(
        x[:300],
        y[:300],
        x[300:400],
        y[300:400],
        task=metrics.MULTI_LABEL,
        num_classes=5,
        l2_values=L2_VALUES,
        epochs=50,
    )
    proba = probes.predict_proba(probe, x[400:])
    chex.assert_shape(proba, (100, 5))
    assert np.all((proba >= 0) & (proba <= 1))  # float32 sigmoids may round to 0 or 1
    assert probe.l2 in L2_VALUES
    assert metrics.auc(metrics.MULTI_LABEL, y[400:], proba) > 0.9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"l2_values": ()}, "l2_values must be a non-empty"),
        ({"num_classes": 3}, "num_classes=2"),
        ({"train_y": np.full(8, 2)}, r"train_y must hold integer classes in \[0, 2\)"),
        ({"val_x": np.ones((4, 5))}, "val_x has 5 features but train_x 3"),
        ({"train_x": np.full((8, 3), np.nan)}, "train_x holds NaN"),
    ],
)
def test_linear_probe_bad_input(kwargs, match):
    args = {
        "train_x": np.ones((8, 3)),
        "train_y": np.zeros(8),
        "val_x": np.ones((4, 3)),
        "val_y": np.zeros(4),
        "task": metrics.BINARY,
        "num_classes": 2,
        "l2_values": (0.1,),
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        probes.train_linear_probe(**args)
