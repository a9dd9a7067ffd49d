"""Geometric operations of a view: torchvision's RandomResizedCrop box, and the bilinear
resampling of that box (with the flips folded in) on one channel-first image."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from ssljax.augment.params import ViewParams

# torchvision's RandomResizedCrop tries this many boxes before its centre-crop fallback.
CROP_ATTEMPTS = 10


def crop_box(
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


def resized_crop(
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
