"""Barlow Twins and NT-Xent against loop-by-loop NumPy references, analytic cases, finite
differences, an 8-device sharded batch, and jit behaviour."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from jax.test_util import check_grads

from ssljax.losses import barlow_twins_loss, nt_xent_loss

SHAPES = [(4, 3), (7, 5), (16, 8), (32, 48)]
RTOL = 1e-5


def bt_reference(z1: np.ndarray, z2: np.ndarray, lambd: float) -> dict[str, float]:
    """Barlow Twins in float64 with explicit loops; eps 1e-5 inside the sqrt as the loss."""
    batch, dim = z1.shape

    def standardise(z: np.ndarray) -> np.ndarray:
        out = np.empty((batch, dim))
        for d in range(dim):
            mean = sum(z[b, d] for b in range(batch)) / batch
            var = sum((z[b, d] - mean) ** 2 for b in range(batch)) / batch
            for b in range(batch):
                out[b, d] = (z[b, d] - mean) / math.sqrt(var + 1e-5)
        return out

    def std(z: np.ndarray, d: int) -> float:
        mean = sum(z[:, d]) / batch
        return math.sqrt(sum((z[b, d] - mean) ** 2 for b in range(batch)) / batch)

    a, b_ = standardise(z1), standardise(z2)
    on_diag = off_diag = diag_sum = 0.0
    for i in range(dim):
        for j in range(dim):
            c = sum(a[b, i] * b_[b, j] for b in range(batch)) / batch
            if i == j:
                on_diag += (1.0 - c) ** 2
                diag_sum += c
            else:
                off_diag += c**2
    stds = [std(z1, d) for d in range(dim)] + [std(z2, d) for d in range(dim)]
    return {
        "loss": on_diag + lambd * off_diag,
        "on_diag": on_diag,
        "off_diag": off_diag,
        "embedding_std": sum(stds) / len(stds),
        "corr_diag_mean": diag_sum / dim,
        "corr_offdiag_sq_mean": off_diag / (dim * (dim - 1)),
    }


# Aux values that are gradients: checked by finite differences (test_term_gradient_norms).
GRADIENT_AUX = {"grad_norm/invariance", "grad_norm/redundancy"}


def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, temperature: float) -> dict[str, float]:
    """NT-Xent in float64 with explicit loops over the 2B anchors and their 2B - 1 others."""
    batch = z1.shape[0]
    n = 2 * batch
    z = [row / math.sqrt(sum(x * x for x in row)) for row in np.concatenate([z1, z2])]
    total = pos_sum = neg_sum = correct = 0.0
    for i in range(n):
        positive = (i + batch) % n
        others = {j: float(np.dot(z[i], z[j])) / temperature for j in range(n) if j != i}
        top = max(others.values())
        log_sum = top + math.log(sum(math.exp(v - top) for v in others.values()))
        total += log_sum - others[positive]
        pos_sum += others[positive]
        neg_sum += sum(v for j, v in others.items() if j != positive)
        correct += float(max(others, key=others.get) == positive)
    return {
        "loss": total / n,
        "pos_logit_mean": pos_sum / n,
        "neg_logit_mean": neg_sum / (n * (n - 2)),
        "contrastive_acc": correct / n,
    }


LOSSES = {
    "barlow_twins": (barlow_twins_loss, bt_reference, 0.0051),
    "nt_xent": (nt_xent_loss, nt_xent_reference, 0.1),
}


def views(shape: tuple[int, int], seed: int = 0, dtype=np.float32) -> tuple[np.ndarray, ...]:
    """Two correlated views: float [B, D] each, with per-dimension offsets and scales."""
    rng = np.random.default_rng(seed)
    z1 = rng.normal(size=shape) * rng.uniform(0.5, 2.0, shape[1]) + rng.normal(size=shape[1])
    z2 = z1 + 0.7 * rng.normal(size=shape)
    return z1.astype(dtype), z2.astype(dtype)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_loop_reference(name, shape):
    loss_fn, reference, param = LOSSES[name]
    z1, z2 = views(shape, seed=shape[0])
    loss, aux = jax.jit(loss_fn, static_argnames="has_aux")(z1, z2, param, has_aux=True)
    ref = reference(z1.astype(np.float64), z2.astype(np.float64), param)
    chex.assert_shape(loss, ())
    chex.assert_type(loss, jnp.float32)
    chex.assert_type(list(aux.values()), jnp.float32)
    assert set(aux) - GRADIENT_AUX == set(ref) - {"loss"}
    rel = abs(float(loss) - ref["loss"]) / abs(ref["loss"])
    assert rel < RTOL, f"relative error {rel:.2e}"
    for key, value in ((k, v) for k, v in aux.items() if k not in GRADIENT_AUX):
        np.testing.assert_allclose(value, ref[key], rtol=RTOL, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(jax.jit(loss_fn)(z1, z2, param), loss, rtol=1e-6)


def test_term_gradient_norms_equal_finite_differences():
    """grad_norm/invariance and grad_norm/redundancy: the norm of each weighted term's
    gradient with respect to (z1, z2), against central differences of the float64 terms."""
    z1, z2 = views((7, 5), seed=3)
    lambd, scale = 0.3, 0.1
    _, aux = barlow_twins_loss(z1, z2, lambd, scale=scale, has_aux=True)

    def terms(a, b):
        bt = bt_reference(a, b, lambd)
        return scale * bt["on_diag"], scale * lambd * bt["off_diag"]

    z = np.concatenate([z1, z2]).astype(np.float64)
    grads, h = np.zeros((2, *z.shape)), 1e-5
    for idx in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[idx] += h
        down[idx] -= h
        diff = np.subtract(terms(up[:7], up[7:]), terms(down[:7], down[7:])) / (2 * h)
        grads[(slice(None), *idx)] = diff
    for i, key in enumerate(("grad_norm/invariance", "grad_norm/redundancy")):
        np.testing.assert_allclose(aux[key], np.linalg.norm(grads[i]), rtol=1e-4, err_msg=key)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_low_precision_inputs_computed_in_float32(name):
    loss_fn, reference, param = LOSSES[name]
    z1, z2 = views((8, 4))
    z1, z2 = jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16)
    loss = loss_fn(z1, z2, param)
    chex.assert_type(loss, jnp.float32)
    ref = reference(np.asarray(z1, np.float64), np.asarray(z2, np.float64), param)["loss"]
    np.testing.assert_allclose(loss, ref, rtol=RTOL)


def hadamard(n: int) -> np.ndarray:
    """Sylvester Hadamard matrix: float [n, n] of +-1 with orthogonal columns."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def test_barlow_twins_of_identical_whitened_views_is_zero():
    # Columns 1.. of a Hadamard matrix: zero mean, unit variance, mutually uncorrelated.
    z = hadamard(16)[:, 1:9] * 3.0 + 5.0
    loss, aux = barlow_twins_loss(z, z, has_aux=True)
    assert float(loss) < 1e-6
    np.testing.assert_allclose(aux["corr_diag_mean"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(aux["embedding_std"], 3.0, rtol=1e-6)
    # Anticorrelated views are as far as the invariance term goes: (1 - (-1))^2 per dim.
    np.testing.assert_allclose(barlow_twins_loss(z, -z), 4.0 * 8, rtol=1e-5)


def test_barlow_twins_counts_redundancy_with_lambda():
    z1, z2 = views((16, 6))
    _, aux = barlow_twins_loss(z1, z2, has_aux=True)
    assert float(aux["off_diag"]) > 0
    np.testing.assert_allclose(
        barlow_twins_loss(z1, z2, lambd=0.5),
        aux["on_diag"] + 0.5 * aux["off_diag"],
        rtol=1e-6,
    )


def test_barlow_twins_scale_multiplies_loss_and_gradients_not_aux():
    """The statistics of c are not scaled; the terms' gradient norms are those of the
    scaled loss, the gradients that train."""
    z1, z2 = views((16, 6))
    loss, aux = barlow_twins_loss(z1, z2, has_aux=True)
    scaled, scaled_aux = barlow_twins_loss(z1, z2, scale=0.1, has_aux=True)
    np.testing.assert_allclose(scaled, 0.1 * loss, rtol=1e-6)
    grads = {k: scaled_aux.pop(k) for k in GRADIENT_AUX}
    chex.assert_trees_all_close(scaled_aux, {k: aux[k] for k in scaled_aux}, rtol=0, atol=0)
    for key, value in grads.items():
        np.testing.assert_allclose(value, 0.1 * aux[key], rtol=1e-5, err_msg=key)
    grad = jax.grad(barlow_twins_loss)(z1, z2)
    scaled_grad = jax.grad(functools.partial(barlow_twins_loss, scale=0.1))(z1, z2)
    np.testing.assert_allclose(scaled_grad, 0.1 * grad, rtol=1e-5, atol=1e-8)


def test_nt_xent_of_well_separated_pairs_tends_to_lower_bound():
    # Each pair shares a direction orthogonal to every other pair: positive cosine 1,
    # negatives 0, so the loss is log(1 + (2B - 2) exp(-1 / t)) and tends to 0 as t -> 0.
    batch = 6
    z = np.eye(batch, 10) * np.arange(1.0, batch + 1)[:, None]
    losses = []
    for t in (1.0, 0.5, 0.2, 0.1, 0.05):
        loss, aux = nt_xent_loss(z, 2.0 * z, t, has_aux=True)
        expected = math.log1p((2 * batch - 2) * math.exp(-1 / t))
        # atol: logsumexp - positive cancels to float32 resolution of logits up to 1 / t.
        np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=2e-6)
        assert float(aux["contrastive_acc"]) == 1.0
        losses.append(float(loss))
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < 1e-7


def test_nt_xent_is_symmetric_in_its_views():
    z1, z2 = views((12, 5))
    np.testing.assert_allclose(nt_xent_loss(z1, z2), nt_xent_loss(z2, z1), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_invariant_to_a_permutation_of_both_views(name):
    loss_fn, _, param = LOSSES[name]
    z1, z2 = views((12, 5))
    perm = np.random.default_rng(1).permutation(12)
    assert not np.array_equal(perm, np.arange(12))
    np.testing.assert_allclose(
        loss_fn(z1[perm], z2[perm], param), loss_fn(z1, z2, param), rtol=1e-6
    )
    # Permuting one view only breaks the pairs, which must change the loss.
    assert not np.isclose(loss_fn(z1[perm], z2, param), loss_fn(z1, z2, param), rtol=1e-3)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_match_finite_differences(name):
    loss_fn, _, param = LOSSES[name]
    with jax.enable_x64(True):
        z1, z2 = views((6, 4), dtype=np.float64)
        fn = functools.partial(
            loss_fn, **{"lambd" if name == "barlow_twins" else "temperature": 0.5}
        )
        assert jnp.asarray(fn(z1, z2)).dtype == jnp.float64
        check_grads(fn, (z1, z2), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_sharded_batch_gives_single_device_loss_and_grads(name):
    loss_fn, _, param = LOSSES[name]
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    batch_sharding = NamedSharding(mesh, PartitionSpec("data", None))
    z1, z2 = views((16, 6))
    value_and_grad = jax.jit(
        jax.value_and_grad(functools.partial(loss_fn, has_aux=True), argnums=(0, 1), has_aux=True),
        static_argnums=2,
    )
    one = jax.devices()[0]
    single = value_and_grad(jax.device_put(z1, one), jax.device_put(z2, one), param)
    z1s, z2s = jax.device_put(z1, batch_sharding), jax.device_put(z2, batch_sharding)
    assert len(z1s.addressable_shards) == 8
    chex.assert_shape(z1s.addressable_shards[0].data, (2, 6))
    sharded = value_and_grad(z1s, z2s, param)
    chex.assert_trees_all_close(sharded, single, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_jit_matches_eager_and_does_not_retrace(name):
    loss_fn, _, param = LOSSES[name]

    traces = []

    def traced(z1, z2):
        traces.append(z1.shape)
        return loss_fn(z1, z2, param, has_aux=True)

    jitted = jax.jit(traced)
    for seed in (0, 1):
        z1, z2 = views((8, 4), seed=seed)
        chex.assert_trees_all_close(jitted(z1, z2), loss_fn(z1, z2, param, has_aux=True), rtol=1e-6)
    assert len(traces) == 1


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bad_shapes_are_rejected(name):
    loss_fn, _, _ = LOSSES[name]
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"\[batch, dim\]"):
        loss_fn(np.ones((4,)), np.ones((4,)))
    with pytest.raises(ValueError, match="at least 2"):
        loss_fn(np.ones((1, 3)), np.ones((1, 3)))


def test_non_positive_temperature_is_rejected():
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(np.ones((4, 3)), np.ones((4, 3)), temperature=0.0)
