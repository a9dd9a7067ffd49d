"""Training-health diagnostics: did pretraining move the encoder, and did it collapse?

An audit of a pretraining recipe found the convolution kernels barely moved (median 0.9%
relative change) while the BatchNorm scales grew 6-14x: the loss went down through BatchNorm
alone and the "pretrained" encoder was a random one. These functions make that visible in
metrics.jsonl and TensorBoard:

- `weight_change`: median relative change of the conv kernels and of the BatchNorm scales
  since initialisation (`weight_change/conv`, `weight_change/bn_scale`), and the median angle
  of the conv kernels to their initial direction (`weight_angle/conv`, degrees). A kernel
  followed by BatchNorm computes the same function at any scale, and LARS with little weight
  decay grows kernel norms: after test_fair's 54 steps of Barlow Twins (width 8,
  PneumoniaMNIST) the relative change was 17 and the angle 87 degrees, and a pure turn of 87
  degrees changes a kernel by 1.4x its norm, so the rest is norm growth. The angle says how
  far the directions turned, which is what the function sees (`experiments/kernel_angles.py`
  measures a finished run).
- `rankme` and `embedding_stats`: effective rank and spread of embeddings; both fall towards
  their floor (1 and 0) when the embeddings collapse.
- `barely_moved`: a warning when the final `weight_change/conv` is below
  `BARELY_MOVED_CONV`.

The threshold was set by measurement: Barlow Twins, ResNet-18 width 8 (small stem, no zero
init of the residual BatchNorm), BreastMNIST 28 px (546 train images), batch 64, projector
(256, 256), base LR 0.3 (peak 0.075), warmup 10% then cosine, 5 epochs (40 steps), seeds 0
and 1; the final `weight_change/conv`:

    LARS trust coefficient 0.02 with LR clipping, loss scale 0.1 (solo-learn):  1.72, 1.52
    LARS trust coefficient 0.001, no clipping, loss scale 1.0 (the old recipe): 0.0029, 0.0028

(0.02 with clipping at loss scale 1.0 gave 15.1.) The old recipe's value stops growing as the
cosine decays (0.0007 after 1 epoch, 0.0029 after 5); the audit's full-length run reached
0.009. `BARELY_MOVED_CONV = 0.05` is 5x above that, 17x above the 5-epoch old value and 30x
below the new one, which is already 0.8 after one epoch: a short run of the new recipe does
not trip it.

All functions are pure and jit-able; they compute in float32.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp

# Below this final median relative change of the conv kernels, the encoder barely trained.
BARELY_MOVED_CONV = 0.05
# RankMe's epsilon (Garrido et al., 2023) added to the normalised singular values.
RANKME_EPS = 1e-7
# Rows of an embedding matrix used for rank and spread: the SVD grows as N * D * min(N, D).
MAX_RANK_ROWS = 2048
# Guards the L2 normalisation of an all-zero embedding.
_NORMALISE_EPS = 1e-12


def _relative_change_median(pairs: list[tuple[jax.Array, jax.Array]]) -> jax.Array:
    """Median over (w, w0) pairs of ||w - w0|| / ||w0||, float32 []; pairs with ||w0|| = 0
    are left out; NaN when no pair is left."""
    if not pairs:
        return jnp.float32(jnp.nan)
    ratios = []
    for w, w0 in pairs:
        w, w0 = jnp.asarray(w, jnp.float32), jnp.asarray(w0, jnp.float32)
        norm0 = jnp.linalg.norm(w0)
        change = jnp.linalg.norm(w - w0) / jnp.where(norm0 > 0, norm0, 1.0)
        ratios.append(jnp.where(norm0 > 0, change, jnp.nan))
    return jnp.nanmedian(jnp.stack(ratios))


def _angle_median(pairs: list[tuple[jax.Array, jax.Array]]) -> jax.Array:
    """Median over (w, w0) pairs of the angle between them in degrees [0, 180], float32 [];
    pairs with a zero or non-finite norm are left out; NaN when no pair is left.

    `2 atan2(||u - v||, ||u + v||)` of the unit vectors u, v (Kahan): unlike arccos of the
    cosine, accurate in float32 down to the smallest angles a barely moved kernel turns.
    """
    if not pairs:
        return jnp.float32(jnp.nan)
    angles = []
    for w, w0 in pairs:
        w, w0 = jnp.asarray(w, jnp.float32).ravel(), jnp.asarray(w0, jnp.float32).ravel()
        n, n0 = jnp.linalg.norm(w), jnp.linalg.norm(w0)
        ok = (n > 0) & (n0 > 0) & jnp.isfinite(n) & jnp.isfinite(n0)
        u, v = w / jnp.where(ok, n, 1.0), w0 / jnp.where(ok, n0, 1.0)
        angle = 2.0 * jnp.arctan2(jnp.linalg.norm(u - v), jnp.linalg.norm(u + v))
        angles.append(jnp.where(ok, jnp.degrees(angle), jnp.nan))
    return jnp.nanmedian(jnp.stack(angles))


def _is_bn_scale(path: tuple, leaf: Any) -> bool:
    name = getattr(path[-1], "key", None) if path else None
    return name == "scale" and jnp.ndim(leaf) == 1


def weight_change(params: Any, params0: Any) -> dict[str, jax.Array]:
    """How far the parameters moved from their initialisation, per kind of layer.

    Args:
      params: a Flax params pytree (pass `params['encoder']` to leave the projector out).
      params0: the same pytree at initialisation.

    Returns:
      float32 [] scalars:
      `weight_change/conv`: median over conv kernels (leaves with ndim == 4) of
        ||w - w0|| / ||w0||.
      `weight_change/bn_scale`: the same median over BatchNorm scales (1-D leaves named
        'scale', Flax's name for gamma; the encoders have no other normalisation layer),
        over those with ||g0|| > 0 only: the zero-initialised last scale of each residual
        block has no relative change. NaN when there is none.
      `weight_angle/conv`: median over conv kernels of the angle between w and w0, in
        degrees (0: same direction, 90: orthogonal), blind to a kernel's scale.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    flat0, treedef0 = jax.tree_util.tree_flatten(params0)
    if treedef != treedef0:
        raise ValueError(f"params and params0 differ in structure: {treedef} vs {treedef0}")
    conv = [(w, w0) for (_, w), w0 in zip(flat, flat0, strict=True) if jnp.ndim(w) == 4]
    scales = [(g, g0) for (p, g), g0 in zip(flat, flat0, strict=True) if _is_bn_scale(p, g)]
    return {
        "weight_change/conv": _relative_change_median(conv),
        "weight_change/bn_scale": _relative_change_median(scales),
        "weight_angle/conv": _angle_median(conv),
    }


def rankme(z: jax.Array) -> jax.Array:
    """Effective rank of embeddings (RankMe, Garrido et al., 2023), float32 [].

    `exp(-sum_k p_k log p_k)` with `p_k = s_k / sum(s) + eps` over the singular values s of
    z: from ~1 (every row on one line) to min(N, D) (singular values all equal).

    Args:
      z: float [N, D], N rows of embeddings (keep N to a few thousand: `MAX_RANK_ROWS`).
    """
    s = jnp.linalg.svd(jnp.asarray(z, jnp.float32), compute_uv=False)
    p = s / jnp.maximum(jnp.sum(s), jnp.finfo(jnp.float32).tiny) + RANKME_EPS
    return jnp.exp(-jnp.sum(p * jnp.log(p)))


def embedding_stats(z: jax.Array) -> dict[str, jax.Array]:
    """Collapse checks of embeddings z float [N, D] (N >= 2), as float32 [] scalars.

    `embedding/std`: per-dimension std over the N rows of the L2-normalised embeddings,
      averaged over the D dimensions: about 1/sqrt(D) when the rows spread over the sphere,
      0 when every row points the same way (collapse).
    `embedding/rankme`: `rankme(z)`.
    """
    z = jnp.asarray(z, jnp.float32)
    norm = jnp.linalg.norm(z, axis=1, keepdims=True)
    zn = z / jnp.maximum(norm, _NORMALISE_EPS)
    return {
        "embedding/std": jnp.mean(jnp.std(zn, axis=0)),
        "embedding/rankme": rankme(z),
    }


def barely_moved(weight_change_conv: float) -> str | None:
    """A one-line warning when the final `weight_change/conv` is below `BARELY_MOVED_CONV`,
    else None (also for NaN: no conv kernels)."""
    if math.isnan(weight_change_conv) or weight_change_conv >= BARELY_MOVED_CONV:
        return None
    return (
        f"warning: pretraining barely moved the conv kernels (median relative change "
        f"{weight_change_conv:.2%} < {BARELY_MOVED_CONV:.0%}): the encoder is close to its "
        "random initialisation; check the optimiser (LARS trust coefficient, learning rate)."
    )
