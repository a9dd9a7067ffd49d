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
  the YIQ chroma plane instead of torchvision's HSV shift; see `photometric.hue_matrix`); grayscale.
- Grey: jitter = brightness, contrast and, when `gamma > 0`, a gamma curve; saturation, hue
  and grayscale do nothing to one channel and are skipped.
- Both: Gaussian blur, solarisation, additive noise when `noise_std > 0`.

Gaussian blur: sigma uniform in `blur_sigma`, in pixels at every image size, as BYOL
(224 px) and solo-learn's CIFAR recipes (32 px) both give it; the kernel reaches 3 sigma of
the largest sigma (capped by the image side), fixed per view, while sigma varies per example.
(A sigma scaled by side / 224 changed a 28 px image by less than one grey level.)

Internally images are channel-first [C, H, W] floats: every per-channel plane is then
contiguous, which XLA's CPU backend vectorises several times better than a minor axis of 3.

    params.py       ViewParams: one view's settings and their rules
    geometry.py     random resized crop and flips
    photometric.py  colour jitter, grayscale, Gaussian blur
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssljax.augment import geometry, photometric
from ssljax.augment.params import ViewParams

__all__ = ["ViewParams", "augment_batch", "augment_image", "normalize", "two_views"]


def _to_unit(images: jax.Array) -> jax.Array:
    return images.astype(jnp.float32) / 255.0


def _standardize(x: jax.Array) -> jax.Array:
    return (x - 0.5) / 0.5


def normalize(images: jax.Array) -> jax.Array:
    """uint8 [..., H, W, C] -> float32 [..., H, W, C] in [-1, 1]: (x / 255 - 0.5) / 0.5."""
    return _standardize(_to_unit(jnp.asarray(images)))


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
    n_jitter = len(photometric.jitter_ops(params, channels))
    # One draw of every scalar this view needs: each jax.random call is a threefry loop, and
    # a dozen small ones per example cost more than the pixel work on 28 px images.
    sizes = {"crop": 4 * geometry.CROP_ATTEMPTS, "flip": 2, "jitter": 1 + 2 * n_jitter}
    sizes |= {"gray": 1, "blur": 2, "solarize": 1}
    k_uniform, k_noise = jax.random.split(key) if params.noise_std > 0 else (key, None)
    draws = jax.random.uniform(k_uniform, (sum(sizes.values()),))
    u, start = {}, 0
    for name, size in sizes.items():
        u[name], start = draws[start : start + size], start + size

    x = jnp.transpose(_to_unit(image), (2, 0, 1))
    box = geometry.crop_box(u["crop"].reshape(4, geometry.CROP_ATTEMPTS), height, width, params)
    flips = u["flip"] < jnp.asarray([params.hflip_prob, params.vflip_prob])
    x = geometry.resized_crop(x, box, hflip=flips[0], vflip=flips[1])
    if n_jitter and params.jitter_prob > 0:
        x = photometric.color_jitter(u["jitter"], x, params)
    if channels == 3 and params.grayscale_prob > 0:
        gray = jnp.broadcast_to(photometric.gray(x), x.shape)
        x = jnp.where(u["gray"][0] < params.grayscale_prob, gray, x)
    if params.blur_prob > 0 and min(height, width) >= 3:
        x = photometric.gaussian_blur(u["blur"], x, params)
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
