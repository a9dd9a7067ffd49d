"""Batched inference over a whole split, covering every example, and the kNN monitor."""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from ssljax import interrupt, metrics, parallel, probes
from ssljax.data import batches


def batched_apply(
    apply_fn: Callable[[Any, Any, jax.Array], Any],
    params: Any,
    batch_stats: Any,
    images: np.ndarray,
    batch_size: int,
    mesh: Mesh,
) -> Any:
    """Runs a jitted `apply_fn(params, batch_stats, images)` over all `images`.

    Args:
      apply_fn: jitted; returns an array or a pytree of arrays with a leading batch axis.
      images: uint8 [N, H, W, C], the same on every process.
      batch_size: global batch, a multiple of the device count.
    Returns:
      The outputs for the N images as NumPy arrays (the padded rows of the last batch removed).
    """
    rows = parallel.process_rows(batch_size)
    outputs = []
    for idx, mask in batches.eval_batches(len(images), batch_size):
        interrupt.check()
        x = parallel.host_to_global(images[idx[rows]], mesh)
        out = apply_fn(params, batch_stats, x)
        outputs.append(jax.tree.map(lambda o, m=mask: parallel.to_host(o)[m], out))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)


def knn_score(
    features_fn: Callable[[np.ndarray], np.ndarray],
    train: Any,
    val: Any,
    *,
    task: str,
    num_classes: int,
    k: int,
    metric: str,
    temperature: float,
) -> dict[str, float]:
    """kNN accuracy/AUC of frozen features: bank = labelled train split, queries = val.

    Args:
      features_fn: images uint8 [N, H, W, C] -> features float32 [N, F].
      train, val: data Splits (images, labels).
    """
    scores = probes.knn_predict(
        features_fn(train.images),
        train.labels,
        features_fn(val.images),
        num_classes=num_classes,
        task=task,
        k=k,
        metric=metric,
        temperature=temperature,
    )
    result = metrics.evaluate(task, val.labels, np.asarray(scores))
    return {"knn_acc": float(result["acc"]), "knn_auc": float(result["auc"])}
