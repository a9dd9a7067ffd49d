"""Training diagnostics: how the encoder moved, how the optimiser stepped, whether the
embeddings spread. The verdict of whether a run learned is `ssljax.health`'s; these are the
measurements it and a person read.

- `weight_change`: median relative change of the conv kernels and of the BatchNorm scales
  since initialisation (`weight_change/conv`, `weight_change/bn_scale`), and the median angle
  of the conv kernels to their initial direction (`weight_angle/conv`, degrees). A kernel
  followed by BatchNorm computes the same function at any scale, and LARS with little weight
  decay grows kernel norms, so the relative change mostly measures scale; the angle says how
  far the directions turned, which is what the function sees (`experiments/kernel_angles.py`
  measures a finished run). Movement is not learning: the recipe that collapsed in issue 20
  turned the kernels 81 degrees, the one that learned best 1 degree.
- `step_stats`: per group of parameters, the relative step the optimiser took and the
  relative gradient, every step (`update_ratio/<group>`, `grad_ratio/<group>`).
- `rankme` and `embedding_stats`: effective rank and spread of embeddings; both fall towards
  their floor (1 and 0) when the embeddings collapse.

All functions are pure and jit-able; they compute in float32.
"""

from typing import Any

import jax
import jax.numpy as jnp

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


def _group(path: tuple, leaf: Any) -> str:
    """'conv' (4-D kernels), 'dense' (2-D kernels: projector and heads) or 'norm' (1-D:
    BatchNorm scales and biases, and dense biases), prefixed by the top-level module."""
    top = getattr(path[0], "key", "params") if path else "params"
    kind = {4: "conv", 2: "dense"}.get(jnp.ndim(leaf), "norm")
    return f"{top}_{kind}"


def step_stats(params: Any, grads: Any, updates: Any) -> dict[str, jax.Array]:
    """How one optimiser step moved each group of parameters, as float32 [] scalars.

    Groups are `<module>_<kind>`: module 'encoder' or 'projector', kind 'conv' (4-D),
    'dense' (2-D) or 'norm' (1-D: BatchNorm and biases). Per group, medians over its
    leaves with a non-zero norm:
      `update_ratio/<group>`: ||update|| / ||p||, the relative step taken (LARS bounds it by
        the trust coefficient when its clip acts on the update).
      `grad_ratio/<group>`: ||grad|| / ||p||; the effective learning rate of the group is
        update_ratio / grad_ratio, and LARS's unclipped trust ratio eta / grad_ratio.

    Args:
      params: the parameters before the step (a Flax params pytree).
      grads, updates: the loss gradient and the optimiser's update, of the same structure.
    """
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    g_leaves, u_leaves = jax.tree.leaves(grads), jax.tree.leaves(updates)
    groups: dict[str, tuple[list, list]] = {}
    for (path, p), g, u in zip(flat, g_leaves, u_leaves, strict=True):
        norm = jnp.linalg.norm(jnp.asarray(p, jnp.float32))
        safe = jnp.where(norm > 0, norm, 1.0)
        ratios = groups.setdefault(_group(path, p), ([], []))
        for i, x in enumerate((u, g)):
            ratio = jnp.linalg.norm(jnp.asarray(x, jnp.float32)) / safe
            ratios[i].append(jnp.where(norm > 0, ratio, jnp.nan))
    out = {}
    for name, (upd, grd) in groups.items():
        out[f"update_ratio/{name}"] = jnp.nanmedian(jnp.stack(upd))
        out[f"grad_ratio/{name}"] = jnp.nanmedian(jnp.stack(grd))
    return out


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
