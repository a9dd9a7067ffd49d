"""The step factories: `lax.scan` of steps equals single steps (padding steps included), and
the classifier step's mask. Small Flax models on synthetic images, so each compiles in
seconds; the ResNet runs are in tests/test_pretrain.py and tests/test_loop.py."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import barlow
from ssljax import augment, losses, models, steps
from ssljax.evaluate import setup

S, B, SIZE = 3, 16, 16  # steps per dispatch, batch, image side


class TinyEncoder(nn.Module):
    """Conv + BatchNorm + mean pool: kernels and batch statistics, like the ResNets.

    With `batch_norm_in_train` False, BatchNorm uses its running averages also in training,
    so that no row of a batch affects another (the classifier mask test needs that)."""

    batch_norm_in_train: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Conv(8, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not (train and self.batch_norm_in_train))(x)
        return nn.relu(x).mean(axis=(1, 2))


def _lr(value: float) -> optax.Schedule:
    """A constant schedule whose value is an array, as the steps log it."""
    return lambda count: jnp.full((), value, jnp.float32)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 1), dtype=np.uint8)


def _run_both(model, step, batch_args, n_live: int):
    """(state after one scanned dispatch of S steps with n_live live, state after n_live
    single-step dispatches of the same batches, metrics of the scan)."""
    tx = optax.sgd(0.05, momentum=0.9)
    init = jax.jit(
        functools.partial(steps.init_train_state, model, tx, image_shape=(SIZE, SIZE, 1))
    )
    key = jax.random.key(3)
    run = jax.jit(steps.scan_steps(step(tx)))
    live = jnp.arange(S) < n_live
    scanned, metrics = run(init(jax.random.key(0)), batch_args, live, key)
    single = init(jax.random.key(0))
    for i in range(n_live):
        single, _ = run(single, tuple(a[i : i + 1] for a in batch_args), live[:1], key)
    return scanned, single, metrics


def _assert_states_close(scanned, single):
    """Params, BatchNorm statistics and optimizer state to float32 rounding: the scan body
    and the single step are separate XLA programs, fused differently. Measured after 3
    Barlow Twins steps: params at most 4.5e-6 apart (a projector kernel that moved 5.1), the
    bias before BatchNorm, whose gradient is rounding alone, by as much as it moved (4e-7,
    so a tolerance relative to the movement would not do); the momentum traces, sums of raw
    gradients, 1.9e-5 on 0.41."""
    assert int(scanned.step) == int(single.step)
    chex.assert_trees_all_close(
        (scanned.params, scanned.batch_stats),
        (single.params, single.batch_stats),
        rtol=1e-5,
        atol=1e-5,
    )
    chex.assert_trees_all_close(scanned.opt_state, single.opt_state, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_live", [S, S - 1])
def test_scanned_pretrain_steps_equal_single_steps(n_live):
    config = barlow.get_config("breastmnist")
    views = tuple(
        augment.ViewParams.from_config(v) for v in (config.augment.view1, config.augment.view2)
    )
    model = models.PretrainModel(encoder=TinyEncoder(), projector_dims=(32, 32))
    loss = functools.partial(losses.barlow_twins_loss, has_aux=True)

    def step(tx):
        return steps.make_pretrain_step(model, tx, _lr(0.05), loss, views, False)

    images = _images(S * B).reshape(S, B, SIZE, SIZE, 1)
    scanned, single, metrics = _run_both(model, step, (jnp.asarray(images),), n_live)
    _assert_states_close(scanned, single)
    assert int(scanned.step) == n_live  # padding steps leave the state as it is
    assert np.all(np.asarray(metrics["loss"])[n_live:] == 0)  # ... and report zeros
    assert np.all(np.isfinite(np.asarray(metrics["loss"])[:n_live]))


@pytest.mark.parametrize("n_live", [S, S - 1])
def test_scanned_classifier_steps_equal_single_steps(n_live):
    model = models.ClassifierModel(encoder=TinyEncoder(), num_outputs=3)

    def step(tx):
        loss = setup.classification_loss("multi-class")
        return steps.make_classifier_step(model, tx, _lr(0.05), loss, None)

    labels = np.random.default_rng(1).integers(0, 3, (S, B))
    args = (
        jnp.asarray(_images(S * B).reshape(S, B, SIZE, SIZE, 1)),
        jnp.asarray(labels),
        jnp.ones((S, B), bool),
    )
    scanned, single, _ = _run_both(model, step, args, n_live)
    _assert_states_close(scanned, single)
    assert int(scanned.step) == n_live


def test_classifier_mask_ignores_padding_rows():
    """Garbage rows (other images, wrong labels) with mask False give the update of the
    batch without them, to float32 rounding. BatchNorm in train mode would see the padding
    rows in its batch statistics, so the encoder here normalises with running averages; the
    loop never pads a training batch (the fine-tuning stream fills every row)."""
    model = models.ClassifierModel(encoder=TinyEncoder(batch_norm_in_train=False), num_outputs=3)
    tx = optax.sgd(0.1)
    loss = setup.classification_loss("multi-class")
    step = jax.jit(steps.make_classifier_step(model, tx, _lr(0.1), loss, None))
    init = steps.init_train_state(model, tx, jax.random.key(0), (SIZE, SIZE, 1))
    key = jax.random.key(1)
    rng = np.random.default_rng(2)
    images, labels = _images(B), rng.integers(0, 3, B)
    garbage, wrong = _images(B, seed=9), (labels + 1) % 3
    real, real_metrics = step(init, images, labels, np.ones(B, bool), key)
    padded, padded_metrics = step(
        init,
        np.concatenate([images, garbage]),
        np.concatenate([labels, wrong]),
        np.arange(2 * B) < B,
        key,
    )
    np.testing.assert_allclose(padded_metrics["loss"], real_metrics["loss"], rtol=1e-6)
    np.testing.assert_allclose(padded_metrics["grad_norm"], real_metrics["grad_norm"], rtol=1e-5)
    chex.assert_trees_all_close(padded.params, real.params, rtol=1e-5, atol=1e-7)
    # The garbage would change the update if it counted.
    unmasked, _ = step(
        init,
        np.concatenate([images, garbage]),
        np.concatenate([labels, wrong]),
        np.ones(2 * B, bool),
        key,
    )
    moved = jax.tree.leaves(
        jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), unmasked.params, real.params)
    )
    assert max(moved) > 1e-4, moved
