"""Tests of ssljax.models: shapes, torchvision parameter counts, dtypes, BatchNorm, sharding.

Shape and count checks use `jax.eval_shape` (tracing only, no compute); numeric checks run a
width-8 ResNet-18 on 28 px images against NumPy references.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssljax.models import (
    ENCODERS,
    ClassifierModel,
    MLPProjector,
    PretrainModel,
    ResNet,
    feature_dim,
    make_encoder,
)

# RBG keys: threefry initialisation of a whole ResNet takes several times longer to compile on
# CPU, and what is tested does not depend on the generator.
KEY = jax.random.key(0, impl="rbg")


def _param_count(tree) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


@functools.partial(jax.jit, static_argnames="model")
def _init(model: nn.Module, x: jax.Array, key: jax.Array = KEY) -> dict:
    """model.init in eval mode, jitted: one compilation instead of one per op."""
    return model.init(key, x, train=False)


@functools.partial(jax.jit, static_argnames=("model", "train", "mutable"))
def _apply(model: nn.Module, variables: dict, x: jax.Array, train: bool, mutable=False):
    """model.apply, jitted and cached across tests (modules hash by their fields)."""
    return model.apply(variables, x, train=train, mutable=mutable)


def _shapes(model: nn.Module, x_shape: tuple[int, ...], train: bool = False, **kwargs):
    """(variables, outputs) of init + apply as ShapeDtypeStructs; nothing is computed."""

    def run():
        x = jnp.zeros(x_shape, jnp.float32)
        variables = model.init(KEY, x, train=False)
        return variables, model.apply(variables, x, train=train, **kwargs)

    return jax.eval_shape(run)


def _images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


@pytest.mark.parametrize("size", [28, 64, 224])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_output_shapes(name: str, size: int, channels: int) -> None:
    encoder = make_encoder(name, width=8, stem="auto", image_size=size, dtype="float32")
    assert encoder.stem == ("small" if size <= 64 else "imagenet")
    _, features = _shapes(encoder, (2, size, size, channels))
    chex.assert_shape(features, (2, feature_dim(name, 8)))
    chex.assert_type(features, jnp.float32)


def test_feature_dim() -> None:
    assert feature_dim("resnet18", 64) == 512
    assert feature_dim("resnet34", 16) == 128
    assert feature_dim("resnet50", 64) == 2048


# torchvision's counts with the fc layer removed (11,689,512 - 513,000; 25,557,032 - 2,049,000);
# the small stem swaps the 7x7 conv (49 * C * 64 weights) for a 3x3 one (9 * C * 64).
@pytest.mark.parametrize(
    "name, stem, channels, expected",
    [
        ("resnet18", "imagenet", 3, 11_176_512),
        ("resnet50", "imagenet", 3, 23_508_032),
        ("resnet18", "small", 3, 11_168_832),
        ("resnet18", "small", 1, 11_167_680),
        ("resnet50", "small", 3, 23_500_352),
        ("resnet50", "small", 1, 23_499_200),
    ],
)
def test_parameter_counts(name: str, stem: str, channels: int, expected: int) -> None:
    encoder = make_encoder(name, width=64, stem=stem, image_size=224, dtype="float32")
    variables = jax.eval_shape(
        lambda: encoder.init(KEY, jnp.zeros((1, 32, 32, channels)), train=False)
    )
    assert _param_count(variables["params"]) == expected


def test_bottleneck_strides_on_3x3_conv() -> None:
    encoder = make_encoder("resnet50", width=8, stem="small", image_size=28, dtype="float32")
    _, (_, state) = _shapes(
        encoder, (2, 28, 28, 3), capture_intermediates=True, mutable=["intermediates"]
    )
    block = state["intermediates"]["stage2_block0"]
    chex.assert_shape(block["conv1"]["__call__"][0], (2, 28, 28, 16))  # 1x1, stride 1
    chex.assert_shape(block["conv2"]["__call__"][0], (2, 14, 14, 16))  # 3x3, stride 2
    chex.assert_shape(block["downsample_conv"]["__call__"][0], (2, 14, 14, 64))


def test_bfloat16_compute_keeps_float32_params_and_outputs() -> None:
    encoder = make_encoder("resnet18", width=8, stem="small", image_size=28, dtype="bfloat16")
    model = PretrainModel(encoder, projector_dims=(32, 16), dtype=jnp.bfloat16)
    variables, ((features, embeddings), state) = _shapes(
        model,
        (2, 28, 28, 1),
        train=True,
        capture_intermediates=True,
        mutable=["intermediates", "batch_stats"],
    )
    for leaf in jax.tree.leaves(variables):
        chex.assert_type(leaf, jnp.float32)
    chex.assert_type([features, embeddings], jnp.float32)
    stem_out = state["intermediates"]["encoder"]["stem_conv"]["__call__"][0]
    chex.assert_type(stem_out, jnp.bfloat16)


def _conv3x3_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """NumPy reference of a stride-1, padding-1 conv: x [B, H, W, C], kernel [3, 3, C, O]."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    return np.einsum("bhwcij,ijco->bhwo", windows, kernel)


@pytest.fixture(scope="module")
def small_encoder() -> tuple[ResNet, dict, np.ndarray]:
    encoder = make_encoder("resnet18", width=8, stem="small", image_size=28, dtype="float32")
    x = _images((8, 28, 28, 1))
    return encoder, _init(encoder, x), x


def test_train_updates_batch_stats_against_numpy(small_encoder) -> None:
    encoder, variables, x = small_encoder
    _, state = _apply(encoder, variables, x, True, ("batch_stats",))
    old, new = variables["batch_stats"], state["batch_stats"]
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), new, old)
    leaves = jax.tree_util.tree_leaves_with_path(changed)
    stale = [jax.tree_util.keystr(path) for path, was_changed in leaves if not was_changed]
    assert not stale, f"running statistics not updated: {stale}"
    # Stem BN: running = 0.9 * initial + 0.1 * batch statistic (biased variance, as Flax).
    conv = _conv3x3_same(
        x.astype(np.float64), np.asarray(variables["params"]["stem_conv"]["kernel"])
    )
    np.testing.assert_allclose(
        new["stem_bn"]["mean"], 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        new["stem_bn"]["var"], 0.9 + 0.1 * conv.var(axis=(0, 1, 2)), rtol=1e-5
    )


def test_eval_mode_leaves_batch_stats_and_is_per_example(small_encoder) -> None:
    encoder, variables, x = small_encoder
    features, state = _apply(encoder, variables, x, False, ("batch_stats",))
    chex.assert_trees_all_equal(state["batch_stats"], variables["batch_stats"])
    # Running statistics, not batch statistics: an example's features ignore its batch-mates.
    chex.assert_trees_all_close(
        _apply(encoder, variables, x[:2], False), features[:2], rtol=1e-5, atol=1e-6
    )


def test_sharded_train_forward_matches_single_device(small_encoder) -> None:
    """BN over a batch sharded on 8 devices sees the global batch, as on one device."""
    encoder, variables, _ = small_encoder
    x = _images((16, 28, 28, 1), seed=1)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    assert len(mesh.devices.flat) == 8

    @jax.jit
    def forward(variables, x):
        return encoder.apply(variables, x, train=True, mutable=["batch_stats"])

    single = forward(variables, jnp.asarray(x))
    x_sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
    replicated = jax.device_put(variables, NamedSharding(mesh, P()))
    sharded = forward(replicated, x_sharded)
    assert sharded[0].sharding.spec == P("data")
    chex.assert_trees_all_close(sharded, single, rtol=1e-5, atol=1e-5)
    # Per-device BN (2 examples each) would differ: the comparison above can fail.
    local, _ = forward(variables, x[:2])
    assert not np.allclose(local, single[0][:2], rtol=1e-3, atol=1e-3)


def test_projector_matches_numpy_in_train_mode() -> None:
    projector = MLPProjector(dims=(16, 8))
    x = _images((6, 12))
    variables = _init(projector, x)
    out, state = _apply(projector, variables, x, True, ("batch_stats",))
    params = variables["params"]
    assert set(params) == {"linear0", "bn0", "linear1"}
    h = x.astype(np.float64) @ params["linear0"]["kernel"]
    mean, var = h.mean(axis=0), h.var(axis=0)
    h = (h - mean) / np.sqrt(var + 1e-5) * params["bn0"]["scale"] + params["bn0"]["bias"]
    expected = np.maximum(h, 0) @ params["linear1"]["kernel"]
    chex.assert_type(out, jnp.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state["batch_stats"]["bn0"]["mean"], 0.1 * mean, rtol=1e-5)


@pytest.mark.parametrize(
    "dims, layers",
    [((2048, 2048, 2048), {"linear0", "bn0", "linear1", "bn1", "linear2"}), ((2048, 128), None)],
)
def test_pretrain_model_shapes(dims: tuple[int, ...], layers: set[str] | None) -> None:
    encoder = make_encoder("resnet18", width=8, stem="auto", image_size=28, dtype="float32")
    variables, (features, embeddings) = _shapes(PretrainModel(encoder, dims), (4, 28, 28, 3))
    assert set(variables["params"]) == {"encoder", "projector"}
    assert set(variables["batch_stats"]) == {"encoder", "projector"}
    chex.assert_shape([features, embeddings], [(4, 64), (4, dims[-1])])
    chex.assert_type([features, embeddings], jnp.float32)
    expected = layers or {"linear0", "bn0", "linear1"}
    assert set(variables["params"]["projector"]) == expected


def test_encoder_subtree_transfers_to_classifier(small_encoder) -> None:
    encoder, enc_vars, x = small_encoder
    pre_vars, _ = _shapes(PretrainModel(encoder, projector_dims=(32, 16)), x.shape)
    classifier = ClassifierModel(encoder, num_outputs=3)
    cls_vars, logits_shape = _shapes(classifier, x.shape)
    assert set(cls_vars["params"]) == {"encoder", "head"}
    assert set(cls_vars["batch_stats"]) == {"encoder"}
    chex.assert_shape(logits_shape, (8, 3))
    for collection in ("params", "batch_stats"):
        chex.assert_trees_all_equal_shapes_and_dtypes(
            pre_vars[collection]["encoder"], cls_vars[collection]["encoder"], enc_vars[collection]
        )
    # Copy an encoder subtree as evaluation does: the logits are the head on its features.
    rng = np.random.default_rng(0)
    head = {"kernel": rng.normal(size=(64, 3)), "bias": rng.normal(size=3)}
    head = jax.tree.map(lambda a: a.astype(np.float32), head)
    copied = {
        "params": {"encoder": enc_vars["params"], "head": head},
        "batch_stats": {"encoder": enc_vars["batch_stats"]},
    }
    logits = _apply(classifier, copied, x, False)
    features = _apply(encoder, enc_vars, x, False)
    chex.assert_type(logits, jnp.float32)
    np.testing.assert_allclose(
        logits, np.asarray(features) @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-5
    )


def test_registry_and_bad_input_errors() -> None:
    assert set(ENCODERS) == {"resnet18", "resnet34", "resnet50"}
    with pytest.raises(ValueError, match="'resnet99'.*resnet18, resnet34, resnet50"):
        make_encoder("resnet99", 8, "auto", 28, "float32")
    with pytest.raises(ValueError, match="'vgg'.*resnet18"):
        feature_dim("vgg", 8)
    with pytest.raises(ValueError, match="'big'.*auto, small, imagenet"):
        make_encoder("resnet18", 8, "big", 28, "float32")
    for dtype in ("int8", "bf16"):
        with pytest.raises(ValueError, match="dtype.*float32, bfloat16, float16"):
            make_encoder("resnet18", 8, "auto", 28, dtype)
    assert make_encoder("resnet18", 8, "auto", 28, jnp.bfloat16).dtype == jnp.bfloat16
    encoder = make_encoder("resnet18", 8, "auto", 28, "float32")
    with pytest.raises(ValueError, match=r"\[B, H, W, C\].*\(28, 28, 1\)"):
        _shapes(encoder, (28, 28, 1))
    with pytest.raises(ValueError, match="projector_dims"):
        _shapes(MLPProjector(dims=()), (2, 4))
