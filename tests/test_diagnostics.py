"""Training-health diagnostics against NumPy references and analytic cases, and a tiny
pretraining run that logs them."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssljax import diagnostics, health, pretrain, writers
from tests.test_pretrain import tiny_config


def _hand_made_params(rng: np.random.Generator) -> dict:
    """A small encoder-like params tree: 3 conv kernels, 3 BatchNorms (one zero-init scale)
    and a dense kernel, float32."""

    def normal(*shape):
        return rng.normal(size=shape).astype(np.float32)

    def bn(scale):
        return {"scale": np.asarray(scale, np.float32), "bias": normal(4)}

    return {
        "stem_conv": {"kernel": normal(3, 3, 1, 4)},
        "stem_bn": bn(np.full(4, 2.0)),
        "block": {
            "conv1": {"kernel": normal(3, 3, 4, 4)},
            "bn1": bn(np.ones(4)),
            "conv2": {"kernel": normal(3, 3, 4, 4)},
            "bn2": bn(np.zeros(4)),
        },
        "head": {"kernel": normal(4, 8), "bias": normal(8)},
    }


def test_weight_change_matches_numpy_median_and_skips_zero_init_scales():
    rng = np.random.default_rng(0)
    params0 = _hand_made_params(rng)
    # A different relative change per leaf, so the median picks a definite one.
    params = jax.tree.map(
        lambda p: p + rng.uniform(0.01, 3.0) * rng.normal(size=p.shape).astype(np.float32),
        params0,
    )

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    convs = [("stem_conv",), ("block", "conv1"), ("block", "conv2")]
    scales = [("stem_bn",), ("block", "bn1")]  # bn2's zero-initialised scale is left out
    expected_conv = np.median(
        [rel(_at(params, p)["kernel"], _at(params0, p)["kernel"]) for p in convs]
    )
    expected_bn = np.median(
        [rel(_at(params, p)["scale"], _at(params0, p)["scale"]) for p in scales]
    )

    def angle(a, b):
        a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
        return np.degrees(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))

    expected_angle = np.median(
        [angle(_at(params, p)["kernel"], _at(params0, p)["kernel"]) for p in convs]
    )

    out = jax.jit(diagnostics.weight_change)(params, params0)
    assert set(out) == {"weight_change/conv", "weight_change/bn_scale", "weight_angle/conv"}
    chex.assert_type(list(out.values()), jnp.float32)
    np.testing.assert_allclose(out["weight_change/conv"], expected_conv, rtol=1e-5)
    np.testing.assert_allclose(out["weight_change/bn_scale"], expected_bn, rtol=1e-5)
    np.testing.assert_allclose(out["weight_angle/conv"], expected_angle, rtol=1e-5)
    unchanged = diagnostics.weight_change(params0, params0)
    chex.assert_trees_all_close(unchanged, {k: 0.0 for k in out}, atol=0)


def test_weight_angle_ignores_scale_and_resolves_tiny_turns():
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(3, 3, 4, 8)).astype(np.float32)
    other = rng.normal(size=w0.shape)
    orthogonal = other - (other * w0).sum() / (w0 * w0).sum() * w0  # float64, then cast

    def kernels(w):
        return {"conv": {"kernel": np.asarray(w, np.float32)}}

    def measured(w):
        return diagnostics.weight_change(kernels(w), kernels(w0))

    grown = measured(5.0 * w0)  # what LARS does to a kernel BatchNorm follows
    np.testing.assert_allclose(grown["weight_change/conv"], 4.0, rtol=1e-6)
    np.testing.assert_allclose(grown["weight_angle/conv"], 0.0, atol=1e-4)
    np.testing.assert_allclose(measured(orthogonal)["weight_angle/conv"], 90.0, rtol=1e-5)
    np.testing.assert_allclose(measured(-w0)["weight_angle/conv"], 180.0, rtol=1e-6)
    # A turn of 0.01 degrees, the size of a barely moved kernel's: arccos of a float32
    # cosine cannot see it (1 - cos = 1.5e-8, under float32's epsilon).
    unit = orthogonal / np.linalg.norm(orthogonal) * np.linalg.norm(w0)
    turned = np.cos(np.radians(0.01)) * w0 + np.sin(np.radians(0.01)) * unit
    np.testing.assert_allclose(measured(turned)["weight_angle/conv"], 0.01, rtol=1e-3)
    # A norm that overflows float32 is left out (NaN: no kernel left), not read as 0 degrees.
    assert np.isnan(measured(np.float32(1e19) * w0)["weight_angle/conv"])


def _at(tree: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        tree = tree[key]
    return tree


def test_weight_change_rejects_different_structures():
    params0 = _hand_made_params(np.random.default_rng(0))
    with pytest.raises(ValueError, match="structure"):
        diagnostics.weight_change(params0, {"stem_conv": params0["stem_conv"]})


def rankme_reference(z: np.ndarray) -> float:
    s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
    p = s / s.sum() + diagnostics.RANKME_EPS
    return float(np.exp(-np.sum(p * np.log(p))))


def test_rankme_matches_numpy_and_analytic_cases():
    rng = np.random.default_rng(1)
    z = (rng.normal(size=(64, 16)) * np.linspace(0.1, 2.0, 16)).astype(np.float32)
    np.testing.assert_allclose(jax.jit(diagnostics.rankme)(z), rankme_reference(z), rtol=1e-4)
    rank_one = np.outer(rng.normal(size=64), rng.normal(size=16)).astype(np.float32)
    np.testing.assert_allclose(diagnostics.rankme(rank_one), 1.0, atol=1e-3)
    identity = np.tile(np.eye(16, dtype=np.float32), (4, 1))  # [64, 16], equal singular values
    np.testing.assert_allclose(diagnostics.rankme(identity), 16.0, rtol=1e-4)
    assert math.isfinite(float(diagnostics.rankme(np.zeros((8, 4), np.float32))))


def test_embedding_std_is_zero_when_collapsed_and_near_inverse_sqrt_dim_when_spread():
    rng = np.random.default_rng(2)
    direction = rng.normal(size=32).astype(np.float32)
    # Every row points the same way; lengths differ, which the L2 normalisation removes.
    collapsed = rng.uniform(0.5, 2.0, size=(100, 1)).astype(np.float32) * direction
    stats = jax.jit(diagnostics.embedding_stats)(collapsed)
    assert set(stats) == {"embedding/std", "embedding/rankme"}
    np.testing.assert_allclose(stats["embedding/std"], 0.0, atol=1e-6)
    np.testing.assert_allclose(stats["embedding/rankme"], 1.0, atol=1e-3)
    spread = diagnostics.embedding_stats(rng.normal(size=(2000, 32)).astype(np.float32))
    np.testing.assert_allclose(spread["embedding/std"], 1 / math.sqrt(32), rtol=0.05)
    assert float(spread["embedding/rankme"]) > 30


def test_step_stats_measure_each_groups_relative_step_and_gradient():
    params = {
        "encoder": {"conv": {"kernel": np.full((3, 3, 2, 4), 2.0, np.float32)},
                    "bn": {"scale": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)}},
        "projector": {"linear0": {"kernel": np.full((4, 8), 1.0, np.float32)}},
    }  # fmt: skip
    grads = jax.tree.map(lambda p: np.full_like(p, 3.0), params)
    updates = jax.tree.map(lambda p: np.full_like(p, -0.01), params)
    stats = jax.device_get(diagnostics.step_stats(params, grads, updates))
    assert set(stats) == {
        f"{kind}/{group}"
        for kind in ("update_ratio", "grad_ratio")
        for group in ("encoder_conv", "encoder_norm", "projector_dense")
    }
    np.testing.assert_allclose(stats["update_ratio/encoder_conv"], 0.01 / 2, rtol=1e-6)
    np.testing.assert_allclose(stats["grad_ratio/encoder_conv"], 3.0 / 2, rtol=1e-6)
    np.testing.assert_allclose(stats["grad_ratio/projector_dense"], 3.0, rtol=1e-6)
    # The BN bias has norm 0: left out, so the group's median is the scale's alone.
    np.testing.assert_allclose(stats["update_ratio/encoder_norm"], 0.01, rtol=1e-6)


@pytest.mark.slow
def test_pretraining_logs_diagnostics_from_step_0(tmp_path):
    # The old LARS setting (eta 0.001, no clipping): the conv kernels barely move.
    config = tiny_config(
        **{
            "train.epochs": 1,
            "train.trust_coefficient": 0.001,
            "train.clip_lr": False,
            "log.every_steps": 4,
        }
    )
    summary = pretrain.run(config, tmp_path)
    records = writers.read_metrics(tmp_path)
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [4, 8]  # 546 // 64 = 8 steps
    for r in train:
        assert 0 < r["weight_change/conv"] < 0.05, r  # the kernels barely move
        assert 0 < r["weight_angle/conv"] < 0.1, r  # degrees; measured 0.018 at step 4
        assert r["weight_change/bn_scale"] > 0 and {"on_diag", "off_diag"} <= r.keys()
    knn = [r for r in records if "knn_acc" in r]
    assert [(r["step"], r["epoch"]) for r in knn] == [(0, 0), (8, 1)]
    assert "knn_acc" in records[0]  # the random encoder's score comes first
    for r in knn:
        assert 1.0 <= r["embedding/rankme"] <= 64  # projector (64, 64)
        assert 1.0 <= r["features/rankme"] <= 32  # width 4: 32 features
        assert 0.0 < r["embedding/std"] < 1.0
    assert summary["weight_change/conv"] == pytest.approx(train[-1]["weight_change/conv"])
    assert summary["health"]["verdict"] in health.VERDICTS
