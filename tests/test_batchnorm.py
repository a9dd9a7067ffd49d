"""BatchNorm re-estimation: the statistics equal a NumPy computation over the same images,
and frozen-encoder scoring uses them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssljax import augment, batchnorm, parallel, steps
from ssljax.models import make_encoder

EPS = 1e-5


def _conv3x3_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """x float64 [N, H, W, Cin], kernel [3, 3, Cin, Cout] -> [N, H, W, Cout] (zero padding)."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for i in range(3):
        for j in range(3):
            out += padded[:, i : i + h, j : j + w] @ kernel[i, j]
    return out


@pytest.fixture(scope="module")
def encoder_and_vars():
    encoder = make_encoder("resnet18", 4, "small", 8, "float32", zero_init_residual=False)
    variables = encoder.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
    params = jax.tree.map(
        lambda p: p + 0.1 * jnp.sin(jnp.arange(p.size).reshape(p.shape)), variables["params"]
    )  # scales/biases away from 1/0
    images = np.random.default_rng(0).integers(0, 256, (48, 8, 8, 1), dtype=np.uint8)
    return encoder, params, variables["batch_stats"], images


def test_reestimated_stats_equal_numpy(encoder_and_vars):
    encoder, params, stats, images = encoder_and_vars
    mesh = parallel.make_mesh()
    moments = batchnorm.make_moments_fn(encoder)
    # 48 images in batches of 16: the first layer's pooled moments are those of all 48.
    pooled = batchnorm.reestimate(moments, params, stats, images, 16, mesh)
    x = np.asarray(augment.normalize(images), np.float64)
    stem = _conv3x3_same(x, np.asarray(params["stem_conv"]["kernel"], np.float64))
    np.testing.assert_allclose(
        pooled["stem_bn"]["mean"], stem.mean((0, 1, 2)), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(pooled["stem_bn"]["var"], stem.var((0, 1, 2)), rtol=1e-4, atol=1e-5)

    # One batch of all 48: the next layer sees the stem normalised with the batch's moments.
    single = batchnorm.reestimate(moments, params, stats, images, 48, mesh)
    bn = params["stem_bn"]
    h = (stem - stem.mean((0, 1, 2))) / np.sqrt(stem.var((0, 1, 2)) + EPS)
    h = np.maximum(h * np.asarray(bn["scale"]) + np.asarray(bn["bias"]), 0.0)
    block = params["stage1_block0"]
    conv1 = _conv3x3_same(h, np.asarray(block["conv1"]["kernel"], np.float64))
    got = single["stage1_block0"]["bn1"]
    np.testing.assert_allclose(got["mean"], conv1.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["var"], conv1.var((0, 1, 2)), rtol=1e-4, atol=1e-4)
    assert jax.tree.structure(single) == jax.tree.structure(jax.device_get(stats))


def test_scoring_uses_reestimated_stats(encoder_and_vars):
    """Eval-mode features with the new statistics differ from those with the initial (0, 1)
    and equal a train-mode forward when every image is one batch."""
    encoder, params, stats, images = encoder_and_vars
    mesh = parallel.make_mesh()
    new = batchnorm.reestimate(batchnorm.make_moments_fn(encoder), params, stats, images, 48, mesh)
    apply = jax.jit(steps.make_apply_fn(encoder))
    scored = np.asarray(apply(params, new, images))
    stale = np.asarray(apply(params, stats, images))
    train_mode, _ = encoder.apply(
        {"params": params, "batch_stats": stats},
        augment.normalize(images),
        train=True,
        mutable=["batch_stats"],
    )
    np.testing.assert_allclose(scored, np.asarray(train_mode), rtol=2e-3, atol=2e-4)
    assert np.abs(scored - stale).max() > 1e-2


def test_bn_images_fixed_and_capped():
    train = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1)
    a, b = batchnorm.bn_images(train, 30), batchnorm.bn_images(train, 30)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 30 and len(np.unique(a)) == 30
    assert len(batchnorm.bn_images(train, 1000)) == 100
