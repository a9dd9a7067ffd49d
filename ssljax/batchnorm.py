"""BatchNorm statistics re-estimated on images before scoring ("precise BN").

Running averages drift behind the weights while a network trains, and a frozen random
encoder has never run in train mode at all, so its running statistics are still the
initial (0, 1). Before any val or test scoring, both arms of every protocol replace them with
the statistics of the training images under the weights being scored (Wu & Johnson,
"Rethinking 'Batch' in BatchNorm", 2021).

Each batch runs in train mode, as in training: every layer normalises with its batch's
statistics. Per layer, the batch means m_b and biased variances v_b of its input are pooled
over the K batches into the population moments of all the images:
    mean = avg_b m_b,    var = avg_b (v_b + m_b^2) - mean^2.
The batch moments are read from Flax's running-average update started from zeros:
`new = BN_MOMENTUM * 0 + (1 - BN_MOMENTUM) * m_b`.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ssljax import augment, parallel
from ssljax.models import BN_MOMENTUM

# (params, batch_stats, images uint8 [B, H, W, C]) -> {layer: {'mean', 'var'}} of the batch.
MomentsFn = Callable[[Any, Any, jax.Array], Any]


def make_moments_fn(model: nn.Module) -> MomentsFn:
    """The jitted per-layer batch moments of `model` in train mode (a tree like batch_stats)."""

    def moments(params, batch_stats, images):
        zeros = jax.tree.map(jnp.zeros_like, batch_stats)
        _, mutated = model.apply(
            {"params": params, "batch_stats": zeros},
            augment.normalize(images),
            train=True,
            mutable=["batch_stats"],
        )
        return jax.tree.map(lambda s: s / (1.0 - BN_MOMENTUM), mutated["batch_stats"])

    return jax.jit(moments)


def _pool(per_batch: list[Any]) -> Any:
    """Pools a list of {'mean', 'var'} trees (one per batch) into population moments."""
    if isinstance(per_batch[0], dict) and set(per_batch[0]) == {"mean", "var"}:
        means = np.stack([np.asarray(b["mean"], np.float64) for b in per_batch])
        second = np.stack([np.asarray(b["var"], np.float64) for b in per_batch]) + means**2
        mean = means.mean(0)
        var = np.maximum(second.mean(0) - mean**2, 0.0)
        return {"mean": mean.astype(np.float32), "var": var.astype(np.float32)}
    return {k: _pool([b[k] for b in per_batch]) for k in per_batch[0]}


def reestimate(
    moments_fn: MomentsFn,
    params: Any,
    batch_stats: Any,
    images: np.ndarray,
    batch_size: int,
    mesh: Mesh,
) -> Any:
    """BatchNorm statistics of `images` under `params`, in the structure of `batch_stats`.

    Args:
      moments_fn: from `make_moments_fn` for the model that owns `params`.
      images: uint8 [N, H, W, C], the same on every process; the full batches of
        `batch_size` are used (the last partial one is dropped: a short batch would weigh
        as much as a full one), or one batch of all N, rounded down to a multiple of the
        device count, when N < batch_size.
      batch_size: global batch, a multiple of the device count.
    Returns:
      A batch_stats tree of float32 host arrays, to score with (eval mode).
    """
    n = len(images)
    devices = mesh.devices.size
    batch_size = min(batch_size, images_used(n, batch_size, devices))
    if batch_size < max(devices, 2):
        raise ValueError(f"{n} images cannot re-estimate BatchNorm statistics on {devices} devices")
    rows = parallel.process_rows(batch_size)
    per_batch = []
    for start in range(0, n - batch_size + 1, batch_size):
        x = parallel.host_to_global(images[start : start + batch_size][rows], mesh)
        per_batch.append(jax.device_get(moments_fn(params, batch_stats, x)))
    return _pool(per_batch)


def images_used(n: int, batch_size: int, devices: int = 1) -> int:
    """How many of n images `reestimate` uses: its full batches (see there)."""
    if n < batch_size:
        return n - n % devices
    return (n // batch_size) * batch_size


def bn_images(train_images: np.ndarray, count: int) -> np.ndarray:
    """The training images BatchNorm statistics are re-estimated on: uint8 [min(count, N), ...].

    A fixed permutation of the train split (independent of the run's seed), so every arm,
    seed and protocol on a dataset uses the same images.
    """
    order = np.random.default_rng(0).permutation(len(train_images))
    return train_images[np.sort(order[:count])]
