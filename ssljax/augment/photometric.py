"""Photometric operations of a view on one channel-first float image in [0, 1]: colour
jitter (brightness, contrast, saturation, hue; gamma for grey images), luma, Gaussian blur."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from ssljax.augment.params import ViewParams

# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# NTSC YIQ: hue jitter rotates the chroma plane (I, Q) around luma Y.
RGB_TO_YIQ = np.asarray(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)
_YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)
# Rotating (I, Q) by theta maps RGB by _HUE_FIXED + cos(theta) _HUE_COS + sin(theta) _HUE_SIN,
# stored (in, out) so that out[c] = sum_k x[k] M[k, c].
_HUE_FIXED, _HUE_COS, _HUE_SIN = (
    m.T.astype(np.float32)
    for m in (
        np.outer(_YIQ_TO_RGB[:, 0], RGB_TO_YIQ[0]),
        np.outer(_YIQ_TO_RGB[:, 1], RGB_TO_YIQ[1]) + np.outer(_YIQ_TO_RGB[:, 2], RGB_TO_YIQ[2]),
        np.outer(_YIQ_TO_RGB[:, 2], RGB_TO_YIQ[1]) - np.outer(_YIQ_TO_RGB[:, 1], RGB_TO_YIQ[2]),
    )
)


def gray(x: jax.Array) -> jax.Array:
    """float32 [C, H, W] -> luma float32 [1, H, W]; a grey image is its own luma."""
    if x.shape[0] == 1:
        return x
    return sum(x[k : k + 1] * w for k, w in enumerate(GRAY_WEIGHTS))


def hue_matrix(turns: jax.Array) -> jax.Array:
    """float32 [3, 3] (in, out) map rotating hue by `turns` of a circle in YIQ space.

    A linear stand-in for torchvision's HSV hue shift (as in NVIDIA DALI's hue): it keeps
    luma Y, keeps grey pixels grey, and is one more 3 x 3 map for the jitter to compose.
    """
    angle = 2.0 * jnp.pi * turns
    return _HUE_FIXED + jnp.cos(angle) * _HUE_COS + jnp.sin(angle) * _HUE_SIN


def jitter_ops(params: ViewParams, channels: int) -> list[tuple[str, float, float]]:
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
        luma = jnp.asarray(GRAY_WEIGHTS, jnp.float32)[:, None] * jnp.ones((1, channels))
        return factor * eye + (1.0 - factor) * luma, jnp.float32(0.0)
    if name == "hue":
        return hue_matrix(factor), jnp.float32(0.0)
    if name == "contrast":
        return factor * eye, 1.0 - factor
    if name == "brightness":
        return factor * eye, jnp.float32(0.0)
    return eye, jnp.float32(0.0)  # gamma: applied as a power, selected separately


def color_jitter(u: jax.Array, x: jax.Array, params: ViewParams) -> jax.Array:
    """float32 [C, H, W] -> jittered with prob `jitter_prob`, ops in a random order.

    `u`: float32 [1 + 2 * n_ops] uniforms (apply, factors, order). Brightness, contrast and
    saturation are torchvision's blends, so every op but gamma is a per-pixel affine map:
    each step picks this example's matrix, and the batch runs one map per step instead of
    every op at every step. Each step clips, as torchvision does.
    """
    channels = x.shape[0]
    ops = jitter_ops(params, channels)
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
        y = y + beta * jnp.mean(gray(out))
        for i, (name, _, _) in enumerate(ops):
            if name == "gamma":
                y = jnp.where(chosen[i] > 0, out ** jnp.exp(factors[i]), y)
        out = jnp.clip(y, 0.0, 1.0)
    return jnp.where(u[0] < params.jitter_prob, out, x)


def _blur_radius(side: int, max_sigma: float) -> int:
    """Taps on each side of the centre: 3 sigma, at least 1, below the side (reflect padding)."""
    return max(1, min(math.ceil(3.0 * max_sigma), (side - 1) // 2))


def gaussian_blur(u: jax.Array, x: jax.Array, params: ViewParams) -> jax.Array:
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
