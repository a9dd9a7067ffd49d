"""Tests of ssljax.augment (on-device views) and ssljax.preview (the PNG grid)."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.base import get_config
from ssljax.augment import ViewParams, augment_batch, geometry, normalize, photometric, two_views
from ssljax.preview import save_views_grid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Frequencies over DRAWS examples: binomial std <= 0.5 / sqrt(2000) = 0.011; 0.045 is 4 std.
DRAWS = 2000
FREQ_TOL = 0.045

jit_views = jax.jit(two_views, static_argnums=(2, 3))
jit_batch = jax.jit(augment_batch, static_argnums=2)


@pytest.fixture(scope="module")
def views() -> tuple[ViewParams, ViewParams]:
    config = get_config()
    return (
        ViewParams.from_config(config.augment.view1),
        ViewParams.from_config(config.augment.view2),
    )


@pytest.fixture(scope="module")
def disabled(views) -> ViewParams:
    """Every operation off: a view must be the normalised input."""
    return dataclasses.replace(
        views[0],
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        hflip_prob=0.0,
        vflip_prob=0.0,
        jitter_prob=0.0,
        grayscale_prob=0.0,
        blur_prob=0.0,
        solarize_prob=0.0,
        noise_std=0.0,
    )


def rgb_batch() -> np.ndarray:
    """uint8 [8, 28, 28, 3]; the preview test reuses its shape, and so the compiled views."""
    return np.random.default_rng(0).integers(0, 256, (8, 28, 28, 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=[1, 3], ids=["grey", "rgb"])
def batch(request, data_dir) -> np.ndarray:
    """uint8 [8, 28, 28, C]: real BreastMNIST images (grey) or a random RGB batch."""
    if request.param == 1:
        with np.load(data_dir / "breastmnist.npz", allow_pickle=False) as archive:
            return archive["train_images"][:8, :, :, None]
    return rgb_batch()


def test_view_params_from_config(views):
    p1, p2 = views
    assert p1.crop_scale == (0.2, 1.0) and isinstance(p1.crop_ratio, tuple)
    assert (p1.blur_prob, p1.solarize_prob, p2.blur_prob, p2.solarize_prob) == (1, 0, 0.1, 0.2)
    again = ViewParams.from_config(get_config().augment.view1)
    assert again == p1 and hash(again) == hash(p1)
    with pytest.raises(ValueError, match="crop_scale"):
        dataclasses.replace(p1, crop_scale=(0.9, 0.2))
    with pytest.raises(ValueError, match="hflip_prob"):
        dataclasses.replace(p1, hflip_prob=1.5)
    view = get_config().augment.view2
    view.hue = 0.7
    with pytest.raises(
        ValueError, match=r"^config\.augment\.view2\.hue=0\.7: must be in \[0, 0\.5\]$"
    ):
        ViewParams.from_config(view, "augment.view2")
    with pytest.raises(TypeError, match="uint8"):
        augment_batch(jax.random.key(0), np.zeros((2, 4, 4, 1), np.float32), p1)
    with pytest.raises(ValueError, match="channel"):
        augment_batch(jax.random.key(0), np.zeros((2, 4, 4), np.uint8), p1)


def test_normalize_matches_numpy():
    x = np.random.default_rng(1).integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
    out = normalize(x)
    chex.assert_type(out, jnp.float32)
    np.testing.assert_allclose(out, (x / 255.0 - 0.5) / 0.5, atol=1e-6)


def test_two_views_shape_dtype_range_and_keys(batch, views):
    v1, v2 = jit_views(jax.random.key(0), batch, *views)
    chex.assert_shape([v1, v2], batch.shape)
    chex.assert_type([v1, v2], jnp.float32)
    chex.assert_tree_all_finite((v1, v2))
    assert float(jnp.min(jnp.minimum(v1, v2))) >= -1.0
    assert float(jnp.max(jnp.maximum(v1, v2))) <= 1.0
    assert not np.allclose(v1, v2)
    same = jit_views(jax.random.key(0), batch, *views)
    other = jit_views(jax.random.key(1), batch, *views)
    chex.assert_trees_all_equal((v1, v2), same)
    assert not np.allclose(v1, other[0]) and not np.allclose(v2, other[1])


def test_everything_disabled_gives_normalized_input(batch, disabled):
    out = jit_batch(jax.random.key(3), batch, disabled)
    np.testing.assert_allclose(out, normalize(batch), atol=1e-6)


def test_flip_frequencies(disabled):
    """hflip 0.5 and vflip 0.25 on an asymmetric image: each output is one of four flips."""
    params = dataclasses.replace(disabled, hflip_prob=0.5, vflip_prob=0.25)
    image = np.arange(64, dtype=np.uint8).reshape(8, 8, 1) * 3
    out = np.asarray(jit_batch(jax.random.key(4), np.broadcast_to(image, (DRAWS, 8, 8, 1)), params))
    ref = np.asarray(normalize(image))
    seen = {}
    for h in (False, True):
        for v in (False, True):
            flipped = ref[::-1] if v else ref
            flipped = flipped[:, ::-1] if h else flipped
            seen[h, v] = np.all(np.abs(out - flipped) < 1e-6, axis=(1, 2, 3))
    matched = sum(seen.values())
    np.testing.assert_array_equal(matched, 1)  # every view is exactly one flip variant
    assert abs(np.mean(seen[True, False] | seen[True, True]) - 0.5) < FREQ_TOL
    assert abs(np.mean(seen[False, True] | seen[True, True]) - 0.25) < FREQ_TOL


def test_grayscale_frequency_and_values(disabled):
    params = dataclasses.replace(disabled, grayscale_prob=0.3)
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    out = np.asarray(jit_batch(jax.random.key(6), np.broadcast_to(image, (DRAWS, 6, 6, 3)), params))
    is_gray = np.all(np.ptp(out, axis=-1) < 1e-6, axis=(1, 2))
    assert abs(np.mean(is_gray) - 0.3) < FREQ_TOL
    luma = image.astype(np.float64) @ np.array([0.2989, 0.587, 0.114]) / 255.0
    np.testing.assert_allclose(
        out[is_gray][..., 0],
        np.broadcast_to((luma - 0.5) / 0.5, (int(is_gray.sum()), 6, 6)),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        out[~is_gray], np.broadcast_to(normalize(image), out[~is_gray].shape), atol=1e-6
    )


def test_jit_with_static_params_traces_once(views):
    traces = []

    def step(key, images, params):
        traces.append(params)
        return augment_batch(key, images, params)

    jitted = jax.jit(step, static_argnums=2)
    images = np.zeros((2, 8, 8, 1), np.uint8)
    jitted(jax.random.key(0), images, views[1])
    equal_copy = ViewParams.from_config(get_config().augment.view2)
    jitted(jax.random.key(1), images, equal_copy)
    assert len(traces) == 1


def test_crop_box_follows_torchvision_rules(views):
    p = dataclasses.replace(views[0], crop_scale=(0.2, 0.6))
    u = np.random.default_rng(7).random((500, 4, 10), dtype=np.float32)
    boxes = jax.jit(
        lambda u, params: jax.vmap(lambda v: geometry.crop_box(v, 64, 64, params))(u),
        static_argnums=1,
    )
    top, left, h, w = map(np.asarray, boxes(u, p))
    assert np.all((top >= 0) & (left >= 0) & (top + h <= 64) & (left + w <= 64))
    # Rounding h and w moves the area and the ratio a little off their sampled ranges.
    np.testing.assert_array_less(h * w / 64**2, 0.6 + 0.04)
    np.testing.assert_array_less(0.2 - 0.04, h * w / 64**2)
    np.testing.assert_array_less(w / h, 4 / 3 + 0.05)
    np.testing.assert_array_less(3 / 4 - 0.05, w / h)
    # No 2:1 box of the whole area fits a square: torchvision's centre-crop fallback.
    wide = dataclasses.replace(p, crop_scale=(1.0, 1.0), crop_ratio=(2.0, 3.0))
    for box in zip(*map(np.asarray, boxes(u[:3], wide)), strict=True):
        assert tuple(int(v) for v in box) == (16, 0, 32, 64)


def _bilinear_reference(image, top, left, h, w, size):
    """NumPy: crop then torch-style bilinear resize (align_corners=False) of [C, H, W]."""
    crop = image[:, top : top + h, left : left + w].astype(np.float64)

    def taps(n_in):
        src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, fy = taps(h)
    x0, x1, fx = taps(w)
    rows = crop[:, y0] * (1 - fy)[:, None] + crop[:, y1] * fy[:, None]
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def test_resized_crop_matches_numpy_bilinear():
    image = np.random.default_rng(8).random((3, 20, 20)).astype(np.float32)
    box = (3, 5, 9, 13)
    resized_crop = jax.jit(geometry.resized_crop)
    out = resized_crop(image, tuple(map(jnp.int32, box)), False, False)
    np.testing.assert_allclose(out, _bilinear_reference(image, *box, 20), atol=1e-5)
    flipped = resized_crop(image, tuple(map(jnp.int32, box)), True, True)
    np.testing.assert_allclose(flipped, np.asarray(out)[:, ::-1, ::-1], atol=1e-6)


def test_gaussian_blur_matches_numpy(views):
    x = np.random.default_rng(9).random((1, 40, 40)).astype(np.float32)
    p = dataclasses.replace(views[0], blur_sigma=(1.0, 3.0))  # sigma 2.0 px at u = 0.5
    out = jax.jit(photometric.gaussian_blur, static_argnums=2)(jnp.asarray([0.0, 0.5]), x, p)
    radius, sigma = 9, 2.0  # 3 x the largest sigma
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    ref = np.pad(x[0], radius, mode="reflect").astype(np.float64)
    ref = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 0, ref)
    ref = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, ref)
    np.testing.assert_allclose(out[0], ref, atol=1e-5)


def test_blur_sigma_is_in_pixels_at_28px(views):
    """The largest sigma blurs a 28 px edge by many grey levels, not less than one."""
    x = np.zeros((1, 28, 28), np.float32)
    x[:, :, 14:] = 1.0
    p = dataclasses.replace(views[0], blur_sigma=(2.0, 2.0))
    out = np.asarray(jax.jit(photometric.gaussian_blur, static_argnums=2)(jnp.zeros(2), x, p))
    assert abs(out[0, 10, 13] - 0.5) < 0.2 and out[0, 10, 13] * 255 > 50


def test_hue_rotation_keeps_luma_and_greys():
    hue_matrix = jax.jit(photometric.hue_matrix)
    m = np.asarray(hue_matrix(jnp.float32(0.1)))
    rgb = np.random.default_rng(10).random((50, 3))
    yiq = photometric.RGB_TO_YIQ.astype(np.float64)
    np.testing.assert_allclose((rgb @ m) @ yiq[0], rgb @ yiq[0], atol=1e-5)
    np.testing.assert_allclose(np.full((1, 3), 0.4) @ m, np.full((1, 3), 0.4), atol=1e-6)
    np.testing.assert_allclose(hue_matrix(jnp.float32(0.0)), np.eye(3), atol=1e-6)


def test_save_views_grid_writes_png(tmp_path, views):
    images = rgb_batch()
    path = save_views_grid(images, *views, jax.random.key(0), tmp_path / "a" / "views.png")
    data = path.read_bytes()
    assert path == tmp_path / "a" / "views.png" and len(data) > 1000
    assert data[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="uint8"):
        save_views_grid(images.astype(np.float32), *views, jax.random.key(0), tmp_path / "b.png")


class _StepZeroSeen(Exception):
    pass


def test_preview_shows_the_views_of_training_step_0(tmp_path, monkeypatch):
    """The pretraining loop runs until it calls its train step: the preview must show that
    batch, under the key that step draws its views from."""
    from configs import barlow
    from ssljax import augment, pretrain, preview, steps
    from ssljax.data import load_dataset

    config = barlow.get_config("breastmnist")
    config.update_from_flattened_dict(
        {"seed": 3, "model.width": 4, "model.projector_dims": (16,), "train.batch_size": 64}
    )
    config.update_from_flattened_dict({"log.monitor_every_epochs": 0, "log.progress": False})
    seen = {}

    def recording_build(*args, **kwargs):
        def train(state, batch, live, train_key):
            seen.update(step=int(state.step), images=np.asarray(batch[0]), train_key=train_key)
            raise _StepZeroSeen

        return build(*args, **kwargs)._replace(train=train)

    build = pretrain.build
    monkeypatch.setattr(pretrain, "build", recording_build)
    with pytest.raises(_StepZeroSeen):
        pretrain.run(config, tmp_path / "run")
    assert seen["step"] == 0 and seen["images"].shape[:2] == (1, 64)  # one step per call

    # The train step draws both views from fold_in(train_key, state.step).
    def record_views(key, images, p1, p2):
        seen["key"] = jax.random.key_data(key)
        raise _StepZeroSeen

    monkeypatch.setattr(augment, "two_views", record_views)
    step = steps.make_pretrain_step(None, None, None, None, (None, None), False)
    with pytest.raises(_StepZeroSeen):
        step(steps.TrainState(jnp.int32(0), {}, {}, {}, jnp.int32(-1)), None, seen["train_key"])
    monkeypatch.undo()

    train_images = load_dataset(config.data).train.images
    images, key = preview.step0_batch(config, train_images)
    np.testing.assert_array_equal(images, seen["images"][0])
    np.testing.assert_array_equal(jax.random.key_data(key), seen["key"])
    # Not vacuous: the first images of the split (what the preview used to show) differ.
    assert not np.array_equal(images, train_images[:64])
