"""Augmentation on the device: SimCLR / BYOL / Barlow Twins views in pure `jnp`.

Every function works on one image and is vmapped over the batch with one key per example,
so a view is a pure function of (key, image, params) and compiles into the train step.
Random choices become `jnp.where` selects rather than Python branches: the whole batch runs
every operation and keeps the result only where the example drew it. Each example draws all
its random scalars in one `jax.random.uniform` call (plus one normal draw for noise).

Order (BYOL / Barlow Twins): random resized crop -> horizontal / vertical flip -> colour
jitter (probability `jitter_prob`, its operations in a random order per example, as
torchvision's `ColorJitter`) -> random grayscale -> Gaussian blur -> solarisation -> Gaussian
noise -> clip to [0, 1] -> normalise with MedMNIST's mean 0.5, std 0.5.

Channel count is static, so it picks the operations at trace time:
- RGB: jitter = brightness, contrast, saturation (torchvision's blends), hue (a rotation of
  the YIQ chroma plane instead of torchvision's HSV shift; see `_hue_matrix`); grayscale.
- Grey: jitter = brightness, contrast and, when `gamma > 0`, a gamma curve; saturation, hue
  and grayscale do nothing to one channel and are skipped.
- Both: Gaussian blur, solarisation, additive noise when `noise_std > 0`.

Gaussian blur: sigma uniform in `blur_sigma`, in pixels at every image size, as BYOL
(224 px) and solo-learn's CIFAR recipes (32 px) both give it; the kernel reaches 3 sigma of
the largest sigma (capped by the image side), fixed per view, while sigma varies per example.
(A sigma scaled by side / 224 changed a 28 px image by less than one grey level.)

Internally images are channel-first [C, H, W] floats: every per-channel plane is then
contiguous, which XLA's CPU backend vectorises several times better than a minor axis of 3.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma).
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# torchvision's RandomResizedCrop tries this many boxes before its centre-crop fallback.
_CROP_ATTEMPTS = 10
# NTSC YIQ: hue jitter rotates the chroma plane (I, Q) around luma Y.
_RGB_TO_YIQ = np.asarray(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)
# Rotating (I, Q) by theta maps RGB by _HUE_FIXED + cos(theta) _HUE_COS + sin(theta) _HUE_SIN,
# stored (in, out) so that out[c] = sum_k x[k] M[k, c].
_HUE_FIXED, _HUE_COS, _HUE_SIN = (
    m.T.astype(np.float32)
    for m in (
        np.outer(_YIQ_TO_RGB[:, 0], _RGB_TO_YIQ[0]),
        np.outer(_YIQ_TO_RGB[:, 1], _RGB_TO_YIQ[1]) + np.outer(_YIQ_TO_RGB[:, 2], _RGB_TO_YIQ[2]),
        np.outer(_YIQ_TO_RGB[:, 2], _RGB_TO_YIQ[1]) - np.outer(_YIQ_TO_RGB[:, 1], _RGB_TO_YIQ[2]),
    )
)


@dataclasses.dataclass(frozen=True)
class ViewParams:
    """Settings of one augmented view; frozen and hashable, so a valid `jax.jit` static arg.

    Fields mirror `configs/base.py:view_config`. Probabilities are in [0, 1]; `crop_scale` is
    the (low, high) area fraction, `crop_ratio` the (low, high) aspect ratio (log-uniform),
    `blur_sigma` the (low, high) sigma in pixels.
    """

    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    hflip_prob: float
    vflip_prob: float
    jitter_prob: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale_prob: float
    gamma: float
    noise_std: float
    blur_prob: float
    blur_sigma: tuple[float, float]
    solarize_prob: float

    def __post_init__(self) -> None:
        def fail(field: str, rule: str) -> None:
            raise ValueError(
                f"augment view: {field}={getattr(self, field)!r} {rule}; fix it in the config"
            )

        for field in ("crop_scale", "crop_ratio", "blur_sigma"):
            value = getattr(self, field)
            if not (isinstance(value, tuple) and len(value) == 2 and value[0] <= value[1]):
                fail(field, "must be a (low, high) pair with low <= high")
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            fail("crop_scale", "must satisfy 0 < low <= high <= 1")
        if self.crop_ratio[0] <= 0.0:
            fail("crop_ratio", "must be positive")
        if self.blur_sigma[0] <= 0.0:
            fail("blur_sigma", "must be positive")
        probs = ("hflip_prob", "vflip_prob", "jitter_prob", "grayscale_prob", "blur_prob")
        for field in (*probs, "solarize_prob"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                fail(field, "must be a probability in [0, 1]")
        for field in ("brightness", "contrast", "saturation", "gamma", "noise_std"):
            if getattr(self, field) < 0.0:
                fail(field, "must be >= 0")
        if not 0.0 <= self.hue <= 0.5:
            fail("hue", "must be in [0, 0.5]")

    @classmethod
    def from_config(cls, view_cfg: Any) -> ViewParams:
        """Builds the params from a view ConfigDict (`config.augment.view1` or `view2`)."""
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in view_cfg:
                raise KeyError(
                    f"augment view config has no key {field.name!r}; start the view from "
                    "configs/base.py:view_config()"
                )
            value = view_cfg[field.name]
            try:
                if isinstance(value, (tuple, list)):
                    values[field.name] = tuple(float(v) for v in value)
                else:
                    values[field.name] = float(value)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"augment view config: {field.name}={value!r} is not a number or a pair "
                    "of numbers; see configs/base.py:view_config() for the expected form"
                ) from err
        return cls(**values)


def _to_unit(images: jax.Array) -> jax.Array:
    return images.astype(jnp.float32) / 255.0


def _standardize(x: jax.Array) -> jax.Array:
    return (x - 0.5) / 0.5


def normalize(images: jax.Array) -> jax.Array:
    """uint8 [..., H, W, C] -> float32 [..., H, W, C] in [-1, 1]: (x / 255 - 0.5) / 0.5."""
    return _standardize(_to_unit(jnp.asarray(images)))


def _crop_box(
    u: jax.Array, height: int, width: int, params: ViewParams
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """torchvision's RandomResizedCrop box (top, left, h, w) as int32 scalars.

    `u`: float32 [4, attempts] uniforms in [0, 1). All attempts are drawn at once and the
    first that fits is kept; the fallback when none fits is torchvision's centre crop,
    static because it depends only on shapes and ratios.
    """
    scale, ratio = params.crop_scale, params.crop_ratio
    fractions = scale[0] + u[0] * (scale[1] - scale[0])
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = jnp.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
    target = float(height * width) * fractions
    w = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    # torch.randint(0, n) draws from [0, n): floor(u * n) with u in [0, 1).
    top = jnp.floor(u[2] * (height - h + 1)).astype(jnp.int32)
    left = jnp.floor(u[3] * (width - w + 1)).astype(jnp.int32)
    first = jnp.argmax(valid)

    in_ratio = width / height
    if in_ratio < ratio[0]:
        fb_w, fb_h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fb_w, fb_h = round(height * ratio[1]), height
    else:
        fb_w, fb_h = width, height
    found = valid[first]
    return (
        jnp.where(found, top[first], (height - fb_h) // 2),
        jnp.where(found, left[first], (width - fb_w) // 2),
        jnp.where(found, h[first], fb_h),
        jnp.where(found, w[first], fb_w),
    )


def _source_coords(
    start: jax.Array, length: jax.Array, size: int, reverse: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Bilinear taps (i0, i1 int32 [size], weight of i1 float32 [size]) for one axis.

    Half-pixel centres with the source clamped to the crop, as torch's bilinear resize with
    align_corners=False; a crop of the full axis maps every output to one pixel with weight 0.
    A flip reverses the output order, which equals flipping the resized crop.
    """
    out = jnp.arange(size, dtype=jnp.float32)
    src = (out + 0.5) * (length.astype(jnp.float32) / size) - 0.5
    src = jnp.clip(src, 0.0, (length - 1).astype(jnp.float32))
    i0 = jnp.floor(src).astype(jnp.int32)
    i1 = jnp.minimum(i0 + 1, length - 1)
    frac = src - i0.astype(jnp.float32)
    i0, i1 = i0 + start, i1 + start
    return (
        jnp.where(reverse, i0[::-1], i0),
        jnp.where(reverse, i1[::-1], i1),
        jnp.where(reverse, frac[::-1], frac),
    )


def _resized_crop(
    image: jax.Array,
    box: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    hflip: jax.Array,
    vflip: jax.Array,
) -> jax.Array:
    """float32 [C, H, W] -> the box resampled bilinearly to [C, H, W], optionally flipped.

    Gathers of whole rows then whole columns: cheaper than the dense per-example weight
    matrices of jax.image.scale_and_translate, and exact when the box is the whole image.
    Crops never exceed the image, so resizing only upsamples and needs no antialiasing.
    """
    _, height, width = image.shape
    top, left, h, w = box
    y0, y1, fy = _source_coords(top, h, height, vflip)
    x0, x1, fx = _source_coords(left, w, width, hflip)
    rows = image[:, y0] * (1.0 - fy)[:, None] + image[:, y1] * fy[:, None]
    return rows[:, :, x0] * (1.0 - fx) + rows[:, :, x1] * fx


def _gray(x: jax.Array) -> jax.Array:
    """float32 [C, H, W] -> luma float32 [1, H, W]; a grey image is its own luma."""
    if x.shape[0] == 1:
        return x
    return sum(x[k : k + 1] * w for k, w in enumerate(_GRAY_WEIGHTS))


def _hue_matrix(turns: jax.Array) -> jax.Array:
    """float32 [3, 3] (in, out) map rotating hue by `turns` of a circle in YIQ space.

    A linear stand-in for torchvision's HSV hue shift (as in NVIDIA DALI's hue): it keeps
    luma Y, keeps grey pixels grey, and is one more 3 x 3 map for the jitter to compose.
    """
    angle = 2.0 * jnp.pi * turns
    return _HUE_FIXED + jnp.cos(angle) * _HUE_COS + jnp.sin(angle) * _HUE_SIN


def _jitter_ops(params: ViewParams, channels: int) -> list[tuple[str, float, float]]:
    """The jitter operations this view applies: (name, low, high) of each factor's range."""
    ops = []
    if params.brightness > 0:
        ops.append(("brightness", max(0.0, 1.0 - params.brightness), 1.0 + params.brightness))
    if params.contrast > 0:
        ops.append(("contrast", max(0.0, 1.0 - params.contrast), 1.0 + params.contrast))
    if channels == 3:
        if params.saturation > 0:
            ops.append(("saturation", max(0.0, 1.0 - params.saturation), 1.0 + params.saturation))
        if params.hue > 0:
            ops.append(("hue", -params.hue, params.hue))
    elif params.gamma > 0:
        # Log-uniform gamma in [1 / (1 + g), 1 + g]: brightens and darkens equally often.
        ops.append(("gamma", -math.log1p(params.gamma), math.log1p(params.gamma)))
    return ops


def _jitter_affine(name: str, factor: jax.Array, channels: int) -> tuple[jax.Array, jax.Array]:
    """One op as y[c] = sum_k x[k] A[k, c] + beta mean(luma(x)): A float32 [C, C], beta []."""
    eye = jnp.eye(channels, dtype=jnp.float32)
    if name == "saturation":
        luma = jnp.asarray(_GRAY_WEIGHTS, jnp.float32)[:, None] * jnp.ones((1, channels))
        return factor * eye + (1.0 - factor) * luma, jnp.float32(0.0)
    if name == "hue":
        return _hue_matrix(factor), jnp.float32(0.0)
    if name == "contrast":
        return factor * eye, 1.0 - factor
    if name == "brightness":
        return factor * eye, jnp.float32(0.0)
    return eye, jnp.float32(0.0)  # gamma: applied as a power, selected separately


def _color_jitter(u: jax.Array, x: jax.Array, params: ViewParams) -> jax.Array:
    """float32 [C, H, W] -> jittered with prob `jitter_prob`, ops in a random order.

    `u`: float32 [1 + 2 * n_ops] uniforms (apply, factors, order). Brightness, contrast and
    saturation are torchvision's blends, so every op but gamma is a per-pixel affine map:
    each step picks this example's matrix, and the batch runs one map per step instead of
    every op at every step. Each step clips, as torchvision does.
    """
    channels = x.shape[0]
    ops = _jitter_ops(params, channels)
    n = len(ops)
    lows = jnp.asarray([lo for _, lo, _ in ops], jnp.float32)
    highs = jnp.asarray([hi for _, _, hi in ops], jnp.float32)
    factors = lows + u[1 : 1 + n] * (highs - lows)
    affines = [_jitter_affine(name, factors[i], channels) for i, (name, _, _) in enumerate(ops)]
    # Rank of each op in this example's random order, ties broken by index: a permutation
    # built from comparisons, so each step's map is a one-hot sum rather than a sort + gather.
    keys = u[1 + n : 1 + 2 * n]
    before = (keys[None, :] < keys[:, None]) | (
        (keys[None, :] == keys[:, None]) & (jnp.arange(n)[None, :] < jnp.arange(n)[:, None])
    )
    rank = jnp.sum(before, axis=1)
    out = x
    for step in range(n):
        chosen = (rank == step).astype(jnp.float32)
        matrix = sum(chosen[i] * a for i, (a, _) in enumerate(affines))
        beta = sum(chosen[i] * b for i, (_, b) in enumerate(affines))
        y = jnp.einsum("kc,khw->chw", matrix, out, precision=jax.lax.Precision.HIGHEST)
        y = y + beta * jnp.mean(_gray(out))
        for i, (name, _, _) in enumerate(ops):
            if name == "gamma":
                y = jnp.where(chosen[i] > 0, out ** jnp.exp(factors[i]), y)
        out = jnp.clip(y, 0.0, 1.0)
    return jnp.where(u[0] < params.jitter_prob, out, x)


def _blur_radius(side: int, max_sigma: float) -> int:
    """Taps on each side of the centre: 3 sigma, at least 1, below the side (reflect padding)."""
    return max(1, min(math.ceil(3.0 * max_sigma), (side - 1) // 2))


def _gaussian_blur(u: jax.Array, x: jax.Array, params: ViewParams) -> jax.Array:
    """float32 [C, H, W] -> separable Gaussian blur (reflect padding) with prob `blur_prob`.

    `u`: float32 [2] uniforms (apply, sigma). Sums shifted slices: a tenth of the work of a
    dense blur matrix at 224 px, and one fused loop per axis.
    """
    _, height, width = x.shape
    low, high = params.blur_sigma
    radius = _blur_radius(min(height, width), high)
    size = 2 * radius + 1
    sigma = low + u[1] * (high - low)
    taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / jnp.sum(kernel)
    padded = jnp.pad(x, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    out = sum(kernel[t] * padded[:, t : t + height] for t in range(size))
    padded = jnp.pad(out, ((0, 0), (0, 0), (radius, radius)), mode="reflect")
    out = sum(kernel[t] * padded[:, :, t : t + width] for t in range(size))
    return jnp.where(u[0] < params.blur_prob, out, x)


def _check_images(images: jax.Array, caller: str, layout: str) -> None:
    if images.ndim != len(layout.split(",")) or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{caller}: expected uint8 {layout} with C in (1, 3), got shape {images.shape}; "
            "add a trailing channel axis to grey images"
        )
    if images.dtype != jnp.uint8:
        raise TypeError(
            f"{caller}: expected uint8 pixels, got {images.dtype}; pass the raw MedMNIST "
            "images, normalisation happens here"
        )


def augment_image(key: jax.Array, image: jax.Array, params: ViewParams) -> jax.Array:
    """One view of one image: uint8 [H, W, C] (C = 1 or 3) -> normalised float32 [H, W, C]."""
    _check_images(image, "augment_image", "[H, W, C]")
    height, width, channels = image.shape
    n_jitter = len(_jitter_ops(params, channels))
    # One draw of every scalar this view needs: each jax.random call is a threefry loop, and
    # a dozen small ones per example cost more than the pixel work on 28 px images.
    sizes = {"crop": 4 * _CROP_ATTEMPTS, "flip": 2, "jitter": 1 + 2 * n_jitter}
    sizes |= {"gray": 1, "blur": 2, "solarize": 1}
    k_uniform, k_noise = jax.random.split(key) if params.noise_std > 0 else (key, None)
    draws = jax.random.uniform(k_uniform, (sum(sizes.values()),))
    u, start = {}, 0
    for name, size in sizes.items():
        u[name], start = draws[start : start + size], start + size

    x = jnp.transpose(_to_unit(image), (2, 0, 1))
    box = _crop_box(u["crop"].reshape(4, _CROP_ATTEMPTS), height, width, params)
    flips = u["flip"] < jnp.asarray([params.hflip_prob, params.vflip_prob])
    x = _resized_crop(x, box, hflip=flips[0], vflip=flips[1])
    if n_jitter and params.jitter_prob > 0:
        x = _color_jitter(u["jitter"], x, params)
    if channels == 3 and params.grayscale_prob > 0:
        gray = jnp.broadcast_to(_gray(x), x.shape)
        x = jnp.where(u["gray"][0] < params.grayscale_prob, gray, x)
    if params.blur_prob > 0 and min(height, width) >= 3:
        x = _gaussian_blur(u["blur"], x, params)
    if params.solarize_prob > 0:
        solarized = jnp.where(x >= 0.5, 1.0 - x, x)
        x = jnp.where(u["solarize"][0] < params.solarize_prob, solarized, x)
    if params.noise_std > 0:
        x = x + params.noise_std * jax.random.normal(k_noise, x.shape, jnp.float32)
    return jnp.transpose(_standardize(jnp.clip(x, 0.0, 1.0)), (1, 2, 0))


def augment_batch(key: jax.Array, images: jax.Array, params: ViewParams) -> jax.Array:
    """One view of a batch: uint8 [B, H, W, C] -> float32 [B, H, W, C], one key per example."""
    _check_images(images, "augment_batch", "[B, H, W, C]")
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(augment_image, in_axes=(0, 0, None))(keys, images, params)


def two_views(
    key: jax.Array, images: jax.Array, p1: ViewParams, p2: ViewParams
) -> tuple[jax.Array, jax.Array]:
    """Two independently keyed views: uint8 [B, H, W, C] -> 2 x float32 [B, H, W, C]."""
    k1, k2 = jax.random.split(key)
    return augment_batch(k1, images, p1), augment_batch(k2, images, p2)
