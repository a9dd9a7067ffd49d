"""A 2D convolution whose kernel gradient XLA:CPU computes about 11x faster.

XLA:CPU lowers the kernel gradient of a stride-1 convolution as one convolution whose
"kernel" is the whole output gradient (28 x 28 for a small-image ResNet's first stage), a
shape its Eigen path handles at about 2.6 GFLOP/s, 16x slower than the forward pass
(batch 64, 28 x 28 x 64 -> 64, 3 x 3, 2-core CPU, `experiments/conv_gradient.py`, 2026-11-27:
forward 86 ms, input gradient 67 ms, kernel gradient 1,400 ms). It dominated a ResNet-18 train step.

Here the kernel gradient is an im2col matrix product instead, over chunks of the batch so
that a chunk's patches stay in cache: dw = sum over chunks of patches(x)^T @ dy (122 ms for
the case above). Only the CPU lowering uses it (`lax.platform_dependent`); GPUs and TPUs
keep XLA's own gradient, which cuDNN and the TPU compiler do well. The forward pass and the
input gradient are XLA's everywhere.
"""

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# Rows (batch x output pixels) of one chunk's patch matrix: ~8k rows of 576 float32 (3x3x64)
# is 18 MB, the size that measured fastest (chunks of 8 images at 28 x 28).
_CHUNK_ROWS = 8192


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: Any,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
) -> jax.Array:
    """`lax.conv_general_dilated` with the fast CPU kernel gradient where it applies.

    The signature is lax's, so `flax.linen.Conv(conv_general_dilated=...)` takes it. The
    fast path covers what a ResNet uses: 2D, explicit padding, no dilation, one group;
    anything else is passed to lax unchanged.
    """
    plain = (
        lhs.ndim == 4
        and feature_group_count == 1
        and not isinstance(padding, str)
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and _is_nhwc(dimension_numbers, lhs.shape, rhs.shape)
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
        )
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv(lhs, rhs, tuple(int(s) for s in window_strides), pads)


def _is_nhwc(dimension_numbers: Any, lhs_shape: tuple, rhs_shape: tuple) -> bool:
    if dimension_numbers is None:
        return False
    dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    return dn == lax.conv_dimension_numbers(lhs_shape, rhs_shape, _DIMENSIONS)


def _lax_conv(x: jax.Array, w: jax.Array, strides: tuple, pads: tuple) -> jax.Array:
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_DIMENSIONS)


# strides and pads are static Python values, not differentiated.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x: jax.Array, w: jax.Array, strides: tuple, pads: tuple) -> jax.Array:
    return _lax_conv(x, w, strides, pads)


def _conv_fwd(x, w, strides, pads):
    return _lax_conv(x, w, strides, pads), (x, w)


def _conv_bwd(strides, pads, residuals, dy):
    x, w = residuals
    dx = jax.vjp(lambda x: _lax_conv(x, w, strides, pads), x)[1](dy)[0]

    def xla_kernel_gradient(x, dy):
        return jax.vjp(lambda w: _lax_conv(x, w, strides, pads), w)[1](dy)[0]

    def cpu_kernel_gradient(x, dy):
        return kernel_gradient(x, dy, w.shape, strides, pads).astype(w.dtype)

    dw = lax.platform_dependent(x, dy, cpu=cpu_kernel_gradient, default=xla_kernel_gradient)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def kernel_gradient(
    x: jax.Array, dy: jax.Array, kernel_shape: tuple, strides: tuple, pads: tuple
) -> jax.Array:
    """d(sum(conv(x, w) * dy)) / dw, as chunked im2col matrix products.

    Args:
      x: [B, H, W, C] the convolution's input.
      dy: [B, Ho, Wo, O] gradient of its output.
      kernel_shape: (kh, kw, C, O).
      strides: (sh, sw); pads: ((top, bottom), (left, right)).
    Returns:
      float32 [kh, kw, C, O].
    """
    kh, kw, c, o = kernel_shape
    b, ho, wo, _ = dy.shape
    sh, sw = strides
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    # One group per device: under jit the batch is sharded in contiguous blocks, so each
    # group's partial sums stay on its device and only the final sum over groups talks to
    # the others. (A reduction over the sharded batch inside the loop would put a
    # collective in every iteration; XLA:CPU can run those in different orders on
    # different devices and deadlock when the cores are few.)
    groups = jax.device_count() if b % jax.device_count() == 0 else 1
    per_group = b // groups
    # The largest chunk of whole images within _CHUNK_ROWS that divides a group.
    chunk = max(
        d
        for d in range(1, per_group + 1)
        if per_group % d == 0 and (d == 1 or d * ho * wo <= _CHUNK_ROWS)
    )
    steps = per_group // chunk

    def partial(xc: jax.Array, dyc: jax.Array) -> jax.Array:
        """xc [G, chunk, Hp, Wp, C], dyc [G, chunk, Ho, Wo, O] -> float32 [G, kh*kw*C, O]."""
        taps = [
            xc[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
        ]
        patches = jnp.stack(taps, axis=4).reshape(groups, chunk * ho * wo, kh * kw * c)
        rows = dyc.reshape(groups, chunk * ho * wo, o)
        dims = (((1,), (1,)), ((0,), (0,)))
        return lax.dot_general(patches, rows, dims, preferred_element_type=jnp.float32)

    # [steps, G, chunk, ...]: the loop runs over chunks, each a slice of every group.
    xs = jnp.moveaxis(xp.reshape(groups, steps, chunk, *xp.shape[1:]), 1, 0)
    dys = jnp.moveaxis(dy.reshape(groups, steps, chunk, ho, wo, o), 1, 0)
    if steps == 1:
        dw = partial(xs[0], dys[0])
    else:
        dw, _ = lax.scan(
            lambda acc, chunk_pair: (acc + partial(*chunk_pair), None),
            jnp.zeros((groups, kh * kw * c, o), jnp.float32),
            (xs, dys),
        )
    return dw.sum(axis=0).reshape(kh, kw, c, o)
