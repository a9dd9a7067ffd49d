"""Feature-level evaluation: k-nearest-neighbour classification and a linear probe.

Both work on precomputed features (float [N, F], from a frozen encoder), never on images,
and return class scores in the layout `ssljax.metrics` scores: [N, C] probabilities for
binary / multi-class / ordinal tasks (C = number of classes), [N, L] per-label
probabilities for multi-label.

kNN (`knn_predict`) has the two rules of the field:
- 'cosine': L2-normalised features, the k most similar training examples vote with weight
  exp(similarity / temperature) (the InstDisc / DINO monitor rule; k=20, T=0.07).
- 'euclidean': the k nearest by Euclidean distance, one vote each (the MedMNIST+
  benchmark's kNN, k=11; it equals scikit-learn's KNeighborsClassifier.predict_proba).

The linear probe (`train_linear_probe`) is L2-regularised logistic regression (multinomial
softmax; one sigmoid per label for multi-label; ordinal is scored as multi-class) on
features standardised with the training mean and std. It is fitted full-batch with
`optax.lbfgs` (zoom line search) from zero weights: the problem is convex and the features
of every MedMNIST split fit in device memory (90k x 2048 float32 is 0.7 GB), so L-BFGS
converges in tens of iterations with no learning rate or seed to tune, and the fit is
deterministic. The L2 strength is chosen by the best validation AUC.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssljax import metrics

KNN_METRICS = ("cosine", "euclidean")


def _features(x, name: str) -> np.ndarray:
    """x: float [N, F] -> float32 [N, F]; raises on a wrong rank, no rows or non-finite values."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be float [N, F] with N > 0; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or inf; check the encoder that produced it")
    return x


def _targets(labels, task: str, num_classes: int, num_examples: int, name: str) -> np.ndarray:
    """Validated labels -> float32 [N, C]: one-hot, or the 0/1 matrix for multi-label.

    Args:
      labels: int [N] or [N, 1] class indices; int [N, L] in {0, 1} for multi-label.
      task: a medmnist task string.
      num_classes: C (the number of labels L for multi-label; 2 for binary).
      num_examples: N, the row count of the matching features.
      name: names `labels` in errors.
    """
    metrics.check_task(task)
    if task == metrics.BINARY and num_classes != 2:
        raise ValueError(f"task {task!r} needs num_classes=2 (softmax scores); got {num_classes}")
    labels = np.asarray(labels)
    if task == metrics.MULTI_LABEL:
        want = (num_examples, num_classes)
        ok = labels.shape == want and np.isin(labels, (0, 1)).all()
        if not ok:
            raise ValueError(f"{name} must be 0/1 of shape {want} for {task!r}; got {labels.shape}")
        return labels.astype(np.float32)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (num_examples,):
        raise ValueError(
            f"{name} must be int [{num_examples}] or [{num_examples}, 1] for {task!r} (one per "
            f"feature row); got shape {labels.shape}"
        )
    index = labels.astype(np.int64)
    if not np.array_equal(index, labels) or index.min() < 0 or index.max() >= num_classes:
        raise ValueError(
            f"{name} must hold integer classes in [0, {num_classes}); "
            f"got values from {labels.min()} to {labels.max()}"
        )
    return np.eye(num_classes, dtype=np.float32)[index]


@functools.partial(jax.jit, static_argnames=("k", "metric"))
def _knn_chunk(
    train: jax.Array,
    targets: jax.Array,
    query: jax.Array,
    temperature: float,
    *,
    k: int,
    metric: str,
) -> jax.Array:
    """Scores of one chunk of queries.

    Args:
      train: float32 [N, F] (L2-normalised for 'cosine').
      targets: float32 [N, C] one-hot labels (0/1 per label for multi-label).
      query: float32 [B, F] (L2-normalised for 'cosine').
      temperature: softmax temperature of the cosine votes.

    Returns:
      float32 [B, C]: the vote-weighted mean of the neighbours' targets.
    """
    # Neighbour ranks must not depend on reduced-precision (TF32 / bf16) matmuls.
    dot = jnp.matmul(query, train.T, precision=jax.lax.Precision.HIGHEST)
    if metric == "cosine":
        top, index = jax.lax.top_k(dot, k)
        # Shifting by the row's best similarity cancels in the normalisation below and keeps
        # exp() finite for any temperature.
        weights = jnp.exp((top - top[:, :1]) / temperature)
    else:
        # |q - t|^2 up to the per-query constant |q|^2, which does not change the ranking.
        _, index = jax.lax.top_k(2.0 * dot - jnp.sum(train**2, axis=1), k)
        weights = jnp.ones(index.shape, jnp.float32)
    votes = jnp.einsum("bk,bkc->bc", weights, targets[index])
    return votes / jnp.sum(weights, axis=1, keepdims=True)


def knn_predict(
    train_features,
    train_labels,
    query_features,
    *,
    num_classes: int,
    task: str,
    k: int = 20,
    metric: str = "cosine",
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> np.ndarray:
    """Classifies queries by their k nearest training examples.

    Args:
      train_features: float [N, F].
      train_labels: int [N] or [N, 1] class indices; int [N, L] 0/1 for multi-label.
      query_features: float [M, F].
      num_classes: C (L for multi-label; 2 for binary).
      task: a medmnist task string.
      k: neighbours per query, 1 <= k <= N.
      metric: 'cosine' (temperature-weighted votes) or 'euclidean' (majority vote).
      temperature: cosine vote temperature (> 0); unused by 'euclidean'.
      batch_size: queries per compiled call; memory grows as batch_size x N.

    Returns:
      float32 [M, C]: class vote shares (rows sum to 1), or for multi-label the per-label
      weighted mean of the neighbours' 0/1 labels.
    """
    train = _features(train_features, "train_features")
    query = _features(query_features, "query_features")
    targets = _targets(train_labels, task, num_classes, train.shape[0], "train_labels")
    if metric not in KNN_METRICS:
        raise ValueError(f"unknown kNN metric {metric!r}; valid: {list(KNN_METRICS)}")
    if query.shape[1] != train.shape[1]:
        raise ValueError(
            f"query_features have {query.shape[1]} dims but train_features {train.shape[1]}"
        )
    if not 1 <= k <= train.shape[0]:
        raise ValueError(f"k={k} must lie in [1, {train.shape[0]}] (the training set size)")
    if temperature <= 0 or batch_size < 1:
        raise ValueError(f"need temperature > 0, batch_size >= 1; got {temperature}, {batch_size}")
    if metric == "cosine":
        train = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)
        query = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)

    train_dev, targets_dev = jnp.asarray(train), jnp.asarray(targets)
    chunk = min(batch_size, query.shape[0])
    scores = []
    for start in range(0, query.shape[0], chunk):
        block = query[start : start + chunk]
        rows = block.shape[0]
        # Padding the last chunk keeps one compiled shape; the padded rows are dropped.
        block = np.pad(block, ((0, chunk - rows), (0, 0)))
        out = _knn_chunk(train_dev, targets_dev, block, temperature, k=k, metric=metric)
        scores.append(np.asarray(out)[:rows])
    return np.concatenate(scores).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    """A fitted linear probe.

    Attributes:
      task: the medmnist task string it was trained for.
      weights: float32 [F, C] (C = classes, or labels for multi-label).
      bias: float32 [C].
      mean: float32 [F], training-feature mean used to standardise inputs.
      std: float32 [F], training-feature std (1 where a feature is constant).
      l2: the chosen L2 strength.
      val_scores: every L2 strength tried -> {'acc': float, 'auc': float} on val.
    """

    task: str
    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    l2: float
    val_scores: dict[float, dict[str, float]]


@functools.partial(jax.jit, static_argnames=("multi_label",))
def _fit(
    x: jax.Array, targets: jax.Array, l2: float, max_iters: int, *, multi_label: bool
) -> tuple[jax.Array, jax.Array]:
    """L-BFGS fit of one L2 strength.

    Args:
      x: float32 [N, F] standardised features.
      targets: float32 [N, C] one-hot (0/1 per label for multi-label).
      l2: strength of the penalty l2 / 2 * |W|^2 added to the mean loss (bias exempt).
      max_iters: L-BFGS iteration cap.

    Returns:
      weights float32 [F, C], bias float32 [C].
    """

    def loss_fn(params: dict[str, jax.Array]) -> jax.Array:
        logits = x @ params["w"] + params["b"]
        if multi_label:
            # Summed over labels so each label's problem has the same L2 scale as binary.
            data = optax.sigmoid_binary_cross_entropy(logits, targets).sum(axis=1)
        else:
            data = optax.softmax_cross_entropy(logits, targets)
        return jnp.mean(data) + 0.5 * l2 * jnp.sum(params["w"] ** 2)

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss_fn)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(
            grad, state, params, value=value, grad=grad, value_fn=loss_fn
        )
        return optax.apply_updates(params, updates), state

    def keep_going(carry) -> jax.Array:
        _, state = carry
        count = optax.tree.get(state, "count")
        grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
        return (count == 0) | ((count < max_iters) & (grad_norm >= 1e-5))

    params = {
        "w": jnp.zeros((x.shape[1], targets.shape[1]), jnp.float32),
        "b": jnp.zeros((targets.shape[1],), jnp.float32),
    }
    params, _ = jax.lax.while_loop(keep_going, step, (params, solver.init(params)))
    return params["w"], params["b"]


@functools.partial(jax.jit, static_argnames=("multi_label",))
def _proba(x, mean, std, weights, bias, *, multi_label: bool) -> jax.Array:
    """Float [N, F] raw features -> float32 [N, C] probabilities."""
    logits = ((x - mean) / std) @ weights + bias
    return jax.nn.sigmoid(logits) if multi_label else jax.nn.softmax(logits, axis=-1)


def predict_proba(probe: LinearProbe, x) -> np.ndarray:
    """Probabilities of a fitted probe.

    Args:
      probe: from `train_linear_probe`.
      x: float [N, F] raw (unstandardised) features.

    Returns:
      float32 [N, C]: softmax over classes, or a sigmoid per label for multi-label.
    """
    x = _features(x, "x")
    if x.shape[1] != probe.weights.shape[0]:
        raise ValueError(f"x has {x.shape[1]} features; the probe expects {probe.weights.shape[0]}")
    multi_label = probe.task == metrics.MULTI_LABEL
    out = _proba(x, probe.mean, probe.std, probe.weights, probe.bias, multi_label=multi_label)
    return np.asarray(out)


def train_linear_probe(
    train_x,
    train_y,
    val_x,
    val_y,
    *,
    task: str,
    num_classes: int,
    l2_values: Sequence[float],
    epochs: int = 100,
) -> LinearProbe:
    """Fits one logistic regression per L2 strength and keeps the best by val AUC.

    Args:
      train_x: float [N, F] training features.
      train_y: int [N] or [N, 1] classes; int [N, L] 0/1 for multi-label.
      val_x: float [V, F] validation features.
      val_y: labels of val_x, laid out as train_y.
      task: a medmnist task string.
      num_classes: C (L for multi-label; 2 for binary).
      l2_values: L2 strengths to try (>= 0); the penalty is l2 / 2 * |W|^2 on top of the
        mean cross-entropy. Ties in val AUC keep the one listed first.
      epochs: cap on L-BFGS iterations per strength; each is one or more full-batch passes
        (the line search may evaluate the loss again). The fit stops earlier once the
        gradient norm falls below 1e-5.

    Returns:
      The probe of the chosen strength, with every strength's val ACC and AUC.
    """
    train_x = _features(train_x, "train_x")
    val_x = _features(val_x, "val_x")
    targets = _targets(train_y, task, num_classes, train_x.shape[0], "train_y")
    _targets(val_y, task, num_classes, val_x.shape[0], "val_y")
    if val_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"val_x has {val_x.shape[1]} features but train_x {train_x.shape[1]}")
    if not l2_values or min(l2_values) < 0:
        raise ValueError(f"l2_values must be a non-empty list of values >= 0; got {l2_values}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}")

    mean = train_x.mean(axis=0, dtype=np.float64)
    std = train_x.std(axis=0, dtype=np.float64)
    # A constant feature carries nothing; scale 1 keeps it at zero instead of dividing by 0.
    std = np.where(std > 1e-8, std, 1.0)
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    x, targets = jnp.asarray((train_x - mean) / std), jnp.asarray(targets)
    multi_label = task == metrics.MULTI_LABEL

    best, val_scores = None, {}
    for l2 in l2_values:
        weights, bias = _fit(x, targets, l2, epochs, multi_label=multi_label)
        probe = LinearProbe(
            task=task,
            weights=np.asarray(weights),
            bias=np.asarray(bias),
            mean=mean,
            std=std,
            l2=float(l2),
            val_scores=val_scores,
        )
        val_scores[float(l2)] = metrics.evaluate(task, val_y, predict_proba(probe, val_x))
        if best is None or val_scores[float(l2)]["auc"] > val_scores[best.l2]["auc"]:
            best = probe
    return best
