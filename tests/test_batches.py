"""Which examples a run sees: label-budget subsets and training / evaluation batch indices."""

import chex
import numpy as np
import pytest

from configs import base
from ssljax.data import batches, registry, subsets

COUNTS = np.array([1000, 300, 50, 3, 1])  # imbalanced, with a singleton class


def imbalanced_labels(seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
    return np.random.default_rng(seed).permutation(labels).astype(np.int32)


def expected_counts(fraction: float) -> np.ndarray:
    return np.maximum(1, np.floor(fraction * COUNTS + 0.5)).astype(int)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_fraction_subset_sizes_and_stratification(fraction):
    labels = imbalanced_labels()
    idx = subsets.label_subset(labels, registry.MULTI_CLASS, fraction=fraction, seed=3)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, np.unique(idx))  # sorted, no repeats
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=5), expected_counts(fraction))


def test_per_class_subset_sizes():
    labels = imbalanced_labels()
    idx = subsets.label_subset(labels, registry.MULTI_CLASS, per_class=20, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [20, 20, 20, 3, 1])


def test_full_fraction_returns_every_index():
    labels = imbalanced_labels()
    idx = subsets.label_subset(labels, registry.MULTI_CLASS, fraction=1.0, seed=5)
    np.testing.assert_array_equal(idx, np.arange(len(labels)))


@pytest.mark.parametrize("seed", [0, 1])
def test_subsets_are_nested(seed):
    labels = imbalanced_labels()
    previous: set[int] = set()
    for fraction in (0.01, 0.1, 0.5, 1.0):
        current = set(
            subsets.label_subset(labels, registry.MULTI_CLASS, fraction=fraction, seed=seed)
        )
        assert previous < current
        previous = current
    small = subsets.label_subset(labels, registry.MULTI_CLASS, per_class=5, seed=seed)
    large = subsets.label_subset(labels, registry.MULTI_CLASS, per_class=50, seed=seed)
    ten = subsets.label_subset(labels, registry.MULTI_CLASS, fraction=0.1, seed=seed)
    assert set(small) < set(large)
    # Counts and fractions take prefixes of the same per-class permutation.
    for c in range(len(COUNTS)):
        a, b = set(small[labels[small] == c]), set(ten[labels[ten] == c])
        assert a <= b or b <= a


def test_subsets_are_deterministic_and_depend_on_seed():
    labels = imbalanced_labels()
    a = subsets.label_subset(labels, registry.ORDINAL, fraction=0.1, seed=7)
    b = subsets.label_subset(labels.copy(), registry.ORDINAL, fraction=0.1, seed=7)
    c = subsets.label_subset(labels, registry.ORDINAL, fraction=0.1, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.bincount(labels[a]), np.bincount(labels[c]))


def test_multilabel_stratifies_by_first_positive_label():
    rng = np.random.default_rng(0)
    labels = (rng.random((400, 4)) < [0.3, 0.1, 0.05, 0.02]).astype(np.int32)
    keys = subsets.stratification_key(labels, registry.MULTI_LABEL)
    reference = [int(np.flatnonzero(row)[0]) if row.any() else 4 for row in labels]
    np.testing.assert_array_equal(keys, reference)
    idx = subsets.label_subset(labels, registry.MULTI_LABEL, fraction=0.01, seed=0)
    # Every stratum present in the data keeps a member, however small the fraction.
    np.testing.assert_array_equal(np.unique(keys[idx]), np.unique(keys))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_bad_fraction_names_the_config_key(fraction):
    with pytest.raises(ValueError, match="data.label_fraction"):
        subsets.label_subset(imbalanced_labels(), registry.BINARY, fraction=fraction)


def test_bad_subset_arguments():
    labels = imbalanced_labels()
    with pytest.raises(ValueError, match="exactly one"):
        subsets.label_subset(labels, registry.BINARY)
    with pytest.raises(ValueError, match="exactly one"):
        subsets.label_subset(labels, registry.BINARY, fraction=0.1, per_class=3)
    with pytest.raises(ValueError, match="data.labels_per_class=0"):
        subsets.label_subset(labels, registry.BINARY, per_class=0)


def test_subset_from_config():
    labels = imbalanced_labels()
    config = base.get_config().data
    config.label_fraction = 0.1
    idx = subsets.subset_from_config(labels, registry.MULTI_CLASS, config, seed=2)
    np.testing.assert_array_equal(np.bincount(labels[idx]), expected_counts(0.1))
    config.labels_per_class = 2
    idx = subsets.subset_from_config(labels, registry.MULTI_CLASS, config, seed=2)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [2, 2, 2, 2, 1])


def epoch_indices(seed: int, epoch: int, n: int, batch_size: int) -> np.ndarray:
    spe = batches.steps_per_epoch(n, batch_size)
    steps = range(epoch * spe, (epoch + 1) * spe)
    return np.concatenate([batches.train_batch_indices(seed, s, n, batch_size) for s in steps])


@pytest.mark.parametrize(("n", "batch_size"), [(100, 10), (103, 10), (7, 7)])
def test_an_epoch_visits_every_example_once(n, batch_size):
    for epoch in (0, 1):
        seen = epoch_indices(seed=0, epoch=epoch, n=n, batch_size=batch_size)
        assert len(seen) == (n // batch_size) * batch_size
        assert len(np.unique(seen)) == len(seen)
        assert seen.min() >= 0 and seen.max() < n
    if n % batch_size == 0:
        np.testing.assert_array_equal(np.sort(seen), np.arange(n))


def test_seed_and_step_determine_the_batch():
    n, bs = 50, 8
    forward = [batches.train_batch_indices(1, s, n, bs) for s in range(20)]
    batches._epoch_permutation.cache_clear()
    # A resumed run computes later steps first and must still see the same batches.
    for s in reversed(range(20)):
        batch = batches.train_batch_indices(1, s, n, bs)
        chex.assert_shape(batch, (bs,))
        assert batch.dtype == np.int64
        np.testing.assert_array_equal(batch, forward[s])
    # Step 6 is batch 0 of epoch 1: the epoch's permutation from the documented derivation.
    np.testing.assert_array_equal(forward[6], np.random.default_rng((1, 1)).permutation(n)[:bs])


def test_epochs_and_seeds_differ():
    a = epoch_indices(seed=0, epoch=0, n=64, batch_size=8)
    assert not np.array_equal(a, epoch_indices(seed=0, epoch=1, n=64, batch_size=8))
    assert not np.array_equal(a, epoch_indices(seed=1, epoch=0, n=64, batch_size=8))


def test_returned_batch_is_a_private_copy():
    batch = batches.train_batch_indices(0, 0, 10, 5)
    batch[:] = -1
    assert batches.train_batch_indices(0, 0, 10, 5).min() >= 0


def test_batch_larger_than_data_names_the_key():
    with pytest.raises(ValueError, match=r"train\.batch_size=16 is larger than the 10"):
        batches.train_batch_indices(0, 0, 10, 16)
    with pytest.raises(ValueError, match=r"train\.batch_size=16 is larger than the 10"):
        batches.steps_per_epoch(10, 16)
    assert batches.steps_per_epoch(103, 10) == 10


@pytest.mark.parametrize(("n", "batch_size", "num_batches"), [(23, 8, 3), (24, 8, 3), (3, 8, 1)])
def test_eval_batches_cover_everything_once(n, batch_size, num_batches):
    out = list(batches.eval_batches(n, batch_size))
    assert len(out) == num_batches
    for indices, mask in out:
        chex.assert_shape([indices, mask], (batch_size,))
        assert indices.dtype == np.int64 and mask.dtype == bool
        assert indices.min() >= 0 and indices.max() < n
    real = np.concatenate([indices[mask] for indices, mask in out])
    np.testing.assert_array_equal(real, np.arange(n))
    last_indices, last_mask = out[-1]
    n_last = n - (num_batches - 1) * batch_size
    np.testing.assert_array_equal(last_mask, np.arange(batch_size) < n_last)
    np.testing.assert_array_equal(last_indices[n_last:], n - 1)


def test_stream_batches_cover_each_pass_even_when_n_is_below_batch():
    from ssljax.data import batches

    n, b = 5, 8  # a 1% label budget can be smaller than the batch
    seen = np.concatenate([batches.stream_batch_indices(3, s, n, b) for s in range(5)])
    assert len(seen) == 40
    for p in range(8):  # 40 positions = 8 full passes over the 5 examples
        assert sorted(seen[p * n : (p + 1) * n]) == list(range(n))
    np.testing.assert_array_equal(
        batches.stream_batch_indices(3, 2, n, b), batches.stream_batch_indices(3, 2, n, b)
    )
    assert not np.array_equal(
        batches.stream_batch_indices(3, 1, 100, 10), batches.stream_batch_indices(4, 1, 100, 10)
    )
