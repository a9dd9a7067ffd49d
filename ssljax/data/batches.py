"""Host-side batch indices: a pure function of (seed, step), so nothing needs checkpointing.

Training shuffles without replacement within an epoch (the epoch's permutation comes from
`np.random.default_rng((seed, epoch))`) and drops the last partial batch; a run resumed at
step s therefore sees exactly the batches an uninterrupted run would. Evaluation covers
every example once and pads the last batch, with a mask saying which rows are real.
"""

import functools
from collections.abc import Iterator

import ml_collections
import numpy as np

from ssljax.errors import DataError


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    """Batches per epoch of n examples: the one rule, read by `optim.StepPlan`.

    `drop_last` (pretraining, `train_batch_indices`): full batches only, n // batch_size.
    Otherwise (fine-tuning, `stream_batch_indices`): ceil(n / batch_size), every example once.
    """
    if batch_size < 1:
        raise ValueError(f"train.batch_size={batch_size} must be positive")
    if not drop_last:
        return -(-n // batch_size)
    if n < batch_size:
        raise ValueError(
            f"train.batch_size={batch_size} is larger than the {n} training examples; "
            "lower train.batch_size or use more data"
        )
    return n // batch_size


def fit_to_split(
    config: ml_collections.ConfigDict, n: int, devices: int
) -> ml_collections.ConfigDict:
    """`config`, or, when its `train.batch_size` exceeds the `n` train images, a copy whose
    batch is clipped to the split (rounded down to a multiple of `devices`), said in one line.

    Pretraining drops the last partial batch, so a small folder (80 images, the default batch
    of 256) would have no step at all; with the clip it takes one step per epoch, its
    learning rate scaled to the smaller batch (`train.base_lr * batch / 256`).

    Raises:
      DataError: fewer train images than devices.
    """
    batch_size = config.train.batch_size
    if n >= batch_size:
        return config
    clipped = n - n % devices
    if clipped < 1:
        raise DataError(
            f"the train split has {n} image(s), fewer than the {devices} device(s) a batch "
            "is split over: add images, or run on fewer devices"
        )
    print(
        f"train.batch_size={batch_size} is larger than the {n} train images: using batches of "
        f"{clipped} (set --config.train.batch_size={clipped} to silence this)",
        flush=True,
    )
    config = ml_collections.ConfigDict(config.to_dict())
    config.train.batch_size = clipped
    config.lock()
    return config


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    # Cached because every step of an epoch slices the same permutation; read-only so a
    # caller cannot corrupt the cache.
    perm = np.random.default_rng((seed, epoch)).permutation(n)
    perm.flags.writeable = False
    return perm


def train_batch_indices(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
    """Indices of the training batch at `step`: int64 [batch_size].

    Args:
      seed: non-negative data seed.
      step: global step, from 0; epoch = step // steps_per_epoch(n, batch_size).
      n: examples in the training split (or label subset).
      batch_size: global batch size.

    Returns:
      A slice of the epoch's permutation of range(n): within an epoch no index repeats.
    """
    if seed < 0 or step < 0:
        raise ValueError(f"seed={seed} and step={step} must be non-negative")
    epoch, i = divmod(step, steps_per_epoch(n, batch_size))
    perm = _epoch_permutation(seed, epoch, n)
    return perm[i * batch_size : (i + 1) * batch_size].astype(np.int64)


def stream_batch_indices(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
    """Indices of batch `step` in the endless stream of epoch permutations: int64 [batch_size].

    Unlike `train_batch_indices` nothing is dropped and `n` may be smaller than the batch:
    batch s holds positions [s * B, (s + 1) * B) of perm(seed, 0) ++ perm(seed, 1) ++ ...,
    so every example is seen once per pass. Fine-tuning on a small label budget (a 1%
    subset may hold a handful of images) uses this; its epoch of the full train split is
    `steps_per_epoch(n_train, B, drop_last=False)` steps.
    """
    if seed < 0 or step < 0:
        raise ValueError(f"seed={seed} and step={step} must be non-negative")
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, n)
    return np.concatenate(
        [_epoch_permutation(seed, int(e), n)[offsets[epochs == e]] for e in np.unique(epochs)]
    ).astype(np.int64)


def eval_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Evaluation batches in order, covering each of the n examples exactly once.

    Yields:
      (indices int64 [batch_size], mask bool [batch_size]). The last batch is padded by
      repeating its last index, with mask False on the padding, so every batch has the same
      shape (one compilation) and no example is dropped.
    """
    if batch_size < 1:
        raise ValueError(f"eval.batch_size={batch_size} must be positive")
    if n < 1:
        raise ValueError(f"cannot evaluate {n} examples")
    for start in range(0, n, batch_size):
        real = np.arange(start, min(start + batch_size, n), dtype=np.int64)
        indices = np.full(batch_size, real[-1], dtype=np.int64)
        indices[: len(real)] = real
        yield indices, np.arange(batch_size) < len(real)
